/**
 * `cast(x, dtype)`: where a program rounds. Math in ssmkit is f32; a cast to `f16` or `bf16`
 * rounds each value to the nearest value of that type (ties to even) and marks the result with
 * that dtype, and a cast to `f32` marks a 16-bit tensor as an f32 one (exact: every f16 and bf16
 * value is an f32). The interpreter rounds at the same places, so it stays the kernels' oracle.
 *
 * @module
 */

import { requireFloat } from "./build.ts";
import { type FloatDType, makeNode } from "./ir.ts";
import { Tensor, toNode } from "./tensor.ts";

const FLOAT_DTYPES: readonly FloatDType[] = ["f32", "f16", "bf16"];

/**
 * `x` in `dtype` (`"f32"`, `"f16"` or `"bf16"`), keeping its axes: rounded to nearest-even for a
 * 16-bit dtype, unchanged for f32 (and when `x` already has `dtype`). The gradient passes
 * through unchanged.
 */
export function cast<X extends Tensor>(x: X, dtype: FloatDType): X {
  const n = toNode(x, "cast");
  requireFloat(n, "cast");
  if (!FLOAT_DTYPES.includes(dtype)) {
    throw new Error(
      `cast: dtype ${JSON.stringify(dtype)} is not one of ${FLOAT_DTYPES.join(", ")}`,
    );
  }
  if (n.dtype === dtype) return x;
  const { axes, shape } = n;
  const node = dtype === "f32"
    // Every 16-bit value is an f32: only the dtype changes (an identity permute is free).
    ? makeNode({ kind: "permute", x: n, axes, shape, dtype })
    : makeNode({ kind: "unary", op: `round_${dtype}`, x: n, axes, shape, dtype });
  return new Tensor(node) as X;
}
