/**
 * EfficientViM's hidden-state mixer (HSM-SSD; Lee, Choi, Kim, Hwang 2025, "EfficientViM:
 * Efficient Vision Mamba with Hidden State Mixer based State Space Duality", arXiv:2411.15241).
 * The channel mixing that Mamba-2 does on the l tokens is done on the n-column hidden state
 * instead, so the projections cost O(n·d²) rather than O(l·d²):
 *
 *   a = softmax_l(Δ + A)                       (Δ, B, C: b l n, from x by 1×1 + 3×3 convs)
 *   h = Σ_l x_l (B_l ⊙ a_l)ᵀ                   ([d × n], the hidden state)
 *   [ĥ, z] = W_hz h,   h' = W_o (ĥ ⊙ silu(z) + D ⊙ ĥ)
 *   y_l = h' C_l
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, mul, silu } from "../../dsl/elementwise.ts";
import { softmax } from "../../dsl/reduce.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { rename } from "../../dsl/axis_ops.ts";
import { slice } from "../../dsl/views.ts";

/**
 * HSM-SSD on x (b l d) and Δ, B, C (b l n). Parameters: A (n); W_hz (e d) with e = 2d (rows
 * of ĥ, then of z); W_o (d d), as `wo` (o d) with o = d; D (d). Returns y (b l d).
 */
export function hsmSsd(
  x: { x: Tensor<"b l d">; dt: Tensor<"b l n">; B: Tensor<"b l n">; C: Tensor<"b l n"> },
  p: { A: Tensor<"n">; whz: Tensor<"e d">; wo: Tensor<"o d">; D: Tensor<"d"> },
): Tensor<"b l d"> {
  const d = x.x.size("d");
  const a = softmax(add(x.dt, p.A), "l");
  const h = einsum("b l d, b l n, b l n -> b d n", x.x, x.B, a);
  const hz = einsum("e d, b d n -> b e n", p.whz, h);
  const hh = slice(hz, "e", 0, d, "d"), z = slice(hz, "e", d, 2 * d, "d");
  const mixed = add(mul(hh, silu(z)), mul(p.D, hh));
  const out = rename(einsum("o d, b d n -> b o n", p.wo, mixed), "o", "d");
  return einsum("b d n, b l n -> b l d", out, x.C) as Tensor<"b l d">;
}
