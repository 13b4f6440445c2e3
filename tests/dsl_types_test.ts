// Type-level tests: `deno check tests/` (and `deno test`) type-checks this file. Each
// `@ts-expect-error` must match a real type error and each `exact` call must see exactly the
// expected type (not merely an assignable one, which `any` would be), so these assertions fail
// the check if the typed DSL stops catching a mistake or starts losing a type.
import { einsum } from "../dsl/einsum.ts";
import { add, broadcast, full, gt, mul, sub, where } from "../dsl/elementwise.ts";
import { max, mean, min, rmsnorm, softmax, sum } from "../dsl/reduce.ts";
import { finalState, pick, scan } from "../dsl/scan.ts";
import { expectAxes, type Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { concat, flip, gather, rearrange, slice, transpose } from "../dsl/views.ts";

/** True when `A` and `B` are the same type (`any` equals only `any`). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;
/** Compiles only when `value`'s type is exactly `Expected`. */
function exact<Expected>() {
  return <T>(value: T & (Equal<T, Expected> extends true ? unknown : never)): T => value;
}

/** Never called: only type-checked. */
export function einsumAndBroadcast(
  x: Tensor<"b l d">,
  A: Tensor<"d n">,
  D: Tensor<"d">,
  q: Tensor<"b l h dk">,
  k: Tensor<"b l h d">,
): unknown[] {
  const y = exact<Tensor<"b l d n">>()(einsum("b l d, d n -> b l d n", x, A));
  const t = exact<Tensor<"b l d">>()(einsum("b  l d ,d n->b l d", x, A));
  const z = exact<Tensor<"b l d">>()(mul(D, x));
  const w = exact<Tensor<"b l d">>()(add(x, 1));
  // @ts-expect-error operand 1 is [b l d] but the spec says [b d]
  einsum("b d, d n -> b n", x, A);
  // @ts-expect-error too few operands
  einsum("b l d, d n -> b l n", x);
  // @ts-expect-error a typo in the output axes: q appears in no operand
  einsum("b l d, d n -> b l q", x, A);
  // @ts-expect-error the broadcast result is [b l d], not [b d]
  const bad: Tensor<"b d"> = mul(D, x);
  // The hazard: d was meant to be dk. Each operand brings an axis the other lacks.
  // @ts-expect-error mul: [b l h dk] has dk and [b l h d] has d, which the other lacks
  sum(mul(q, k), "dk");
  // @ts-expect-error the same for every elementwise op
  add(x, A);
  // @ts-expect-error and for max(a, b)
  max(x, A);
  // @ts-expect-error where: no operand has every axis of the others
  where(gt(x, 0), A, D);
  // @ts-expect-error scan's decay and input follow the same rule
  scan("l", x, A);
  // The explicit forms of an outer product.
  const outer = exact<Tensor<"b l h dk d">>()(einsum("b l h dk, b l h d -> b l h dk d", q, k));
  const spread = exact<Tensor<"b l h d dk">>()(broadcast(k, "b l h d dk", { dk: 64 }));
  const summed = exact<Tensor<"b l h d dk">>()(add(spread, q));
  // @ts-expect-error broadcast needs the size of exactly the new axes
  broadcast(k, "b l h d dk", { d: 64 });
  // @ts-expect-error broadcast cannot drop an axis
  broadcast(k, "b l h dk", { dk: 64 });
  // Where one operand has every axis, where() accepts the others.
  const selected = exact<Tensor<"b l d">>()(where(x, D, 0));
  return [y, t, z, w, bad, outer, spread, summed, selected];
}

/** Never called: only type-checked. */
export function reductions(x: Tensor<"b l d">, untyped: Tensor): unknown[] {
  const s = exact<Tensor<"b d">>()(sum(x, "l"));
  const s2 = exact<Tensor<"b">>()(sum(x, "l d"));
  const m = exact<Tensor<"b l">>()(max(x, "d"));
  const n = exact<Tensor<"b d">>()(min(x, "l"));
  const mu = exact<Tensor<"l d">>()(mean(x, "b"));
  const sm = exact<Tensor<"b l d">>()(softmax(x, "d"));
  const rn = exact<Tensor<"b l d">>()(rmsnorm(x, "d", full(1, "d", { d: 4 })));
  // max/min of an untyped tensor are untyped (they were Tensor<string>, which einsum refused).
  const um = exact<Tensor>()(max(untyped, "d"));
  const un = exact<Tensor>()(min(untyped, "d"));
  einsum("b l, b l -> b", um, un);
  // @ts-expect-error sum: q is not an axis of the tensor [b l d]
  sum(x, "q");
  // @ts-expect-error one missing axis among several is reported
  sum(x, "l q");
  // @ts-expect-error max over a missing axis
  max(x, "q");
  // @ts-expect-error mean over a missing axis
  mean(x, "q");
  // @ts-expect-error softmax along a missing axis
  softmax(x, "q");
  // @ts-expect-error rmsnorm along a missing axis
  rmsnorm(x, "q");
  // @ts-expect-error the weight must not bring axes x lacks
  rmsnorm(x, "d", full(1, "n", { n: 2 }));
  // @ts-expect-error softmax takes one axis
  softmax(x, "l d");
  return [s, s2, m, n, mu, sm, rn, um, un];
}

/** Never called: only type-checked. */
export function views(
  x: Tensor<"b l d">,
  xz: Tensor<"b l e">,
  E: Tensor<"v m">,
  ids: Tensor<"b l">,
  untyped: Tensor,
): unknown[] {
  const heads = exact<Tensor<"b l h p">>()(rearrange(x, "b l (h p) -> b l h p", { p: 2 }));
  const merged = exact<Tensor<"b l d">>()(rearrange(heads, "b l h p -> b l d=(h p)"));
  const spaced = exact<Tensor<"b l d">>()(rearrange(heads, "b l h p -> b l d = (h p)"));
  // The result type comes from the pattern, even for an untyped tensor.
  const perHead = exact<Tensor<"g r">>()(rearrange(untyped, "(g r) -> g r", { g: 2 }));
  // A pattern built at run time cannot be read by TypeScript: the result is untyped.
  const names: string = "b l d";
  const dynamic = exact<Tensor>()(rearrange(x, `${names} -> ${names}`));
  // @ts-expect-error a merged output axis needs a name
  rearrange(heads, "b l h p -> b l (h p)");
  // @ts-expect-error the left side has 2 entries but the tensor has 3 axes
  rearrange(x, "b l -> b l");
  // @ts-expect-error d is missing on the right (q is unknown)
  rearrange(x, "b l d -> b l q");
  // @ts-expect-error exactly one "->"
  rearrange(x, "b l d");
  const sliced = exact<Tensor<"b l d">>()(slice(xz, "e", 0, 3, "d"));
  // @ts-expect-error slice: q is not an axis
  slice(xz, "q", 0, 3, "d");
  // @ts-expect-error slice: the new axis l already exists
  slice(xz, "e", 0, 3, "l");
  const joined = exact<Tensor<"b k d">>()(concat([x, x], ["l", "l"], "k"));
  const looked = exact<Tensor<"b l m">>()(gather(E, ids, "v"));
  // @ts-expect-error gather: q is not an axis of the table
  gather(E, ids, "q");
  const moved = exact<Tensor<"d b l">>()(transpose(x, "d b l"));
  // @ts-expect-error transpose must keep every axis
  transpose(x, "d b");
  const flipped = exact<Tensor<"b l d">>()(flip(x, "l"));
  // @ts-expect-error flip: q is not an axis
  flip(x, "q");
  const last = exact<Tensor<"b d">>()(pick(x, "l", -1));
  // @ts-expect-error pick: q is not an axis
  pick(x, "q", 0);
  const checked = exact<Tensor<"b l m">>()(expectAxes(untyped, "b l m"));
  return [
    heads,
    merged,
    spaced,
    perHead,
    dynamic,
    sliced,
    joined,
    looked,
    moved,
    flipped,
    last,
    checked,
  ];
}

/** Never called: only type-checked. */
export function inputs(): unknown[] {
  // Inline input specs are typed.
  const typed = trace({ x: "b l d", A: "d n" }, ({ x, A }) => {
    exact<Tensor<"b l d">>()(x);
    return einsum("b l d, d n -> b l n", x, A);
  }, {});
  // A spec held in a variable without `as const` has `string` axes: its tensors are untyped
  // (checked at trace time), not `Tensor<string>`, which every einsum refused.
  const spec = { x: "b l d", A: "d n" };
  const loose = trace(spec, ({ x, A }) => {
    exact<Tensor>()(x);
    return einsum("b l d, d n -> b l n", x, A);
  }, {});
  const constSpec = { x: "b l d" } as const;
  const pinned = trace(constSpec, ({ x }) => exact<Tensor<"b l d">>()(x), {});
  // scan results are typed from decay and input.
  const scanned = trace(
    { a: "b l d", u: "b l d n" },
    ({ a, u }) => exact<Tensor<"b l d n">>()(scan("l", a, u)),
    {},
  );
  const state = trace({ a: "b l" }, ({ a }) => finalState(scan("l", a, sub(a, 1))), {});
  return [typed, loose, pinned, scanned, state];
}

Deno.test("typed DSL: this file type-checks (the checks above are the test)", () => {
  for (const f of [einsumAndBroadcast, reductions, views, inputs]) {
    if (typeof f !== "function") throw new Error("unreachable");
  }
});
