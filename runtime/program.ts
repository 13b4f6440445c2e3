/**
 * A compiled program on the GPU: owns its pipelines and buffers; each `run` uploads the inputs,
 * encodes every kernel into one submit and reads all outputs back with one map.
 *
 * @module
 */

import { showAxes } from "../dsl/axes.ts";
import type { Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import { type BufferKey, elementsOf, type KernelArtifact } from "../codegen/artifact.ts";
import type { KernelProgram } from "../codegen/compile_graph.ts";
import type { GpuContext } from "./gpu_device.ts";
import { readBuffers } from "./gpu_buffers.ts";
import { BindGroupCache, PipelineCache } from "./gpu_pipelines.ts";
import {
  type Dispatch,
  type KernelTiming,
  submitDispatches,
  timeDispatches,
} from "./gpu_submit.ts";
import type { HostArray } from "./interpreter.ts";

/** Host arrays returned for outputs: f32 outputs as Float32Array, i32 as Int32Array. */
export type HostOutput = Float32Array | Int32Array;

/** Options of one run. */
export interface RunOptions {
  /** Time each kernel with timestamp queries (see `lastTimings`). */
  profile?: boolean;
  /** Throw when an output holds NaN (default true: no silent NaNs). */
  checkNaN?: boolean;
}

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

/** Converts host data to the typed array the GPU buffer holds, checking its length. */
export function toDeviceArray(
  node: Node,
  data: HostArray,
  name: string,
): Float32Array | Int32Array {
  const want = numel(node);
  if (data === undefined || data === null || typeof data.length !== "number") {
    throw new Error(`input "${name}" ${showAxes(node.axes)}: expected an array of ${want} numbers`);
  }
  if (data.length !== want) {
    throw new Error(
      `input "${name}" ${showAxes(node.axes)} needs ${want} elements (shape ` +
        `${node.shape.join("×")}), got ${data.length}`,
    );
  }
  if (node.dtype === "i32") return data instanceof Int32Array ? data : Int32Array.from(data);
  return data instanceof Float32Array ? data : Float32Array.from(data);
}

/** A program compiled for one GPU device. */
export class GpuProgram {
  /** The kernels, in dispatch order. */
  readonly kernels: readonly KernelArtifact[];
  /** Per-kernel GPU times of the last profiled run. */
  lastTimings?: KernelTiming[];
  readonly #ctx: GpuContext;
  readonly #program: KernelProgram;
  readonly #buffers = new Map<BufferKey, GPUBuffer>();
  /** Buffers owned by the caller (resident weights, caches shared between programs). */
  #external = new Set<GPUBuffer>();
  #dispatches: Dispatch[] = [];

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
  ): Promise<GpuProgram> {
    const p = new GpuProgram(ctx, program);
    p.#external = new Set(external.values());
    for (const [node, buffer] of external) p.#buffers.set(node, buffer);
    const cache = pipelineCacheFor(ctx);
    const pipelines = await Promise.all(
      program.kernels.map((k) => cache.get({ name: k.name, wgsl: k.wgsl })),
    );
    const device = ctx.device;
    const keys = new Set<BufferKey>(program.plan.materialized);
    for (const k of program.kernels) for (const b of [...k.reads, ...k.writes]) keys.add(b);
    const outputOf = new Map([...aliases].map(([i, o]) => [o, i]));
    for (const key of keys) {
      if (outputOf.has(key as Node) || p.#buffers.has(key)) continue;
      const bytes = Math.max(16, Math.ceil((elementsOf(key) * 4) / 16) * 16);
      p.#buffers.set(
        key,
        device.createBuffer({
          size: bytes,
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        }),
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
    return p;
  }

  /** Runs the program; returns every output by name. */
  async run(
    inputs: Record<string, HostArray>,
    options: RunOptions = {},
  ): Promise<Record<string, HostOutput>> {
    const graph = this.#program.graph;
    const known = new Set(graph.inputs.map((i) => i.name));
    for (const name of Object.keys(inputs)) {
      if (!known.has(name)) {
        throw new Error(`unknown input "${name}"; the program takes: ${[...known].join(", ")}`);
      }
    }
    // Validate everything before touching the GPU: nothing half-written on bad input.
    this.upload(inputs);
    this.lastTimings = await submitDispatches(this.#ctx, this.#dispatches, {
      profile: options.profile,
    });
    const names = Object.keys(graph.outputs);
    const nodes = names.map((n) => graph.outputs[n]);
    const raw = await readBuffers(
      this.#ctx,
      nodes.map((n) => ({ buffer: this.#buffers.get(n)!, byteLength: numel(n) * 4 })),
    );
    const out: Record<string, HostOutput> = {};
    names.forEach((name, i) => {
      const arr = nodes[i].dtype === "i32" ? new Int32Array(raw[i]) : new Float32Array(raw[i]);
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
   * `warmup + iterations` times, returns per-kernel medians (ns) and their sum.
   */
  async benchmark(
    inputs: Record<string, HostArray>,
    options: { warmup?: number; iterations?: number } = {},
  ): Promise<{ kernels: { name: string; medianNs: number; minNs: number }[]; totalNs: number }> {
    this.upload(inputs);
    const kernels = await timeDispatches(this.#ctx, this.#dispatches, {
      warmup: options.warmup ?? 3,
      iterations: options.iterations ?? 20,
    });
    return { kernels, totalNs: kernels.reduce((s, k) => s + k.medianNs, 0) };
  }

  /**
   * Writes host inputs into their buffers without running (for callers that submit this
   * program's dispatches themselves). Checks every input first: nothing half-written.
   */
  upload(inputs: Record<string, HostArray>): void {
    const graph = this.#program.graph;
    const host = graph.inputs.filter((inp) => !this.#external.has(this.#buffers.get(inp)!));
    const arrays = host.map((inp) => {
      if (!(inp.name in inputs)) throw new Error(`missing input "${inp.name}"`);
      return toDeviceArray(inp, inputs[inp.name], inp.name);
    });
    host.forEach((inp, i) => {
      const a = arrays[i];
      this.#ctx.device.queue.writeBuffer(
        this.#buffers.get(inp)!,
        0,
        a.buffer as ArrayBuffer,
        a.byteOffset,
        a.byteLength,
      );
    });
  }

  /** The dispatches of one run, for callers that encode several programs in one submit. */
  get dispatches(): readonly Dispatch[] {
    return this.#dispatches;
  }

  /** The buffer holding an input or output node. */
  bufferOf(node: Node): GPUBuffer {
    const b = this.#buffers.get(node);
    if (!b) throw new Error(`internal: node ${node.id} has no buffer`);
    return b;
  }

  /** Frees the GPU buffers (not the caller's external ones). */
  destroy(): void {
    for (const b of new Set(this.#buffers.values())) if (!this.#external.has(b)) b.destroy();
    this.#buffers.clear();
  }
}
