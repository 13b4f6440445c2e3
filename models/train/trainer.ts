/**
 * Training a language model in a few lines: one resident GPU program per step runs the model's
 * forward pass (`ModelDefinition.forward`, uncached), the cross-entropy of its next-token
 * predictions, the gradients ({@link valueAndGrad}) and AdamW with clipping; parameters and
 * moments stay on the device and are updated in place. Each step uploads only its batch and
 * three scalars; the losses go into a resident history read back once per block of steps, when
 * a progress line is reported.
 *
 * ```ts
 * const config = { model_type: "mamba", hidden_size: 64, num_hidden_layers: 2, vocab_size: 18 };
 * const trainer = await Trainer.create({ config, params: initParams(config), batch: 8, length: 256 });
 * for (let step = 0; step < 1000; step++) await trainer.step(ids, targets);
 * await trainer.save("out");
 * ```
 *
 * @module
 */

import { valueAndGrad } from "../../dsl/autodiff.ts";
import { eq, where } from "../../dsl/elementwise.ts";
import { arange } from "../../dsl/index_ops.ts";
import { linearCrossEntropy } from "../../dsl/linear_cross_entropy.ts";
import type { Tensor } from "../../dsl/tensor.ts";
import type { InputDecl } from "../../dsl/trace.ts";
import { getGpu, type GpuContext } from "../../runtime/gpu_device.ts";
import { ResidentProgram } from "../../runtime/resident_program.ts";
import type { AutotuneOptions } from "../../runtime/autotune.ts";
import { type ModelDefinition, modelDefinitionFor } from "../definitions.ts";
import {
  adamw,
  adamwDefaults,
  type AdamWOptions,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
} from "./adamw.ts";
import type { ParamRecord } from "./init.ts";
import { type LoraOptions, LoraPlan } from "./lora.ts";
import { type OptimizerState, saveOptimizerState } from "./optimizer_state.ts";
import { saveModel } from "./save.ts";

/** Which positions the loss covers. */
export type LossTarget = "next" | "last";

/** One block's report (see {@link TrainerOptions.onProgress}). */
export interface TrainProgress {
  /** Steps done so far. */
  step: number;
  /** The loss of each step of the block, in order. */
  losses: number[];
  /** Their mean. */
  loss: number;
  /** Tokens per second over the block (wall clock, readback included). */
  tokensPerSecond: number;
  /** Seconds since the trainer was created. */
  seconds: number;
}

/** Options of {@link Trainer.create}. */
export interface TrainerOptions {
  /** The model's HF config.json (its `model_type` picks the definition; saved as is). */
  config: Record<string, unknown>;
  /** Initial values of every weight, by checkpoint tensor name (see `initParams`, `loadParams`). */
  params: ParamRecord;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence. */
  length: number;
  /**
   * `"next"` (default): targets are b·l ids, the next token of every position (the usual LM
   * loss); `"last"`: targets are b ids, the answer after each sequence's last token only.
   */
  target?: LossTarget;
  /** AdamW's hyperparameters (weight decay, betas, clipping). */
  optimizer?: AdamWOptions;
  /** The learning rate: a constant, or a schedule of the step (1, 2, …). Default 1e-3. */
  lr?: number | ((step: number) => number);
  /** Steps per block: losses are read back and reported once per block (default 50). */
  blockSize?: number;
  /**
   * Steps encoded into one GPU submit (default 1). More saves host overhead per step on a fast
   * GPU, at the cost of this many copies of the step's intermediate buffers; a block boundary
   * always submits.
   */
  stepsPerSubmit?: number;
  /** Called once per block; default: one line on stdout (step, loss, tokens/s). */
  onProgress?: (p: TrainProgress) => void;
  /** Which weights are trained (default all); the others are frozen: not differentiated. */
  trainable?: (name: string) => boolean;
  /** Low-rank adapters: train only these, with every base weight frozen (see `lora.ts`). */
  lora?: LoraOptions;
  /** GPU context (default: the shared one). */
  gpu?: GpuContext;
  /**
   * Time the step's tunable kernels (matmul tiles, …) on this adapter and use the fastest,
   * cached per adapter and shape (`compile`'s `autotune`). Default off.
   */
  autotune?: boolean | AutotuneOptions;
  /**
   * AdamW's state from an earlier run of the same parameters (`Trainer.optimizerState`, or
   * `loadOptimizerState` of a directory saved with `{ optimizer: true }`): its moments are
   * uploaded, and bias correction and the `lr` schedule go on from its step, so that a run split
   * in two trains as one would. Without it the moments start at zero.
   */
  resume?: OptimizerState;
}

/** The axis of the resident loss history. */
const HISTORY_AXIS = "train_hist";

/** A model being trained on the GPU (see the module documentation). */
export class Trainer {
  /** The model's definition. */
  readonly definition: ModelDefinition;
  /** The config it was created with (saved with the weights). */
  readonly config: Record<string, unknown>;
  /** Names of the trained tensors (weights, or adapters under LoRA). */
  readonly trainedNames: readonly string[];
  /** The step program (for kernel counts and tests). */
  readonly program: ResidentProgram;
  readonly #options: TrainerOptions;
  readonly #lora: LoraPlan | undefined;
  readonly #frozen: readonly string[];
  #step = 0;
  /** Optimizer steps of the run this one resumes (`TrainerOptions.resume`). */
  #resumedAt = 0;
  /** Steps given to `step` but not yet submitted. */
  #queued: Record<string, Int32Array | Float32Array>[] = [];
  #blockStart = performance.now();
  readonly #created = performance.now();

  private constructor(
    options: TrainerOptions,
    definition: ModelDefinition,
    program: ResidentProgram,
    trained: string[],
    frozen: string[],
    lora: LoraPlan | undefined,
  ) {
    this.#options = options;
    this.definition = definition;
    this.config = options.config;
    this.program = program;
    this.trainedNames = trained;
    this.#frozen = frozen;
    this.#lora = lora;
  }

  /** Compiles the step program and uploads the parameters (moments start at zero). */
  static async create(options: TrainerOptions): Promise<Trainer> {
    const def = modelDefinitionFor(options.config, "config");
    const { batch, length } = options;
    for (const [k, v] of [["batch", batch], ["length", length]] as const) {
      if (!Number.isInteger(v) || v < 1) {
        throw new Error(`Trainer: ${k} must be an integer ≥ 1, got ${v}`);
      }
    }
    const target = options.target ?? "next";
    const block = options.blockSize ?? 50;
    if (!Number.isInteger(block) || block < 1) {
      throw new Error(`Trainer: blockSize must be an integer ≥ 1, got ${block}`);
    }
    const weights = def.weightInputs();
    checkParams(def, options.params);
    const lora = options.lora
      ? new LoraPlan(weights, def.sizes(batch, length), options.lora)
      : undefined;
    const isTrained = lora ? () => false : (options.trainable ?? (() => true));
    const trainedWeights = Object.keys(weights).filter(isTrained);
    const frozen = Object.keys(weights).filter((k) => !isTrained(k));
    const trainedDecls: Record<string, InputDecl> = lora
      ? lora.adapterInputs()
      : Object.fromEntries(trainedWeights.map((k) => [k, weights[k]]));
    const trained = Object.keys(trainedDecls);
    if (trained.length === 0) throw new Error("Trainer: no weight is trainable");
    const inputs: Record<string, InputDecl> = {
      ids: { axes: "b l", dtype: "i32" },
      targets: { axes: target === "next" ? "b l" : "b", dtype: "i32" },
      lr: "",
      bc1: "",
      bc2: "",
      slot: "",
      history: HISTORY_AXIS,
    };
    for (const k of frozen) inputs[k] = weights[k];
    for (const [k, decl] of Object.entries(trainedDecls)) {
      inputs[k] = decl;
      inputs[`m.${k}`] = decl;
      inputs[`v.${k}`] = decl;
    }
    const sizes = { ...def.sizes(batch, length), ...lora?.sizes(), [HISTORY_AXIS]: block };
    const perSubmit = options.stepsPerSubmit ?? 1;
    if (!Number.isInteger(perSubmit) || perSubmit < 1) {
      throw new Error(`Trainer: stepsPerSubmit must be an integer ≥ 1, got ${perSubmit}`);
    }
    const optimizer = options.optimizer ?? {};
    adamwDefaults(optimizer);
    const gpu = options.gpu ?? await getGpu();
    // The head and loss are built in pieces that one binding can hold (`linearCrossEntropy`).
    const maxLogitsBytes = gpu.limits.maxStorageBufferBindingSize;
    const stepFn = (t: Record<string, Tensor>) => {
      const pick = (prefix: string) => Object.fromEntries(trained.map((k) => [k, t[prefix + k]]));
      const [loss, grads] = valueAndGrad((p: Record<string, Tensor>) => {
        const w: Record<string, Tensor> = {};
        for (const k of frozen) w[k] = t[k];
        Object.assign(w, lora ? lora.effectiveWeights(w, p) : p);
        const { features, head } = def.trunk({ ...w, ids: t.ids }, {
          cached: false,
          lastOnly: target === "last",
        });
        return linearCrossEntropy(features, head, t.targets, "v", { maxLogitsBytes });
      })(pick(""));
      const scalars = { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs;
      const step = adamw(
        { params: pick(""), grads, m: pick("m."), v: pick("v.") },
        scalars,
        optimizer,
      );
      const history = where(eq(arange(HISTORY_AXIS, block), t.slot), loss, t.history);
      return { ...adamwOutputs(step), history, loss };
    };
    const program = await ResidentProgram.create(inputs, stepFn, sizes, {
      state: { ...adamwState(trained), history: "history" },
      constant: frozen,
      gpu,
      autotune: options.autotune,
      replicas: perSubmit,
    });
    const trainer = new Trainer(options, def, program, trained, frozen, lora);
    for (const k of frozen) program.write(k, options.params[k]);
    if (lora) {
      const adapters = lora.initAdapters();
      for (const k of trained) program.write(k, adapters[k]);
    } else for (const k of trained) program.write(k, options.params[k]);
    if (options.resume) trainer.#resume(options.resume);
    return trainer;
  }

  /** Uploads an earlier run's moments and continues its step count. */
  #resume(state: OptimizerState): void {
    const { step, m, v } = state;
    if (!Number.isInteger(step) || step < 0) {
      throw new Error(`Trainer: resume.step must be an integer ≥ 0, got ${step}`);
    }
    for (const [kind, record] of [["m", m], ["v", v]] as const) {
      for (const k of this.trainedNames) {
        if (!(record[k] instanceof Float32Array)) {
          throw new Error(`Trainer: resume.${kind} lacks "${k}"`);
        }
      }
      for (const k of Object.keys(record)) {
        if (!this.trainedNames.includes(k)) {
          throw new Error(`Trainer: resume.${kind} has "${k}", which is not trained here`);
        }
      }
    }
    for (const k of this.trainedNames) {
      this.program.write(`m.${k}`, m[k]);
      this.program.write(`v.${k}`, v[k]);
    }
    this.#resumedAt = step;
  }

  /** Steps done so far by this trainer. */
  get steps(): number {
    return this.#step;
  }

  /** Optimizer steps so far, a resumed run's included (AdamW's bias correction uses it). */
  get optimizerStep(): number {
    return this.#resumedAt + this.#step;
  }

  /**
   * One optimizer step on a batch: `ids` are b·l token ids, `targets` b·l next tokens
   * (`target: "next"`) or b answers (`"last"`). Nothing is read back, except at the end of a
   * block, when the block's losses are returned (and reported); otherwise returns undefined.
   */
  async step(ids: Int32Array, targets: Int32Array): Promise<number[] | undefined> {
    const { batch, length } = this.#options;
    if (ids.length !== batch * length) {
      throw new Error(
        `Trainer.step: ids has ${ids.length} entries, expected batch·length = ${batch * length}`,
      );
    }
    const block = this.#options.blockSize ?? 50;
    const step = ++this.#step;
    const global = this.#resumedAt + step;
    const lr = this.#options.lr ?? 1e-3;
    const rate = typeof lr === "number" ? lr : lr(global);
    const slot = Float32Array.of((step - 1) % block);
    // Copies: the caller may reuse its arrays before a queued step is submitted.
    this.#queued.push({
      ids: ids.slice(),
      targets: targets.slice(),
      slot,
      ...adamwScalars(global, rate, this.#options.optimizer),
    });
    if (this.#queued.length === (this.#options.stepsPerSubmit ?? 1) || step % block === 0) {
      await this.#submit();
    }
    if (step % block !== 0) return undefined;
    return await this.#readBlock(block);
  }

  /** Submits the queued steps. */
  async #submit(): Promise<void> {
    if (this.#queued.length === 0) return;
    const queued = this.#queued;
    this.#queued = [];
    await this.program.steps(queued);
  }

  /** Reads the losses of the steps since the last block boundary (for a final partial block). */
  async flush(): Promise<number[]> {
    const block = this.#options.blockSize ?? 50;
    const n = this.#step % block;
    await this.#submit();
    return n === 0 ? [] : await this.#readBlock(n);
  }

  async #readBlock(n: number): Promise<number[]> {
    const { history } = await this.program.read(["history"]);
    const losses = [...history.subarray(0, n)];
    const bad = losses.findIndex((l) => !Number.isFinite(l));
    if (bad >= 0) {
      throw new Error(`Trainer: the loss of step ${this.#step - n + bad + 1} is ${losses[bad]}`);
    }
    const now = performance.now();
    const tokens = n * this.#options.batch * this.#options.length;
    const progress: TrainProgress = {
      step: this.#step,
      losses,
      loss: losses.reduce((a, b) => a + b, 0) / n,
      tokensPerSecond: tokens / ((now - this.#blockStart) / 1000),
      seconds: (now - this.#created) / 1000,
    };
    this.#blockStart = now;
    (this.#options.onProgress ?? printProgress)(progress);
    return losses;
  }

  /**
   * The current weights by checkpoint tensor name (read back from the device); with LoRA, the
   * base weights with the adapters merged in.
   */
  async params(): Promise<ParamRecord> {
    await this.#submit();
    const read = await this.program.read([...this.#frozen, ...this.trainedNames]);
    const out: ParamRecord = {};
    for (const [k, v] of Object.entries(read)) out[k] = v as Float32Array;
    return this.#lora ? this.#lora.merge(out) : out;
  }

  /** The trained tensors only (the adapters under LoRA), read back from the device. */
  async trainedParams(): Promise<ParamRecord> {
    await this.#submit();
    const read = await this.program.read(this.trainedNames);
    return read as ParamRecord;
  }

  /** AdamW's state now (read back from the device): the step count and both moments. */
  async optimizerState(): Promise<OptimizerState> {
    await this.#submit();
    const names = this.trainedNames;
    const read = await this.program.read([
      ...names.map((k) => `m.${k}`),
      ...names.map((k) => `v.${k}`),
    ]);
    const state: OptimizerState = { step: this.optimizerStep, m: {}, v: {} };
    for (const k of names) {
      state.m[k] = read[`m.${k}`] as Float32Array;
      state.v[k] = read[`v.${k}`] as Float32Array;
    }
    return state;
  }

  /**
   * Writes an HF model directory (config.json, model.safetensors) that `loadModel` reads; with
   * `optimizer: true` also AdamW's state, in `dir/optimizer/` (`loadOptimizerState` reads it,
   * `TrainerOptions.resume` continues from it).
   */
  async save(dir: string, options: { optimizer?: boolean } = {}): Promise<void> {
    await saveModel(dir, this.config, this.definition, await this.params());
    if (options.optimizer) await saveOptimizerState(dir, await this.optimizerState());
  }

  /** Frees the program and its device buffers. */
  destroy(): void {
    this.program.destroy();
  }
}

/** The default progress line. */
export function printProgress(p: TrainProgress): void {
  console.log(
    `step ${String(p.step).padStart(6)}  loss ${p.loss.toFixed(4)}  ` +
      `tokens/s ${p.tokensPerSecond.toExponential(2)}  ${p.seconds.toFixed(1)} s`,
  );
}

/** Checks that `params` holds every weight of the model with the right element count. */
function checkParams(def: ModelDefinition, params: ParamRecord): void {
  for (const [name, shape] of def.weightShapes()) {
    const data = params[name];
    const n = shape.reduce((p, s) => p * s, 1);
    if (!(data instanceof Float32Array)) throw new Error(`Trainer: params lacks "${name}"`);
    if (data.length !== n) {
      throw new Error(
        `Trainer: params["${name}"] has ${data.length} values, the model needs ${n} (${
          shape.join("×")
        })`,
      );
    }
  }
  const known = new Set(def.weightShapes().map(([n]) => n));
  const extra = Object.keys(params).find((k) => !known.has(k));
  if (extra !== undefined) {
    throw new Error(`Trainer: params has "${extra}", which the model does not read`);
  }
}
