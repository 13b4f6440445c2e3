/**
 * The causal depthwise conv of Mamba's mixers, for a whole sequence or continuing from a cache
 * of the last k − 1 inputs (decode).
 *
 * @module
 */

import { full } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { concat, conv1d, slice } from "../dsl/views.ts";

/**
 * Convolves `x0` (b l CH) along l with taps `w` (CH k), continuing from `cached` inputs
 * (b s CH, s = k − 1) when given, zeros otherwise. Returns the result (b l CH) and the next
 * cache: the last k − 1 inputs (b s CH).
 */
export function causalConv(
  x0: Tensor,
  w: Tensor,
  channelAxis: string,
  cached?: Tensor,
): { conv: Tensor; cache: Tensor } {
  const k = w.size("k");
  const b = x0.size("b"), channels = x0.size(channelAxis), len = x0.size("l");
  // Without a cache the history is zeros; they only matter for the cache when l < k − 1.
  const history = cached ?? full(0, `b s ${channelAxis}`, { b, s: k - 1, [channelAxis]: channels });
  const window = concat([history, x0], ["s", "l"], "w");
  const cache = slice(window, "w", len, len + k - 1, "s");
  if (!cached) return { conv: conv1d(x0, w, "l", "k"), cache };
  // Convolve over the window, then keep the positions of the new tokens.
  const convWindow = conv1d(window, w, "w", "k");
  return { conv: slice(convWindow, "w", k - 1, k - 1 + len, "l"), cache };
}
