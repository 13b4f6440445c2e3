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
  mambaWeightInputs,
} from "./mamba.ts";
import {
  mamba2CacheInputs,
  type Mamba2Config,
  mamba2ConfigFromHF,
  mamba2Forward,
  mamba2Sizes,
  mamba2WeightInputs,
} from "./mamba2.ts";

/** Everything the runner needs to know about one model architecture. */
export interface ModelDefinition {
  /** The checkpoint's `model_type` ("mamba" or "mamba2"). */
  readonly modelType: string;
  /** Vocabulary size: the length of a logits row. */
  readonly vocab: number;
  /** The end-of-sequence token id, when the config names one. */
  readonly eosTokenId?: number;
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
}

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
    eosTokenId: cfg.eosTokenId,
    weightInputs: () => mambaWeightInputs(cfg),
    weightShapes: () => shapesOf(mambaWeightInputs(cfg), mambaSizes(cfg, 1, 1)),
    cacheInputs: () => mambaCacheInputs(cfg),
    inPlaceCache: (name) => name.endsWith(".ssm"),
    sizes: (b, l) => mambaSizes(cfg, b, l),
    forward: (t, options) => mambaForward(t, cfg, options),
  };
}

/** The Mamba-2 definition. */
export function mamba2Definition(cfg: Mamba2Config): ModelDefinition {
  return {
    modelType: "mamba2",
    vocab: cfg.vocab,
    eosTokenId: cfg.eosTokenId,
    weightInputs: () => mamba2WeightInputs(cfg),
    weightShapes: () => shapesOf(mamba2WeightInputs(cfg), mamba2Sizes(cfg, 1, 1)),
    cacheInputs: () => mamba2CacheInputs(cfg),
    inPlaceCache: (name) => name.endsWith(".ssm"),
    sizes: (b, l) => mamba2Sizes(cfg, b, l),
    forward: (t, options) => mamba2Forward(t, cfg, options),
  };
}

/** Picks the definition for a config.json. */
export function modelDefinitionFor(config: Record<string, unknown>, dir: string): ModelDefinition {
  const type = config.model_type;
  if (type === "mamba") return mambaDefinition(mambaConfigFromHF(config));
  if (type === "mamba2") return mamba2Definition(mamba2ConfigFromHF(config));
  throw new Error(
    `${dir}/config.json: unsupported model_type ${JSON.stringify(type)} ` +
      `(supported: "mamba", "mamba2")`,
  );
}
