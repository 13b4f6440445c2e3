/**
 * Mamba-3's MIMO mixer core of rank r (Lahoti et al. 2026, "Mamba-3"; mamba_ssm's TileLang
 * `mamba3_mimo`). The SISO recurrence (mamba3.ts) with r inputs and outputs per step: x is
 * lifted to r columns, B and C have r columns, and the state update is a rank-r product, so a
 * decode step does r× the arithmetic on the same state:
 *
 *   X_t = x_t ⊗ ψ_V   ([p × r], ψ_V: h r p),   B̃_t, C̃_t: [n × r] (normed, biased, rotated)
 *   H_t = α_t H_{t−1} + β_t X_{t−1} B̃_{t−1}ᵀ + γ_t X_t B̃_tᵀ              (sums over r)
 *   Y_t = H_t C̃_t + D X_t                                                ([p × r])
 *   out_t = Σ_r Y_t[:, r] ⊙ ψ_O[r] ⊙ silu(z_t ⊙ ψ_Z[r])                  (ψ_O, ψ_Z: h r p)
 *
 * α, β, γ and the angles are SISO's; the rotation pairs n_i with n_{i+n/2}, as the authors'
 * MIMO kernels do. The state carries H, Θ, the last x and the last B̃ (b h r n).
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, mul, silu } from "../../dsl/elementwise.ts";
import { mod } from "../../dsl/math.ts";
import { finalState, pick, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import type { Mamba3State } from "./mamba3.ts";
import { mamba3Rotate, mamba3Steps, previous } from "./mamba3_parts.ts";

/**
 * Inputs: x, z (b t h p); B, C (b t r n, shared by heads); dt, a, trap (b t h); θ (b t m).
 * Parameters: dtBias, D (h); normB, normC (n); biasB, biasC (h r n); mimoV, mimoZ, mimoO
 * (h r p). Decode: t = 1 with `init` (its B is b h r n).
 */
export function mamba3Mimo(
  x: Record<"x" | "z" | "B" | "C" | "dt" | "a" | "trap" | "theta", Tensor>,
  p: Record<
    "dtBias" | "D" | "normB" | "normC" | "biasB" | "biasC" | "mimoV" | "mimoZ" | "mimoO",
    Tensor
  >,
  init?: Mamba3State,
): { y: Tensor; state: Mamba3State } {
  const { alpha, beta, gamma, angle } = mamba3Steps(x, p.dtBias, init?.angle);
  const B = mamba3Rotate(x.B, p.normB, p.biasB, angle, "b t h r n", "halves");
  const C = mamba3Rotate(x.C, p.normC, p.biasC, angle, "b t h r n", "halves");
  const lift = (v: Tensor, psi: Tensor) => einsum("b t h p, h r p -> b t h r p", v, psi);
  const X = lift(x.x, p.mimoV);
  const outer = "b t h, b t h r p, b t h r n -> b t h p n";
  const input = add(
    einsum(outer, beta, lift(previous(x.x, init?.x), p.mimoV), previous(B, init?.B)),
    einsum(outer, gamma, X, B),
  );
  const H = scan("t", alpha, input, { init: init?.ssm });
  // out = Σ_r (H C̃_r + D X_r) ⊙ w_r with w_r = ψ_O[r] ⊙ silu(z ⊙ ψ_Z[r]); the r-sum is folded
  // into G = Σ_r C̃_r w_rᵀ first, so the scan's read-out is one contraction over n.
  const w = mul(p.mimoO, silu(lift(x.z, p.mimoZ)));
  const G = einsum("b t h r n, b t h r p -> b t h p n", C, w);
  const skip = mul(p.D, einsum("b t h r p, b t h r p -> b t h p", X, w));
  const out = add(einsum("b t h p n, b t h p n -> b t h p", H, G), skip);
  const last = (v: Tensor) => pick(v, "t", -1);
  const state = {
    ssm: finalState(H),
    angle: mod(last(angle), 2 * Math.PI),
    x: last(x.x),
    B: last(B),
  };
  return { y: out, state };
}
