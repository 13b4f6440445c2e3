// Bad programs are rejected at trace time with messages that name the problem.
import assert from "node:assert/strict";
import { einsum } from "../dsl/einsum.ts";
import { add } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import { trace } from "../dsl/trace.ts";
import { concat, conv1d, gather, rearrange, slice } from "../dsl/views.ts";
import type { Tensor } from "../dsl/tensor.ts";

// The runtime checks must hold even when types are bypassed (plain JS callers).
const untypedEinsum = einsum as unknown as (spec: string, ...t: Tensor[]) => Tensor;
const sizes = { b: 2, l: 3, d: 4, n: 5, k: 4, v: 9 };

function traceError(fn: (t: Record<string, Tensor>) => Tensor): string {
  try {
    trace(
      { x: "b l d", A: "d n", w: "d k", E: "v d", ids: { axes: "b l", dtype: "i32" } },
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
    traceError(({ x, A }) => einsum("b l d, d n -> b l q", x, A)),
    /output axis "q" appears in no operand/,
  );
  assert.match(traceError(({ x }) => untypedEinsum("b l d", x)), /exactly one "->"/);
  assert.match(traceError(({ x }) => untypedEinsum("b l d d -> b", x)), /axis "d" appears twice/);
});

Deno.test("size conflicts between operands name the axis and both sizes", () => {
  const msg = traceError(({ x, A }) => add(x, rearrange(A, "n d -> n d")));
  assert.match(msg, /size conflict on axis "d": 4 .* but 5/);
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
    traceError(({ x }) => rearrange(x, "b l d -> b l q")),
    /unknown on the right: q/,
  );
  assert.match(
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
    () => trace({ x: "b" }, () => 3 as unknown as Tensor, { b: 2 }),
    /must return a Tensor/,
  );
});
