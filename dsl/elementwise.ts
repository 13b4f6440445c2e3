/**
 * Elementwise math with broadcasting by axis name: `mul(D /* d *\/, x /* b l d *\/)` is `b l d`.
 *
 * @module
 */

import { type Broadcast, broadcastAxes, type Canon, parseAxes, showAxes } from "./axes.ts";
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

/** An elementwise function of one tensor. */
export type UnaryFn = <X extends Tensor>(x: X) => X;

/** An elementwise function of two tensor-likes, broadcasting by axis name. */
export type BinaryFn = <X extends TensorLike, Y extends TensorLike>(a: X, b: Y) => Bcast<X, Y>;

function unary(op: UnaryOp): UnaryFn {
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

function binary(op: BinaryOp): BinaryFn {
  return <X extends TensorLike, Y extends TensorLike>(a: X, b: Y): Bcast<X, Y> =>
    new Tensor(binaryNode(op, a, b)) as Bcast<X, Y>;
}

/** `-x` */
export const neg: UnaryFn = unary("neg");
/** `e^x` */
export const exp: UnaryFn = unary("exp");
/** Natural logarithm. */
export const log: UnaryFn = unary("log");
/** Square root. */
export const sqrt: UnaryFn = unary("sqrt");
/** `1 / sqrt(x)` */
export const rsqrt: UnaryFn = unary("rsqrt");
/** `|x|` */
export const abs: UnaryFn = unary("abs");
/** `1 / (1 + e^-x)` */
export const sigmoid: UnaryFn = unary("sigmoid");
/** `x · sigmoid(x)` (also called swish). */
export const silu: UnaryFn = unary("silu");
/** `log(1 + e^x)`, computed stably (equal to x above 20, like PyTorch). */
export const softplus: UnaryFn = unary("softplus");
/** Hyperbolic tangent. */
export const tanh: UnaryFn = unary("tanh");
/** `max(x, 0)` */
export const relu: UnaryFn = unary("relu");

/** `a + b` with broadcasting by axis name. */
export const add: BinaryFn = binary("add");
/** `a - b` */
export const sub: BinaryFn = binary("sub");
/** `a · b` */
export const mul: BinaryFn = binary("mul");
/** `a / b` */
export const div: BinaryFn = binary("div");
/** `a ^ b` (a ≥ 0, or b a small integer constant). */
export const pow: BinaryFn = binary("pow");
/** `a < b` as 1 or 0. */
export const lt: BinaryFn = binary("lt");
/** `a <= b` as 1 or 0. */
export const le: BinaryFn = binary("le");
/** `a > b` as 1 or 0. */
export const gt: BinaryFn = binary("gt");
/** `a >= b` as 1 or 0. */
export const ge: BinaryFn = binary("ge");
/** `a == b` as 1 or 0. */
export const eq: BinaryFn = binary("eq");
/** `a != b` as 1 or 0. */
export const ne: BinaryFn = binary("ne");
/** Elementwise maximum of two tensors (for the reduction use `max(x, "axis")`). */
export const maximum: BinaryFn = binary("max");
/** Elementwise minimum of two tensors (for the reduction use `min(x, "axis")`). */
export const minimum: BinaryFn = binary("min");

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

/**
 * A constant tensor with named axes: `full(0, "b s d", { b: 2, s: 3, d: 8 })`. It costs no
 * memory: kernels read the value as a literal.
 */
export function full<A extends string>(
  value: number,
  axes: A,
  sizes: Record<string, number>,
): Tensor<Canon<A>> {
  const names = parseAxes(axes, "full: axes");
  const shape = names.map((a) => {
    const s = sizes[a];
    if (!Number.isInteger(s) || s < 1) throw new Error(`full: axis "${a}" needs a positive size`);
    return s;
  });
  return new Tensor(makeNode({ kind: "const", value, axes: names, shape, dtype: "f32" }));
}
