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

import { cumsum } from "../../dsl/assoc_scan.ts";
import { pad, shift } from "../../dsl/axis_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import * as E from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { cos, mod, sin } from "../../dsl/math.ts";
import { rmsnorm } from "../../dsl/reduce.ts";
import { finalState, pick, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { rearrange } from "../../dsl/views.ts";

/** Mamba-3 SISO state: H (b h p n), angles Θ (b h m), last x (b h p), last rotated B (b h n). */
export type Mamba3State = {
  /** The SSM state. */ ssm: Tensor;
  /** Accumulated rotary angles, in [0, 2π). */ angle: Tensor;
  /** The previous step's x. */ x: Tensor;
  /** The previous step's rotated, normed B. */ B: Tensor;
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
  const delta = E.softplus(E.add(x.dt, p.dtBias));
  const phi = E.add(E.relu(x.a), E.div(1, E.add(1, E.relu(E.neg(x.a)))));
  const alpha = E.exp(E.neg(E.mul(delta, E.maximum(phi, 1e-4))));
  const lam = E.sigmoid(x.trap);
  const inc = einsum("b t h, b t m -> b t h m", delta, E.mul(E.tanh(x.theta), Math.PI));
  const angle = init ? E.add(init.angle, cumsum(inc, "t")) : cumsum(inc, "t");
  const half = p.normB.size("n") / 2;
  const theta = pad(angle, "m", 0, half - x.theta.size("m"), "q"); // unrotated pairs: Θ = 0
  const rotate = (v: Tensor, w: Tensor, bias: Tensor) => {
    const u0 = E.add(E.broadcast(rmsnorm(v, "n", w, 1e-5), "b t h n", { h: bias.size("h") }), bias);
    const u = rearrange(u0, "b t h (q two) -> b t h q two", { two: 2 });
    const [a, b, c, s] = [pick(u, "two", 0), pick(u, "two", 1), cos(theta), sin(theta)];
    const even = E.eq(arange("two", 2), 0);
    const r0 = E.broadcast(E.sub(E.mul(a, c), E.mul(b, s)), "b t h q two", { two: 2 });
    const r = E.where(even, r0, E.add(E.mul(a, s), E.mul(b, c)));
    return rearrange(r, "b t h q two -> b t h n=(q two)");
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
  const last = {
    angle: mod(pick(angle, "t", -1), 2 * Math.PI),
    x: pick(x.x, "t", -1),
    B: pick(B, "t", -1),
  };
  return { y: E.mul(y, E.silu(x.z)), state: { ssm: finalState(H), ...last } };
}
