/**
 * Causal grouped-query attention with rotary positions (Llama, Mistral; the attention layers of
 * Mamba-2 hybrids), one definition for prefill and cached decode:
 *
 *   q = W_q x, k = W_k x, v = W_v x           (h = g·r query heads, g key/value heads)
 *   q, k ← RoPE(q, k) at positions c … c + t − 1   (c cached tokens; Su et al. 2021,
 *          rotate-half form: (x₁, x₂) ↦ (x₁ cos θ − x₂ sin θ, x₂ cos θ + x₁ sin θ),
 *          θ = pos · base^(−2i/d))
 *   o = W_o · attention([k_cache; k], [v_cache; v], causal)
 *
 * The new keys and values (after RoPE) are returned for the caller's cache.
 *
 * @module
 */

import { attention } from "../../dsl/attention.ts";
import { einsum } from "../../dsl/einsum.ts";
import { add, exp, mul, sub } from "../../dsl/elementwise.ts";
import { cos, sin } from "../../dsl/math.ts";
import { arange } from "../../dsl/index_ops.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import { concat, slice } from "../../dsl/views.ts";
import { rename } from "../../dsl/axis_ops.ts";

/**
 * Parameters (m model width, g key/value heads, r query heads per group, d head size). A type
 * alias, so a record of them is `valueAndGrad`'s parameter record.
 */
export type GqaParams = {
  /** Query projection. */
  wq: Tensor<"g r d m">;
  /** Key projection. */
  wk: Tensor<"g d m">;
  /** Value projection. */
  wv: Tensor<"g d m">;
  /** Output projection. */
  wo: Tensor<"m g r d">;
};

/**
 * Rotary position embedding (rotate-half form) of `x` over its feature axis `d` (even size) at
 * positions offset, offset + 1, … along `pos` (of size `len`). Uses the axis name `f` inside.
 *
 * ```ts
 * const qr = rope(q, "t", 16, 64, cached, 10000); // q: b g r t d with d = 64
 * ```
 */
export function rope<X extends Tensor>(
  x: X,
  pos: string,
  len: number,
  d: number,
  offset: number,
  base: number,
): X {
  if (d % 2 !== 0) throw new Error(`rope: the feature axis "d" must have an even size, got ${d}`);
  if (x.node.axes.includes("f")) throw new Error(`rope: x already has an axis "f"`);
  const half = d / 2;
  const inv = exp(mul(arange("f", half), -2 * Math.log(base) / d)); // base^(−2i/d)
  const angle = einsum(`${pos}, f -> ${pos} f`, add(arange(pos, len), offset), inv);
  const x1 = slice(x as Tensor, "d", 0, half, "f"), x2 = slice(x as Tensor, "d", half, d, "f");
  const c = cos(angle), s = sin(angle);
  const r1 = sub(mul(x1, c), mul(x2, s)), r2 = add(mul(x2, c), mul(x1, s));
  return concat([r1, r2], ["f", "f"], "d") as unknown as X;
}

/**
 * One causal GQA layer over new tokens x (b t m). `cache` holds the earlier keys and values
 * (b g c d, after RoPE); positions continue after them. Returns the output (b t m) and this
 * call's keys and values (b g t d) to append to the cache.
 */
export function gqaAttention(
  x: Tensor<"b t m">,
  p: GqaParams,
  sizes: { t: number; d: number; cached?: number; base?: number },
  cache?: { k: Tensor<"b g c d">; v: Tensor<"b g c d"> },
): { out: Tensor<"b t m">; k: Tensor<"b g t d">; v: Tensor<"b g t d"> } {
  const { t, d } = sizes, c = sizes.cached ?? 0, base = sizes.base ?? 10000;
  const q = rope(einsum("b t m, g r d m -> b g r t d", x, p.wq), "t", t, d, c, base);
  const k = rope(einsum("b t m, g d m -> b g t d", x, p.wk), "t", t, d, c, base);
  const v = einsum("b t m, g d m -> b g t d", x, p.wv);
  const keys = cache ? concat([cache.k, k], ["c", "t"], "s") : rename(k, "t", "s");
  const values = cache ? concat([cache.v, v], ["c", "t"], "s") : rename(v, "t", "s");
  const o = attention(q, keys, values, { causal: true });
  return { out: einsum("b g r t d, m g r d -> b t m", o, p.wo), k, v };
}
