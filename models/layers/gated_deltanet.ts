/**
 * Gated DeltaNet (Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with
 * Delta Rule", arXiv:2412.06464): the delta rule's targeted write with Mamba-2's scalar decay.
 * Per head, with q and k L2-normalized:
 *
 *   S_t = S_{t−1} · α_t (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ       (S is [value × key])
 *   o_t = scale · S_t q_t,   α_t = exp(g_t) ∈ (0, 1],  β_t ∈ (0, 1)
 *
 * The recurrence is the DSL's `deltaRule` (docs/delta_rule.md), which the compiler runs as one
 * recurrent kernel or as the chunked WY/UT kernels. The layer's projections, short convs and
 * output norm wrap this.
 *
 * @module
 */

import { deltaRule } from "../../dsl/delta.ts";
import { einsum } from "../../dsl/einsum.ts";
import { add, mul, rsqrt } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/** x / ‖x‖₂ over the key axis (FLA's l2norm, ε = 1e-6 inside the root). */
function l2normalize(x: Tensor<"b t h k">): Tensor<"b t h k"> {
  return mul(x, rsqrt(add(einsum("b t h k, b t h k -> b t h", x, x), 1e-6))) as Tensor<"b t h k">;
}

/**
 * Gated DeltaNet on q, k (b t h k), v (b t h v), β (b t h) and log-decays g (b t h, ≤ 0).
 * Returns o (b t h v) and the state (b h v k); decode: t = 1 with `init` = that state.
 *
 * ```ts
 * const { o, state } = gatedDeltaNet({ q, k, v, beta, g });
 * ```
 */
export function gatedDeltaNet(
  x: { q: Tensor<"b t h k">; k: Tensor<"b t h k">; v: Tensor<"b t h v">; beta: Tensor; g: Tensor },
  options: { init?: Tensor<"b h v k">; scale?: number } = {},
): { o: Tensor<"b t h v">; state: Tensor<"b h v k"> } {
  const { y, state } = deltaRule(
    { q: l2normalize(x.q), k: l2normalize(x.k), v: x.v, beta: x.beta, gate: x.g },
    { time: "t", key: "k", value: "v", init: options.init, scale: options.scale },
  );
  return { o: y as Tensor<"b t h v">, state: state as Tensor<"b h v k"> };
}
