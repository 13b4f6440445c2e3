/**
 * Mamba-3's SISO mixer core (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu 2026, "Mamba-3:
 * Improved Sequence Modeling using State Space Principles"; mamba_ssm's `Mamba3`), per head h
 * with state [p × n]:
 *
 *   Δ_t = softplus(dt_t + dt_bias),  A_t = −max(φ(a_t), 10⁻⁴),  α_t = exp(Δ_t A_t),  λ_t = σ(trap_t)
 *   B̂ = RMSNorm_n(B)·w_B + b_B,  Ĉ = RMSNorm_n(C)·w_C + b_C            (B/C norm and bias)
 *   Θ_t = Θ_{t−1} + π·tanh(θ_t)·Δ_t;  B̃ = R(Θ_t) B̂,  C̃ = R(Θ_t) Ĉ    (complex state as rotary)
 *   H_t = α_t H_{t−1} + (1 − λ_t)Δ_t α_t · x_{t−1} B̃_{t−1}ᵀ + λ_t Δ_t · x_t B̃_tᵀ   (trapezoid)
 *   y_t = H_t C̃_t + D x_t,  out = y · silu(z)
 *
 * φ(a) = a + 1 for a ≥ 0, 1/(1 − a) below (the authors' heavy-tail activation). R(Θ) rotates
 * the adjacent pairs (n_{2i}, n_{2i+1}) by Θ_i for the m angles given (m ≤ n/2; the authors'
 * rope_fraction 0.5 is m = n/4), the other pairs unrotated. λ = 1 is Mamba-2's Euler step. The
 * state carries H, Θ (mod 2π), and the last x and B̃ (the trapezoid's left end).
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, mul, silu } from "../../dsl/elementwise.ts";
import { mod } from "../../dsl/math.ts";
import { finalState, pick, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { mamba3Rotate, mamba3Steps, previous } from "./mamba3_parts.ts";

/** Mamba-3 state: H (b h p n), angles Θ (b h m), last x (b h p), last rotated B (b h n). */
export type Mamba3State = {
  /** The SSM state. */ ssm: Tensor;
  /** Accumulated rotary angles, in [0, 2π). */ angle: Tensor;
  /** The previous step's x. */ x: Tensor;
  /** The previous step's rotated, normed B (b h r n for MIMO). */ B: Tensor;
};

/**
 * Inputs: x, z (b t h p); B, C (b t n, shared by heads); dt, a, trap (b t h); θ (b t m).
 * Parameters: dtBias, D (h); normB, normC (n); biasB, biasC (h n). Decode: t = 1 with `init`.
 */
export function mamba3Siso(
  x: Record<"x" | "z" | "B" | "C" | "dt" | "a" | "trap" | "theta", Tensor>,
  p: Record<"dtBias" | "D" | "normB" | "normC" | "biasB" | "biasC", Tensor>,
  init?: Mamba3State,
): { y: Tensor; state: Mamba3State } {
  const { alpha, beta, gamma, angle } = mamba3Steps(x, p.dtBias, init?.angle);
  const B = mamba3Rotate(x.B, p.normB, p.biasB, angle, "b t h n", "adjacent");
  const C = mamba3Rotate(x.C, p.normC, p.biasC, angle, "b t h n", "adjacent");
  const outer = "b t h, b t h p, b t h n -> b t h p n";
  const input = add(
    einsum(outer, beta, previous(x.x, init?.x), previous(B, init?.B)),
    einsum(outer, gamma, x.x, B),
  );
  const H = scan("t", alpha, input, { init: init?.ssm });
  const y = add(einsum("b t h p n, b t h n -> b t h p", H, C), mul(p.D, x.x));
  const last = (v: Tensor) => pick(v, "t", -1);
  const state = {
    ssm: finalState(H),
    angle: mod(last(angle), 2 * Math.PI),
    x: last(x.x),
    B: last(B),
  };
  return { y: mul(y, silu(x.z)), state };
}
