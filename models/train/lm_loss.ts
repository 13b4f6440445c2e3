/**
 * The language-model training objective as a traced program: the mean next-token cross-entropy
 * of a {@link ModelDefinition}'s forward pass, and its gradient with respect to every weight
 * (`valueAndGrad` over the forward pass and `crossEntropy`). Weights keep their checkpoint
 * (HF) names; the gradient of weight `k` is output `grad.k`.
 *
 * A tied LM head is the embedding itself (the forward pass reads `backbone.embeddings.weight`
 * twice), so its gradient is the sum of the lookup's and the head's, as in HF where the two
 * modules share one parameter.
 *
 * @module
 */

import { valueAndGrad } from "../../dsl/autodiff.ts";
import { linearCrossEntropy } from "../../dsl/linear_cross_entropy.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import type { InputDecl } from "../../dsl/trace.ts";
import type { ModelDefinition } from "../definitions.ts";

/** Inputs of {@link lmLossAndGrads}' program: the weights, `ids` and `targets` (i32, `b l`). */
export function lmLossInputs(def: ModelDefinition): Record<string, InputDecl> {
  return {
    ...def.weightInputs(),
    ids: { axes: "b l", dtype: "i32" },
    targets: { axes: "b l", dtype: "i32" },
  };
}

/** Options of {@link lmLoss}. */
export interface LmLossOptions {
  /**
   * The largest piece of logits built at once, in bytes (default 1 GiB): pass the device's
   * `maxStorageBufferBindingSize`. Larger batches get their head and loss in pieces
   * (`linearCrossEntropy`), with the same value and gradients.
   */
  maxLogitsBytes?: number;
}

/** The mean cross-entropy of the model's logits at `t.ids` against `t.targets`. */
export function lmLoss(
  def: ModelDefinition,
  t: Record<string, Tensor>,
  options: LmLossOptions = {},
): Tensor {
  const { features, head } = def.trunk(t, { cached: false });
  return linearCrossEntropy(features, head, t.targets, "v", options);
}

/**
 * The loss and the gradient of every weight: outputs `loss` and `grad.<weight name>`.
 *
 * @param def The model.
 * @param t The program's tensors (see {@link lmLossInputs}).
 * @param options See {@link LmLossOptions}.
 */
export function lmLossAndGrads(
  def: ModelDefinition,
  t: Record<string, Tensor>,
  options: LmLossOptions = {},
): { loss: Tensor; grads: Record<string, Tensor> } {
  const names = Object.keys(def.weightInputs());
  const params = Object.fromEntries(names.map((k) => [k, t[k]]));
  const [loss, grads] = valueAndGrad((p: Record<string, Tensor>) =>
    lmLoss(def, { ...t, ...p }, options)
  )(
    params,
  );
  return { loss, grads };
}

/** {@link lmLossAndGrads} as a program's outputs: `loss` and `grad.<name>` per weight. */
export function lmLossAndGradOutputs(
  def: ModelDefinition,
  t: Record<string, Tensor>,
  options: LmLossOptions = {},
): Record<string, Tensor> {
  const { loss, grads } = lmLossAndGrads(def, t, options);
  const out: Record<string, Tensor> = { loss };
  for (const [k, g] of Object.entries(grads)) out[`grad.${k}`] = g;
  return out;
}
