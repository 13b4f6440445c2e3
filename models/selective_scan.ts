/**
 * The Mamba-1 selective scan written in the DSL: the program the compiler fuses into a single
 * kernel whose (b, l, d, n) state never touches memory. Shared by the demo, the tests and the
 * benchmarks.
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, silu, softplus } from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** Inputs of the selective scan (A is already negative: A = −exp(A_log)). */
export const SELECTIVE_SCAN_INPUTS = {
  x: "b l d",
  dt: "b l d",
  z: "b l d",
  B: "b l n",
  C: "b l n",
  A: "d n",
  D: "d",
  dtBias: "d",
} as const;

/** y = (Σ_n C·h + D·x) · silu(z) with h[t] = exp(Δ·A)·h[t−1] + Δ·B·x, Δ = softplus(dt + bias). */
export function selectiveScan(
  t: {
    x: Tensor<"b l d">;
    dt: Tensor<"b l d">;
    z: Tensor<"b l d">;
    B: Tensor<"b l n">;
    C: Tensor<"b l n">;
    A: Tensor<"d n">;
    D: Tensor<"d">;
    dtBias: Tensor<"d">;
  },
  options: { reverse?: boolean; init?: Tensor<"b d n"> } = {},
): { y: Tensor<"b l d">; state: Tensor } {
  const { x, dt, z, B, C, A, D, dtBias } = t;
  const delta = softplus(add(dt, dtBias));
  const h = scan(
    "l",
    exp(einsum("b l d, d n -> b l d n", delta, A)),
    einsum("b l d, b l n, b l d -> b l d n", delta, B, x),
    options,
  );
  const y = mul(add(einsum("b l d n, b l n -> b l d", h, C), mul(D, x)), silu(z));
  return { y, state: finalState(h) };
}
