// Bad programs are rejected at trace time with messages that name the problem.
import assert from "node:assert/strict";
import { uncheckedBinary } from "../dsl/build.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, broadcast, gt, mul, where } from "../dsl/elementwise.ts";
import { max, rmsnorm, sum } from "../dsl/reduce.ts";
import { scan } from "../dsl/scan.ts";
import { trace } from "../dsl/trace.ts";
import { concat, conv1d, gather, rearrange, slice } from "../dsl/views.ts";
import { expectAxes, Tensor } from "../dsl/tensor.ts";
import { interpret } from "../runtime/interpreter.ts";

// The runtime checks must hold even when types are bypassed (plain JS callers): a spec typed
// `string` is not checked by TypeScript.
const untypedEinsum = (spec: string, ...t: Tensor[]) => einsum(spec, ...t);
const sizes = { b: 2, l: 3, d: 4, n: 5, k: 4, v: 9, h: 2, dk: 4 };

function traceError(fn: (t: Record<string, Tensor>) => Tensor): string {
  try {
    trace(
      {
        x: "b l d",
        A: "d n",
        w: "d k",
        E: "v d",
        ids: { axes: "b l", dtype: "i32" },
        q: "b l h dk",
        kk: "b l h d",
      },
      fn,
      sizes,
    );
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected the trace to fail");
}

Deno.test("einsum: operand axes that do not match the spec name the spec, operand and axes", () => {
  const msg = traceError(({ x, A }) => einsum("b d, d n -> b n", x, A));
  assert.match(
    msg,
    /einsum "b d, d n -> b n": operand 1 has axes \[b l d\] but the spec says \[b d\]/,
  );
});

Deno.test("einsum: wrong operand count, unknown output axis, bad syntax", () => {
  assert.match(
    traceError(({ x }) => untypedEinsum("b l d, d n -> b l n", x)),
    /2 operand\(s\) but 1/,
  );
  assert.match(
    // @ts-expect-error the typed spec is checked by TypeScript too
    traceError(({ x, A }) => einsum("b l d, d n -> b l q", x, A)),
    /output axis "q" appears in no operand/,
  );
  assert.match(traceError(({ x }) => untypedEinsum("b l d", x)), /exactly one "->"/);
  assert.match(traceError(({ x }) => untypedEinsum("b l d d -> b", x)), /axis "d" appears twice/);
});

Deno.test("size conflicts between operands name the axis and both sizes", () => {
  const msg = traceError(({ x, A }) => add(x, rearrange(A, "l d -> l d")));
  assert.match(
    msg,
    /size conflict on axis "l": 3 in the first operand \[b l d\] but 4 in the second \[l d\]/,
  );
  const sliced = traceError(({ x, A }) =>
    einsum("b l e, e n -> b l n", slice(x, "d", 0, 3, "e"), rearrange(A, "e n -> e n"))
  );
  assert.match(sliced, /size conflict on axis "e": 3 in operand 1 but 4 in operand 2/);
});

Deno.test("unknown axes are reported with the tensor's axes", () => {
  assert.match(traceError(({ x }) => sum(x, "q")), /cannot reduce over "q": .*\[b l d\]/);
  assert.match(traceError(({ x }) => slice(x, "q", 0, 1, "r")), /has no axis "q"/);
  assert.match(
    traceError(({ x }) => rearrange(x, "b l (h p) -> b l h p")),
    /give the sizes of all but one of \(h p\)/,
  );
  assert.match(
    // @ts-expect-error TypeScript checks the pattern's two sides too
    traceError(({ x }) => rearrange(x, "b l d -> b l q")),
    /unknown on the right: q/,
  );
  assert.match(
    // @ts-expect-error (d appears twice on the right)
    traceError(({ x }) => rearrange(x, "b l d -> b d e=(l d)")),
    /same axes once each/,
  );
});

Deno.test("view ops reject bad ranges, dtypes and shapes", () => {
  assert.match(traceError(({ x }) => slice(x, "d", 2, 9, "e")), /range \[2, 9\) is not inside/);
  assert.match(traceError(({ x }) => gather(x, x, "d")), /must have dtype i32/);
  assert.match(traceError(({ ids }) => add(ids, 1)), /integer tensors can only be used/);
  assert.match(
    traceError(({ x, A }) => concat([x, A], ["d", "n"], "e")),
    /does not match tensor 1/,
  );
  assert.match(
    traceError(({ x, A }) => conv1d(x, rearrange(A, "q n -> q n"), "l", "n")),
    /weight axis "q" of \[q n\] is not an axis of x \[b l d\]/,
  );
  assert.doesNotThrow(() =>
    trace({ x: "b l d", w: "d k" }, ({ x, w }) => conv1d(x, w, "l", "k"), sizes)
  );
  assert.doesNotThrow(() =>
    trace(
      { E: "v d", ids: { axes: "b l", dtype: "i32" } },
      ({ E, ids }) => gather(E, ids, "v"),
      sizes,
    )
  );
});

Deno.test("inputs without sizes and bad sizes are reported", () => {
  assert.throws(
    () => trace({ x: "b q" }, ({ x }) => x, sizes),
    /input "x" b q: axis "q" has no size/,
  );
  assert.throws(() => trace({ x: "b" }, ({ x }) => x, { b: 0 }), /positive integer/);
  assert.throws(
    // @ts-expect-error a number is not a traced function's result
    () => trace({ x: "b" }, () => 3, { b: 2 }),
    /must return a Tensor/,
  );
});

Deno.test("an elementwise op whose operands each bring an axis is refused, naming both", () => {
  // The example: d was meant to be dk; broadcasting by name would sum an outer product.
  const msg = traceError(({ q, kk }) => sum(mul(q, kk), "dk"));
  assert.match(
    msg,
    /^mul: \[b l h dk\] has dk and \[b l h d\] has d, which the other lacks: broadcasting by name would make the outer product \[b l h dk d\]; if an outer product is meant, write einsum\("b l h dk, b l h d -> b l h dk d", …\) or broadcast\(\) an operand/,
  );
  assert.match(traceError(({ x, A }) => add(x, A)), /^add: \[b l d\] has b, l and \[d n\] has n,/);
  assert.match(
    traceError(({ x, A }) => max(x, A)),
    /^maximum: .*broadcast\(\) an operand to \[b l d n\]/,
  );
  assert.match(
    traceError(({ x, A, w }) => where(gt(x, 0), A, w)),
    /^where: no operand has every axis of the others \(cond \[b l d\], a \[d n\], b \[d k\]\)/,
  );
  assert.match(
    traceError(({ x, A }) => scan("l", x, A)),
    /^scan: \[b l d\] has b, l and \[d n\] has n, which the other lacks/,
  );
  assert.match(
    traceError(({ x, A }) => rmsnorm(x, "d", A)),
    /rmsnorm: the weight \[d n\] has n, which x \[b l d\] lacks/,
  );
});

Deno.test("broadcasting a subset of axes stays legal, and outer products are written explicitly", () => {
  const s = { b: 2, l: 3, d: 4 };
  const graph = trace(
    { x: "b l d", a: "b l", c: "d", D: "d" },
    ({ x, a, c, D }) => ({
      scaled: add(mul(D, x), 1),
      selected: where(gt(a, 0), x, D),
      outerSum: add(broadcast(a, "b l d", { d: 4 }), c),
      reordered: broadcast(c, "d b", { b: 2 }),
      outerProduct: einsum("b l, d -> b l d", a, c),
    }),
    s,
  );
  assert.deepEqual(graph.outputs.outerSum.axes, ["b", "l", "d"]);
  assert.deepEqual(graph.outputs.reordered.axes, ["d", "b"]);
  const data = {
    x: Float64Array.from({ length: 24 }, (_, i) => i - 11),
    a: Float64Array.from([3, -1, 0.5, -2, 7, 0.25]),
    c: Float64Array.from([10, 20, 30, 40]),
    D: Float64Array.from([1, -2, 3, -4]),
  };
  const out = interpret(graph, data);
  for (let bl = 0; bl < 6; bl++) {
    for (let d = 0; d < 4; d++) {
      const i = bl * 4 + d;
      assert.equal(out.scaled[i], data.D[d] * data.x[i] + 1);
      assert.equal(out.selected[i], data.a[bl] > 0 ? data.x[i] : data.D[d]);
      assert.equal(out.outerSum[i], data.a[bl] + data.c[d]);
      assert.equal(out.outerProduct[i], data.a[bl] * data.c[d]);
    }
  }
  assert.deepEqual([...out.reordered], [10, 10, 20, 20, 30, 30, 40, 40]);
});

Deno.test("broadcast rejects missing sizes, sizes of existing axes and dropped axes", () => {
  assert.match(
    traceError(({ x }) => broadcast(x, "b l d n", {})),
    /broadcast: axis "n" needs a positive integer size, e\.g\. \{ n: 4 \}/,
  );
  assert.match(
    traceError(({ x }) => broadcast(x, "b l d n", { n: 5, d: 4 })),
    /broadcast: sizes gives "d", which is not a new axis \(new: \[n\]\)/,
  );
  assert.match(
    traceError(({ x }) => broadcast(x, "b d", {})),
    /broadcast: the tensor \[b l d\] has l, which \[b d\] lacks/,
  );
});

Deno.test("the unchecked builder for compiler rewrites still makes outer broadcasts", () => {
  const graph = trace({ a: "b l", c: "d" }, ({ a, c }) => {
    return new Tensor(uncheckedBinary("add", a.node, c.node));
  }, { b: 2, l: 3, d: 4 });
  assert.deepEqual(graph.outputs.out.axes, ["b", "l", "d"]);
});

Deno.test("expectAxes checks untyped tensors' axes and order at trace time", () => {
  const untyped: Record<string, string> = { x: "b l d" };
  const graph = trace(untyped, (t) => expectAxes(t.x, "b l d"), sizes);
  assert.equal(graph.outputs.out, graph.inputs[0]);
  assert.match(
    traceError(({ x }) => expectAxes(x, "b d l")),
    /expectAxes: the tensor has axes \[b l d\], expected \[b d l\] \(use transpose/,
  );
  assert.match(
    traceError(({ x }) => expectAxes(x, "b l m")),
    /expectAxes: the tensor has axes \[b l d\], expected \[b l m\]$/,
  );
});
