/**
 * HGRN2 (Qin, Yang, Sun, Shen, Li, Sun, Zhong 2024, "HGRN2: Gated Linear RNNs with State
 * Expansion", arXiv:2404.07904): a gated linear RNN whose forget gate doubles as the key
 * ("input gate = 1 − forget gate") and whose state is expanded by an outer product. Per head:
 *
 *   f_t = β + (1 − β)·σ(f̃_t)                    (β: the layer's lower bound, 0 in layer 0)
 *   S_t = diag(f_t) · S_{t−1} + (1 − f_t) i_tᵀ
 *   o_t = scale · S_tᵀ silu(q̃_t)
 *
 * That is GLA with q = silu(q̃), k = 1 − f, v = i and log-gate log f (FLA's `HGRN2Attention`).
 *
 * @module
 */

import { add, exp, log, mul, neg, sigmoid, silu, softplus, sub } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { gla } from "./gla.ts";
import type { LinearAttentionOptions, LinearAttentionResult } from "./retnet.ts";

/** Options of {@link hgrn2}: those of GLA plus the forget gate's lower bound. */
export interface Hgrn2Options extends LinearAttentionOptions {
  /** β in [0, 1): a number or a tensor over (h k); 0 (no bound) when absent. */
  lowerBound?: number | Tensor<"h k">;
}

/**
 * HGRN2 on the projections q̃, f̃ (b t h k) and i (b t h v). Decode: t = 1 with `init`.
 *
 * ```ts
 * const { o, state } = hgrn2(q, f, i, { lowerBound: 0.2 });
 * ```
 */
export function hgrn2(
  q: Tensor<"b t h k">,
  f: Tensor<"b t h k">,
  i: Tensor<"b t h v">,
  options: Hgrn2Options = {},
): LinearAttentionResult {
  const lb: Tensor | number = options.lowerBound ?? 0;
  // log σ(f̃) = −softplus(−f̃), exact for large |f̃| where log(sigmoid) would underflow.
  const logSig = neg(softplus(neg(f)));
  const g = lb === 0 ? logSig : log(add(lb, mul(sub(1, lb), sigmoid(f as Tensor))));
  const k = sub(1, exp(g)) as Tensor<"b t h k">;
  return gla(silu(q) as Tensor<"b t h k">, k, i, g as Tensor<"b t h k">, options);
}
