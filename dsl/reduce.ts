/**
 * Reductions over named axes, and the compositions built from them (mean, softmax, rmsnorm).
 * The axes to reduce over are checked against the tensor's axes by TypeScript (for typed
 * tensors) and again at trace time.
 *
 * @module
 */

import {
  type CheckAxes,
  type CheckAxis,
  type IsLiteral,
  type KnownAxes,
  type Minus,
  parseAxes,
  showAxes,
  type Without,
  type Words,
} from "./axes.ts";
import { requireFloat } from "./build.ts";
import {
  add,
  type Bcast,
  type CheckBroadcast,
  checkedBinary,
  div,
  exp,
  mul,
  rsqrt,
  sub,
} from "./elementwise.ts";
import { makeNode, type Node, type ReduceOp } from "./ir.ts";
import { type AxesOf, Tensor, type TensorLike, toNode } from "./tensor.ts";

/** The type of a tensor with axes `A` reduced over the axes `R` (untyped when either is unknown). */
export type Reduced<A, R extends string> = KnownAxes<A> extends false ? Tensor
  : IsLiteral<R> extends false ? Tensor
  : A extends string ? Tensor<Without<A, R>>
  : Tensor;

/** `W` when every axis of `W` is an axis of `X`, else an error message (for rmsnorm's weight). */
export type CheckWeight<X, W> = KnownAxes<AxesOf<X>> extends false ? W
  : KnownAxes<AxesOf<W>> extends false ? W
  : Minus<Words<AxesOf<W>>, Words<AxesOf<X>>> extends [infer M extends string, ...string[]]
    ? `rmsnorm: the weight's axis ${M} is not an axis of x [${AxesOf<X>}]`
  : W;

function reduceNode(op: ReduceOp, x: Tensor, over: string): Node {
  const n = toNode(x, op);
  requireFloat(n, op);
  const axes = parseAxes(over, `${op}: axes`);
  if (axes.length === 0) throw new Error(`${op}: no axes to reduce over`);
  for (const a of axes) {
    if (!n.axes.includes(a)) {
      throw new Error(`${op}: cannot reduce over "${a}": the tensor has axes ${showAxes(n.axes)}`);
    }
  }
  const keep = n.axes.map((a, i) => [a, n.shape[i]] as const).filter(([a]) => !axes.includes(a));
  return makeNode({
    kind: "reduce",
    op,
    x: n,
    over: axes,
    axes: keep.map(([a]) => a),
    shape: keep.map(([, s]) => s),
    dtype: "f32",
  });
}

/** Sum over the named axes: `sum(x, "l")`, `sum(x, "l d")`. */
export function sum<X extends Tensor, R extends string>(
  x: X,
  over: CheckAxes<AxesOf<X>, R, "sum">,
): Reduced<AxesOf<X>, R> {
  return new Tensor(reduceNode("sum", x, over)) as Reduced<AxesOf<X>, R>;
}

/** Mean over the named axes. */
export function mean<X extends Tensor, R extends string>(
  x: X,
  over: CheckAxes<AxesOf<X>, R, "mean">,
): Reduced<AxesOf<X>, R> {
  const s = new Tensor(reduceNode("sum", x, over));
  const count = parseAxes(over).reduce((p, a) => p * x.size(a), 1);
  return mul(s, 1 / count) as Reduced<AxesOf<X>, R>;
}

/** `max(x, "axes")` reduces; `max(a, b)` is the elementwise maximum. */
export function max<X extends Tensor, R extends string>(
  x: X,
  over: CheckAxes<AxesOf<X>, R, "max">,
): Reduced<AxesOf<X>, R>;
/** Elementwise maximum with broadcasting (the rule of `add`). */
export function max<X extends TensorLike, Y extends TensorLike>(
  a: X,
  b: CheckBroadcast<X, Y, "maximum">,
): Bcast<X, Y>;
export function max(a: TensorLike, b: TensorLike | string): Tensor {
  if (typeof b !== "string") return checkedBinary("max", "maximum", a, b);
  return new Tensor(reduceNode("max", a as Tensor, b));
}

/** `min(x, "axes")` reduces; `min(a, b)` is the elementwise minimum. */
export function min<X extends Tensor, R extends string>(
  x: X,
  over: CheckAxes<AxesOf<X>, R, "min">,
): Reduced<AxesOf<X>, R>;
/** Elementwise minimum with broadcasting (the rule of `add`). */
export function min<X extends TensorLike, Y extends TensorLike>(
  a: X,
  b: CheckBroadcast<X, Y, "minimum">,
): Bcast<X, Y>;
export function min(a: TensorLike, b: TensorLike | string): Tensor {
  if (typeof b !== "string") return checkedBinary("min", "minimum", a, b);
  return new Tensor(reduceNode("min", a as Tensor, b));
}

/** Softmax along one axis (max-subtracted, so it never overflows). */
export function softmax<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "softmax">,
): X {
  const shifted = sub(x as Tensor, new Tensor(reduceNode("max", x, axis)));
  const e = exp(shifted);
  return div(e, new Tensor(reduceNode("sum", e, axis))) as X;
}

/**
 * RMSNorm along `axis`: x · rsqrt(mean(x²) + eps) · weight. The optional weight broadcasts
 * by name and must not have axes that x lacks.
 */
export function rmsnorm<X extends Tensor, Ax extends string, W extends Tensor = Tensor>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "rmsnorm">,
  weight?: CheckWeight<X, W>,
  eps = 1e-5,
): X {
  const nx = toNode(x, "rmsnorm");
  const t: Tensor = x;
  const ms = mean(mul(t, t), axis as string);
  const normed = mul(t, rsqrt(add(ms, eps)));
  if (weight === undefined) return normed as X;
  const nw = toNode(weight as Tensor, "rmsnorm");
  const extra = nw.axes.filter((a) => !nx.axes.includes(a));
  if (extra.length) {
    throw new Error(
      `rmsnorm: the weight ${showAxes(nw.axes)} has ${extra.join(", ")}, which x ` +
        `${showAxes(nx.axes)} lacks`,
    );
  }
  return mul(normed, weight as Tensor) as X;
}
