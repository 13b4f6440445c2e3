/**
 * Elementwise math with broadcasting by axis name: `mul(D /* d *\/, x /* b l d *\/)` is `b l d`.
 *
 * @module
 */

import { type Broadcast, broadcastAxes, showAxes } from "./axes.ts";
import { type BinaryOp, makeNode, type Node, type UnaryOp } from "./ir.ts";
import { type AxesOf, type IsAny, Tensor, type TensorLike, toNode } from "./tensor.ts";

/** Result type of broadcasting two tensor-likes (`any` when either is untyped). */
export type Bcast<X, Y> = IsAny<AxesOf<X>> extends true ? Tensor
  : IsAny<AxesOf<Y>> extends true ? Tensor
  : Tensor<Broadcast<AxesOf<X>, AxesOf<Y>>>;

/** Checks that axes shared by `a` and `b` have equal sizes and returns the broadcast shape. */
export function broadcastShapes(a: Node, b: Node, op: string): { axes: string[]; shape: number[] } {
  const axes = broadcastAxes(a.axes, b.axes);
  const shape = axes.map((axis) => {
    const ia = a.axes.indexOf(axis);
    const ib = b.axes.indexOf(axis);
    if (ia >= 0 && ib >= 0 && a.shape[ia] !== b.shape[ib]) {
      throw new Error(
        `${op}: size conflict on axis "${axis}": ${a.shape[ia]} in the first operand ` +
          `${showAxes(a.axes)} but ${b.shape[ib]} in the second ${showAxes(b.axes)}`,
      );
    }
    return ia >= 0 ? a.shape[ia] : b.shape[ib];
  });
  return { axes, shape };
}

/** Rejects integer tensors in float math. */
export function requireFloat(node: Node, op: string): void {
  if (node.dtype !== "f32") {
    throw new Error(
      `${op}: operand ${showAxes(node.axes)} has dtype ${node.dtype}; ` +
        `integer tensors can only be used as gather indices`,
    );
  }
}

function unary(op: UnaryOp) {
  return <X extends Tensor>(x: X): X => {
    const n = toNode(x, op);
    requireFloat(n, op);
    return new Tensor(
      makeNode({ kind: "unary", op, x: n, axes: n.axes, shape: n.shape, dtype: "f32" }),
    ) as X;
  };
}

/** Builds a binary elementwise node (shared by the public ops). */
export function binaryNode(op: BinaryOp, a: TensorLike, b: TensorLike): Node {
  const na = toNode(a, op);
  const nb = toNode(b, op);
  requireFloat(na, op);
  requireFloat(nb, op);
  const { axes, shape } = broadcastShapes(na, nb, op);
  return makeNode({ kind: "binary", op, a: na, b: nb, axes, shape, dtype: "f32" });
}

function binary(op: BinaryOp) {
  return <X extends TensorLike, Y extends TensorLike>(a: X, b: Y): Bcast<X, Y> =>
    new Tensor(binaryNode(op, a, b)) as Bcast<X, Y>;
}

/** `-x` */
export const neg = unary("neg");
/** `e^x` */
export const exp = unary("exp");
/** Natural logarithm. */
export const log = unary("log");
/** Square root. */
export const sqrt = unary("sqrt");
/** `1 / sqrt(x)` */
export const rsqrt = unary("rsqrt");
/** `|x|` */
export const abs = unary("abs");
/** `1 / (1 + e^-x)` */
export const sigmoid = unary("sigmoid");
/** `x · sigmoid(x)` (also called swish). */
export const silu = unary("silu");
/** `log(1 + e^x)`, computed stably (equal to x above 20, like PyTorch). */
export const softplus = unary("softplus");
/** Hyperbolic tangent. */
export const tanh = unary("tanh");
/** `max(x, 0)` */
export const relu = unary("relu");

/** `a + b` with broadcasting by axis name. */
export const add = binary("add");
/** `a - b` */
export const sub = binary("sub");
/** `a · b` */
export const mul = binary("mul");
/** `a / b` */
export const div = binary("div");
/** `a ^ b` (a ≥ 0, or b a small integer constant). */
export const pow = binary("pow");
/** `a < b` as 1 or 0. */
export const lt = binary("lt");
/** `a <= b` as 1 or 0. */
export const le = binary("le");
/** `a > b` as 1 or 0. */
export const gt = binary("gt");
/** `a >= b` as 1 or 0. */
export const ge = binary("ge");
/** `a == b` as 1 or 0. */
export const eq = binary("eq");
/** `a != b` as 1 or 0. */
export const ne = binary("ne");
/** Elementwise maximum of two tensors (for the reduction use `max(x, "axis")`). */
export const maximum = binary("max");
/** Elementwise minimum of two tensors (for the reduction use `min(x, "axis")`). */
export const minimum = binary("min");

/** `cond != 0 ? a : b`, broadcasting all three by axis name. */
export function where<C extends TensorLike, X extends TensorLike, Y extends TensorLike>(
  cond: C,
  a: X,
  b: Y,
): Bcast<C, Bcast<X, Y>> {
  const nc = toNode(cond, "where");
  const na = toNode(a, "where");
  const nb = toNode(b, "where");
  for (const n of [nc, na, nb]) requireFloat(n, "where");
  const ab = broadcastShapes(na, nb, "where");
  const abNode = { ...na, axes: ab.axes, shape: ab.shape } as Node;
  const { axes, shape } = broadcastShapes(nc, abNode, "where");
  return new Tensor(
    makeNode({ kind: "where", cond: nc, a: na, b: nb, axes, shape, dtype: "f32" }),
  ) as Bcast<C, Bcast<X, Y>>;
}
