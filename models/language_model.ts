/**
 * A language model loaded from an HF checkpoint directory, resident on the GPU: weights are
 * uploaded once and shared by every compiled program. A prompt runs as chunks of power-of-two
 * lengths (prompt_chunks.ts), each continuing from the previous chunk's caches, so a bounded set
 * of programs serves every prompt length. Generation encodes many decode steps and their
 * sampling in one submit and reads tokens back in blocks. Calls on one model run one at a time,
 * in call order.
 *
 * @module
 */

import { type InputDecl, trace, type TraceResult } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { Node } from "../dsl/ir.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import type { MatmulStrategy } from "../codegen/matmul_lowering.ts";
import { deviceLimits } from "../runtime/compile.ts";
import { getGpu, type GpuContext } from "../runtime/gpu_device.ts";
import { readBuffers } from "../runtime/gpu_buffers.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import {
  type Dispatch,
  type EncodedDispatches,
  encodeDispatches,
  submitDispatches,
  submitEncoded,
  timeSequence,
} from "../runtime/gpu_submit.ts";
import { GpuProgram } from "../runtime/program.ts";
import { openModelCheckpoint } from "./checkpoint/model_weights.ts";
import { readConfig } from "./checkpoint/config.ts";
import { createProgressBar } from "./checkpoint/progress.ts";
import {
  emitSamplerKernel,
  encodeSamplerParams,
  PARAM_WORDS,
  type SamplerKernel,
  type SamplingOptions,
  STATE_WORDS,
} from "./sampler.ts";
import { type ModelDefinition, modelDefinitionFor } from "./definitions.ts";
import { chunkLengths, idColumns } from "./prompt_chunks.ts";

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Show a progress bar on stderr while reading weights (default: when stderr is a terminal). */
  progress?: boolean;
  /** GPU context (default: the shared one). */
  gpu?: GpuContext;
  /**
   * Kernel strategy overrides for every program the model compiles (benchmarks and tests:
   * e.g. `{ scan: { lanes: 32 } }`); by default each is chosen from the shapes and device.
   */
  codegen?: { scan?: ScanStrategy; matmul?: MatmulStrategy };
}

/** Options of {@link LanguageModel.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens per row, at most (see {@link maxNewTokens} for the device's limit). */
  maxNew: number;
  /**
   * Stop a row at this token, or at any token of a list (default: the config's eos_token_id,
   * one id or a list); -1 or [] never stops early.
   */
  eos?: number | readonly number[];
  /** Called with each block of new tokens per row, as blocks arrive. */
  onTokens?: (tokens: number[][]) => void;
  /**
   * Largest number of decode steps per submit (default 64). Blocks start at 8 steps, so text
   * starts streaming early, and double up to this size.
   */
  blockSize?: number;
}

/** What a model holds compiled, for tests and memory reports ({@link LanguageModel.cacheStats}). */
export interface ModelCacheStats {
  /** Batch sizes with buffers and decode programs. */
  batchSizes: number[];
  /** Compiled prompt-chunk programs, over all batch sizes. */
  chunkPrograms: number;
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
/** Longest prompt chunk (a power of two): longer prompts run as several. */
const MAX_CHUNK = 1024;
/**
 * Prompt-chunk programs kept compiled, over all batch sizes (least recently used dropped first).
 * One batch size needs at most 2 · (log2(MAX_CHUNK) + 1) = 22: every length, for logits and
 * for generation.
 */
const MAX_CHUNK_PROGRAMS = 24;
/** Batch sizes whose buffers and programs stay (least recently used dropped first). */
const MAX_LANES = 4;
/** Logits read back but not yet mapped, at most (each read holds a staging buffer). */
const MAX_PENDING_READ_BYTES = 256 * 2 ** 20;

/**
 * The most new tokens per row {@link LanguageModel.generate} accepts for `batch` rows on `ctx`'s
 * device: its token buffer (4 bytes per token) must fit one storage binding, and be indexed in
 * 32 bits.
 */
export function maxNewTokens(ctx: GpuContext, batch = 1): number {
  const limits = ctx.limits;
  const bytes = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  return Math.min(Math.floor(bytes / (4 * batch)), Math.floor((2 ** 32 - 1) / batch));
}

/** The decode step, twice: reading the conv caches from ping and writing pong, and back. */
interface DecodePrograms {
  ping: GpuProgram;
  pong: GpuProgram;
}

/** A compiled prompt chunk: "last" writes the lane's last-position logits, "all" its own. */
interface ChunkProgram {
  program: GpuProgram;
  /** For "all": the logits of every position [b, c, vocab] (owned). */
  logits?: GPUBuffer;
}

type ChunkVariant = "last" | "all";

/** The buffers and programs of one batch size, shared by logits() and generate(). */
interface Lane {
  b: number;
  /**
   * Caches read by the next prompt chunk and decode step 1 (ping) and the other set (pong).
   * Caches updated in place (SSM states) are one buffer in both.
   */
  ping: Record<string, GPUBuffer>;
  pong: Record<string, GPUBuffer>;
  /** Last-position logits [b, vocab], read by the sampler. */
  logitsBuf: GPUBuffer;
  /** The next input token per row, written by the sampler. */
  idsBuf: GPUBuffer;
  paramsBuf: GPUBuffer;
  stateBuf: GPUBuffer;
  buffers: GPUBuffer[];
  decode?: DecodePrograms;
  sampler?: { kernel: SamplerKernel; pipeline: GPUComputePipeline };
}

/** Whether SSMKIT_TRACE_GENERATE=1 is set and readable (never prompts for permission). */
function traceRequested(): boolean {
  const variable = "SSMKIT_TRACE_GENERATE";
  if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") return false;
  return Deno.env.get(variable) === "1";
}

function describe(v: unknown): string {
  return typeof v === "number" ? String(v) : `${typeof v} ${JSON.stringify(v)}`;
}

/** Loads a model directory (config.json + safetensors) onto the GPU. */
export async function loadModel(dir: string, options: LoadOptions = {}): Promise<LanguageModel> {
  const config = await readConfig(dir);
  const def = modelDefinitionFor(config, dir);
  const ctx = options.gpu ?? await getGpu();
  const showProgress = options.progress ?? Deno.stderr.isTerminal();
  let bar: ReturnType<typeof createProgressBar> | undefined;
  // Checks the headers against the model and the device before any tensor is read.
  const ckpt = await openModelCheckpoint(dir, def, deviceLimits(ctx), {
    onProgress: (done, total) => {
      if (!showProgress) return;
      bar ??= createProgressBar(`loading ${dir}`, total);
      bar.update(done);
    },
  });
  const weights = new Map<string, GPUBuffer>();
  try {
    for (const [name, hfShape] of def.weightShapes()) {
      const data = await ckpt.getF32(name, hfShape);
      const buffer = ctx.device.createBuffer({
        size: Math.max(16, data.byteLength),
        usage: STORAGE,
      });
      ctx.device.queue.writeBuffer(buffer, 0, data as Float32Array<ArrayBuffer>);
      weights.set(name, buffer);
    }
  } catch (e) {
    for (const b of weights.values()) b.destroy();
    throw e;
  } finally {
    bar?.finish();
    ckpt.close();
  }
  return new LanguageModel(ctx, def, weights, options.codegen);
}

/** A model resident on the GPU. Calls run one at a time, in call order. */
export class LanguageModel {
  /** The model's definition (config, inputs, forward function). */
  readonly definition: ModelDefinition;
  readonly #ctx: GpuContext;
  readonly #weights: Map<string, GPUBuffer>;
  readonly #codegen: NonNullable<LoadOptions["codegen"]>;
  /** Per batch size, in least-recently-used-first order. */
  readonly #lanes = new Map<number, Lane>();
  /** Prompt-chunk programs by `${b}/${variant}/${length}`, least recently used first. */
  readonly #chunks = new Map<string, ChunkProgram>();
  /** The sampler's pipelines (one per batch size), dropped with the model. */
  #samplerPipelines: PipelineCache;
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
  ) {
    this.#ctx = ctx;
    this.definition = definition;
    this.#weights = weights;
    this.#codegen = codegen;
    this.#samplerPipelines = new PipelineCache(ctx);
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
        this.#trim();
      }
    });
    const settled = run.finally(() => {
      if (--this.#pendingCalls === 0 && this.#destroyed) this.#free();
    });
    this.#tail = settled.catch(() => {});
    return settled;
  }

  /**
   * Compiles a program whose weight inputs are the resident buffers; `inputs`/`outputs` bind
   * other inputs and outputs to given buffers, `inPlace` maps outputs to the inputs they update.
   */
  async #build(
    inputs: Record<string, InputDecl>,
    fn: (t: Record<string, Tensor>) => TraceResult,
    sizes: Record<string, number>,
    bind: {
      inputs?: Record<string, GPUBuffer>;
      outputs?: Record<string, GPUBuffer>;
      inPlace?: Record<string, string>;
    } = {},
  ): Promise<GpuProgram> {
    const graph = trace(inputs, fn, sizes);
    const aliases = new Map<Node, Node>();
    const inPlace = bind.inPlace ?? {};
    for (const [out, inp] of Object.entries(inPlace)) {
      aliases.set(graph.inputs.find((i) => i.name === inp)!, graph.outputs[out]);
    }
    const external = new Map<Node, GPUBuffer>();
    for (const inp of graph.inputs) {
      const buffer = this.#weights.get(inp.name) ?? bind.inputs?.[inp.name];
      if (buffer) external.set(inp, buffer);
    }
    for (const [name, buffer] of Object.entries(bind.outputs ?? {})) {
      // An in-place output lives in its input's buffer already.
      if (!(name in inPlace)) external.set(graph.outputs[name], buffer);
    }
    const program = generateKernels(graph, deviceLimits(this.#ctx), {
      aliases,
      ...this.#codegen,
    });
    return await GpuProgram.create(this.#ctx, program, aliases, external);
  }

  /**
   * Logits for every position of each row of `tokens` (rows of equal length): [b, l, vocab].
   * Rejects when any logit is NaN or infinite.
   */
  logits(tokens: number[][]): Promise<Float32Array> {
    return this.#serial("logits", async () => {
      const { b, l, ids } = this.#checkTokens(tokens);
      const vocab = this.definition.vocab;
      const lane = this.#lane(b);
      const programs = await this.#chunkPrograms(lane, "all", l);
      const out = new Float32Array(b * l * vocab);
      // Each chunk's logits are copied out right behind it (a repeated chunk length reuses its
      // program's buffer); the maps are awaited together, once the staging buffers pending
      // would exceed MAX_PENDING_READ_BYTES, and at the end.
      const reads: Promise<void>[] = [];
      let pendingBytes = 0;
      try {
        await this.#runPrompt(lane, ids, l, programs, async (chunk, start, c) => {
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
      const { b, l, ids } = this.#checkTokens(tokens);
      const def = this.definition;
      const prog = await this.#build(
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
      const decode = await this.#decodePrograms(this.#lane(b));
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
      const lane = this.#lane(b);
      const decode = await this.#decodePrograms(lane);
      // The greedy sampler alone (default sampling parameters: temperature 0), timed the same way.
      const tokensBuf = this.#ctx.device.createBuffer({ size: 4 * b * steps, usage: STORAGE });
      let samplerNs: number;
      try {
        const greedy = encodeSamplerParams({}, steps) as Uint32Array<ArrayBuffer>;
        this.#ctx.device.queue.writeBuffer(lane.paramsBuf, 0, greedy);
        const sample = await this.#samplerDispatch(lane, tokensBuf);
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

  /** The sampler's dispatch for the lane's batch, writing tokens into `tokensBuf`. */
  async #samplerDispatch(lane: Lane, tokensBuf: GPUBuffer): Promise<Dispatch> {
    if (!lane.sampler) {
      const kernel = emitSamplerKernel(lane.b, this.definition.vocab, this.#ctx.limits as never);
      lane.sampler = { kernel, pipeline: await this.#samplerPipelines.get(kernel) };
    }
    const { kernel, pipeline } = lane.sampler;
    const { logitsBuf, paramsBuf, stateBuf, idsBuf } = lane;
    return {
      kernel,
      pipeline,
      buffers: [logitsBuf, paramsBuf, stateBuf, idsBuf, tokensBuf],
      workgroups: kernel.workgroups,
    };
  }

  /**
   * Generates up to `maxNew` tokens after each prompt row; returns the new tokens per row.
   * Rejects, naming the step, when the logits of a step hold a NaN or an infinity.
   */
  generate(prompts: number[][], options: GenerateOptions): Promise<number[][]> {
    return this.#serial("generate", () => this.#generate(prompts, options));
  }

  async #generate(prompts: number[][], options: GenerateOptions): Promise<number[][]> {
    const { b, l, ids } = this.#checkTokens(prompts);
    if (options === null || typeof options !== "object") {
      throw new Error(`generate options must be an object, got ${describe(options)}`);
    }
    const maxNew = options.maxNew;
    if (!Number.isInteger(maxNew) || maxNew < 1) {
      throw new Error(`maxNew must be a positive integer, got ${describe(maxNew)}`);
    }
    const limit = maxNewTokens(this.#ctx, b);
    if (maxNew > limit) {
      throw new Error(
        `maxNew ${maxNew} is too large for this device: at most ${limit} new tokens per row ` +
          `for a batch of ${b} (the token buffer must fit one storage binding)`,
      );
    }
    const block = options.blockSize ?? 64;
    if (!Number.isInteger(block) || block < 1) {
      throw new Error(`blockSize must be a positive integer, got ${describe(block)}`);
    }
    const eos = this.#eosIds(options.eos);
    const params = encodeSamplerParams(options, maxNew);
    const ctx = this.#ctx;
    const device = ctx.device;
    const vocab = this.definition.vocab;
    const lane = this.#lane(b);
    const [decode, chunks] = await Promise.all([
      this.#decodePrograms(lane),
      this.#chunkPrograms(lane, "last", l),
    ]);
    const tokensBuf = device.createBuffer({ size: Math.max(16, 4 * b * maxNew), usage: STORAGE });
    try {
      const sample = await this.#samplerDispatch(lane, tokensBuf);
      device.queue.writeBuffer(lane.paramsBuf, 0, params as Uint32Array<ArrayBuffer>);
      device.queue.writeBuffer(lane.stateBuf, 0, new Uint32Array(b * STATE_WORDS));
      this.#lastPrefill = await this.#runPrompt(lane, ids, l, chunks);
      const result: number[][] = Array.from({ length: b }, () => []);
      const done = new Array(b).fill(false);
      let submitted = 0;
      let lastCount = 0;
      // SSMKIT_TRACE_GENERATE=1 prints when each block was submitted and read back (stderr).
      const trace = traceRequested() ? [] as string[] : undefined;
      const t0 = performance.now();
      const at = () => (performance.now() - t0).toFixed(1);
      /** A block of steps, encoded, and where its tokens lie. */
      interface Block {
        first: number;
        count: number;
        encoded: EncodedDispatches;
      }
      // Encodes the next block of steps (without submitting it). Blocks grow from 8 steps by
      // doubling: the first tokens arrive early, and later blocks amortize each readback.
      const encodeBlock = async (): Promise<Block> => {
        const first = submitted;
        const count = Math.min(lastCount === 0 ? 8 : 2 * lastCount, block, maxNew - first);
        lastCount = count;
        submitted += count;
        const dispatches: Dispatch[] = [];
        for (let k = 0; k < count; k++) {
          const step = first + k;
          // Step 0 samples the prompt's logits; decode steps alternate between the two
          // conv-cache buffer sets (the prompt left its caches in ping).
          if (step > 0) dispatches.push(...(step % 2 === 1 ? decode.ping : decode.pong).dispatches);
          dispatches.push(sample);
        }
        trace?.push(`encode ${first}+${count} at ${at()}`);
        const encoded = await encodeDispatches(ctx, dispatches, "ssmkit generate");
        trace?.push(`encoded at ${at()}`);
        return { first, count, encoded };
      };
      // A block's tokens, and every row's sampler state (which records non-finite logits).
      const readBlock = (blk: Block) =>
        readBuffers(ctx, [
          ...Array.from({ length: b }, (_, row) => ({
            buffer: tokensBuf,
            byteOffset: 4 * (row * maxNew + blk.first),
            byteLength: 4 * blk.count,
          })),
          { buffer: lane.stateBuf, byteLength: 4 * b * STATE_WORDS },
        ]);
      // Software pipelining, shaped by two facts of Deno's WebGPU (bench/RESULTS.md): a map
      // resolves once all work submitted before it was requested is done, and encoding while a
      // map is pending is about 3× slower. So, while the GPU runs block k: encode block k + 1
      // (no map pending), request block k's map (it waits for block k alone), submit block
      // k + 1, then wait for block k's tokens. Blocks in flight when every row has stopped are
      // discarded.
      let current: Block | undefined = await encodeBlock();
      await submitEncoded(ctx, current.encoded);
      while (current) {
        const next: Block | undefined = submitted < maxNew ? await encodeBlock() : undefined;
        const read = readBlock(current);
        try {
          if (next) await submitEncoded(ctx, next.encoded);
        } catch (e) {
          read.catch(() => {});
          throw e;
        }
        const raw = await read;
        trace?.push(`read ${current.first}+${current.count} at ${at()}`);
        const arrived: number[][] = raw.slice(0, b).map((a, row) => {
          const kept: number[] = [];
          for (const t of new Int32Array(a)) {
            if (done[row]) break;
            kept.push(t);
            if (eos.has(t)) done[row] = true;
          }
          return kept;
        });
        const accepted = arrived.map((toks, row) => result[row].length + toks.length);
        const bad = nonFiniteStepError(new Uint32Array(raw[b]), accepted, vocab);
        if (bad) throw bad;
        arrived.forEach((toks, row) => result[row].push(...toks));
        options.onTokens?.(arrived);
        if (done.every((d) => d)) break;
        current = next;
      }
      if (trace) console.error(`ssmkit generate trace (ms): ${trace.join("; ")}; end ${at()}`);
      return result;
    } finally {
      tokensBuf.destroy();
    }
  }

  /** The stop tokens of `eos` (validated), or the model's. */
  #eosIds(eos: GenerateOptions["eos"]): Set<number> {
    const def = this.definition;
    if (eos === undefined) {
      return new Set(def.eosTokenIds);
    }
    const vocab = def.vocab;
    const bad = () =>
      new Error(
        `eos must be a token id in [0, ${vocab}) or a list of them (-1 or [] for none), got ` +
          (Array.isArray(eos) ? JSON.stringify(eos) : describe(eos)),
      );
    const list = eos === -1 ? [] : typeof eos === "number" ? [eos] : eos;
    if (!Array.isArray(list)) throw bad();
    for (const id of list) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocab) throw bad();
    }
    return new Set(list);
  }

  /**
   * Runs a prompt's chunks, each continuing from the caches the previous one left in
   * `lane.ping` (zeroed first); returns the names of the kernels that ran. `afterChunk` is
   * called after each chunk's submit, before anything later is queued. Chunks of length 1
   * without a program of their own (generation) run the decode step, on ids written to
   * `lane.idsBuf`.
   */
  async #runPrompt(
    lane: Lane,
    ids: Int32Array,
    l: number,
    programs: Map<number, ChunkProgram>,
    afterChunk?: (chunk: ChunkProgram, start: number, length: number) => Promise<void>,
  ): Promise<string[]> {
    const device = this.#ctx.device;
    const clear = device.createCommandEncoder({ label: "ssmkit prompt caches" });
    for (const buffer of Object.values(lane.ping)) clear.clearBuffer(buffer);
    device.queue.submit([clear.finish()]);
    const kernels: string[] = [];
    let start = 0;
    for (const c of chunkLengths(l, MAX_CHUNK)) {
      const columns = idColumns(ids, lane.b, l, start, c);
      const chunk = programs.get(c);
      let dispatches: readonly Dispatch[];
      if (chunk) {
        chunk.program.upload({ ids: columns });
        dispatches = chunk.program.dispatches;
      } else {
        device.queue.writeBuffer(lane.idsBuf, 0, columns);
        dispatches = (await this.#decodePrograms(lane)).ping.dispatches;
      }
      await submitDispatches(this.#ctx, [...dispatches], { label: "ssmkit prompt" });
      kernels.push(...dispatches.map((d) => d.kernel.name));
      // The chunk wrote its conv windows to pong: copy them back, so that every chunk (and
      // decode step 1) reads ping. In-place caches need nothing.
      const copy = device.createCommandEncoder({ label: "ssmkit prompt caches" });
      for (const [name, buffer] of Object.entries(lane.pong)) {
        if (buffer !== lane.ping[name]) {
          copy.copyBufferToBuffer(buffer, 0, lane.ping[name], 0, buffer.size);
        }
      }
      device.queue.submit([copy.finish()]);
      if (chunk) await afterChunk?.(chunk, start, c);
      start += c;
    }
    return kernels;
  }

  /**
   * The lane of batch size `b` (made on first use): caches, logits, ids, sampler params and
   * state. Lanes and their programs are dropped least recently used first (see #trim).
   */
  #lane(b: number): Lane {
    const hit = this.#lanes.get(b);
    if (hit) {
      this.#lanes.delete(b);
      this.#lanes.set(b, hit);
      return hit;
    }
    const def = this.definition;
    const device = this.#ctx.device;
    const sizes = def.sizes(b, 1);
    const buffers: GPUBuffer[] = [];
    const make = (bytes: number) => {
      const buffer = device.createBuffer({ size: Math.max(16, bytes), usage: STORAGE });
      buffers.push(buffer);
      return buffer;
    };
    // Caches: conv windows ping-pong between two buffers; SSM states update in place.
    const ping: Record<string, GPUBuffer> = {}, pong: Record<string, GPUBuffer> = {};
    for (const [name, decl] of Object.entries(def.cacheInputs())) {
      const axes = (typeof decl === "string" ? decl : decl.axes).split(/\s+/);
      const bytes = 4 * axes.reduce((p, a) => p * sizes[a], 1);
      ping[name] = make(bytes);
      pong[name] = def.inPlaceCache(name) ? ping[name] : make(bytes);
    }
    const lane: Lane = {
      b,
      ping,
      pong,
      logitsBuf: make(4 * b * def.vocab),
      idsBuf: make(4 * b),
      paramsBuf: make(4 * PARAM_WORDS),
      stateBuf: make(4 * b * STATE_WORDS),
      buffers,
    };
    this.#lanes.set(b, lane);
    return lane;
  }

  /**
   * The decode step's two programs for a lane: reading the conv caches from ping and writing
   * pong, and back; SSM states update in place; logits go to the lane's logits buffer.
   */
  async #decodePrograms(lane: Lane): Promise<DecodePrograms> {
    if (lane.decode) return lane.decode;
    const def = this.definition;
    const { ping, pong } = lane;
    const weights = def.weightInputs();
    const caches = def.cacheInputs();
    const ids: InputDecl = { axes: "b l", dtype: "i32" };
    const step = (t: Record<string, Tensor>) => def.forward(t, { cached: true, lastOnly: true });
    const sizes = def.sizes(lane.b, 1);
    const inPlace = this.#inPlace();
    const [pingProg, pongProg] = await Promise.all([
      this.#build({ ...weights, ...caches, ids }, step, sizes, {
        inputs: { ...ping, ids: lane.idsBuf },
        outputs: { logits: lane.logitsBuf, ...pong },
        inPlace,
      }),
      this.#build({ ...weights, ...caches, ids }, step, sizes, {
        inputs: { ...pong, ids: lane.idsBuf },
        outputs: { logits: lane.logitsBuf, ...ping },
        inPlace,
      }),
    ]);
    lane.decode = { ping: pingProg, pong: pongProg };
    return lane.decode;
  }

  /** Caches the forward updates in place, as outputs → inputs. */
  #inPlace(): Record<string, string> {
    const def = this.definition;
    const inPlace: Record<string, string> = {};
    for (const name of Object.keys(def.cacheInputs())) {
      if (def.inPlaceCache(name)) inPlace[name] = name;
    }
    return inPlace;
  }

  /**
   * The chunk programs a prompt of length `l` needs, by chunk length (compiled in parallel on
   * first use). "last" (generation) writes the last position's logits to the lane's buffer and
   * has no program for length 1: the decode step serves. "all" writes every position's logits.
   */
  async #chunkPrograms(
    lane: Lane,
    variant: ChunkVariant,
    l: number,
  ): Promise<Map<number, ChunkProgram>> {
    const lengths = [...new Set(chunkLengths(l, MAX_CHUNK))].filter((c) =>
      variant === "all" || c > 1
    );
    const built = await Promise.allSettled(
      lengths.map((c) => this.#chunkProgram(lane, variant, c)),
    );
    const failed = built.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return new Map(
      lengths.map((c, i) => [c, (built[i] as PromiseFulfilledResult<ChunkProgram>).value]),
    );
  }

  async #chunkProgram(lane: Lane, variant: ChunkVariant, c: number): Promise<ChunkProgram> {
    const key = `${lane.b}/${variant}/${c}`;
    const hit = this.#chunks.get(key);
    if (hit) {
      this.#chunks.delete(key);
      this.#chunks.set(key, hit);
      return hit;
    }
    const def = this.definition;
    const ids: InputDecl = { axes: "b l", dtype: "i32" };
    const inputs = { ...def.weightInputs(), ...def.cacheInputs(), ids };
    const bind = { inputs: { ...lane.ping }, inPlace: this.#inPlace() };
    let chunk: ChunkProgram;
    if (variant === "last") {
      const program = await this.#build(
        inputs,
        (t) => def.forward(t, { cached: true, lastOnly: true }),
        def.sizes(lane.b, c),
        { ...bind, outputs: { logits: lane.logitsBuf, ...lane.pong } },
      );
      chunk = { program };
    } else {
      const logits = this.#ctx.device.createBuffer({
        size: Math.max(16, 4 * lane.b * c * def.vocab),
        usage: STORAGE,
      });
      try {
        const program = await this.#build(
          inputs,
          (t) => def.forward(t, { cached: true }),
          def.sizes(lane.b, c),
          { ...bind, outputs: { logits, ...lane.pong } },
        );
        chunk = { program, logits };
      } catch (e) {
        logits.destroy();
        throw e;
      }
    }
    this.#chunks.set(key, chunk);
    return chunk;
  }

  /**
   * Drops the least recently used chunk programs and lanes beyond the bounds. Runs after each
   * call, so nothing in use is dropped.
   */
  #trim(): void {
    while (this.#chunks.size > MAX_CHUNK_PROGRAMS) {
      const [key, chunk] = this.#chunks.entries().next().value!;
      this.#chunks.delete(key);
      freeChunk(chunk);
    }
    while (this.#lanes.size > MAX_LANES) {
      const [b, lane] = this.#lanes.entries().next().value!;
      this.#lanes.delete(b);
      this.#freeLane(lane);
    }
  }

  /** Frees a lane: its chunk programs, decode programs and buffers. */
  #freeLane(lane: Lane): void {
    for (const [key, chunk] of [...this.#chunks]) {
      if (key.startsWith(`${lane.b}/`)) {
        this.#chunks.delete(key);
        freeChunk(chunk);
      }
    }
    lane.decode?.ping.destroy();
    lane.decode?.pong.destroy();
    for (const buffer of lane.buffers) buffer.destroy();
  }

  #checkTokens(tokens: number[][]): { b: number; l: number; ids: Int32Array } {
    if (!Array.isArray(tokens) || tokens.length === 0 || !Array.isArray(tokens[0])) {
      throw new Error("tokens must be a non-empty array of rows of token ids");
    }
    const l = tokens[0].length;
    if (l === 0) throw new Error("token rows must not be empty");
    const vocab = this.definition.vocab;
    const ids = new Int32Array(tokens.length * l);
    tokens.forEach((row, i) => {
      if (!Array.isArray(row) || row.length !== l) {
        throw new Error(
          `all token rows must have the same length (row 0 has ${l}, row ${i} has ` +
            `${Array.isArray(row) ? row.length : describe(row)})`,
        );
      }
      row.forEach((t, j) => {
        if (!Number.isInteger(t) || t < 0 || t >= vocab) {
          throw new Error(
            `token id ${t} (row ${i}, position ${j}) is outside the vocabulary [0, ${vocab})`,
          );
        }
        ids[i * l + j] = t;
      });
    });
    return { b: tokens.length, l, ids };
  }

  /** Names of the kernels of the last generation's prompt pass (what ran, for reports). */
  lastPrefillKernels(): string[] {
    return [...this.#lastPrefill];
  }

  /** What the model holds compiled now (batch sizes and prompt-chunk programs). */
  cacheStats(): ModelCacheStats {
    return { batchSizes: [...this.#lanes.keys()], chunkPrograms: this.#chunks.size };
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
    for (const lane of this.#lanes.values()) this.#freeLane(lane);
    this.#lanes.clear();
    for (const chunk of this.#chunks.values()) freeChunk(chunk);
    this.#chunks.clear();
    for (const b of this.#weights.values()) b.destroy();
    this.#weights.clear();
    this.#samplerPipelines = new PipelineCache(this.#ctx);
  }
}

/**
 * The error for the first step whose logits held a NaN or an infinity (the sampler records it
 * in its state), if that step's token was accepted: `accepted[row]` tokens were (a step after
 * a row stopped does not count).
 */
function nonFiniteStepError(
  state: Uint32Array,
  accepted: number[],
  vocab: number,
): Error | undefined {
  for (let row = 0; row < accepted.length; row++) {
    const step = state[row * STATE_WORDS + 4] - 1;
    if (step < 0 || step >= accepted[row]) continue;
    const count = state[row * STATE_WORDS + 5];
    return new Error(
      `generate: the logits of step ${step}${accepted.length > 1 ? ` (row ${row})` : ""} hold ` +
        `${count} non-finite value(s) (NaN or ±Inf) of ${vocab}: the model's weights or ` +
        `activations overflow (${step} token(s) were generated before it)`,
    );
  }
  return undefined;
}

function freeChunk(chunk: ChunkProgram): void {
  chunk.program.destroy();
  chunk.logits?.destroy();
}

/** Rejects logits holding NaN or ±Inf, naming how many and the first. */
function checkFinite(logits: Float32Array, b: number, l: number, vocab: number): void {
  let count = 0, first = -1;
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) {
      count++;
      if (first < 0) first = i;
    }
  }
  if (count === 0) return;
  const row = Math.floor(first / (l * vocab));
  const position = Math.floor(first / vocab) % l;
  throw new Error(
    `logits: ${count} of ${logits.length} values are not finite (NaN or ±Inf), the first ` +
      `(${logits[first]}) at ${b > 1 ? `row ${row}, ` : ""}position ${position}, token ` +
      `${first % vocab}: the model's weights or activations overflow`,
  );
}
