/**
 * Compute pipelines cached by WGSL text without its comment lines (creation is slow, so it is
 * asynchronous and shared) and bind groups cached by (pipeline, buffers). Compile errors name
 * the kernel and the line.
 *
 * @module
 */

import type { GpuContext } from "./gpu_device.ts";
import { usesF16, withF16Directive } from "../codegen/dtypes.ts";

/** A kernel's name (used in errors and timings) and WGSL module with entry point `main`. */
export interface KernelSource {
  /** Readable name. */
  name: string;
  /** The WGSL module. */
  wgsl: string;
}

/** A WGSL compile error, located in the kernel's source. */
export class KernelCompileError extends Error {
  /** The kernel that failed. */
  readonly kernelName: string;
  /** 1-based line of the first error (0 when the compiler gave no location). */
  readonly line: number;
  /** 1-based column of the first error (0 when unknown). */
  readonly column: number;
  /** The WGSL source line at `line` ("" when unknown). */
  readonly sourceLine: string;
  /** The compiler's message for the first error (first line, without the code excerpt). */
  readonly compilerMessage: string;
  /** Every error message of the module, in full. */
  readonly allMessages: readonly string[];

  /** Creates the error from the first compiler message and the kernel's source. */
  constructor(kernelName: string, wgsl: string, messages: readonly GPUCompilationMessage[]) {
    const first = messages[0];
    const line = first?.lineNum ?? 0;
    const column = first?.linePos ?? 0;
    const sourceLine = line > 0 ? (wgsl.split("\n")[line - 1] ?? "") : "";
    const compilerMessage = headline(first?.message ?? "unknown error");
    const where = line > 0 ? ` at line ${line}, column ${column}` : "";
    let text = `kernel "${kernelName}": WGSL compile error${where}: ${compilerMessage}`;
    if (line > 0) {
      text += `\n  ${String(line).padStart(4)} | ${sourceLine}`;
      if (column > 0) text += `\n       | ${" ".repeat(column - 1)}^`;
    }
    if (messages.length > 1) {
      text += `\n  (${messages.length - 1} more error(s): ` +
        messages.slice(1).map((m) => `line ${m.lineNum}: ${headline(m.message)}`).join("; ") + ")";
    }
    super(text);
    this.name = "KernelCompileError";
    this.kernelName = kernelName;
    this.line = line;
    this.column = column;
    this.sourceLine = sourceLine;
    this.compilerMessage = compilerMessage;
    this.allMessages = messages.map((m) => m.message.trim());
  }
}

// naga's messages look like "\nShader 'x' parsing error: ...\n  ┌─ wgsl:5:3\n ...": keep the
// first meaningful line without the module label.
function headline(message: string): string {
  const first = message.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? message;
  return first.replace(/^Shader '[^']*' /, "");
}

/**
 * Distinct WGSL texts a {@link PipelineCache} keeps by default. A Mamba language model's
 * programs (prompt pass, two decode steps, sampler) use a few dozen; the bound keeps a process
 * that compiles programs for many shapes from holding every pipeline it ever made.
 */
export const PIPELINE_CACHE_CAPACITY = 256;

/**
 * The text a pipeline is cached under: `wgsl` without its whole-line comments. Kernels differ
 * from one layer to the next only in their header comment (the kernel's name), so a model's
 * repeated layers share one pipeline per distinct body: the 24-layer training step of the 130M
 * shapes is about 1000 kernels but 130 pipelines.
 */
export function pipelineKey(wgsl: string): string {
  if (!wgsl.includes("//")) return wgsl;
  return wgsl.split("\n").filter((line) => !line.trimStart().startsWith("//")).join("\n");
}

/**
 * Pipelines by WGSL text (comment lines aside: {@link pipelineKey}); concurrent requests for one
 * text share a single creation. The cache
 * is bounded: past `capacity` texts, the least recently requested is forgotten (programs that
 * hold its pipeline keep it; a later request compiles it again).
 */
export class PipelineCache {
  readonly #ctx: GpuContext;
  /** In least-recently-requested order (a Map iterates in insertion order). */
  readonly #byText = new Map<string, Promise<GPUComputePipeline>>();
  #capacity: number;

  /** Creates an empty cache for `ctx`'s device, keeping at most `capacity` WGSL texts. */
  constructor(ctx: GpuContext, capacity = PIPELINE_CACHE_CAPACITY) {
    this.#ctx = ctx;
    this.#capacity = checkCapacity(capacity);
  }

  /** Number of distinct WGSL texts cached or being compiled. */
  get size(): number {
    return this.#byText.size;
  }

  /** The most WGSL texts kept; lowering it forgets the least recently requested ones. */
  get capacity(): number {
    return this.#capacity;
  }

  set capacity(value: number) {
    this.#capacity = checkCapacity(value);
    this.#trim();
  }

  /** Whether the pipeline of `wgsl` is cached or being compiled (does not count as a use). */
  has(wgsl: string): boolean {
    return this.#byText.has(pipelineKey(wgsl));
  }

  /** The pipeline of `kernel` (compiled on first request; compile errors are thrown). */
  get(kernel: KernelSource): Promise<GPUComputePipeline> {
    if (typeof kernel?.wgsl !== "string" || kernel.wgsl.length === 0) {
      return Promise.reject(new Error(`kernel "${kernel?.name}": no WGSL text`));
    }
    if (usesF16(kernel.wgsl) && !this.#ctx.features.shaderF16) {
      return Promise.reject(
        new Error(
          `kernel "${kernel.name}" computes with f16 (an f16 input or a cast to f16), but this ` +
            `adapter lacks WebGPU's "shader-f16" feature; use f32 or bf16 instead`,
        ),
      );
    }
    const key = pipelineKey(kernel.wgsl);
    const cached = this.#byText.get(key);
    if (cached) {
      // Now the most recently requested: move it to the end.
      this.#byText.delete(key);
      this.#byText.set(key, cached);
      return cached;
    }
    const created = this.#create(kernel);
    this.#byText.set(key, created);
    // Failures are not cached: the error is reported to every waiter, and a later call retries.
    created.catch(() => {
      if (this.#byText.get(key) === created) this.#byText.delete(key);
    });
    this.#trim();
    return created;
  }

  /** Forgets the least recently requested texts until at most `capacity` remain. */
  #trim(): void {
    for (const text of this.#byText.keys()) {
      if (this.#byText.size <= this.#capacity) break;
      this.#byText.delete(text);
    }
  }

  /** Creates (or finds) the pipelines of all kernels in parallel, in the given order. */
  prepareAll(kernels: readonly KernelSource[]): Promise<GPUComputePipeline[]> {
    return Promise.all(kernels.map((k) => this.get(k)));
  }

  async #create(kernel: KernelSource): Promise<GPUComputePipeline> {
    const device = this.#ctx.device;
    // Scopes are pushed and popped with no await between, so concurrent work cannot interleave.
    device.pushErrorScope("validation");
    let module: GPUShaderModule;
    let moduleError: Promise<GPUError | null>;
    try {
      // Kernels emitted outside generateKernels (benchmarks) may lack `enable f16;`.
      module = device.createShaderModule({
        code: wgslFor(this.#ctx, withF16Directive(kernel.wgsl)),
        label: kernel.name,
      });
    } finally {
      moduleError = device.popErrorScope();
    }
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    await moduleError; // the same errors as `info`; consumed so they are not reported twice
    if (errors.length > 0) throw new KernelCompileError(kernel.name, kernel.wgsl, errors);

    device.pushErrorScope("validation");
    let creating: Promise<GPUComputePipeline>;
    let scope: Promise<GPUError | null>;
    try {
      creating = device.createComputePipelineAsync({
        label: kernel.name,
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
    } finally {
      scope = device.popErrorScope();
    }
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await creating;
    } catch (e) {
      await scope;
      throw new Error(
        `kernel "${kernel.name}": pipeline creation failed: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    const error = await scope;
    if (error) {
      throw new Error(`kernel "${kernel.name}": pipeline creation failed: ${error.message}`);
    }
    return pipeline;
  }
}

function checkCapacity(value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`PipelineCache: capacity must be a positive integer, got ${value}`);
  }
  return value;
}

/** One node of the bind-group trie: keyed by buffer objects, so nothing outlives its buffers. */
interface TrieNode {
  next: WeakMap<GPUBuffer, TrieNode>;
  group?: GPUBindGroup;
}

// One store for every BindGroupCache: a pipeline belongs to one device, and a group made by one
// user (say a program warming its groups) serves every other user of the same buffers.
const sharedRoots = new WeakMap<GPUComputePipeline, TrieNode>();

/**
 * Bind groups by (pipeline, buffers in binding order). The cache is a trie of WeakMaps keyed by
 * the pipeline and then each buffer, so entries for dropped buffers are collected with them.
 * All instances share one store.
 */
export class BindGroupCache {
  readonly #ctx: GpuContext;
  readonly #roots = sharedRoots;

  /** Creates an empty cache for `ctx`'s device. */
  constructor(ctx: GpuContext) {
    this.#ctx = ctx;
  }

  /** The bind group of `pipeline` binding `buffers[i]` (whole buffer) at binding i of group 0. */
  get(pipeline: GPUComputePipeline, buffers: readonly GPUBuffer[]): GPUBindGroup {
    const node = this.#node(pipeline, buffers, true)!;
    if (!node.group) node.group = createBindGroup(this.#ctx, pipeline, buffers);
    return node.group;
  }

  /** Forgets the cached group of (pipeline, buffers), e.g. after it failed validation. */
  evict(pipeline: GPUComputePipeline, buffers: readonly GPUBuffer[]): void {
    const node = this.#node(pipeline, buffers, false);
    if (node) node.group = undefined;
  }

  #node(
    pipeline: GPUComputePipeline,
    buffers: readonly GPUBuffer[],
    create: boolean,
  ): TrieNode | undefined {
    let node: TrieNode | undefined = this.#roots.get(pipeline);
    if (!node) {
      if (!create) return undefined;
      node = { next: new WeakMap<GPUBuffer, TrieNode>() };
      this.#roots.set(pipeline, node);
    }
    for (const buffer of buffers) {
      let child: TrieNode | undefined = node.next.get(buffer);
      if (!child) {
        if (!create) return undefined;
        child = { next: new WeakMap<GPUBuffer, TrieNode>() };
        node.next.set(buffer, child);
      }
      node = child;
    }
    return node;
  }
}

/** Creates (uncached) the bind group binding `buffers[i]` at binding i of group 0. */
export function createBindGroup(
  ctx: GpuContext,
  pipeline: GPUComputePipeline,
  buffers: readonly GPUBuffer[],
): GPUBindGroup {
  return ctx.device.createBindGroup({
    label: pipeline.label,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
}

/** Calls of subgroup builtins (and their builtin values) in WGSL text. */
const SUBGROUP_USE = /\bsubgroup[A-Z]\w*\s*\(|\bsubgroup_(size|invocation_id)\b/;

/**
 * The kernel's text as `ctx`'s compiler wants it: with `enable subgroups;` first when it calls
 * subgroup builtins and the compiler requires the directive (Chromium); unchanged otherwise.
 */
export function wgslFor(ctx: GpuContext, wgsl: string): string {
  if (!ctx.features.subgroupsDirective || !SUBGROUP_USE.test(wgsl)) return wgsl;
  return `enable subgroups;\n${wgsl}`;
}
