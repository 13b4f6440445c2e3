/**
 * A language model loaded from an HF checkpoint (a directory, a URL, dropped files: any
 * `ModelSource`), resident on the GPU: weights are streamed into GPU buffers step by step (never
 * held whole on the host) and shared by every compiled program. A prompt runs as chunks of power-of-two
 * lengths (prompt_chunks.ts), each continuing from the previous chunk's caches, so a bounded set
 * of programs serves every prompt length. Generation encodes many decode steps and their
 * sampling in one submit and reads tokens back in blocks. Calls on one model run one at a time,
 * in call order.
 *
 * @module
 */

import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import type { MatmulStrategy } from "../codegen/matmul_lowering.ts";
import { deviceLimits } from "../runtime/compile.ts";
import type { AutotuneOptions } from "../runtime/autotune.ts";
import { getGpu, type GpuContext } from "../runtime/gpu_device.ts";
import { readBuffers } from "../runtime/gpu_buffers.ts";
import { type Dispatch, submitDispatches, timeSequence } from "../runtime/gpu_submit.ts";
import { openModelCheckpoint } from "./checkpoint/model_weights.ts";
import { readConfig } from "./checkpoint/config.ts";
import { createProgressBar } from "./checkpoint/progress.ts";
import type { ModelSource } from "./checkpoint/source.ts";
import { platform } from "../platform/current.ts";
import { encodeSamplerParams } from "./sampler.ts";
import { type ModelDefinition, modelDefinitionFor } from "./definitions.ts";
import { ModelPrograms, STORAGE } from "./model_programs.ts";
import { runPrompt } from "./prompt_run.ts";
import { type GenerateOptions, generateTokens, maxNewTokens } from "./generation.ts";
import { checkFinite, checkTokens } from "./model_call_checks.ts";
import { checkWeightDtype, type WeightDtype, withWeightDtype } from "./weight_dtype.ts";
import { halfWords } from "../runtime/half.ts";

/** 16-bit words padded to an even count (writeBuffer copies whole u32s). */
function padToWords(words: Uint16Array): Uint16Array {
  if (words.length % 2 === 0) return words;
  const padded = new Uint16Array(words.length + 1);
  padded.set(words);
  return padded;
}

export { type GenerateOptions, maxNewTokens };

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Show a progress bar on stderr while reading weights (default: when stderr is a terminal). */
  progress?: boolean;
  /**
   * Called as weights are read and uploaded: bytes done so far and the checkpoint's total (a
   * page's progress bar).
   */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  /** GPU context (default: the shared one). */
  gpu?: GpuContext;
  /**
   * Kernel strategy overrides for every program the model compiles (benchmarks and tests:
   * e.g. `{ scan: { lanes: 32 } }`, or `{ rideAlong: false }` to give every elementwise kernel
   * its own dispatch); by default each is chosen from the shapes and device.
   */
  codegen?: { scan?: ScanStrategy; matmul?: MatmulStrategy; rideAlong?: boolean };
  /**
   * Storage of the weight matrices on the GPU (default `"f32"`): `"f16"` or `"bf16"` halves
   * their bytes; kernels widen them to f32, and activations and states stay f32
   * (`models/weight_dtype.ts`). `"f16"` needs the adapter's `shader-f16` feature (else a clear
   * error); `"bf16"` runs on any adapter.
   */
  dtype?: WeightDtype;
  /**
   * Tune the kernels of every program the model compiles (prompt chunks, decode steps) on this
   * adapter, as `compile`'s `autotune` does: each tuning point's candidates (matmul tiles, scan
   * and SSD lowerings) are timed the first time a shape is compiled and the choice is cached on
   * disk per adapter and shape (`runtime/autotune.ts`). Default off: the cost model's choices.
   */
  autotune?: boolean | AutotuneOptions;
}

/** What a model holds compiled, for tests and memory reports ({@link LanguageModel.cacheStats}). */
export interface ModelCacheStats {
  /** Batch sizes with buffers and decode programs. */
  batchSizes: number[];
  /** Compiled prompt-chunk programs, over all batch sizes. */
  chunkPrograms: number;
}

/** Logits read back but not yet mapped, at most (each read holds a staging buffer). */
const MAX_PENDING_READ_BYTES = 256 * 2 ** 20;

/**
 * Loads a model (config.json + safetensors) onto the GPU.
 *
 * @param dir A model directory (under Deno; a URL relative to the page in a browser), or any
 *   `ModelSource`: `urlSource(url)`, `blobSource(files)`, `bufferSource(buffers)`.
 * @param options Progress, GPU context, weight dtype, kernel strategy overrides.
 */
export async function loadModel(
  dir: string | ModelSource,
  options: LoadOptions = {},
): Promise<LanguageModel> {
  const source = typeof dir === "string" ? await platform.modelSource(dir) : dir;
  const config = await readConfig(source);
  const dtype = options.dtype ?? "f32";
  const ctx = options.gpu ?? await getGpu();
  checkWeightDtype(dtype, ctx);
  const def = withWeightDtype(modelDefinitionFor(config, source.name), dtype);
  const inputs = def.weightInputs();
  const showProgress = options.progress ?? platform.stderrIsTerminal();
  let bar: ReturnType<typeof createProgressBar> | undefined;
  // Checks the headers against the model and the device before any tensor is read.
  const ckpt = await openModelCheckpoint(source, def, deviceLimits(ctx), {
    onProgress: (done, total) => {
      options.onProgress?.(done, total);
      if (!showProgress) return;
      bar ??= createProgressBar(`loading ${source.name}`, total);
      bar.update(done);
    },
  });
  const weights = new Map<string, GPUBuffer>();
  try {
    for (const [name, hfShape] of def.weightShapes()) {
      const numel = hfShape.reduce((a, b) => a * b, 1);
      const decl = inputs[name];
      const half = typeof decl === "string" ? undefined : decl.dtype;
      const isHalf = half === "f16" || half === "bf16";
      const bytes = isHalf ? 2 * numel + (numel % 2) * 2 : 4 * numel;
      const buffer = ctx.device.createBuffer({ size: Math.max(16, bytes), usage: STORAGE });
      weights.set(name, buffer);
      // Each read step goes straight to the GPU (writeBuffer copies it before returning);
      // 16-bit weights as their words, rounded to nearest even, padded to whole u32s.
      await ckpt.streamF32(name, hfShape, (values, at) => {
        if (!isHalf) {
          ctx.device.queue.writeBuffer(buffer, 4 * at, values as Float32Array<ArrayBuffer>);
          return;
        }
        // Read steps are whole multiples of 4 bytes of 16-bit or f32 data, so with the
        // default step every one starts on a whole u32 word.
        if (at % 2 !== 0) throw new Error(`internal: read step of ${name} starts mid-word`);
        const words = padToWords(halfWords(values, half));
        ctx.device.queue.writeBuffer(buffer, 2 * at, words as Uint16Array<ArrayBuffer>);
      });
    }
  } catch (e) {
    for (const b of weights.values()) b.destroy();
    throw e;
  } finally {
    bar?.finish();
    ckpt.close();
  }
  return new LanguageModel(ctx, def, weights, options.codegen, options.autotune);
}

/** A model resident on the GPU. Calls run one at a time, in call order. */
export class LanguageModel {
  /** The model's definition (config, inputs, forward function). */
  readonly definition: ModelDefinition;
  readonly #ctx: GpuContext;
  /** Weights, lanes and compiled programs, under their LRU bounds. */
  readonly #model: ModelPrograms;
  #lastPrefill: string[] = [];
  /** The last call queued: each call starts when the previous one has settled. */
  #tail: Promise<unknown> = Promise.resolve();
  #pendingCalls = 0;
  #destroyed = false;

  /** Wraps uploaded weights (use {@link loadModel}). */
  constructor(
    ctx: GpuContext,
    definition: ModelDefinition,
    weights: Map<string, GPUBuffer>,
    codegen: LoadOptions["codegen"] = {},
    autotune: LoadOptions["autotune"] = false,
  ) {
    this.#ctx = ctx;
    this.definition = definition;
    this.#model = new ModelPrograms(ctx, definition, weights, codegen, autotune);
  }

  /**
   * Runs `fn` after every call made before it has settled: concurrent calls share the model's
   * buffers, so they must not interleave. Rejects at once when the model was destroyed.
   */
  #serial<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#destroyed) {
      return Promise.reject(
        new Error(`${what}: the model was destroyed (destroy() freed its GPU memory)`),
      );
    }
    this.#pendingCalls++;
    const run = this.#tail.then(async () => {
      try {
        return await fn();
      } finally {
        this.#model.trim();
      }
    });
    const settled = run.finally(() => {
      if (--this.#pendingCalls === 0 && this.#destroyed) this.#free();
    });
    this.#tail = settled.catch(() => {});
    return settled;
  }

  /**
   * Logits for every position of each row of `tokens` (rows of equal length): [b, l, vocab].
   * Rejects when any logit is NaN or infinite.
   */
  logits(tokens: number[][]): Promise<Float32Array> {
    return this.#serial("logits", async () => {
      const { b, l, ids } = checkTokens(tokens, this.definition.vocab);
      const vocab = this.definition.vocab;
      const lane = this.#model.lane(b);
      const programs = await this.#model.chunkPrograms(lane, "all", l);
      const out = new Float32Array(b * l * vocab);
      // Each chunk's logits are copied out right behind it (a repeated chunk length reuses its
      // program's buffer); the maps are awaited together, once the staging buffers pending
      // would exceed MAX_PENDING_READ_BYTES, and at the end.
      const reads: Promise<void>[] = [];
      let pendingBytes = 0;
      try {
        await runPrompt(this.#model, lane, ids, l, programs, async (chunk, start, c) => {
          const bytes = 4 * b * c * vocab;
          if (pendingBytes > 0 && pendingBytes + bytes > MAX_PENDING_READ_BYTES) {
            await Promise.all(reads);
            pendingBytes = 0;
          }
          pendingBytes += bytes;
          const read = readBuffers(this.#ctx, [{
            buffer: chunk.logits!,
            byteLength: bytes,
          }]).then(([raw]) => {
            const part = new Float32Array(raw);
            for (let r = 0; r < b; r++) {
              out.set(part.subarray(r * c * vocab, (r + 1) * c * vocab), (r * l + start) * vocab);
            }
          });
          read.catch(() => {}); // awaited below
          reads.push(read);
        });
      } catch (e) {
        await Promise.allSettled(reads);
        throw e;
      }
      await Promise.all(reads);
      checkFinite(out, b, l, vocab);
      return out;
    });
  }

  /**
   * Times the prompt pass (last-position logits and caches, one whole-sequence program built
   * for this call) on `tokens` with timestamp queries: per-kernel medians and their sum.
   */
  benchmarkPrefill(
    tokens: number[][],
  ): Promise<{ kernels: { name: string; medianNs: number }[]; totalNs: number }> {
    return this.#serial("benchmarkPrefill", async () => {
      const { b, l, ids } = checkTokens(tokens, this.definition.vocab);
      const def = this.definition;
      const prog = await this.#model.build(
        { ...def.weightInputs(), ids: { axes: "b l", dtype: "i32" } },
        (t) => def.forward(t, { lastOnly: true }),
        def.sizes(b, l),
      );
      try {
        return await prog.benchmark({ ids }, { warmup: 2, iterations: 5 });
      } finally {
        prog.destroy();
      }
    });
  }

  /**
   * Times one decode step (all layers and the LM head at l = 1, without sampling) with
   * timestamp queries: per-kernel medians and their sum.
   */
  benchmarkDecodeStep(
    b = 1,
  ): Promise<{ kernels: { name: string; medianNs: number }[]; totalNs: number }> {
    return this.#serial("benchmarkDecodeStep", async () => {
      const decode = await this.#model.decodePrograms(this.#model.lane(b));
      return await decode.ping.benchmark({}, { warmup: 3, iterations: 20 });
    });
  }

  /**
   * Times `steps` decode steps (batch `b`, conv caches alternating as in generation, without
   * sampling) encoded back to back in one pass, as generation runs them: the GPU time per step,
   * the greedy sampler's GPU time per step (timed alone), and the CPU time to check, encode and
   * submit one block of steps, per step (also with a readback's map pending meanwhile).
   */
  benchmarkDecodeBlock(
    b = 1,
    steps = 32,
  ): Promise<
    {
      gpuNsPerStep: number;
      samplerNs: number;
      cpuSubmitNsPerStep: number;
      cpuSubmitWithPendingReadNsPerStep: number;
      dispatchesPerStep: number;
    }
  > {
    return this.#serial("benchmarkDecodeBlock", async () => {
      const lane = this.#model.lane(b);
      const decode = await this.#model.decodePrograms(lane);
      // The greedy sampler alone (default sampling parameters: temperature 0), timed the same way.
      const tokensBuf = this.#ctx.device.createBuffer({ size: 4 * b * steps, usage: STORAGE });
      let samplerNs: number;
      try {
        const greedy = encodeSamplerParams({}, steps) as Uint32Array<ArrayBuffer>;
        this.#ctx.device.queue.writeBuffer(lane.paramsBuf, 0, greedy);
        const sample = await this.#model.samplerDispatch(lane, tokensBuf);
        const t = await timeSequence(this.#ctx, Array(steps).fill(sample), {
          warmup: 2,
          iterations: 10,
        });
        samplerNs = t.medianNs / steps;
      } finally {
        tokensBuf.destroy();
      }
      const dispatches: Dispatch[] = [];
      for (let k = 0; k < steps; k++) {
        dispatches.push(...(k % 2 === 0 ? decode.ping : decode.pong).dispatches);
      }
      const gpu = await timeSequence(this.#ctx, dispatches, { warmup: 2, iterations: 10 });
      // Median of five submits of the block, optionally with a readback's map pending meanwhile
      // (as naive pipelining has it).
      const submitMs = async (pendingRead: boolean): Promise<number> => {
        const times: number[] = [];
        for (let it = 0; it < 5; it++) {
          const read = pendingRead
            ? readBuffers(this.#ctx, [{ buffer: lane.idsBuf, byteLength: 4 }])
            : undefined;
          const t0 = performance.now();
          await submitDispatches(this.#ctx, dispatches);
          times.push(performance.now() - t0);
          await read;
        }
        await this.#ctx.device.queue.onSubmittedWorkDone();
        return times.sort((x, y) => x - y)[2];
      };
      const cpu = await submitMs(false);
      const cpuPending = await submitMs(true);
      return {
        gpuNsPerStep: gpu.medianNs / steps,
        samplerNs,
        cpuSubmitNsPerStep: (cpu * 1e6) / steps,
        cpuSubmitWithPendingReadNsPerStep: (cpuPending * 1e6) / steps,
        dispatchesPerStep: dispatches.length / steps,
      };
    });
  }

  /**
   * Generates up to `maxNew` tokens after each prompt row; returns the new tokens per row.
   * Rejects, naming the step, when the logits of a step hold a NaN or an infinity.
   */
  generate(prompts: number[][], options: GenerateOptions): Promise<number[][]> {
    return this.#serial(
      "generate",
      () => generateTokens(this.#model, prompts, options, (k) => this.#lastPrefill = k),
    );
  }

  /** Names of the kernels of the last generation's prompt pass (what ran, for reports). */
  lastPrefillKernels(): string[] {
    return [...this.#lastPrefill];
  }

  /** What the model holds compiled now (batch sizes and prompt-chunk programs). */
  cacheStats(): ModelCacheStats {
    return { batchSizes: this.#model.laneSizes(), chunkPrograms: this.#model.chunkProgramCount() };
  }

  /**
   * Frees the model's GPU memory (weights, buffers, compiled programs, sampler pipelines) once
   * the calls already made have settled; later calls reject.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    if (this.#pendingCalls === 0) this.#free();
  }

  #free(): void {
    this.#model.free();
  }
}
