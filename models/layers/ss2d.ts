/**
 * VMamba's SS2D (Liu, Tian, Zhao, Yu, Xie, Wang, Ye, Liu 2024, "VMamba: Visual State Space
 * Model", arXiv:2401.10166): a 2D feature map scanned along four routes, each with its own S6
 * parameters, the four outputs mapped back to the grid and summed:
 *
 *   y = Σ_{k=1..4} π_k⁻¹( S6_k( π_k(x) ) )
 *   π_1 = row-major, π_2 = column-major, π_3, π_4 = their reversals
 *
 * x (b i j d) is the map after SS2D's in_proj, depthwise 3×3 conv and SiLU; the LayerNorm, gate
 * and out_proj that follow wrap this. The routes are views (rearrange) and reverse scans: no
 * gather or copy of the map.
 *
 * @module
 */

import { add } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { rearrange } from "../../dsl/views.ts";
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
