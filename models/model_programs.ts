/**
 * The compiled programs and buffers of a resident language model: the weights, the lanes (one
 * set of caches, logits, ids and sampler buffers per batch size, with its decode programs and
 * sampler pipeline) and the prompt-chunk programs, each set bounded by an LRU that drops the
 * least recently used first.
 *
 * @module
 */

import { type InputDecl, trace, type TraceResult } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { Node } from "../dsl/ir.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import type { MatmulStrategy } from "../codegen/matmul_lowering.ts";
import { deviceLimits, tunedProgram } from "../runtime/compile.ts";
import type { AutotuneOptions } from "../runtime/autotune.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import type { Dispatch } from "../runtime/gpu_submit.ts";
import { GpuProgram } from "../runtime/program.ts";
import { emitSamplerKernel, PARAM_WORDS, type SamplerKernel, STATE_WORDS } from "./sampler.ts";
import type { ModelDefinition } from "./definitions.ts";
import { chunkLengths } from "./prompt_chunks.ts";

/** Usage of every buffer the model makes (weights, caches, logits, tokens). */
export const STORAGE: number = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;
/** Longest prompt chunk (a power of two): longer prompts run as several. */
export const MAX_CHUNK = 1024;
/**
 * Prompt-chunk programs kept compiled, over all batch sizes (least recently used dropped first).
 * One batch size needs at most 2 · (log2(MAX_CHUNK) + 1) = 22: every length, for logits and
 * for generation.
 */
const MAX_CHUNK_PROGRAMS = 24;
/** Batch sizes whose buffers and programs stay (least recently used dropped first). */
const MAX_LANES = 4;

/** The decode step, twice: reading the conv caches from ping and writing pong, and back. */
export interface DecodePrograms {
  /** Reads the conv caches from ping, writes pong. */
  ping: GpuProgram;
  /** Reads the conv caches from pong, writes ping. */
  pong: GpuProgram;
}

/** A compiled prompt chunk: "last" writes the lane's last-position logits, "all" its own. */
export interface ChunkProgram {
  /** The chunk's program (input `ids`: the chunk's columns). */
  program: GpuProgram;
  /** For "all": the logits of every position [b, c, vocab] (owned). */
  logits?: GPUBuffer;
}

/** Which logits a prompt-chunk program writes: the last position's, or every position's. */
export type ChunkVariant = "last" | "all";

/** The buffers and programs of one batch size, shared by logits() and generate(). */
export interface Lane {
  /** The batch size. */
  b: number;
  /**
   * Caches read by the next prompt chunk and decode step 1 (ping) and the other set (pong).
   * Caches updated in place (SSM states) are one buffer in both.
   */
  ping: Record<string, GPUBuffer>;
  /** The other set of caches (see `ping`). */
  pong: Record<string, GPUBuffer>;
  /** Last-position logits [b, vocab], read by the sampler. */
  logitsBuf: GPUBuffer;
  /** The next input token per row, written by the sampler. */
  idsBuf: GPUBuffer;
  /** The sampler's parameters. */
  paramsBuf: GPUBuffer;
  /** The sampler's state per row. */
  stateBuf: GPUBuffer;
  /** Every buffer above (owned). */
  buffers: GPUBuffer[];
  /** The decode programs, once compiled. */
  decode?: DecodePrograms;
  /** The sampler kernel and pipeline, once compiled. */
  sampler?: { kernel: SamplerKernel; pipeline: GPUComputePipeline };
}

/** The resident weights and the bounded caches of compiled programs and lanes of one model. */
export class ModelPrograms {
  /** The GPU context everything lives on. */
  readonly ctx: GpuContext;
  /** The model's definition (config, inputs, forward function). */
  readonly definition: ModelDefinition;
  readonly #weights: Map<string, GPUBuffer>;
  readonly #codegen: { scan?: ScanStrategy; matmul?: MatmulStrategy; rideAlong?: boolean };
  readonly #autotune: boolean | AutotuneOptions;
  /** Per batch size, in least-recently-used-first order. */
  readonly #lanes = new Map<number, Lane>();
  /** Prompt-chunk programs by `${b}/${variant}/${length}`, least recently used first. */
  readonly #chunks = new Map<string, ChunkProgram>();
  /** The sampler's pipelines (one per batch size), dropped with the model. */
  #samplerPipelines: PipelineCache;

  /**
   * Holds uploaded weights; `codegen` overrides the kernel strategies of every program, and
   * `autotune` (as `compile`'s option) times the tuning points' candidates of each program on
   * the adapter when it is first compiled.
   */
  constructor(
    ctx: GpuContext,
    definition: ModelDefinition,
    weights: Map<string, GPUBuffer>,
    codegen: { scan?: ScanStrategy; matmul?: MatmulStrategy; rideAlong?: boolean },
    autotune: boolean | AutotuneOptions = false,
  ) {
    this.ctx = ctx;
    this.definition = definition;
    this.#weights = weights;
    this.#codegen = codegen;
    this.#autotune = autotune;
    this.#samplerPipelines = new PipelineCache(ctx);
  }

  /** Batch sizes with lanes, least recently used first. */
  laneSizes(): number[] {
    return [...this.#lanes.keys()];
  }

  /** Compiled prompt-chunk programs, over all batch sizes. */
  chunkProgramCount(): number {
    return this.#chunks.size;
  }

  /**
   * Compiles a program whose weight inputs are the resident buffers; `inputs`/`outputs` bind
   * other inputs and outputs to given buffers, `inPlace` maps outputs to the inputs they update.
   */
  async build(
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
    const limits = deviceLimits(this.ctx);
    const options = {
      aliases,
      // A decode step is mostly a fixed cost per dispatch: small elementwise kernels ride along.
      rideAlong: true,
      ...this.#codegen,
    };
    let program = generateKernels(graph, limits, options);
    if (this.#autotune) {
      program = await tunedProgram(this.ctx, graph, limits, options, program, this.#autotune);
    }
    return await GpuProgram.create(this.ctx, program, aliases, external);
  }

  /** The sampler's dispatch for the lane's batch, writing tokens into `tokensBuf`. */
  async samplerDispatch(lane: Lane, tokensBuf: GPUBuffer): Promise<Dispatch> {
    if (!lane.sampler) {
      const kernel = emitSamplerKernel(lane.b, this.definition.vocab, this.ctx.limits as never);
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
   * The lane of batch size `b` (made on first use): caches, logits, ids, sampler params and
   * state. Lanes and their programs are dropped least recently used first (see trim).
   */
  lane(b: number): Lane {
    const hit = this.#lanes.get(b);
    if (hit) {
      this.#lanes.delete(b);
      this.#lanes.set(b, hit);
      return hit;
    }
    const def = this.definition;
    const device = this.ctx.device;
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
  async decodePrograms(lane: Lane): Promise<DecodePrograms> {
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
      this.build({ ...weights, ...caches, ids }, step, sizes, {
        inputs: { ...ping, ids: lane.idsBuf },
        outputs: { logits: lane.logitsBuf, ...pong },
        inPlace,
      }),
      this.build({ ...weights, ...caches, ids }, step, sizes, {
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
  async chunkPrograms(
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
      const program = await this.build(
        inputs,
        (t) => def.forward(t, { cached: true, lastOnly: true }),
        def.sizes(lane.b, c),
        { ...bind, outputs: { logits: lane.logitsBuf, ...lane.pong } },
      );
      chunk = { program };
    } else {
      const logits = this.ctx.device.createBuffer({
        size: Math.max(16, 4 * lane.b * c * def.vocab),
        usage: STORAGE,
      });
      try {
        const program = await this.build(
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
  trim(): void {
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

  /** Frees everything: lanes, chunk programs, weights and sampler pipelines. */
  free(): void {
    for (const lane of this.#lanes.values()) this.#freeLane(lane);
    this.#lanes.clear();
    for (const chunk of this.#chunks.values()) freeChunk(chunk);
    this.#chunks.clear();
    for (const b of this.#weights.values()) b.destroy();
    this.#weights.clear();
    this.#samplerPipelines = new PipelineCache(this.ctx);
  }
}

function freeChunk(chunk: ChunkProgram): void {
  chunk.program.destroy();
  chunk.logits?.destroy();
}
