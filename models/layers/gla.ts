/**
 * Gated linear attention (Yang, Wang, Shen, Panda, Kim 2024, "Gated Linear Attention Transformers
 * with Hardware-Efficient Training", arXiv:2312.06635): linear attention whose state decays by a
 * data-dependent vector gate over the key dimension. Per head:
 *
 *   S_t = diag(exp(g_t)) · S_{t−1} + k_t v_tᵀ      (S is [key × value], g_t ≤ 0 per key)
 *   o_t = scale · S_tᵀ q_t
 *
 * In the GLA layer g_t = logsigmoid(x_t W_g1 W_g2 + b) / 16 (low rank, FLA's
 * gate_logit_normalizer), followed by a per-head norm and a swish output gate; this file is the
 * recurrence those wrap (FLA's `chunk_gla` / `naive_recurrent_gla`).
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { exp, mul } from "../../dsl/elementwise.ts";
import { finalState, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import type { LinearAttentionOptions, LinearAttentionResult } from "./retnet.ts";

/**
 * GLA: S_t = diag(exp(gk_t))·S_{t−1} + k_t v_tᵀ, o_t = scale·S_tᵀ q_t, gk (b t h k) ≤ 0.
 * Decode is the same call with t = 1 and `init` = the previous state.
 *
 * ```ts
 * const { o, state } = gla(q, k, v, gk);
 * const step = gla(q1, k1, v1, gk1, { init: state });
 * ```
 */
export function gla(
  q: Tensor<"b t h k">,
  k: Tensor<"b t h k">,
  v: Tensor<"b t h v">,
  gk: Tensor<"b t h k">,
  options: LinearAttentionOptions = {},
): LinearAttentionResult {
  const scale = options.scale ?? 1 / Math.sqrt(q.size("k"));
  const S = scan("t", exp(gk), einsum("b t h k, b t h v -> b t h k v", k, v), {
    init: options.init,
  });
  const o = einsum("b t h k v, b t h k -> b t h v", S, mul(q, scale));
  return { o: o as Tensor<"b t h v">, state: finalState(S) as Tensor<"b h k v"> };
}
