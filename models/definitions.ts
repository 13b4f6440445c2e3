/**
 * Model definitions by HF `model_type`: what inputs a model has, the shapes its checkpoint
 * tensors must have, its caches, and its forward function in the DSL.
 *
 * @module
 */

import type { Tensor } from "../dsl/tensor.ts";
import type { InputDecl } from "../dsl/trace.ts";
import {
  mambaCacheInputs,
  type MambaConfig,
  mambaConfigFromHF,
  mambaForward,
  mambaSizes,
  mambaTrunk,
  mambaWeightInputs,
} from "./mamba.ts";
import {
  mamba2CacheInputs,
  type Mamba2Config,
  mamba2ConfigFromHF,
  mamba2Forward,
  mamba2Sizes,
  mamba2Trunk,
  mamba2WeightInputs,
} from "./mamba2.ts";
import { describeValue } from "./checkpoint/describe.ts";
import type { ModelTrunk } from "./lm_head.ts";

/** Everything the runner needs to know about one model architecture. */
export interface ModelDefinition {
  /** The checkpoint's `model_type` ("mamba" or "mamba2"). */
  readonly modelType: string;
  /** Vocabulary size: the length of a logits row. */
  readonly vocab: number;
  /** The end-of-sequence token id, when the config names one (the first of {@link eosTokenIds}). */
  readonly eosTokenId?: number;
  /** Every end-of-sequence token id the config names (`eos_token_id`: an id or a list). */
  readonly eosTokenIds: readonly number[];
  /**
   * Checkpoint tensors the model does not read but HF also ignores, each with the reason (e.g.
   * `lm_head.weight` when the head is tied to the embedding): present ones are warned about;
   * any other tensor the model does not read is an error.
   */
  readonly ignoredWeights?: Readonly<Record<string, string>>;
  /** Weight inputs, named as in the checkpoint. */
  weightInputs(): Record<string, InputDecl>;
  /** Each weight with the shape its checkpoint tensor must have. */
  weightShapes(): [string, number[]][];
  /** Decode caches (inputs of the cached forward, and outputs of every forward). */
  cacheInputs(): Record<string, InputDecl>;
  /** Whether a cache is updated in place (else it ping-pongs between two buffers). */
  inPlaceCache(name: string): boolean;
  /** Axis sizes for batch b and l tokens. */
  sizes(b: number, l: number): Record<string, number>;
  /** The forward pass: logits and the next caches. */
  forward(
    t: Record<string, Tensor>,
    options: { cached?: boolean; lastOnly?: boolean },
  ): { logits: Tensor } & Record<string, Tensor>;
  /** The forward pass up to the LM head (for losses that apply the head in pieces). */
  trunk(
    t: Record<string, Tensor>,
    options: { cached?: boolean; lastOnly?: boolean },
  ): ModelTrunk;
}

/** With `tie_word_embeddings`, HF's head is the embedding; a stored `lm_head.weight` is unused. */
const TIED_HEAD_IGNORED: Readonly<Record<string, string>> = {
  "lm_head.weight": "tie_word_embeddings is true, so the LM head is backbone.embeddings.weight",
};

function shapesOf(inputs: Record<string, InputDecl>, sizes: Record<string, number>) {
  return Object.entries(inputs).map(([name, decl]): [string, number[]] => {
    const axes = (typeof decl === "string" ? decl : decl.axes).trim().split(/\s+/);
    // HF stores depthwise conv weights as [channels, 1, taps].
    const shape = axes.map((a) => sizes[a]);
    return [name, name.endsWith("conv1d.weight") ? [shape[0], 1, shape[1]] : shape];
  });
}

/** The Mamba-1 definition. */
export function mambaDefinition(cfg: MambaConfig): ModelDefinition {
  return {
    modelType: "mamba",
    vocab: cfg.vocab,
    eosTokenId: cfg.eosTokenIds[0],
    eosTokenIds: cfg.eosTokenIds,
    ignoredWeights: cfg.tied ? TIED_HEAD_IGNORED : {},
    weightInputs: () => mambaWeightInputs(cfg),
    weightShapes: () => shapesOf(mambaWeightInputs(cfg), mambaSizes(cfg, 1, 1)),
    cacheInputs: () => mambaCacheInputs(cfg),
    inPlaceCache: (name) => name.endsWith(".ssm"),
    sizes: (b, l) => mambaSizes(cfg, b, l),
    forward: (t, options) => mambaForward(t, cfg, options),
    trunk: (t, options) => mambaTrunk(t, cfg, options),
  };
}

/** The Mamba-2 definition. */
export function mamba2Definition(cfg: Mamba2Config): ModelDefinition {
  return {
    modelType: "mamba2",
    vocab: cfg.vocab,
    eosTokenId: cfg.eosTokenIds[0],
    eosTokenIds: cfg.eosTokenIds,
    ignoredWeights: cfg.tied ? TIED_HEAD_IGNORED : {},
    weightInputs: () => mamba2WeightInputs(cfg),
    weightShapes: () => shapesOf(mamba2WeightInputs(cfg), mamba2Sizes(cfg, 1, 1)),
    cacheInputs: () => mamba2CacheInputs(cfg),
    inPlaceCache: (name) => name.endsWith(".ssm"),
    sizes: (b, l) => mamba2Sizes(cfg, b, l),
    forward: (t, options) => mamba2Forward(t, cfg, options),
    trunk: (t, options) => mamba2Trunk(t, cfg, options),
  };
}

/**
 * Picks the definition for a config.json and validates every field it reads.
 *
 * @param config The parsed config.json.
 * @param dir The model directory (named in error messages).
 * @throws Error naming `DIR/config.json` and the field when `model_type` is not supported or a
 *   field holds a value that would run a different model (a size of 0 or 1.5, a flag spelled as
 *   a string, a non-finite epsilon, more than 1024 layers, ...).
 */
export function modelDefinitionFor(config: Record<string, unknown>, dir: string): ModelDefinition {
  const source = `${dir}/config.json`;
  const type = config.model_type;
  if (type === "mamba") return mambaDefinition(mambaConfigFromHF(config, source));
  if (type === "mamba2") return mamba2Definition(mamba2ConfigFromHF(config, source));
  const shown = typeof type === "string" ? JSON.stringify(type.slice(0, 40)) : describeValue(type);
  throw new Error(`${source}: unsupported model_type ${shown} (supported: "mamba", "mamba2")`);
}
