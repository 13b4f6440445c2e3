/**
 * Unchecked IR builders for the compiler's own graph rewrites (einsum lowering, autodiff's
 * backward graphs). Unlike the public ops in `elementwise.ts`, they broadcast any two operands by
 * name, including into an outer product (`[a] ⊕ [b]` is `[a b]`): the strict rule that one
 * operand's axes contain the other's protects user code from misspelled axes, while a rewrite
 * that needs an outer broadcast means it. Not exported from `mod.ts`.
 *
 * @module
 */

import { broadcastAxes, showAxes } from "./axes.ts";
import { type BinaryOp, makeNode, type Node } from "./ir.ts";

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

/** Rejects integer tensors in float math (f32, f16 and bf16 are floats). */
export function requireFloat(node: Node, op: string): void {
  if (node.dtype === "i32") {
    throw new Error(
      `${op}: operand ${showAxes(node.axes)} has dtype ${node.dtype}; ` +
        `integer tensors can only be used as gather indices`,
    );
  }
}

/**
 * A binary elementwise node broadcasting `a` and `b` by name with no subset check: the result
 * has the longer operand's axes followed by the other's missing ones ({@link broadcastAxes}).
 * Sizes and dtypes are still checked.
 */
export function uncheckedBinary(op: BinaryOp, a: Node, b: Node): Node {
  requireFloat(a, op);
  requireFloat(b, op);
  const { axes, shape } = broadcastShapes(a, b, op);
  return makeNode({ kind: "binary", op, a, b, axes, shape, dtype: "f32" });
}

/** `cond != 0 ? a : b` broadcasting all three by name with no subset check (see above). */
export function uncheckedWhere(cond: Node, a: Node, b: Node): Node {
  for (const n of [cond, a, b]) requireFloat(n, "where");
  const ab = broadcastShapes(a, b, "where");
  const abNode = { ...a, axes: ab.axes, shape: ab.shape } as Node;
  const { axes, shape } = broadcastShapes(cond, abNode, "where");
  return makeNode({ kind: "where", cond, a, b, axes, shape, dtype: "f32" });
}
