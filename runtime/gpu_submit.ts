/**
 * Running kernel lists: every dispatch of a call in one command encoder and one submit, with
 * optional per-kernel timestamps, and benchmarking with many timed repetitions. Errors name the
 * kernel: cheap checks run before any GPU call, and a validation error reported for a whole
 * submit is traced back to its dispatch.
 *
 * @module
 */

import { type GpuContext, lostReason } from "./gpu_device.ts";
import { readBuffers } from "./gpu_buffers.ts";
import { BindGroupCache, createBindGroup, type KernelSource } from "./gpu_pipelines.ts";

/** One kernel launch: its pipeline, the buffers at bindings 0..k-1, and the workgroup count. */
export interface Dispatch {
  /** The kernel (its name is used in errors and timings). */
  kernel: KernelSource;
  /** The kernel's pipeline (from `PipelineCache`). */
  pipeline: GPUComputePipeline;
  /** Buffers bound at `@group(0) @binding(i)`, whole. */
  buffers: GPUBuffer[];
  /** Workgroup counts. */
  workgroups: [number, number, number];
}

/** GPU time of one dispatch. */
export interface KernelTiming {
  /** Kernel name. */
  name: string;
  /** Nanoseconds between the start and end of its compute pass. */
  ns: number;
}

/** Options of `submitDispatches`. */
export interface SubmitOptions {
  /** Time each dispatch (needs `timestamp-query`; without it nothing is timed). */
  profile?: boolean;
  /** Label of the command encoder (shows in driver tools and some messages). */
  label?: string;
}

/** Timestamp queries per query set: WebGPU's maximum. */
const QUERIES_PER_SET = 4096;
/** Passes timed by one query set (two queries each). */
const PASSES_PER_SET = QUERIES_PER_SET / 2;
let warnedNoTimestamps = false;

/**
 * Encodes all `dispatches` in order into one command encoder and submits once. Without
 * profiling they share one compute pass; with `profile` each gets its own timestamped pass and
 * the timings are returned (one readback). Resolves when the work is submitted (and, when
 * profiling, finished); errors name the kernel.
 */
export async function submitDispatches(
  ctx: GpuContext,
  dispatches: Dispatch[],
  opts: SubmitOptions = {},
): Promise<KernelTiming[] | undefined> {
  checkDispatches(ctx, dispatches);
  if (dispatches.length === 0) return opts.profile ? [] : undefined;
  const profile = opts.profile === true && ctx.features.timestampQuery;
  if (opts.profile === true && !profile && !warnedNoTimestamps) {
    warnedNoTimestamps = true;
    console.error("ssmkit: profiling needs the timestamp-query feature; kernels run untimed");
  }
  const device = ctx.device;
  const groups = new BindGroupCache(ctx);

  let timing: { sets: GPUQuerySet[]; resolve: GPUBuffer } | undefined;
  try {
    const scopes = pushScopes(device);
    try {
      if (profile) timing = createTimingResources(device, dispatches.length);
      const encoder = device.createCommandEncoder({ label: opts.label });
      if (timing) {
        dispatches.forEach((d, i) => {
          const pass = encoder.beginComputePass({
            label: d.kernel.name,
            timestampWrites: timestampSlot(timing!.sets, i),
          });
          encodeDispatch(pass, d, groups, undefined);
          pass.end();
        });
        resolveTimestamps(encoder, timing.sets, dispatches.length, timing.resolve);
      } else {
        encodePass(encoder.beginComputePass({ label: opts.label }), dispatches, groups);
      }
      device.queue.submit([encoder.finish()]);
    } finally {
      await scopes.pop(ctx, dispatches);
    }
    if (!timing) return undefined;
    const [raw] = await readBuffers(ctx, [
      { buffer: timing.resolve, byteLength: dispatches.length * 16 },
    ]);
    const stamps = new BigUint64Array(raw);
    return dispatches.map((d, i) => ({ name: d.kernel.name, ns: elapsed(stamps, i) }));
  } finally {
    if (timing) {
      for (const s of timing.sets) s.destroy();
      timing.resolve.destroy();
    }
  }
}

/** Commands encoded ahead of their submission (see {@link encodeDispatches}). */
export interface EncodedDispatches {
  /** The finished command buffer. */
  readonly commands: GPUCommandBuffer;
  /** The dispatches it holds (errors at submission name them). */
  readonly dispatches: readonly Dispatch[];
}

/**
 * Encodes all `dispatches` in order into one compute pass and finishes the command buffer
 * without submitting it: encoding (the CPU-heavy part) can then happen at a moment of the
 * caller's choosing, e.g. before a readback's map is requested (a pending map slows encoding
 * in Deno). Errors name the kernel.
 */
export async function encodeDispatches(
  ctx: GpuContext,
  dispatches: Dispatch[],
  label?: string,
): Promise<EncodedDispatches> {
  checkDispatches(ctx, dispatches);
  const device = ctx.device;
  const groups = new BindGroupCache(ctx);
  const scopes = pushScopes(device);
  let commands: GPUCommandBuffer;
  try {
    const encoder = device.createCommandEncoder({ label });
    encodePass(encoder.beginComputePass({ label }), dispatches, groups);
    commands = encoder.finish();
  } finally {
    await scopes.pop(ctx, dispatches);
  }
  return { commands, dispatches };
}

/** Submits commands from {@link encodeDispatches} (each exactly once); errors name the kernel. */
export async function submitEncoded(ctx: GpuContext, encoded: EncodedDispatches): Promise<void> {
  const lost = lostReason(ctx);
  if (lost) throw new Error(`the WebGPU device was lost (${lost}); acquire a new one`);
  const scopes = pushScopes(ctx.device);
  try {
    ctx.device.queue.submit([encoded.commands]);
  } finally {
    await scopes.pop(ctx, encoded.dispatches);
  }
}

/** Options of `timeDispatches`. */
export interface TimeOptions {
  /** Untimed repetitions first (caches, clocks). */
  warmup: number;
  /** Timed repetitions. */
  iterations: number;
}

/** Benchmark result of one dispatch (in dispatch order). */
export interface DispatchBenchmark {
  /** Kernel name. */
  name: string;
  /** Median GPU time of its pass over the iterations. */
  medianNs: number;
  /** Fastest iteration. */
  minNs: number;
}

/** Passes encoded per submit while benchmarking (several query sets each). */
const PASSES_PER_SUBMIT = 8 * PASSES_PER_SET;

/**
 * Benchmarks `dispatches`: `warmup` untimed rounds, then `iterations` rounds in which every
 * dispatch runs in its own timestamped pass; few submits, one readback. Needs `timestamp-query`.
 */
export async function timeDispatches(
  ctx: GpuContext,
  dispatches: Dispatch[],
  opts: TimeOptions,
): Promise<DispatchBenchmark[]> {
  const { warmup, iterations } = checkTimeOptions(ctx, "timeDispatches", opts, Infinity);
  checkDispatches(ctx, dispatches);
  const n = dispatches.length;
  if (n === 0) return [];
  const device = ctx.device;
  const groups = new BindGroupCache(ctx);
  const passes = n * iterations;
  const sets: GPUQuerySet[] = [];
  const setsPerSubmit = PASSES_PER_SUBMIT / PASSES_PER_SET;
  const resolve = createResolveBuffer(device, "ssmkit benchmark timestamps", passes);
  try {
    const scopes = pushScopes(device);
    try {
      if (warmup > 0) {
        const encoder = device.createCommandEncoder({ label: "ssmkit warmup" });
        const rounds = Array.from({ length: warmup }, () => dispatches).flat();
        encodePass(encoder.beginComputePass(), rounds, groups);
        device.queue.submit([encoder.finish()]);
      }
      for (let first = 0; first < passes; first += PASSES_PER_SUBMIT) {
        const count = Math.min(PASSES_PER_SUBMIT, passes - first);
        const encoder = device.createCommandEncoder({ label: "ssmkit benchmark" });
        // Query sets are reused across submits: queue order keeps their uses apart.
        const needed = Math.ceil(count / PASSES_PER_SET);
        while (sets.length < Math.min(needed, setsPerSubmit)) {
          sets.push(device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }));
        }
        for (let p = 0; p < count; p++) {
          const d = dispatches[(first + p) % n];
          const pass = encoder.beginComputePass({
            label: d.kernel.name,
            timestampWrites: timestampSlot(sets, p),
          });
          encodeDispatch(pass, d, groups, undefined);
          pass.end();
        }
        resolveTimestamps(encoder, sets, count, resolve, first * 16);
        device.queue.submit([encoder.finish()]);
      }
    } finally {
      await scopes.pop(ctx, dispatches);
    }
    const [raw] = await readBuffers(ctx, [{ buffer: resolve, byteLength: passes * 16 }]);
    const stamps = new BigUint64Array(raw);
    return dispatches.map((d, i) => {
      const samples: number[] = [];
      for (let it = 0; it < iterations; it++) samples.push(elapsed(stamps, it * n + i));
      samples.sort((a, b) => a - b);
      return { name: d.kernel.name, medianNs: median(samples), minNs: samples[0] };
    });
  } finally {
    for (const s of sets) s.destroy();
    resolve.destroy();
  }
}

/** Benchmark result of a whole dispatch list run back to back. */
export interface SequenceBenchmark {
  /** Median GPU time of the whole list over the iterations. */
  medianNs: number;
  /** Fastest iteration. */
  minNs: number;
}

/**
 * Times `dispatches` run back to back in one compute pass, as real work runs them (no pass
 * boundary between kernels, so no per-kernel timestamp overhead): `warmup` untimed rounds,
 * then `iterations` timed ones, each its own pass. Needs `timestamp-query`.
 */
export async function timeSequence(
  ctx: GpuContext,
  dispatches: readonly Dispatch[],
  opts: TimeOptions,
): Promise<SequenceBenchmark> {
  const { warmup, iterations } = checkTimeOptions(ctx, "timeSequence", opts, PASSES_PER_SET);
  checkDispatches(ctx, dispatches);
  if (dispatches.length === 0) return { medianNs: 0, minNs: 0 };
  const device = ctx.device;
  const groups = new BindGroupCache(ctx);
  const set = device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET });
  const resolve = createResolveBuffer(device, "ssmkit sequence timestamps", iterations);
  try {
    const scopes = pushScopes(device);
    try {
      const encoder = device.createCommandEncoder({ label: "ssmkit sequence benchmark" });
      for (let w = 0; w < warmup; w++) encodePass(encoder.beginComputePass(), dispatches, groups);
      for (let it = 0; it < iterations; it++) {
        const timestampWrites = timestampSlot([set], it);
        encodePass(encoder.beginComputePass({ timestampWrites }), dispatches, groups);
      }
      resolveTimestamps(encoder, [set], iterations, resolve);
      device.queue.submit([encoder.finish()]);
    } finally {
      await scopes.pop(ctx, dispatches);
    }
    const [raw] = await readBuffers(ctx, [{ buffer: resolve, byteLength: iterations * 16 }]);
    const stamps = new BigUint64Array(raw);
    const samples = Array.from({ length: iterations }, (_, it) => elapsed(stamps, it));
    samples.sort((a, b) => a - b);
    return { medianNs: median(samples), minNs: samples[0] };
  } finally {
    set.destroy();
    resolve.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Checks before any GPU call.

/** Binding declarations of a kernel, parsed from its WGSL (group 0 only). */
interface BindingInfo {
  /** Access mode by binding number. */
  access: Map<number, "read" | "read_write">;
}

const bindingInfos = new WeakMap<GPUComputePipeline, BindingInfo>();

// `@group(0) @binding(3) var<storage, read_write> name` with attributes in any order.
const STORAGE_DECL =
  /((?:@\s*\w+\s*\(\s*\w+\s*\)\s*)+)var\s*<\s*storage\s*(?:,\s*(read_write|read)\s*)?>/g;

function bindingInfo(d: Dispatch): BindingInfo {
  let info = bindingInfos.get(d.pipeline);
  if (!info) {
    info = { access: new Map() };
    for (const m of d.kernel.wgsl.matchAll(STORAGE_DECL)) {
      const group = /@\s*group\s*\(\s*(\d+)\s*\)/.exec(m[1]);
      const binding = /@\s*binding\s*\(\s*(\d+)\s*\)/.exec(m[1]);
      if (!group || !binding || group[1] !== "0") continue;
      info.access.set(Number(binding[1]), m[2] === "read_write" ? "read_write" : "read");
    }
    bindingInfos.set(d.pipeline, info);
  }
  return info;
}

/**
 * Throws a clear error, naming the kernel, for anything wrong that can be seen without the
 * GPU: a lost device, bad workgroup counts (over `maxComputeWorkgroupsPerDimension`), the wrong
 * number of buffers, buffers without STORAGE usage, one buffer bound read_write twice or
 * read_write and read in one dispatch.
 */
export function checkDispatches(ctx: GpuContext, dispatches: readonly Dispatch[]): void {
  const lost = lostReason(ctx);
  if (lost) throw new Error(`the WebGPU device was lost (${lost}); acquire a new one`);
  if (!Array.isArray(dispatches)) throw new Error("expected an array of dispatches");
  const maxGroups = ctx.limits.maxComputeWorkgroupsPerDimension ?? 65535;
  dispatches.forEach((d, index) => {
    // Programs re-submit the same dispatch objects (each decode step): check those once.
    if (alreadyChecked(d)) return;
    const name = d?.kernel?.name ?? `#${index}`;
    const fail = (what: string): never => {
      throw new Error(`kernel ${name} (dispatch ${index}): ${what}`);
    };
    if (!d?.kernel || typeof d.kernel.wgsl !== "string") fail("no kernel source");
    if (!d.pipeline) fail("no pipeline");
    const wg = d.workgroups;
    if (!Array.isArray(wg) || wg.length !== 3) {
      fail(`workgroups must be [x, y, z], got ${JSON.stringify(wg)}`);
    }
    for (let axis = 0; axis < 3; axis++) {
      const count: number = wg[axis];
      const dim = "xyz"[axis];
      if (!Number.isInteger(count) || count < 0) {
        fail(`workgroup count ${dim} = ${count} is not a non-negative integer`);
      }
      if (count > maxGroups) {
        fail(
          `workgroup count ${dim} = ${count} exceeds the device limit ` +
            `maxComputeWorkgroupsPerDimension = ${maxGroups}`,
        );
      }
    }
    if (!Array.isArray(d.buffers)) fail("buffers must be an array of GPUBuffer");
    const info = bindingInfo(d);
    if (info.access.size > 0 || d.buffers.length > 0) {
      if (d.buffers.length !== info.access.size) {
        fail(
          `the WGSL declares ${info.access.size} storage binding(s) in group 0, ` +
            `but ${d.buffers.length} buffer(s) were given`,
        );
      }
    }
    const seen = new Map<GPUBuffer, number>();
    for (let binding = 0; binding < d.buffers.length; binding++) {
      const buffer: GPUBuffer = d.buffers[binding];
      if (!buffer || typeof buffer.usage !== "number") fail(`binding ${binding}: not a GPUBuffer`);
      if ((buffer.usage & GPUBufferUsage.STORAGE) === 0) {
        fail(`binding ${binding}: the buffer${labelOf(buffer)} lacks STORAGE usage`);
      }
      const other = seen.get(buffer);
      if (other !== undefined) {
        const writes = info.access.get(binding) === "read_write" ||
          info.access.get(other) === "read_write";
        if (writes) {
          fail(
            `bindings ${other} and ${binding} are the same buffer${labelOf(buffer)} and one is ` +
              "read_write (WebGPU forbids this; use a single read_write binding)",
          );
        }
      } else seen.set(buffer, binding);
    }
    checked.set(d, { pipeline: d.pipeline, buffers: [...d.buffers], workgroups: [...wg] });
  });
}

/** Dispatches that passed `checkDispatches`, with what they held then (fields are mutable). */
const checked = new WeakMap<
  Dispatch,
  { pipeline: GPUComputePipeline; buffers: GPUBuffer[]; workgroups: number[] }
>();

function alreadyChecked(d: Dispatch): boolean {
  const seen = d && checked.get(d);
  if (!seen || !Array.isArray(d.workgroups) || !Array.isArray(d.buffers)) return false;
  if (seen.pipeline !== d.pipeline || seen.buffers.length !== d.buffers?.length) {
    return false;
  }
  for (let i = 0; i < 3; i++) if (seen.workgroups[i] !== d.workgroups[i]) return false;
  for (let i = 0; i < seen.buffers.length; i++) if (seen.buffers[i] !== d.buffers[i]) return false;
  return true;
}

function labelOf(buffer: GPUBuffer): string {
  return buffer.label ? ` "${buffer.label}"` : "";
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/** Encodes one dispatch; skips `setPipeline` when `current` is already set. */
function encodeDispatch(
  pass: GPUComputePassEncoder,
  d: Dispatch,
  groups: BindGroupCache,
  current: GPUComputePipeline | undefined,
): GPUComputePipeline {
  if (d.pipeline !== current) pass.setPipeline(d.pipeline);
  if (d.buffers.length > 0) pass.setBindGroup(0, groups.get(d.pipeline, d.buffers));
  pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  return d.pipeline;
}

/** Validates benchmark options (and that the device can take timestamps). */
function checkTimeOptions(
  ctx: GpuContext,
  caller: string,
  opts: TimeOptions,
  maxIterations: number,
): TimeOptions {
  if (!ctx.features.timestampQuery) {
    throw new Error(`${caller} needs the timestamp-query feature, which this device lacks`);
  }
  const { warmup, iterations } = opts;
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new Error(`${caller}: warmup must be a non-negative integer, got ${warmup}`);
  }
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > maxIterations) {
    const range = Number.isFinite(maxIterations)
      ? `an integer in 1..${maxIterations}`
      : "a positive integer";
    throw new Error(`${caller}: iterations must be ${range}, got ${iterations}`);
  }
  return opts;
}

/** A buffer receiving the resolved timestamps of `passes` passes (two 8-byte stamps each). */
function createResolveBuffer(device: GPUDevice, label: string, passes: number): GPUBuffer {
  return device.createBuffer({
    label,
    size: passes * 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
}

/** Encodes `dispatches` in order into `pass` (one setPipeline per change) and ends it. */
function encodePass(
  pass: GPUComputePassEncoder,
  dispatches: readonly Dispatch[],
  groups: BindGroupCache,
): void {
  let current: GPUComputePipeline | undefined;
  for (const d of dispatches) current = encodeDispatch(pass, d, groups, current);
  pass.end();
}

function createTimingResources(
  device: GPUDevice,
  passes: number,
): { sets: GPUQuerySet[]; resolve: GPUBuffer } {
  const sets: GPUQuerySet[] = [];
  for (let i = 0; i < Math.ceil(passes / PASSES_PER_SET); i++) {
    sets.push(device.createQuerySet({ type: "timestamp", count: QUERIES_PER_SET }));
  }
  return { sets, resolve: createResolveBuffer(device, "ssmkit timestamps", passes) };
}

/** Timestamp writes of pass `index`: two consecutive queries in set index / 2048. */
function timestampSlot(sets: GPUQuerySet[], index: number): GPUComputePassTimestampWrites {
  const slot = index % PASSES_PER_SET;
  return {
    querySet: sets[Math.floor(index / PASSES_PER_SET)],
    beginningOfPassWriteIndex: 2 * slot,
    endOfPassWriteIndex: 2 * slot + 1,
  };
}

/** Resolves the queries of `passes` passes (sets in order) into `resolve` from `offset` on. */
function resolveTimestamps(
  encoder: GPUCommandEncoder,
  sets: GPUQuerySet[],
  passes: number,
  resolve: GPUBuffer,
  offset = 0,
): void {
  // Whole sets are 32 KiB, so every block starts 256-byte aligned as resolveQuerySet requires.
  for (let s = 0; s * PASSES_PER_SET < passes; s++) {
    const count = Math.min(PASSES_PER_SET, passes - s * PASSES_PER_SET);
    encoder.resolveQuerySet(sets[s], 0, 2 * count, resolve, offset + s * QUERIES_PER_SET * 8);
  }
}

function elapsed(stamps: BigUint64Array, pass: number): number {
  const begin = stamps[2 * pass];
  const end = stamps[2 * pass + 1];
  return end > begin ? Number(end - begin) : 0;
}

function median(sorted: number[]): number {
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// ---------------------------------------------------------------------------------------------
// Error scopes and attribution.

/**
 * Pushes validation and out-of-memory scopes; `pop` must follow synchronously after the GPU
 * calls (no await in between, so concurrent tasks cannot interleave their scopes), then turns
 * a captured error into one that names the kernel.
 */
function pushScopes(device: GPUDevice): {
  pop(ctx: GpuContext, dispatches: readonly Dispatch[]): Promise<void>;
} {
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  return {
    async pop(ctx, dispatches) {
      const validation = device.popErrorScope();
      const memory = device.popErrorScope();
      const [vError, mError] = await Promise.all([validation, memory]);
      if (vError) throw await attribute(ctx, dispatches, vError.message);
      if (mError) {
        throw new Error(
          `out of GPU memory while running kernels ${names(dispatches)}: ${mError.message}`,
        );
      }
    },
  };
}

/**
 * Finds the dispatch behind a validation error of a whole submit: first by encoding each alone
 * (with a fresh bind group, so a bad group reports its own cause) and finishing without
 * submitting; then, for errors seen only at submit (destroyed buffers), by submitting each
 * pipeline and bind group with no dispatch. No kernel runs twice.
 */
async function attribute(
  ctx: GpuContext,
  dispatches: readonly Dispatch[],
  message: string,
): Promise<Error> {
  const device = ctx.device;
  const groups = new BindGroupCache(ctx);
  const clean = message.trim();
  const probe = async (submit: boolean): Promise<Error | undefined> => {
    const found: Promise<GPUError | null>[] = [];
    for (const d of dispatches) {
      device.pushErrorScope("validation");
      try {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(d.pipeline);
        if (d.buffers.length > 0) {
          pass.setBindGroup(
            0,
            submit
              ? groups.get(d.pipeline, d.buffers)
              : createBindGroup(ctx, d.pipeline, d.buffers),
          );
        }
        if (!submit) pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        pass.end();
        const commands = encoder.finish();
        if (submit) device.queue.submit([commands]);
      } finally {
        found.push(device.popErrorScope());
      }
    }
    const errors = await Promise.all(found);
    const i = errors.findIndex((e) => e !== null);
    if (i < 0) return undefined;
    // A cached group may be the invalid object: drop it so a fixed retry builds a new one.
    groups.evict(dispatches[i].pipeline, dispatches[i].buffers);
    return new Error(`kernel ${dispatches[i].kernel.name}: ${errors[i]!.message.trim()}`);
  };
  return (await probe(false)) ?? (await probe(true)) ??
    new Error(`kernels ${names(dispatches)} (one submit): ${clean}`);
}

function names(dispatches: readonly Dispatch[]): string {
  const all = dispatches.map((d) => d.kernel.name);
  return all.length > 8
    ? `${all.slice(0, 8).join(", ")}, … (${all.length} in all)`
    : all.join(", ");
}
