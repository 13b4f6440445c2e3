/**
 * A compiled program on the GPU: owns its pipelines and buffers; each `run` uploads the inputs,
 * encodes every kernel into one submit and reads all outputs back with one map. The buffers hold
 * one call's data from upload to readback, so calls that use them (`run`, `benchmark`) are
 * queued: overlapping calls run one after another, each with its own inputs and results.
 *
 * @module
 */

import { showAxes } from "../dsl/axes.ts";
import type { InputNode, Node } from "../dsl/ir.ts";
import type { BufferKey, KernelArtifact } from "../codegen/artifact.ts";
import type { KernelProgram } from "../codegen/compile_graph.ts";
import type { GpuContext } from "./gpu_device.ts";
import { readBuffers } from "./gpu_buffers.ts";
import {
  checkHostInputs,
  type DeviceArray,
  deviceArray,
  type HostArray,
  hostOutput,
  paddedBytes,
} from "./host_inputs.ts";
import { storageBytes } from "../codegen/dtypes.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { planBufferReuse } from "./buffer_reuse.ts";
import { SerialQueue } from "./serial_queue.ts";
import { BindGroupCache, PipelineCache } from "./gpu_pipelines.ts";
import {
  type Dispatch,
  type KernelTiming,
  submitDispatches,
  timeDispatches,
  timeSequence,
} from "./gpu_submit.ts";

/** Host arrays returned for outputs: f32 outputs as Float32Array, i32 as Int32Array. */
export type HostOutput = Float32Array | Int32Array;

/** Options of one run. */
export interface RunOptions {
  /** Time each kernel with timestamp queries (see `lastTimings`). */
  profile?: boolean;
  /** Throw when an output holds NaN (default true: no silent NaNs). */
  checkNaN?: boolean;
}

/** What {@link GpuProgram.benchmark} measures. */
export interface ProgramBenchmark {
  /** Per-kernel medians, each kernel in its own timestamped pass. */
  kernels: { name: string; medianNs: number; minNs: number }[];
  /** Sum of the per-kernel medians. */
  totalNs: number;
  /**
   * Median of the whole program run back to back in one pass, as `run` submits it: without
   * the per-kernel passes' boundaries, so below `totalNs` for programs of several kernels.
   */
  sequenceNs: number;
}

/** Timed one-pass runs of the whole program (fewer than one query set's passes). */
const SEQUENCE_ITERATIONS = 200;
const SEQUENCE_WARMUP = 20;

const pipelineCaches = new WeakMap<GpuContext, PipelineCache>();
const bindGroupCaches = new WeakMap<GpuContext, BindGroupCache>();

/** The pipeline cache shared by all programs on one device. */
export function pipelineCacheFor(ctx: GpuContext): PipelineCache {
  let c = pipelineCaches.get(ctx);
  if (!c) pipelineCaches.set(ctx, c = new PipelineCache(ctx));
  return c;
}

function bindGroupCacheFor(ctx: GpuContext): BindGroupCache {
  let c = bindGroupCaches.get(ctx);
  if (!c) bindGroupCaches.set(ctx, c = new BindGroupCache(ctx));
  return c;
}

/** A program compiled for one GPU device. */
export class GpuProgram {
  /** The kernels, in dispatch order. */
  readonly kernels: readonly KernelArtifact[];
  /** Per-kernel GPU times of the last profiled run. */
  lastTimings?: KernelTiming[];
  /** Bytes of the buffers this program allocated (not the caller's external ones). */
  bufferBytes = 0;
  /** The buffers its intermediates share (see buffer_reuse.ts), for a copy to share too. */
  slots: readonly GPUBuffer[] = [];
  /**
   * Milliseconds `create` spent making pipelines (those the process's cache lacked) and
   * buffers with their bind groups, and the distinct pipelines the kernels use.
   */
  createTimes = { pipelinesMs: 0, buffersMs: 0, pipelines: 0 };
  readonly #ctx: GpuContext;
  readonly #program: KernelProgram;
  readonly #buffers = new Map<BufferKey, GPUBuffer>();
  /** Buffers owned by the caller (resident weights, caches shared between programs). */
  #external = new Set<GPUBuffer>();
  #dispatches: Dispatch[] = [];
  /** Calls that use the buffers, one at a time. */
  readonly #queue = new SerialQueue();
  #destroyed = false;

  private constructor(ctx: GpuContext, program: KernelProgram) {
    this.#ctx = ctx;
    this.#program = program;
    this.kernels = program.kernels;
  }

  /**
   * Creates pipelines (in parallel, cached by WGSL text) and all buffers once. `aliases` maps
   * input nodes to output nodes that share their buffer (in-place state updates).
   */
  static async create(
    ctx: GpuContext,
    program: KernelProgram,
    aliases: ReadonlyMap<Node, Node> = new Map(),
    external: ReadonlyMap<Node, GPUBuffer> = new Map(),
    sharedSlots?: readonly GPUBuffer[],
  ): Promise<GpuProgram> {
    const p = new GpuProgram(ctx, program);
    p.#external = new Set(external.values());
    for (const [node, buffer] of external) p.#buffers.set(node, buffer);
    const cache = pipelineCacheFor(ctx);
    const started = performance.now();
    const pipelines = await Promise.all(
      program.kernels.map((k) => cache.get({ name: k.name, wgsl: k.wgsl })),
    );
    const made = performance.now();
    const device = ctx.device;
    const keys = new Set<BufferKey>(program.plan.materialized);
    for (const k of program.kernels) for (const b of [...k.reads, ...k.writes]) keys.add(b);
    const outputOf = new Map([...aliases].map(([i, o]) => [o, i]));
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const bytesOf = (key: BufferKey) => Math.max(16, Math.ceil(storageBytes(key) / 16) * 16);
    // Intermediates share buffers where their live ranges do not overlap (buffer_reuse.ts).
    const reuse = planBufferReuse(
      program.kernels,
      reusableKeys(program, keys, aliases, external),
      bytesOf,
      ctx.limits.maxStorageBufferBindingSize ?? DEFAULT_LIMITS.maxStorageBufferBindingSize,
    );
    // Copies of one program whose runs never overlap within a submit (ResidentProgram's
    // replicas) may share the slots too: the caller passes the first copy's.
    const shares = sharedSlots !== undefined &&
      sharedSlots.length === reuse.slotBytes.length &&
      sharedSlots.every((b, i) => b.size === reuse.slotBytes[i]);
    const slots = shares
      ? [...sharedSlots]
      : reuse.slotBytes.map((size) => device.createBuffer({ size, usage }));
    if (shares) { for (const b of slots) p.#external.add(b); }
    else p.bufferBytes = reuse.slotBytes.reduce((a, b) => a + b, 0);
    p.slots = slots;
    for (const key of keys) {
      if (outputOf.has(key as Node) || p.#buffers.has(key)) continue;
      const slot = reuse.slotOf.get(key);
      if (slot === undefined) p.bufferBytes += bytesOf(key);
      p.#buffers.set(
        key,
        slot !== undefined ? slots[slot] : device.createBuffer({ size: bytesOf(key), usage }),
      );
    }
    for (const [output, input] of outputOf) {
      if (!external.has(output)) p.#buffers.set(output, p.#buffers.get(input)!);
    }
    p.#dispatches = program.kernels.map((k, i) => ({
      kernel: { name: k.name, wgsl: k.wgsl },
      pipeline: pipelines[i],
      buffers: [...k.reads, ...k.writes].map((n) => p.#buffers.get(n)!),
      workgroups: [...k.workgroups] as [number, number, number],
    }));
    // Warm the bind groups so the first run pays nothing extra.
    const groups = bindGroupCacheFor(ctx);
    for (const d of p.#dispatches) groups.get(d.pipeline, d.buffers);
    p.createTimes = {
      pipelinesMs: made - started,
      buffersMs: performance.now() - made,
      pipelines: new Set(pipelines).size,
    };
    return p;
  }

  /** Whether `destroy` was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Runs the program; returns every output by name. Every input is checked first (nothing is
   * uploaded when one is bad). Calls that overlap run one after another, each on its own
   * inputs; the inputs are read when `run` is called.
   */
  async run(
    inputs: Record<string, HostArray>,
    options: RunOptions = {},
  ): Promise<Record<string, HostOutput>> {
    this.#checkAlive("run");
    const arrays = this.#deviceArrays(inputs);
    return await this.#queue.run(() => this.#runNow(arrays, options));
  }

  async #runNow(
    arrays: ReadonlyMap<InputNode, DeviceArray>,
    options: RunOptions,
  ): Promise<Record<string, HostOutput>> {
    const graph = this.#program.graph;
    this.#write(arrays);
    this.lastTimings = await submitDispatches(this.#ctx, this.#dispatches, {
      profile: options.profile,
    });
    const names = Object.keys(graph.outputs);
    const nodes = names.map((n) => graph.outputs[n]);
    const raw = await readBuffers(
      this.#ctx,
      nodes.map((n) => ({ buffer: this.#buffers.get(n)!, byteLength: paddedBytes(n) })),
    );
    const out: Record<string, HostOutput> = {};
    names.forEach((name, i) => {
      const arr = hostOutput(nodes[i], raw[i]);
      if (options.checkNaN !== false && arr instanceof Float32Array) {
        const bad = arr.findIndex((v) => Number.isNaN(v));
        if (bad >= 0) {
          throw new Error(
            `output "${name}" ${showAxes(nodes[i].axes)} has NaN at index ${bad} ` +
              `(pass { checkNaN: false } to allow)`,
          );
        }
      }
      out[name] = arr;
    });
    return out;
  }

  /**
   * Times the kernels with timestamp queries: uploads `inputs` once, runs every kernel
   * `warmup + iterations` times, returns per-kernel medians (ns) and their sum, each kernel in
   * its own timestamped pass; then the median of the whole program run back to back in one
   * pass, as `run` submits it (`sequenceNs`: no per-kernel pass boundaries). Queued with `run`
   * like any call that uses the buffers.
   */
  async benchmark(
    inputs: Record<string, HostArray>,
    options: { warmup?: number; iterations?: number } = {},
  ): Promise<ProgramBenchmark> {
    this.#checkAlive("benchmark");
    const arrays = this.#deviceArrays(inputs);
    return await this.#queue.run(async () => {
      this.#write(arrays);
      const warmup = options.warmup ?? 3, iterations = options.iterations ?? 20;
      const kernels = await timeDispatches(this.#ctx, this.#dispatches, { warmup, iterations });
      const sequence = await timeSequence(this.#ctx, this.#dispatches, {
        warmup: Math.min(warmup, SEQUENCE_WARMUP),
        iterations: Math.min(iterations, SEQUENCE_ITERATIONS),
      });
      return {
        kernels,
        totalNs: kernels.reduce((s, k) => s + k.medianNs, 0),
        sequenceNs: sequence.medianNs,
      };
    });
  }

  /**
   * Writes host inputs into their buffers without running (for callers that submit this
   * program's dispatches themselves). Checks every input first: nothing half-written. Throws
   * while a `run` or `benchmark` of this program is in progress (its buffers are in use).
   */
  upload(inputs: Record<string, HostArray>): void {
    this.#checkAlive("upload");
    if (this.#queue.busy) {
      throw new Error(
        `upload: a run or benchmark of this program (${this.#label()}) is in progress and ` +
          "its buffers are in use; await it before uploading",
      );
    }
    this.#write(this.#deviceArrays(inputs));
  }

  /** The dispatches of one run, for callers that encode several programs in one submit. */
  get dispatches(): readonly Dispatch[] {
    this.#checkAlive("dispatches");
    return this.#dispatches;
  }

  /** The buffer holding an input or output node. */
  bufferOf(node: Node): GPUBuffer {
    this.#checkAlive("bufferOf");
    const b = this.#buffers.get(node);
    if (!b) throw new Error(`internal: node ${node.id} has no buffer`);
    return b;
  }

  /**
   * Frees the GPU buffers (not the caller's external ones): at once when idle, else when the
   * calls already made have finished. Every later call throws; calling it again does nothing.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    void this.#queue.run(() => {
      for (const b of new Set(this.#buffers.values())) if (!this.#external.has(b)) b.destroy();
      this.#buffers.clear();
    });
  }

  /** Throws when the program was destroyed, naming the method and the program. */
  #checkAlive(method: string): void {
    if (this.#destroyed) {
      throw new Error(
        `${method}: this program (${this.#label()}) was destroyed; compile it again to use it`,
      );
    }
  }

  /** The program's kernels, for messages. */
  #label(): string {
    const names = this.kernels.map((k) => k.name);
    const shown = names.length > 3 ? [...names.slice(0, 3), "…"] : names;
    return `kernel${names.length === 1 ? "" : "s"} ${shown.join(", ")}`;
  }

  /**
   * Checks every host input and converts it to its buffer's type. When the call will wait
   * behind another, the data is copied now: the caller may reuse its arrays meanwhile.
   */
  #deviceArrays(
    inputs: Record<string, HostArray>,
  ): Map<InputNode, DeviceArray> {
    const graph = this.#program.graph;
    const bound = new Set(
      graph.inputs.filter((inp) => this.#external.has(this.#buffers.get(inp)!)),
    );
    checkHostInputs(graph.inputs, inputs, bound);
    const copy = this.#queue.busy;
    const arrays = new Map<InputNode, DeviceArray>();
    for (const inp of graph.inputs) {
      if (!bound.has(inp)) arrays.set(inp, deviceArray(inp, inputs[inp.name], copy));
    }
    return arrays;
  }

  /** Writes checked host arrays into their buffers. */
  #write(arrays: ReadonlyMap<InputNode, DeviceArray>): void {
    for (const [inp, a] of arrays) {
      this.#ctx.device.queue.writeBuffer(
        this.#buffers.get(inp)!,
        0,
        a.buffer as ArrayBuffer,
        a.byteOffset,
        a.byteLength,
      );
    }
  }
}

/**
 * The buffers whose contents matter only within one run: not the program's inputs or outputs,
 * in-place pairs, the caller's buffers, or atomic scratch words that carry state from one run
 * to the next (the single-pass scan's tile counter).
 */
function reusableKeys(
  program: KernelProgram,
  keys: ReadonlySet<BufferKey>,
  aliases: ReadonlyMap<Node, Node>,
  external: ReadonlyMap<Node, GPUBuffer>,
): Set<BufferKey> {
  const kept = new Set<BufferKey>([
    ...program.graph.inputs,
    ...Object.values(program.graph.outputs),
    ...aliases.keys(),
    ...aliases.values(),
    ...external.keys(),
  ]);
  return new Set(
    [...keys].filter((k) => !kept.has(k) && !(k.kind === "scratch" && k.dtype !== "f32")),
  );
}
