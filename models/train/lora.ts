/**
 * LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) for
 * fine-tuning with `Trainer`: each chosen weight W [out, in] gets two adapters A [r, in] and
 * B [out, r] and is used as
 *
 *     W_eff = W + (alpha / r) · B·A
 *
 * with B zero-initialised (so training starts from the base model exactly) and A drawn from
 * U(±1/√in) (PyTorch's default Linear init, as PEFT does). The base weights are frozen: they
 * are program constants, not differentiated and not in the optimizer. Saving merges the
 * adapters into the weights, giving a plain HF checkpoint.
 *
 * @module
 */

import { einsum } from "../../dsl/einsum.ts";
import { add, mul } from "../../dsl/elementwise.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import type { InputDecl } from "../../dsl/trace.ts";
import { Random, uniform, zeros } from "./init.ts";
import type { ParamRecord } from "./init.ts";

/** Which weights get adapters, and their shape. */
export interface LoraOptions {
  /**
   * Weights to adapt, by checkpoint tensor name: a regular expression tested against each
   * name (e.g. `/mixer\.(in|out)_proj/`). Every match must be a 2-axis weight.
   */
  targets: RegExp;
  /** The rank r (default 8). */
  rank?: number;
  /** The scale numerator: the update is (alpha / r)·B·A (default: alpha = r, a scale of 1). */
  alpha?: number;
  /** Seed of A's initialisation (default 0). */
  seed?: number;
}

/** The rank axis of every adapter. */
const RANK_AXIS = "lora_r";

/** One adapted weight: its name and its (out, in) axes and sizes. */
export interface LoraTarget {
  /** The weight's checkpoint name. */
  name: string;
  /** Its output axis (the first). */
  out: string;
  /** Its input axis (the second). */
  in: string;
  /** The output axis's size. */
  outSize: number;
  /** The input axis's size. */
  inSize: number;
}

/** The adapters of one model (built by `Trainer` from {@link LoraOptions}). */
export class LoraPlan {
  /** The adapted weights. */
  readonly targets: readonly LoraTarget[];
  /** r. */
  readonly rank: number;
  /** alpha / r. */
  readonly scale: number;
  readonly #seed: number;

  /**
   * Picks the weights `options.targets` matches and checks the options.
   *
   * @param weights The model's weight declarations (name → axes).
   * @param sizes Axis sizes.
   * @param options Which weights, rank and alpha.
   */
  constructor(
    weights: Record<string, InputDecl>,
    sizes: Record<string, number>,
    options: LoraOptions,
  ) {
    this.rank = options.rank ?? 8;
    if (!Number.isInteger(this.rank) || this.rank < 1) {
      throw new Error(`lora: rank must be an integer ≥ 1, got ${this.rank}`);
    }
    const alpha = options.alpha ?? this.rank;
    if (!(alpha > 0 && Number.isFinite(alpha))) {
      throw new Error(`lora: alpha must be a positive number, got ${alpha}`);
    }
    this.scale = alpha / this.rank;
    this.#seed = options.seed ?? 0;
    const targets: LoraTarget[] = [];
    for (const [name, decl] of Object.entries(weights)) {
      if (!options.targets.test(name)) continue;
      const axes = (typeof decl === "string" ? decl : decl.axes).trim().split(/\s+/);
      if (axes.length !== 2) {
        throw new Error(
          `lora: weight ${name} has axes "${axes.join(" ")}"; adapters need a 2-axis weight`,
        );
      }
      targets.push({
        name,
        out: axes[0],
        in: axes[1],
        outSize: sizes[axes[0]],
        inSize: sizes[axes[1]],
      });
    }
    if (targets.length === 0) {
      throw new Error(`lora: no weight name matches ${options.targets}`);
    }
    this.targets = targets;
  }

  /** Input declarations of the adapters: `NAME.lora_A` [r, in] and `NAME.lora_B` [out, r]. */
  adapterInputs(): Record<string, InputDecl> {
    const inputs: Record<string, InputDecl> = {};
    for (const t of this.targets) {
      inputs[`${t.name}.lora_A`] = `${RANK_AXIS} ${t.in}`;
      inputs[`${t.name}.lora_B`] = `${t.out} ${RANK_AXIS}`;
    }
    return inputs;
  }

  /** The rank axis's size, for the program's sizes. */
  sizes(): Record<string, number> {
    return { [RANK_AXIS]: this.rank };
  }

  /** Initial adapters: A ~ U(±1/√in), B = 0. */
  initAdapters(): ParamRecord {
    const rand = new Random(this.#seed);
    const out: ParamRecord = {};
    for (const t of this.targets) {
      const bound = 1 / Math.sqrt(t.inSize);
      out[`${t.name}.lora_A`] = uniform(this.rank * t.inSize, rand, -bound, bound);
      out[`${t.name}.lora_B`] = zeros(t.outSize * this.rank);
    }
    return out;
  }

  /** The adapted weights W + scale·B·A as traced ops, from the base weights and the adapters. */
  effectiveWeights(
    base: Record<string, Tensor>,
    adapters: Record<string, Tensor>,
  ): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const t of this.targets) {
      const spec = `${t.out} ${RANK_AXIS}, ${RANK_AXIS} ${t.in} -> ${t.out} ${t.in}`;
      const delta = einsum(
        spec as never,
        adapters[`${t.name}.lora_B`] as never,
        adapters[`${t.name}.lora_A`] as never,
      ) as Tensor;
      out[t.name] = add(base[t.name], mul(delta, this.scale));
    }
    return out;
  }

  /**
   * The base weights with the adapters merged in (W + scale·B·A, in float64 then rounded),
   * keyed by weight name only: a plain checkpoint.
   */
  merge(values: ParamRecord): ParamRecord {
    const out: ParamRecord = {};
    const adapterNames = new Set(Object.keys(this.adapterInputs()));
    for (const [k, v] of Object.entries(values)) if (!adapterNames.has(k)) out[k] = v;
    for (const t of this.targets) {
      const A = values[`${t.name}.lora_A`], B = values[`${t.name}.lora_B`];
      const W = Float32Array.from(values[t.name]);
      const r = this.rank;
      for (let o = 0; o < t.outSize; o++) {
        for (let i = 0; i < t.inSize; i++) {
          let s = 0;
          for (let k = 0; k < r; k++) s += B[o * r + k] * A[k * t.inSize + i];
          W[o * t.inSize + i] = W[o * t.inSize + i] + this.scale * s;
        }
      }
      out[t.name] = W;
    }
    return out;
  }
}
