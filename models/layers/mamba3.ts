/**
 * Mamba-3's SISO mixer core (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu 2025/26, "Mamba-3:
 * Improved Sequence Modeling using State Space Principles"), per head h with state [p × n]:
 *
 *   Δ_t = softplus(dt_t + dt_bias),  A_t = −softplus(a_t),  α_t = exp(Δ_t A_t),  λ_t = σ(trap_t)
 *   B̂ = RMSNorm_n(B)·w_B + b_B,  Ĉ = RMSNorm_n(C)·w_C + b_C            (B/C norm and bias)
 *   Θ_t = Θ_{t−1} + π·tanh(θ_t)·Δ_t;  B̃ = R(Θ_t) B̂,  C̃ = R(Θ_t) Ĉ    (complex state as rotary)
 *   H_t = α_t H_{t−1} + (1 − λ_t)Δ_t α_t · x_{t−1} B̃_{t−1}ᵀ + λ_t Δ_t · x_t B̃_tᵀ   (trapezoid)
 *   y_t = H_t C̃_t + D x_t,  out = y · silu(z)
 *
 * R(Θ) rotates the pairs (n_i, n_{i+n/2}) by Θ_i (rotate-half layout). λ = 1 gives Mamba-2's
 * Euler step. The state carries H, Θ, and the last x and B̃ (the trapezoid's left end).
 *
 * @module
 */

import { cumsum } from "../../dsl/assoc_scan.ts";
import { shift } from "../../dsl/axis_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import * as E from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { cos, sin } from "../../dsl/math.ts";
import { rmsnorm } from "../../dsl/reduce.ts";
import { finalState, pick, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { concat, slice } from "../../dsl/views.ts";

/** Mamba-3 SISO state: H (b h p n), angles Θ (b h m), last x (b h p), last rotated B (b h n). */
export interface Mamba3State {
  /** The SSM state. */ ssm: Tensor;
  /** Accumulated rotary angles. */ angle: Tensor;
  /** The previous step's x. */ x: Tensor;
  /** The previous step's rotated, normed B. */ B: Tensor;
}

/**
 * Inputs: x, z (b t h p); B, C (b t n, shared by heads); dt, a, trap (b t h); θ (b t m),
 * m = n/2. Parameters: dtBias, D (h); normB, normC (n); biasB, biasC (h n). Decode: t = 1 with
 * `init` = the previous state.
 */
export function mamba3Siso(
  x: Record<"x" | "z" | "B" | "C" | "dt" | "a" | "trap" | "theta", Tensor>,
  p: Record<"dtBias" | "D" | "normB" | "normC" | "biasB" | "biasC", Tensor>,
  init?: Mamba3State,
): { y: Tensor; state: Mamba3State } {
  const delta = E.softplus(E.add(x.dt, p.dtBias));
  const alpha = E.exp(E.mul(delta, E.neg(E.softplus(x.a))));
  const lam = E.sigmoid(x.trap);
  const inc = einsum("b t h, b t m -> b t h m", delta, E.mul(E.tanh(x.theta), Math.PI));
  const angle = init ? E.add(init.angle, cumsum(inc, "t")) : cumsum(inc, "t");
  const rotate = (v: Tensor, w: Tensor, bias: Tensor) => {
    const h = bias.size("h"), m = x.theta.size("m");
    const u = E.add(E.broadcast(rmsnorm(v, "n", w, 1e-5), "b t h n", { h }), bias);
    const [u1, u2] = [slice(u, "n", 0, m, "m"), slice(u, "n", m, 2 * m, "m")];
    const [c, s] = [cos(angle), sin(angle)];
    const r1 = E.sub(E.mul(u1, c), E.mul(u2, s)), r2 = E.add(E.mul(u1, s), E.mul(u2, c));
    return concat([r1, r2], ["m", "m"], "n");
  };
  const B = rotate(x.B, p.normB, p.biasB), C = rotate(x.C, p.normC, p.biasC);
  // The previous step's x and B̃; at step 0 those of the state (zero without one).
  const first = E.eq(arange("t", x.x.size("t")), 0);
  const prev = (v: Tensor, s?: Tensor) =>
    s ? E.where(first, s, shift(v, "t", 1)) : shift(v, "t", 1);
  const beta = E.mul(E.mul(E.sub(1, lam), delta), alpha), gamma = E.mul(lam, delta);
  const outer = "b t h, b t h p, b t h n -> b t h p n";
  const input = E.add(
    einsum(outer, beta, prev(x.x, init?.x), prev(B, init?.B)),
    einsum(outer, gamma, x.x, B),
  );
  const H = scan("t", alpha, input, { init: init?.ssm });
  const y = E.add(einsum("b t h p n, b t h n -> b t h p", H, C), E.mul(p.D, x.x));
  const state = {
    ssm: finalState(H),
    angle: pick(angle, "t", -1),
    x: pick(x.x, "t", -1),
    B: pick(B, "t", -1),
  };
  return { y: E.mul(y, E.silu(x.z)), state };
}
