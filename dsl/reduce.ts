/**
 * Reductions over named axes, and the compositions built from them (mean, softmax, rmsnorm).
 *
 * @module
 */

import { parseAxes, showAxes, type Without } from "./axes.ts";
import { add, type Bcast, div, exp, maximum, minimum, mul, rsqrt, sub } from "./elementwise.ts";
import { requireFloat } from "./elementwise.ts";
import { makeNode, type ReduceOp } from "./ir.ts";
import { type IsAny, Tensor, type TensorLike, toNode } from "./tensor.ts";

/** The type of `x` reduced over the axes `R`. */
export type Reduced<A extends string, R extends string> = IsAny<A> extends true ? Tensor
  : Tensor<Without<A, R>>;

function reduce<A extends string, R extends string>(
  op: ReduceOp,
  x: Tensor<A>,
  over: R,
): Reduced<A, R> {
  const name = op === "sum" ? "sum" : op;
  const n = toNode(x, name);
  requireFloat(n, name);
  const axes = parseAxes(over, `${name}: axes`);
  if (axes.length === 0) throw new Error(`${name}: no axes to reduce over`);
  for (const a of axes) {
    if (!n.axes.includes(a)) {
      throw new Error(
        `${name}: cannot reduce over "${a}": the tensor has axes ${showAxes(n.axes)}`,
      );
    }
  }
  const keep = n.axes.map((a, i) => [a, n.shape[i]] as const).filter(([a]) => !axes.includes(a));
  return new Tensor(makeNode({
    kind: "reduce",
    op,
    x: n,
    over: axes,
    axes: keep.map(([a]) => a),
    shape: keep.map(([, s]) => s),
    dtype: "f32",
  })) as Reduced<A, R>;
}

/** Sum over the named axes: `sum(x, "l")`. */
export function sum<A extends string, R extends string>(x: Tensor<A>, over: R): Reduced<A, R> {
  return reduce("sum", x, over);
}

/** Mean over the named axes. */
export function mean<A extends string, R extends string>(x: Tensor<A>, over: R): Reduced<A, R> {
  const s = reduce("sum", x, over);
  const count = parseAxes(over).reduce((p, a) => p * x.size(a), 1);
  return mul(s, 1 / count) as unknown as Reduced<A, R>;
}

/** `max(x, "axes")` reduces; `max(a, b)` is the elementwise maximum. */
export function max<A extends string, R extends string>(x: Tensor<A>, over: R): Reduced<A, R>;
/** Elementwise maximum with broadcasting. */
export function max<X extends TensorLike, Y extends TensorLike>(a: X, b: Y): Bcast<X, Y>;
export function max(a: TensorLike, b: TensorLike | string): Tensor {
  return typeof b === "string" ? reduce("max", a as Tensor, b) : maximum(a, b);
}

/** `min(x, "axes")` reduces; `min(a, b)` is the elementwise minimum. */
export function min<A extends string, R extends string>(x: Tensor<A>, over: R): Reduced<A, R>;
/** Elementwise minimum with broadcasting. */
export function min<X extends TensorLike, Y extends TensorLike>(a: X, b: Y): Bcast<X, Y>;
export function min(a: TensorLike, b: TensorLike | string): Tensor {
  return typeof b === "string" ? reduce("min", a as Tensor, b) : minimum(a, b);
}

/** Softmax along one axis (max-subtracted, so it never overflows). */
export function softmax<A extends string>(x: Tensor<A>, axis: string): Tensor<A> {
  const shifted = sub(x, reduce("max", x, axis));
  const e = exp(shifted);
  return div(e, reduce("sum", e as Tensor, axis)) as unknown as Tensor<A>;
}

/**
 * RMSNorm along `axis`: x · rsqrt(mean(x²) + eps) · weight (weight optional, broadcast by name).
 */
export function rmsnorm<A extends string>(
  x: Tensor<A>,
  axis: string,
  weight?: Tensor,
  eps = 1e-5,
): Tensor<A> {
  const ms = mean(mul(x, x) as Tensor, axis);
  const normed = mul(x, rsqrt(add(ms, eps)));
  return (weight ? mul(normed, weight) : normed) as unknown as Tensor<A>;
}
