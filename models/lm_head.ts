/**
 * The language-model head shared by the model definitions: a forward pass ends in its
 * {@link ModelTrunk} (normalized features, the head matrix and the next caches), and the logits
 * are the features times the head. Training reads the trunk instead, so that its loss can
 * split the logits into pieces (`linearCrossEntropy`) rather than build all of them at once.
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** A forward pass up to (not including) the LM head. */
export interface ModelTrunk {
  /** The next caches, per layer: `cache.i.conv` and `cache.i.ssm`. */
  caches: Record<string, Tensor>;
  /** The final-norm features: `b l m`, or `b m` with `lastOnly`. */
  features: Tensor;
  /** The head matrix `v m` (the embedding when the head is tied). */
  head: Tensor;
}

/** The logits of a trunk: `b l v` (or `b v` with `lastOnly`), next to its caches. */
export function withLogits(trunk: ModelTrunk): { logits: Tensor } & Record<string, Tensor> {
  const logits = trunk.features.axes.includes("l")
    ? einsum("b l m, v m -> b l v", trunk.features as Tensor<"b l m">, trunk.head as Tensor<"v m">)
    : einsum("b m, v m -> b v", trunk.features as Tensor<"b m">, trunk.head as Tensor<"v m">);
  return { ...trunk.caches, logits };
}
