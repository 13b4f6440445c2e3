/**
 * VMamba's SS2D (Liu, Tian, Zhao, Yu, Xie, Wang, Ye, Liu 2024, "VMamba: Visual State Space
 * Model", arXiv:2401.10166): a 2D feature map scanned along four routes, each with its own S6
 * parameters, the four outputs mapped back to the grid and summed:
 *
 *   y = Σ_{k=1..4} π_k⁻¹( S6_k( π_k(x) ) )
 *   π_1 = row-major, π_2 = column-major, π_3, π_4 = their reversals
 *
 * The routes are views (rearrange) and reverse scans: no gather or copy of the map. The block
 * (`ss2dBlock`) wraps them as VMamba's SS2D does:
 *
 *   [x, z] = u W_inᵀ,  x' = silu(dwconv3×3(x) + c),  y = LayerNorm(SS2D(x')),
 *   out = (y ⊙ silu(z)) W_outᵀ
 *
 * @module
 */

import { shift } from "../../dsl/axis_ops.ts";
import { einsum } from "../../dsl/einsum.ts";
import { add, mul, rsqrt, silu, sub } from "../../dsl/elementwise.ts";
import { mean } from "../../dsl/reduce.ts";
import { pick } from "../../dsl/scan.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { rearrange, slice } from "../../dsl/views.ts";
import { s6, type S6Params } from "./s6.ts";

/**
 * The four-route selective scan of `x` (b i j d); `routes` holds the parameters of row-major,
 * column-major, reversed row-major and reversed column-major, in that order.
 */
export function ss2d(
  x: Tensor<"b i j d">,
  routes: readonly [S6Params, S6Params, S6Params, S6Params],
): Tensor<"b i j d"> {
  const i = x.size("i"), j = x.size("j");
  const rows = rearrange(x, "b i j d -> b l=(i j) d") as Tensor<"b l d">;
  const cols = rearrange(x, "b i j d -> b l=(j i) d") as Tensor<"b l d">;
  const fromRows = (y: Tensor) => rearrange(y, "b (i j) d -> b i j d", { i });
  const fromCols = (y: Tensor) => rearrange(y, "b (j i) d -> b i j d", { j });
  const yRows = add(s6(rows, routes[0]), s6(rows, routes[2], true));
  const yCols = add(s6(cols, routes[1]), s6(cols, routes[3], true));
  return add(fromRows(yRows), fromCols(yCols)) as Tensor<"b i j d">;
}

/** Parameters of the SS2D block (VMamba names): c = 2·d rows of in_proj (x, then z). */
export interface Ss2dBlockParams {
  /** in_proj.weight (c m). */ inProj: Tensor<"c m">;
  /** conv2d.weight with the unit axis dropped (d ki kj), 3 × 3 taps. */ conv: Tensor;
  /** conv2d.bias (d). */ convBias: Tensor<"d">;
  /** The four routes' S6 parameters (see {@link ss2d}). */
  routes: readonly [S6Params, S6Params, S6Params, S6Params];
  /** out_norm.weight (d): a LayerNorm, ε = 1e-5. */ normW: Tensor<"d">;
  /** out_norm.bias (d). */ normB: Tensor<"d">;
  /** out_proj.weight (m d). */ outProj: Tensor<"m d">;
}

/** VMamba's SS2D block on a feature map u (b i j m) → (b i j m). */
export function ss2dBlock(u: Tensor<"b i j m">, p: Ss2dBlockParams): Tensor<"b i j m"> {
  const d = p.convBias.size("d");
  const xz = einsum("b i j m, c m -> b i j c", u, p.inProj);
  const x = slice(xz, "c", 0, d, "d"), z = slice(xz, "c", d, 2 * d, "d");
  // Depthwise 3×3 conv, zero padding 1: out[i, j] = Σ w[a, b]·x[i + a − 1, j + b − 1].
  let conv: Tensor = p.convBias;
  for (const a of [0, 1, 2]) {
    for (const b of [0, 1, 2]) {
      const tap = pick(pick(p.conv, "ki", a), "kj", b);
      conv = add(mul(shift(shift(x, "i", 1 - a), "j", 1 - b), tap), conv);
    }
  }
  const y = ss2d(silu(conv) as Tensor<"b i j d">, p.routes);
  const centered = sub(y, mean(y, "d"));
  const normed = mul(centered, rsqrt(add(mean(mul(centered, centered), "d"), 1e-5)));
  const gated = mul(add(mul(normed, p.normW), p.normB), silu(z));
  return einsum("b i j d, m d -> b i j m", gated, p.outProj) as Tensor<"b i j m">;
}
