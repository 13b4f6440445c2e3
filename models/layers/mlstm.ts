/**
 * The mLSTM cell of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory",
 * arXiv:2405.04517), stabilized. Exponential input gate, sigmoid forget gate, matrix memory:
 *
 *   m_t = max(log σ(f̃_t) + m_{t−1}, ĩ_t)                 (the stabilizer: a (max, +) scan)
 *   f'_t = exp(log σ(f̃_t) + m_{t−1} − m_t),  i'_t = exp(ĩ_t − m_t)
 *   C_t = f'_t C_{t−1} + i'_t k_t v_tᵀ,  n_t = f'_t n_{t−1} + i'_t k_t   (k scaled by 1/√d)
 *   h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, exp(−m_t))
 *
 * m is an associative scan of (Σ log σ, max) pairs (docs/associative_scans.md); C and n are
 * two linear scans sharing f'. The output gate and projections of the block wrap this cell.
 *
 * @module
 */

import { associativeScan } from "../../dsl/assoc_scan.ts";
import { shift } from "../../dsl/axis_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import {
  abs,
  add,
  div,
  eq,
  exp,
  maximum,
  mul,
  neg,
  softplus,
  sub,
  where,
} from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { finalState, pick, scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/** The mLSTM state: memory C (b h k v), normalizer n (b h k), stabilizer m (b h). */
export type MlstmState = {
  /** Matrix memory, scaled by exp(−m). */
  C: Tensor<"b h k v">;
  /** Normalizer, scaled by exp(−m). */
  n: Tensor<"b h k">;
  /** Stabilizer (log scale of C and n). */
  m: Tensor<"b h">;
};

/**
 * The stabilized mLSTM on q, k (b t h k), v (b t h v) and gate pre-activations ĩ, f̃ (b t h).
 * Decode: t = 1 with `init` = the previous state. `scale` multiplies k (default 1/√k).
 */
export function mlstm(
  x: { q: Tensor<"b t h k">; k: Tensor<"b t h k">; v: Tensor<"b t h v">; i: Tensor; f: Tensor },
  options: { init?: MlstmState; scale?: number } = {},
): { h: Tensor<"b t h v">; state: MlstmState } {
  const init = options.init;
  const logf = neg(softplus(neg(x.f))); // log σ(f̃), exact for very negative f̃
  // From a state, step 0's candidate is max(log σ(f̃_0) + m_0, ĩ_0): the scan then runs from −∞.
  const first = eq(arange("t", x.f.size("t")), 0);
  const i0 = init ? where(first, maximum(add(logf, init.m), x.i), x.i) : x.i;
  const { m } = associativeScan("t", (a, b) => ({
    s: add(a.s, b.s),
    m: maximum(add(a.m, b.s), b.m),
  }), { s: logf, m: i0 });
  // m_{t−1}; without a state, step 0's decay multiplies zeros, so any finite stand-in does.
  const mPrev = init ? where(first, init.m, shift(m, "t", 1)) : shift(m, "t", 1);
  const decay = exp(sub(add(logf, mPrev), m));
  const gate = exp(sub(x.i, m));
  const k = mul(x.k, options.scale ?? 1 / Math.sqrt(x.k.size("k")));
  const C = scan("t", decay, einsum("b t h, b t h k, b t h v -> b t h k v", gate, k, x.v), {
    init: init?.C,
  });
  const n = scan("t", decay, einsum("b t h, b t h k -> b t h k", gate, k), { init: init?.n });
  const num = einsum("b t h k v, b t h k -> b t h v", C, x.q);
  const den = maximum(abs(einsum("b t h k, b t h k -> b t h", n, x.q)), exp(neg(m)));
  const state = { C: finalState(C), n: finalState(n), m: pick(m, "t", -1) } as MlstmState;
  return { h: div(num, den) as Tensor<"b t h v">, state };
}
