/**
 * VSSD's non-causal SSD (Shi, Dong, Xu 2024, "VSSD: Vision Mamba with Non-Causal State Space
 * Duality", arXiv:2407.18559). Dropping the magnitude of the interaction between tokens and
 * keeping each token's own weight turns Mamba-2's causal recurrence into an order-free sum, so
 * one pass replaces the multi-route scans. Per head h, with Δ_j = softplus(dt_j + b_h),
 * A_h = −exp(A_log_h):
 *
 *   w_j = −Δ_j A_h > 0,   H = Σ_j w_j B_j x_jᵀ   ([n × p], the whole sequence's state)
 *   y_i = Hᵀ C_i + D_h x_i
 *
 * The weight's sign is the authors' default (`ssd_positve_dA`: the decay Δ·A negated, so each
 * token's weight is positive). Two contractions (the compiler runs them as matmuls), O(l·n·p).
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, exp, mul, softplus } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/**
 * NC-SSD on x (b l h p), B, C (b l n, shared by heads), dt (b l h), with per-head dtBias,
 * A_log and D (h). Returns y (b l h p).
 */
export function vssd(
  x: { x: Tensor<"b l h p">; B: Tensor<"b l n">; C: Tensor<"b l n">; dt: Tensor<"b l h"> },
  p: { dtBias: Tensor<"h">; Alog: Tensor<"h">; D: Tensor<"h"> },
): Tensor<"b l h p"> {
  const w = mul(softplus(add(x.dt, p.dtBias)), exp(p.Alog));
  const H = einsum("b l h, b l n, b l h p -> b h n p", w, x.B, x.x);
  return add(einsum("b h n p, b l n -> b l h p", H, x.C), mul(p.D, x.x)) as Tensor<"b l h p">;
}
