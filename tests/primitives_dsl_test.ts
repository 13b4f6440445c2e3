// The primitives' types (checked by `deno test`'s type check: each @ts-expect-error must match a
// real error) and their trace-time errors (one line naming the op and the problem).
import assert from "node:assert/strict";
import { arange, causalMask, tensor, tril, triu } from "../dsl/index_ops.ts";
import { pad, rename, shift } from "../dsl/axis_ops.ts";
import { clamp, cos, erf, floor, gelu, mod, round, sin } from "../dsl/math.ts";
import { mul } from "../dsl/elementwise.ts";
import { trace } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** Never called: only type-checked. */
export function typeChecks(x: Tensor<"b l d">, D: Tensor<"d">): unknown[] {
  const a: Tensor<"l"> = arange("l", 4);
  const m: Tensor<"i j"> = causalMask("i", "j", 4);
  const lo: Tensor<"b l d"> = tril(x, "l", "d");
  const up: Tensor<"b l d"> = triu(x, "l", "d", 1);
  const t: Tensor<"i j"> = tensor([[1, 2]], "i j");
  const p: Tensor<"b m d"> = pad(x, "l", 1, 2, "m");
  const s: Tensor<"b l d"> = shift(x, "l", 1);
  const r: Tensor<"b s d"> = rename(x, "l", "s");
  const f: Tensor<"b l d"> = mul(sin(x), cos(floor(round(erf(x)))));
  const c: Tensor<"b l d"> = clamp(x, -1, D);
  const g: Tensor<"b l d"> = gelu(x, { approximate: "tanh" });
  const q: Tensor<"b l d"> = mod(D, x);
  // @ts-expect-error rename keeps the other axes and their order
  const bad1: Tensor<"b l d"> = rename(x, "l", "s");
  // @ts-expect-error pad names the padded axis anew
  const bad2: Tensor<"b l d"> = pad(x, "l", 1, 2, "m");
  // @ts-expect-error the mask's axes are (row, col)
  const bad3: Tensor<"j i"> = causalMask("i", "j", 4);
  return [a, m, lo, up, t, p, s, r, f, c, g, q, bad1, bad2, bad3];
}

function traceError(fn: (x: Tensor<"b l d">, ids: Tensor) => Tensor): string {
  try {
    trace(
      { x: "b l d", ids: { axes: "b l", dtype: "i32" } },
      ({ x, ids }) => fn(x, ids),
      { b: 2, l: 3, d: 4 },
    );
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error("expected the trace to fail");
}

Deno.test("primitives: bad arguments are rejected with one line naming the op and value", () => {
  const cases: [(x: Tensor<"b l d">, ids: Tensor) => Tensor, RegExp][] = [
    [() => arange("a b", 3), /arange: expected one axis name, got "a b"/],
    [() => arange("l", 0), /arange: size of axis "l" must be a positive integer, got 0/],
    [() => arange("l", 2 ** 24 + 1), /arange: axis "l" of size 16777217 is too long/],
    [() => causalMask("i", "i", 3), /causalMask: axes "i i": axis "i" appears twice/],
    [() => causalMask("i", "j", { i: 3 }), /causalMask: no size given for axis "j"/],
    [() => causalMask("i", "j", 3, { offset: 0.5 }), /causalMask: offset must be an integer/],
    [() => causalMask("i", "j", 3, { window: 0 }), /causalMask: window must be an integer ≥ 1/],
    [(x) => tril(x, "l", "z"), /tril: the tensor \[b l d\] has no axis "z"/],
    [() => tensor([[1, 2], [3]], "i j"), /tensor: axis "j" has 1 entries at \[1\] but 2 before/],
    [() => tensor([1, NaN], "t"), /tensor: value at \[1\] is NaN/],
    [() => tensor([1, 2], "i j"), /tensor: expected an array at \[0\] for axis "j"/],
    [
      () => tensor([[1]], "i"),
      /tensor: expected a number at \[0\] \(1 axes: \[i\]\), got an array/,
    ],
    [() => tensor([1e39], "t"), /tensor: value 1e\+39 at \[0\] does not fit in f32/],
    [() => tensor(new Array(257).fill(0), "t"), /tensor: 257 values; .* at most 256/],
    [(x) => pad(x, "l", -1, 0, "m"), /pad: before must be a non-negative integer, got -1/],
    [(x) => pad(x, "l", 1, 0, "d"), /pad: new axis "d" already exists in \[b l d\]/],
    [(x) => pad(x, "l", 1, 0, "l"), /pad: axis "l" grows from 3 to 4: give it a new name/],
    [(x) => pad(x, "l", 1, 0, "m", NaN), /pad: value is NaN/],
    [(_, ids) => pad(ids, "l", 1, 0, "m"), /pad: operand \[b l\] has dtype i32/],
    [(x) => shift(x, "l", 1.5), /shift: k must be an integer, got 1.5/],
    [(x) => shift(x, "q", 1), /shift: the tensor \[b l d\] has no axis "q"/],
    [(x) => rename(x, "q", "s"), /rename: the tensor \[b l d\] has no axis "q"/],
    [(x) => rename(x, "l", "d"), /rename: "d" is already an axis of \[b l d\]/],
    [(x) => clamp(x, 2, 1), /clamp: lo \(2\) is above hi \(1\)/],
    [
      (x) => gelu(x, { approximate: "fast" as "tanh" }),
      /gelu: approximate must be "none" or "tanh"/,
    ],
    [(_, ids) => sin(ids), /sin: operand \[b l\] has dtype i32/],
  ];
  for (const [fn, pattern] of cases) {
    const message = traceError(fn);
    assert.match(message, pattern);
    assert.ok(!message.includes("\n"), `one line: ${message}`);
  }
});

Deno.test("primitives: the identity cases return their input unchanged", () => {
  trace({ x: "b l d" }, ({ x }) => {
    assert.equal(shift(x, "l", 0), x);
    assert.equal(rename(x, "l", "l"), x);
    assert.deepEqual(pad(x, "l", 0, 0, "m").axes, ["b", "m", "d"]);
    return x;
  }, { b: 2, l: 3, d: 4 });
});
