/**
 * The pieces Mamba-3's SISO and MIMO mixers share (see mamba3.ts for the equations): the step
 * sizes and decays, the rotary angles, the normed, biased and rotated B and C, and the previous
 * step's value of a sequence (the trapezoid's left end).
 *
 * @module
 */

import { cumsum } from "../../dsl/assoc_scan.ts";
import { pad, shift } from "../../dsl/axis_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import * as E from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { cos, sin } from "../../dsl/math.ts";
import { rmsnorm } from "../../dsl/reduce.ts";
import { pick } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { rearrange } from "../../dsl/views.ts";

/**
 * Δ = softplus(dt + dt_bias); α = exp(−Δ·max(φ(a), 10⁻⁴)) with the heavy-tail φ; the trapezoid's
 * weights β = (1 − λ)Δα and γ = λΔ, λ = σ(trap); the angles Θ_t = Θ_0 + Σ_{s≤t} π·tanh(θ_s)·Δ_s
 * (b t h m).
 */
export function mamba3Steps(
  x: Record<"dt" | "a" | "trap" | "theta", Tensor>,
  dtBias: Tensor,
  angle0?: Tensor,
): Record<"alpha" | "beta" | "gamma" | "angle", Tensor> {
  const delta = E.softplus(E.add(x.dt, dtBias));
  const phi = E.add(E.relu(x.a), E.div(1, E.add(1, E.relu(E.neg(x.a)))));
  const alpha = E.exp(E.neg(E.mul(delta, E.maximum(phi, 1e-4))));
  const lam = E.sigmoid(x.trap);
  const inc = cumsum(
    einsum("b t h, b t m -> b t h m", delta, E.mul(E.tanh(x.theta), Math.PI)),
    "t",
  );
  return {
    alpha,
    beta: E.mul(E.mul(E.sub(1, lam), delta), alpha),
    gamma: E.mul(lam, delta),
    angle: angle0 ? E.add(angle0, inc) : inc,
  };
}

/**
 * RMSNorm over n, times `w`, plus the per-head `bias`, then rotated by `angle` (b t h m, padded
 * with unrotated pairs up to n/2). `axes` are the result's (b t h n, or b t h r n for MIMO);
 * `pairs` says which entries a rotation mixes: "adjacent" (n_{2i}, n_{2i+1}) as the authors' SISO
 * kernels, "halves" (n_i, n_{i+n/2}) as their MIMO kernels.
 */
export function mamba3Rotate(
  v: Tensor,
  w: Tensor,
  bias: Tensor,
  angle: Tensor,
  axes: string,
  pairs: "adjacent" | "halves",
): Tensor {
  const half = w.size("n") / 2, pre = axes.replace(/ n$/, "");
  const sizes = Object.fromEntries(
    bias.axes.filter((a) => !v.axes.includes(a)).map((a) => [a, bias.size(a)]),
  );
  const u0 = E.add(E.broadcast(rmsnorm(v, "n", w, 1e-5), axes, sizes), bias);
  const group = pairs === "adjacent" ? "(q two)" : "(two q)";
  const u = rearrange(u0, `${pre} ${group} -> ${pre} q two`, { two: 2 });
  const theta = pad(angle, "m", 0, half - angle.size("m"), "q");
  const [a, b, c, s] = [pick(u, "two", 0), pick(u, "two", 1), cos(theta), sin(theta)];
  const first = E.broadcast(E.sub(E.mul(a, c), E.mul(b, s)), `${pre} q two`, { two: 2 });
  const r = E.where(E.eq(arange("two", 2), 0), first, E.add(E.mul(a, s), E.mul(b, c)));
  return rearrange(r, `${pre} q two -> ${pre} n=${group}`);
}

/** v at the previous step along t; at step 0 `before` (the state's), or 0 without one. */
export function previous(v: Tensor, before?: Tensor): Tensor {
  if (!before) return shift(v, "t", 1);
  return E.where(E.eq(arange("t", v.size("t")), 0), before, shift(v, "t", 1));
}
