/**
 * Parameter initialisation for training from scratch: seeded fills (normal, uniform, zeros,
 * ones) and the Mamba / Mamba-2 initialisations of HF transformers' `_init_weights` and
 * mamba_ssm, producing a record keyed by the checkpoint's tensor names (the names
 * {@link ModelDefinition.weightInputs} declares), ready for `Trainer.create`.
 *
 * ```ts
 * const config = { model_type: "mamba", hidden_size: 64, num_hidden_layers: 2, vocab_size: 18 };
 * const params = initParams(config, { seed: 1 });
 * ```
 *
 * @module
 */

import { mambaConfigFromHF, mambaSizes, mambaWeightInputs } from "../mamba.ts";
import { mamba2ConfigFromHF, mamba2Sizes, mamba2WeightInputs } from "../mamba2.ts";
import type { InputDecl } from "../../dsl/trace.ts";

/** A seeded source of uniform [0, 1) numbers (mulberry32) with normal draws (Box–Muller). */
export class Random {
  #state: number;
  #spare: number | undefined;

  /**
   * Starts a sequence.
   *
   * @param seed Any integer; equal seeds give equal sequences.
   */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform number in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(this.#state ^ (this.#state >>> 15), this.#state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A standard normal number. */
  normal(): number {
    if (this.#spare !== undefined) {
      const s = this.#spare;
      this.#spare = undefined;
      return s;
    }
    const u = 1 - this.next(); // (0, 1]: log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.next();
    this.#spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** An integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo));
  }
}

/** `n` values drawn from N(mean, std²). */
export function normal(n: number, rand: Random, std = 1, mean = 0): Float32Array {
  return Float32Array.from({ length: n }, () => mean + std * rand.normal());
}

/** `n` values drawn from U(lo, hi). */
export function uniform(n: number, rand: Random, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * rand.next());
}

/** `n` zeros. */
export function zeros(n: number): Float32Array {
  return new Float32Array(n);
}

/** `n` ones. */
export function ones(n: number): Float32Array {
  return new Float32Array(n).fill(1);
}

/**
 * softplus⁻¹(dt) for dt log-uniform in [dtMin, dtMax] (floored at `floor`): the dt bias of
 * Mamba's and Mamba-2's initialisation, so that softplus(bias) starts in [dtMin, dtMax].
 * Computed as dt + log(−expm1(−dt)), the stable form.
 */
export function dtBias(
  n: number,
  rand: Random,
  dtMin = 1e-3,
  dtMax = 0.1,
  floor = 1e-4,
): Float32Array {
  const lo = Math.log(dtMin), hi = Math.log(dtMax);
  return Float32Array.from({ length: n }, () => {
    const dt = Math.max(floor, Math.exp(lo + (hi - lo) * rand.next()));
    return dt + Math.log(-Math.expm1(-dt));
  });
}

/** Options of {@link initParams}. */
export interface InitOptions {
  /** Seed of the fills (default 0). */
  seed?: number;
  /**
   * Standard deviation of the embedding (default 0.02, mamba_ssm's `initializer_range`; HF's
   * `MambaConfig` defaults to 0.1).
   */
  embeddingStd?: number;
  /** Range of the initial dt (defaults 1e-3 and 0.1, with a floor of 1e-4, as both sources). */
  dtMin?: number;
  /** See {@link InitOptions.dtMin}. */
  dtMax?: number;
}

/** The parameters of a model: HF tensor name → values (row-major in the declared axes). */
export type ParamRecord = Record<string, Float32Array>;

/**
 * Fresh parameters for an HF config (`model_type` "mamba" or "mamba2"), keyed by checkpoint
 * tensor name. Following HF's `MambaPreTrainedModel._init_weights` / `Mamba2` and mamba_ssm's
 * `_init_weights`:
 *
 * - linear weights (in_proj, x_proj, lm_head) and the depthwise conv (weight and bias): PyTorch's
 *   default `nn.Linear` / `nn.Conv1d` init, U(±1/√fan_in);
 * - out_proj: the same, divided by √layers (GPT-2's prenorm-residual rescaling, which both apply
 *   with one residual per layer);
 * - dt_proj weight (Mamba-1): U(±dt_rank^−½); dt bias: softplus⁻¹ of log-uniform dt in
 *   [dtMin, dtMax] (see {@link dtBias});
 * - A_log = log(1..n) per channel (Mamba-1), log(1..heads) (Mamba-2, HF); D = 1;
 * - embedding N(0, embeddingStd²); every norm weight 1.
 */
export function initParams(
  config: Record<string, unknown>,
  options: InitOptions = {},
): ParamRecord {
  const rand = new Random(options.seed ?? 0);
  const embStd = options.embeddingStd ?? 0.02;
  const dt = (n: number) => dtBias(n, rand, options.dtMin, options.dtMax);
  const type = config.model_type;
  let inputs: Record<string, InputDecl>, sizes: Record<string, number>, layers: number;
  let rank = 0, stateSize = 0;
  if (type === "mamba") {
    const cfg = mambaConfigFromHF(config);
    [inputs, sizes, layers, rank, stateSize] = [
      mambaWeightInputs(cfg),
      mambaSizes(cfg, 1, 1),
      cfg.layers,
      cfg.dtRank,
      cfg.state,
    ];
  } else if (type === "mamba2") {
    const cfg = mamba2ConfigFromHF(config);
    [inputs, sizes, layers] = [mamba2WeightInputs(cfg), mamba2Sizes(cfg, 1, 1), cfg.layers];
  } else {
    throw new Error(`initParams: unsupported model_type ${JSON.stringify(type)}`);
  }
  const params: ParamRecord = {};
  for (const [name, decl] of Object.entries(inputs)) {
    const axes = (typeof decl === "string" ? decl : decl.axes).trim().split(/\s+/);
    const shape = axes.map((a) => sizes[a]);
    const n = shape.reduce((p, s) => p * s, 1);
    const fanIn = shape[shape.length - 1];
    const kaiming = (scale = 1) =>
      uniform(n, rand, -scale / Math.sqrt(fanIn), scale / Math.sqrt(fanIn));
    const leaf = name.replace(/^backbone\.layers\.\d+\./, "");
    if (name === "backbone.embeddings.weight") params[name] = normal(n, rand, embStd);
    else if (name.endsWith("norm.weight") || name.endsWith("norm_f.weight")) params[name] = ones(n);
    else if (leaf === "mixer.out_proj.weight") params[name] = kaiming(1 / Math.sqrt(layers));
    else if (leaf === "mixer.conv1d.bias") {
      // Conv1d's bias bound is 1/√fan_in of its weight (fan_in = taps for a depthwise conv).
      const taps = sizes.k;
      params[name] = uniform(n, rand, -1 / Math.sqrt(taps), 1 / Math.sqrt(taps));
    } else if (leaf === "mixer.dt_proj.weight") {
      params[name] = uniform(n, rand, -1 / Math.sqrt(rank), 1 / Math.sqrt(rank));
    } else if (leaf === "mixer.dt_proj.bias" || leaf === "mixer.dt_bias") params[name] = dt(n);
    else if (leaf === "mixer.A_log") {
      // Mamba-1: log(1..n) along the state axis of every channel; Mamba-2: log(1..heads).
      const period = type === "mamba" ? stateSize : n;
      params[name] = Float32Array.from({ length: n }, (_, i) => Math.log(1 + (i % period)));
    } else if (leaf === "mixer.D") params[name] = ones(n);
    else params[name] = kaiming(); // in_proj, x_proj, conv1d.weight, lm_head
  }
  return params;
}
