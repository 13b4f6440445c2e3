/**
 * LBMamba's locally bidirectional scan (Zhang et al. 2025, "LBMamba: Locally Bi-directional
 * Mamba", arXiv:2506.15976). One global forward S6 scan plus a backward scan that restarts
 * every M tokens (in the authors' kernel it runs in each thread's registers), so each token also
 * sees the rest of its window without a second global scan:
 *
 *   ā_t = exp(Δ_t A),  b̄_t = Δ_t B_t x_t
 *   h^f_t = ā_t h^f_{t−1} + b̄_t                      (global, forward)
 *   h^b_t = ā_t h^b_{t+1} + b̄_t,  h^b_t = b̄_t at the last token of each window of M
 *   y_t = C_t · (h^f_t + h^b_t − b̄_t) + D x_t        (b̄_t is in both: counted once)
 *
 * The windows' restarts are a decay of 0 at each window's last token: a reverse `scan`.
 * LBVim alternates the scan direction every two layers (flip the sequence around this).
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, eq, exp, mul, softplus, sub, where } from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { mod } from "../../dsl/math.ts";
import { scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/**
 * The locally bidirectional selective scan: x, dt (b l d), B, C (b l n), A (d n, negative),
 * D and dtBias (d), window M (default 8, the reference's). Returns y (b l d), ungated.
 */
export function lbScan(
  x: { x: Tensor<"b l d">; dt: Tensor<"b l d">; B: Tensor<"b l n">; C: Tensor<"b l n"> },
  p: { A: Tensor<"d n">; D: Tensor<"d">; dtBias: Tensor<"d"> },
  window = 8,
): Tensor<"b l d"> {
  const delta = softplus(add(x.dt, p.dtBias));
  const decay = exp(einsum("b l d, d n -> b l d n", delta, p.A));
  const input = einsum("b l d, b l n, b l d -> b l d n", delta, x.B, x.x);
  const last = eq(mod(add(arange("l", x.x.size("l")), 1), window), 0);
  const hf = scan("l", decay, input);
  const hb = scan("l", where(last, 0, decay), input, { reverse: true });
  const y = einsum("b l d n, b l n -> b l d", sub(add(hf, hb), input), x.C);
  return add(y, mul(p.D, x.x)) as Tensor<"b l d">;
}
