/**
 * RetNet's retention (Sun et al. 2023, "Retentive Network: A Successor to Transformer for Large
 * Language Models", arXiv:2307.08621) and simple GLA, its data-dependent form (the scalar-gate
 * case of GLA, Yang et al. 2024; Mamba-2's SSD is the same recurrence). Per head h:
 *
 *   S_t = γ_t · S_{t−1} + k_t v_tᵀ          (S is [key × value])
 *   o_t = scale · S_tᵀ q_t
 *
 * Retention fixes γ per head to RetNet's multi-scale decays γ_h = 1 − 2^(−5−h); simple GLA takes
 * log γ_t = g_t per (batch, step, head). A scalar decay per head is what lets the compiler run the
 * chunked SSD kernels (matmuls within chunks, a short pass over chunk states).
 *
 * @module
 */

import { arange } from "../../dsl/index_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import { add, exp, log, mul, sub } from "../../dsl/elementwise.ts";
import { finalState, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/** Options of the linear-attention layers: the output scale and the state entering step 0. */
export interface LinearAttentionOptions {
  /** Factor on every output (default 1/√(key size), as in FLA). */
  scale?: number;
  /** The state before the first step, (b h k v) as FLA lays it out (zero when absent). */
  init?: Tensor<"b h k v">;
}

/** What a linear-attention layer returns: the output and the state after the last step. */
export type LinearAttentionResult = {
  /** The output o (b t h v). */
  o: Tensor<"b t h v">;
  /** S after the last step (b h k v): pass it back as `init` to continue (decode: t = 1). */
  state: Tensor<"b h k v">;
};

/**
 * Simple GLA: S_t = exp(g_t)·S_{t−1} + k_t v_tᵀ, o_t = scale·S_tᵀ q_t, with log-decays g (b t h).
 *
 * ```ts
 * const { o, state } = simpleGla(q, k, v, g);            // prefill
 * const next = simpleGla(q1, k1, v1, g1, { init: state }); // one decode step (t = 1)
 * ```
 */
export function simpleGla(
  q: Tensor<"b t h k">,
  k: Tensor<"b t h k">,
  v: Tensor<"b t h v">,
  g: Tensor,
  options: LinearAttentionOptions = {},
): LinearAttentionResult {
  const scale = options.scale ?? 1 / Math.sqrt(q.size("k"));
  const S = scan("t", exp(g), einsum("b t h k, b t h v -> b t h k v", k, v), {
    init: options.init,
  });
  const o = einsum("b t h k v, b t h k -> b t h v", S, mul(q, scale));
  return { o: o as Tensor<"b t h v">, state: finalState(S) as Tensor<"b h k v"> };
}

/** log γ_h = log(1 − 2^(−5−h)) for h = 0 … heads − 1: RetNet's multi-scale decays. */
export function retentionLogDecay(heads: number): Tensor<"h"> {
  return log(sub(1, exp(mul(-Math.LN2, add(arange("h", heads), 5)))) as Tensor<"h">);
}

/** Retention: simple GLA with RetNet's fixed decay γ_h per head (no normalization or gate). */
export function retention(
  q: Tensor<"b t h k">,
  k: Tensor<"b t h k">,
  v: Tensor<"b t h v">,
  options: LinearAttentionOptions = {},
): LinearAttentionResult {
  return simpleGla(q, k, v, retentionLogDecay(q.size("h")), options);
}
