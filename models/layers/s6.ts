/**
 * One direction of Mamba-1's selective scan (S6; Gu and Dao 2023, "Mamba: Linear-Time Sequence
 * Modeling with Selective State Spaces", arXiv:2312.00752) with its own x_proj, dt_proj, A and
 * D: the building block of the vision layers (Vim's two directions, SS2D's four routes).
 *
 *   [δ, B, C] = x W_xᵀ,  Δ = softplus(δ W_Δᵀ + b_Δ),  A = −exp(A_log)
 *   h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,   y_t = C_t · h_t + D ⊙ x_t
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, exp, mul, neg, softplus } from "../../dsl/elementwise.ts";
import { scan } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { slice } from "../../dsl/views.ts";

/** One direction's parameters (VMamba/Vim names): e = rank + 2·state rows of x_proj. */
export interface S6Params {
  /** x_proj.weight (e d): Δ's low-rank input, then B, then C. */
  xProj: Tensor<"e d">;
  /** dt_proj.weight (d r). */
  dtProj: Tensor<"d r">;
  /** dt_proj.bias (d), inside the softplus. */
  dtBias: Tensor<"d">;
  /** A_log (d n): A = −exp(A_log). */
  Alog: Tensor<"d n">;
  /** D (d): the skip. */
  D: Tensor<"d">;
}

/**
 * The selective scan of `x` (b l d) along l (from the end with `reverse`), its Δ, B and C
 * projected from x itself. Returns y (b l d), without a gate.
 */
export function s6(x: Tensor<"b l d">, p: S6Params, reverse = false): Tensor<"b l d"> {
  const r = p.dtProj.size("r"), n = p.Alog.size("n");
  const proj = einsum("b l d, e d -> b l e", x, p.xProj);
  const dt = einsum("b l r, d r -> b l d", slice(proj, "e", 0, r, "r"), p.dtProj);
  const B = slice(proj, "e", r, r + n, "n"), C = slice(proj, "e", r + n, r + 2 * n, "n");
  const delta = softplus(add(dt, p.dtBias));
  const h = scan(
    "l",
    exp(einsum("b l d, d n -> b l d n", delta, neg(exp(p.Alog)))),
    einsum("b l d, b l n, b l d -> b l d n", delta, B, x),
    { reverse },
  );
  return add(einsum("b l d n, b l n -> b l d", h, C), mul(p.D, x)) as Tensor<"b l d">;
}
