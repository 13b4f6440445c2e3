/**
 * Vision Mamba's bidirectional block (Zhu, Liao, Zhang, Wang, Liu, Wang 2024, "Vision Mamba:
 * Efficient Visual Representation Learning with Bidirectional State Space Model",
 * arXiv:2401.09417). After in_proj splits the tokens into x and z (b l d), each direction runs
 * its own causal depthwise conv, x_proj, dt_proj, A and D over the sequence in its order:
 *
 *   x_f = silu(conv_f(x) + c_f),           y_f = S6_f(x_f)
 *   x_b = flip(silu(conv_b(flip(x)) + c_b)), y_b = flip(S6_b(flip(x_b)))   (the backward scan)
 *   out = ½ (y_f + y_b) ⊙ silu(z)          (Vim's if_devide_out; out_proj follows)
 *
 * The backward direction is written with flip (a free view) and a reverse scan.
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, mul, silu } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { flip, slice } from "../../dsl/views.ts";
import { causalConv } from "../causal_conv.ts";
import { s6, type S6Params } from "./s6.ts";

/** One direction of Vim: the S6 parameters plus its conv1d.weight (d k) and conv1d.bias (d). */
export interface VimDirection extends S6Params {
  /** conv1d.weight with the unit axis dropped (d k). */
  conv: Tensor<"d k">;
  /** conv1d.bias (d). */
  convBias: Tensor<"d">;
}

/** The Vim mixer between in_proj and out_proj: x, z (b l d) → (b l d). */
export function vimMixer(
  x: Tensor<"b l d">,
  z: Tensor<"b l d">,
  fwd: VimDirection,
  bwd: VimDirection,
): Tensor<"b l d"> {
  const xf = silu(add(causalConv(x, fwd.conv, "d").conv, fwd.convBias)) as Tensor<"b l d">;
  // The backward conv is causal in flipped order: flip in, flip out.
  const convB = flip(causalConv(flip(x, "l"), bwd.conv, "d").conv as Tensor<"b l d">, "l");
  const xb = silu(add(convB, bwd.convBias)) as Tensor<"b l d">;
  const y = add(s6(xf, fwd), s6(xb, bwd, true));
  return mul(mul(y, 0.5), silu(z)) as Tensor<"b l d">;
}

/**
 * The whole Vim mixer on hidden states u (b l m): in_proj.weight (c m, c = 2d: x rows, then
 * z rows), the two directions, out_proj.weight (m d). Returns (b l m).
 */
export function vimBlock(
  u: Tensor<"b l m">,
  p: { inProj: Tensor<"c m">; outProj: Tensor<"m d">; fwd: VimDirection; bwd: VimDirection },
): Tensor<"b l m"> {
  const d = p.fwd.D.size("d");
  const xz = einsum("b l m, c m -> b l c", u, p.inProj);
  const x = slice(xz, "c", 0, d, "d") as Tensor<"b l d">;
  const z = slice(xz, "c", d, 2 * d, "d") as Tensor<"b l d">;
  return einsum("b l d, m d -> b l m", vimMixer(x, z, p.fwd, p.bwd), p.outProj) as Tensor<"b l m">;
}
