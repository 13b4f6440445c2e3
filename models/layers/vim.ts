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

import { add, mul, silu } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { flip } from "../../dsl/views.ts";
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
