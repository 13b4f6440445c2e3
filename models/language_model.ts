/**
 * A language model loaded from an HF checkpoint directory, resident on the GPU: weights are
 * uploaded once and shared by every compiled program (prefill for each prompt shape, the decode
 * step, the sampler). Generation encodes many decode steps and their sampling in one submit
 * and reads tokens back in blocks.
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
  type SamplingOptions,
  STATE_WORDS,
} from "./sampler.ts";
import { type ModelDefinition, modelDefinitionFor } from "./definitions.ts";

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
  /** New tokens per row, at most. */
  maxNew: number;
  /** Stop a row at this token (default: the config's eos_token_id; -1 never). */
  eos?: number;
  /** Called with each block of new tokens per row, as blocks arrive. */
  onTokens?: (tokens: number[][]) => void;
  /**
   * Largest number of decode steps per submit (default 64). Blocks start at 8 steps, so text
   * starts streaming early, and double up to this size.
   */
  blockSize?: number;
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
/** Generation shapes (batch × prompt length) whose programs stay compiled. */
const MAX_SESSIONS = 4;

/** Buffers and programs of generation for one batch size and prompt length. */
interface GenerationSession {
  programs: { prefill: GpuProgram; ping: GpuProgram; pong: GpuProgram };
  logitsBuf: GPUBuffer;
  idsBuf: GPUBuffer;
  paramsBuf: GPUBuffer;
  stateBuf: GPUBuffer;
  buffers: GPUBuffer[];
}

/** Whether SSMKIT_TRACE_GENERATE=1 is set and readable (never prompts for permission). */
function traceRequested(): boolean {
  const variable = "SSMKIT_TRACE_GENERATE";
  if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") return false;
  return Deno.env.get(variable) === "1";
}

function freeSession(session: GenerationSession): void {
  for (const p of Object.values(session.programs)) p.destroy();
  for (const buffer of session.buffers) buffer.destroy();
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

/** A model resident on the GPU. */
export class LanguageModel {
  /** The model's definition (config, inputs, forward function). */
  readonly definition: ModelDefinition;
  readonly #ctx: GpuContext;
  readonly #weights: Map<string, GPUBuffer>;
  readonly #programs = new Map<string, GpuProgram>();
  readonly #sessions = new Map<string, GenerationSession>();
  #lastPrefill: string[] = [];
  readonly #codegen: NonNullable<LoadOptions["codegen"]>;

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

  /** Logits for every position of each row of `tokens` (rows of equal length): [b, l, vocab]. */
  async logits(tokens: number[][]): Promise<Float32Array> {
    const { b, l, ids } = this.#checkTokens(tokens);
    const def = this.definition;
    const key = `logits:${b}x${l}`;
    let prog = this.#programs.get(key);
    if (!prog) {
      prog = await this.#build(
        { ...def.weightInputs(), ids: { axes: "b l", dtype: "i32" } },
        (t) => ({ logits: def.forward(t, {}).logits }),
        def.sizes(b, l),
      );
      this.#programs.set(key, prog);
    }
    const out = await prog.run({ ids });
    return out.logits as Float32Array;
  }

  /**
   * Times the prompt pass (last-position logits and caches) on `tokens` with timestamp
   * queries: per-kernel medians and their sum.
   */
  async benchmarkPrefill(
    tokens: number[][],
  ): Promise<{ kernels: { name: string; medianNs: number }[]; totalNs: number }> {
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
  }

  /**
   * Times one decode step (all layers and the LM head at l = 1, without sampling) with
   * timestamp queries: per-kernel medians and their sum.
   */
  async benchmarkDecodeStep(
    b = 1,
  ): Promise<{ kernels: { name: string; medianNs: number }[]; totalNs: number }> {
    const session = await this.#session(b, 1);
    return await session.programs.ping.benchmark({}, { warmup: 3, iterations: 20 });
  }

  /**
   * Times `steps` decode steps (batch `b`, conv caches alternating as in generation, without
   * sampling) encoded back to back in one pass, as generation runs them: the GPU time per step,
   * the greedy sampler's GPU time per step (timed alone), and the CPU time to check, encode and
   * submit one block of steps, per step (also with a readback's map pending meanwhile).
   */
  async benchmarkDecodeBlock(
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
    const session = await this.#session(b, 1);
    // The greedy sampler alone (default sampling parameters: temperature 0), timed the same way.
    const tokensBuf = this.#ctx.device.createBuffer({ size: 4 * b * steps, usage: STORAGE });
    let samplerNs: number;
    try {
      const greedy = encodeSamplerParams({}) as Uint32Array<ArrayBuffer>;
      this.#ctx.device.queue.writeBuffer(session.paramsBuf, 0, greedy);
      const sample = await this.#samplerDispatch(session, b, steps, tokensBuf);
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
      dispatches.push(...(k % 2 === 0 ? session.programs.ping : session.programs.pong).dispatches);
    }
    const gpu = await timeSequence(this.#ctx, dispatches, { warmup: 2, iterations: 10 });
    // Median of five submits of the block, optionally with a readback's map pending meanwhile
    // (as naive pipelining has it).
    const submitMs = async (pendingRead: boolean): Promise<number> => {
      const times: number[] = [];
      for (let it = 0; it < 5; it++) {
        const read = pendingRead
          ? readBuffers(this.#ctx, [{ buffer: session.idsBuf, byteLength: 4 }])
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
  }

  /** The sampler's dispatch for batch `b`, writing up to `maxNew` tokens per row. */
  async #samplerDispatch(
    session: GenerationSession,
    b: number,
    maxNew: number,
    tokensBuf: GPUBuffer,
  ): Promise<Dispatch> {
    const sampler = emitSamplerKernel(b, this.definition.vocab, maxNew, this.#ctx.limits as never);
    const { logitsBuf, paramsBuf, stateBuf, idsBuf } = session;
    return {
      kernel: sampler,
      pipeline: await new PipelineCache(this.#ctx).get(sampler),
      buffers: [logitsBuf, paramsBuf, stateBuf, idsBuf, tokensBuf],
      workgroups: sampler.workgroups,
    };
  }

  /** Generates up to `maxNew` tokens after each prompt row; returns the new tokens per row. */
  async generate(prompts: number[][], options: GenerateOptions): Promise<number[][]> {
    const { b, l, ids } = this.#checkTokens(prompts);
    const maxNew = options.maxNew;
    if (!Number.isInteger(maxNew) || maxNew < 1) {
      throw new Error(`maxNew must be a positive integer, got ${maxNew}`);
    }
    const params = encodeSamplerParams(options);
    const eos = options.eos ?? this.definition.eosTokenId ?? -1;
    const ctx = this.#ctx;
    const device = ctx.device;
    const session = await this.#session(b, l);
    const { programs, paramsBuf, stateBuf } = session;
    this.#lastPrefill = programs.prefill.dispatches.map((d) => d.kernel.name);
    const tokensBuf = device.createBuffer({ size: Math.max(16, 4 * b * maxNew), usage: STORAGE });
    try {
      device.queue.writeBuffer(paramsBuf, 0, params as Uint32Array<ArrayBuffer>);
      device.queue.writeBuffer(stateBuf, 0, new Uint32Array(b * STATE_WORDS));
      const sample = await this.#samplerDispatch(session, b, maxNew, tokensBuf);
      programs.prefill.upload({ ids });
      const result: number[][] = Array.from({ length: b }, () => []);
      const done = new Array(b).fill(false);
      const block = options.blockSize ?? 64;
      if (!Number.isInteger(block) || block < 1) {
        throw new Error(`blockSize must be a positive integer, got ${block}`);
      }
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
          // Step 0 is the prompt; decode steps alternate between the two conv-cache buffers.
          if (step === 0) dispatches.push(...programs.prefill.dispatches);
          else dispatches.push(...(step % 2 === 1 ? programs.ping : programs.pong).dispatches);
          dispatches.push(sample);
        }
        trace?.push(`encode ${first}+${count} at ${at()}`);
        const encoded = await encodeDispatches(ctx, dispatches, "ssmkit generate");
        trace?.push(`encoded at ${at()}`);
        return { first, count, encoded };
      };
      const readTokens = (blk: Block) =>
        readBuffers(
          ctx,
          Array.from({ length: b }, (_, row) => ({
            buffer: tokensBuf,
            byteOffset: 4 * (row * maxNew + blk.first),
            byteLength: 4 * blk.count,
          })),
        );
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
        const read = readTokens(current);
        try {
          if (next) await submitEncoded(ctx, next.encoded);
        } catch (e) {
          read.catch(() => {});
          throw e;
        }
        const tokens = (await read).map((a) => Array.from(new Int32Array(a)));
        trace?.push(`read ${current.first}+${current.count} at ${at()}`);
        const arrived: number[][] = tokens.map(() => []);
        tokens.forEach((toks, row) => {
          for (const t of toks) {
            if (done[row]) break;
            result[row].push(t);
            arrived[row].push(t);
            if (t === eos) done[row] = true;
          }
        });
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

  /**
   * The buffers and programs of generation for batch b and prompt length l, kept for reuse:
   * building them (tracing, codegen, bind groups) costs far more than a few tokens.
   */
  async #session(b: number, l: number): Promise<GenerationSession> {
    const key = `${b}x${l}`;
    const hit = this.#sessions.get(key);
    if (hit) return hit;
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
    const logitsBuf = make(4 * b * def.vocab);
    const idsBuf = make(4 * b);
    const paramsBuf = make(4 * PARAM_WORDS);
    const stateBuf = make(4 * b * STATE_WORDS);
    try {
      const programs = await this.#generationPrograms(b, l, ping, pong, logitsBuf, idsBuf);
      const session = { programs, logitsBuf, idsBuf, paramsBuf, stateBuf, buffers };
      // Keep a few shapes; drop the oldest beyond that.
      if (this.#sessions.size >= MAX_SESSIONS) {
        const [oldKey, old] = this.#sessions.entries().next().value!;
        this.#sessions.delete(oldKey);
        freeSession(old);
      }
      this.#sessions.set(key, session);
      return session;
    } catch (e) {
      for (const buffer of buffers) buffer.destroy();
      throw e;
    }
  }

  /**
   * The three programs of one generation: the prompt (writes the first caches and logits), and
   * the decode step twice, reading the conv caches from one buffer set and writing the other.
   */
  async #generationPrograms(
    b: number,
    l: number,
    ping: Record<string, GPUBuffer>,
    pong: Record<string, GPUBuffer>,
    logitsBuf: GPUBuffer,
    idsBuf: GPUBuffer,
  ): Promise<{ prefill: GpuProgram; ping: GpuProgram; pong: GpuProgram }> {
    const def = this.definition;
    const weights = def.weightInputs();
    const caches = def.cacheInputs();
    const ids: InputDecl = { axes: "b l", dtype: "i32" };
    const inPlace: Record<string, string> = {};
    for (const name of Object.keys(caches)) if (def.inPlaceCache(name)) inPlace[name] = name;
    const step = (t: Record<string, Tensor>) => def.forward(t, { cached: true, lastOnly: true });
    const [prefill, pingProg, pongProg] = await Promise.all([
      this.#build({ ...weights, ids }, (t) => def.forward(t, { lastOnly: true }), def.sizes(b, l), {
        outputs: { logits: logitsBuf, ...ping },
      }),
      this.#build({ ...weights, ...caches, ids }, step, def.sizes(b, 1), {
        inputs: { ...ping, ids: idsBuf },
        outputs: { logits: logitsBuf, ...pong },
        inPlace,
      }),
      this.#build({ ...weights, ...caches, ids }, step, def.sizes(b, 1), {
        inputs: { ...pong, ids: idsBuf },
        outputs: { logits: logitsBuf, ...ping },
        inPlace,
      }),
    ]);
    return { prefill, ping: pingProg, pong: pongProg };
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
      if (row.length !== l) {
        throw new Error(
          `all token rows must have the same length (row 0 has ${l}, row ${i} has ${row.length})`,
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

  /** Frees the model's GPU memory. */
  destroy(): void {
    for (const p of this.#programs.values()) p.destroy();
    for (const session of this.#sessions.values()) freeSession(session);
    this.#sessions.clear();
    for (const b of this.#weights.values()) b.destroy();
    this.#programs.clear();
    this.#weights.clear();
  }
}
