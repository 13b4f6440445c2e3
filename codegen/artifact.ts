/**
 * What code generation produces for one kernel, and the binding registry kernels use while
 * emitting (every materialized node read becomes one read-only storage binding; every buffer
 * written one read_write binding).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import { wgslStorageType } from "./dtypes.ts";

/** A buffer that exists only between kernels of one program (e.g. chunk carries of a scan). */
export interface ScratchBuffer {
  /** Discriminant (IR nodes have other kinds). */
  readonly kind: "scratch";
  /** Debug label (the buffer's GPU label). */
  readonly label: string;
  /** Number of elements. */
  readonly elements: number;
  /** Element type (atomic words: the single-pass scan's tile counter and look-back flags). */
  readonly dtype: "f32" | "atomic<u32>";
}

/** Anything a kernel binds: an IR node's buffer or a scratch buffer. */
export type BufferKey = Node | ScratchBuffer;

/** Creates a scratch buffer description (4-byte elements). */
export function scratch(
  label: string,
  elements: number,
  dtype: ScratchBuffer["dtype"] = "f32",
): ScratchBuffer {
  return { kind: "scratch", label, elements, dtype };
}

/** Elements of a buffer key. */
export function elementsOf(key: BufferKey): number {
  return key.kind === "scratch" ? key.elements : numel(key);
}

/**
 * A kernel's tuning point (codegen/tuning.ts): the decision's key and its candidates. A choice
 * may span several kernels (a scan lowered chunked or recurrent): the point then sits on the
 * group's first kernel and each candidate is the whole group.
 */
export interface TuningPoint {
  /** The decision, by the shapes it depends on (e.g. `matmul b1 m2048 n768 k1536 a:direct b:hook`). */
  readonly key: string;
  /** The candidate this kernel was emitted with. */
  readonly chosen: string;
  /** Emits the kernels once per candidate (same inputs and outputs, another strategy), by name. */
  readonly alternatives: () => [string, KernelArtifact[]][];
}

/** One generated kernel. Bindings: `reads` first, then `writes`, in order. */
export interface KernelArtifact {
  /** Readable name, used in errors and timings. */
  readonly name: string;
  /** The WGSL module (entry point `main`). */
  readonly wgsl: string;
  /** Workgroup counts. */
  readonly workgroups: readonly [number, number, number];
  /** Buffers read, in binding order. */
  readonly reads: readonly BufferKey[];
  /** Buffers written (bound read_write after the reads). */
  readonly writes: readonly BufferKey[];
  /** Which kernel kind produced it. */
  readonly kind: "elementwise" | "reduce" | "matmul" | "scan";
  /** The strategy choice this kernel embodies, when the autotuner may make it. */
  readonly tuning?: TuningPoint;
}

/** Thrown when a kernel needs more storage buffers than the device allows. */
export class TooManyBindingsError extends Error {
  /** The kernel's root. */
  readonly root: Node;
  /** Buffers needed. */
  readonly needed: number;
  /** Creates the error. */
  constructor(root: Node, needed: number, limit: number) {
    super(`kernel for node ${root.id} needs ${needed} storage buffers; the device allows ${limit}`);
    this.root = root;
    this.needed = needed;
  }
}

/**
 * Collects the buffers a kernel binds. Reads are registered lazily as the emitter meets
 * materialized nodes; writes are fixed up front. An input that shares its buffer with an
 * output of this kernel (an in-place state update) is read through the write binding, since
 * WebGPU forbids binding one buffer twice with different access in a dispatch.
 */
export class BindingRegistry {
  readonly #materialized: ReadonlySet<Node>;
  readonly #writes: BufferKey[];
  readonly #aliases: ReadonlyMap<Node, Node>;
  readonly #reads: BufferKey[] = [];
  /** Bindings the kernel template declares itself (with its own array type). */
  readonly #external = new Set<BufferKey>();
  /** Set when a hook reads a node that the template declared itself. */
  #conflict = false;
  /** Writes declared as arrays of f32 vectors (index → width). */
  readonly #vectorWrites = new Map<number, number>();
  /** Writes also read as scalars (an input sharing the output's buffer). */
  readonly #aliasReads = new Set<number>();

  /**
   * @param materialized nodes with buffers
   * @param writes       buffers this kernel writes (their nodes are computed, not loaded)
   * @param aliases      input node → output node sharing its buffer
   */
  constructor(
    materialized: ReadonlySet<Node>,
    writes: readonly BufferKey[],
    aliases: ReadonlyMap<Node, Node> = new Map(),
  ) {
    this.#materialized = materialized;
    this.#writes = [...writes];
    this.#aliases = aliases;
  }

  /** The WGSL array name of the i-th write. */
  writeName(i: number): string {
    return i === 0 ? "out" : `out${i}`;
  }

  /** The array name of a materialized node (registering it), or undefined. */
  lookup = (node: Node): string | undefined => {
    const alias = this.#aliases.get(node);
    if (alias !== undefined && this.#writes.includes(alias)) {
      const i = this.#writes.indexOf(alias);
      if (this.#vectorWrites.has(i)) throw new Error(`internal: ${this.writeName(i)} is vectors`);
      this.#aliasReads.add(i);
      return this.writeName(i);
    }
    if (this.#writes.includes(node) || !this.#materialized.has(node)) return undefined;
    return this.read(node);
  };

  /** Whether {@link lookup} would name an array for `node`, asked without registering it. */
  buffered = (node: Node): boolean => {
    const alias = this.#aliases.get(node);
    if (alias !== undefined && this.#writes.includes(alias)) return true;
    return !this.#writes.includes(node) && this.#materialized.has(node);
  };

  /** Registers a read of any buffer key; returns its array name. */
  read(key: BufferKey): string {
    if (this.#external.has(key)) this.#conflict = true;
    let i = this.#reads.indexOf(key);
    if (i < 0) i = this.#reads.push(key) - 1;
    return `b${i}`;
  }

  /** Reserves a binding for `node` that the kernel template declares itself; its index. */
  reserveExternal(node: Node): number {
    if (this.#reads.includes(node)) this.#conflict = true;
    this.#external.add(node);
    return this.#reads.push(node) - 1;
  }

  /**
   * Declares write `i` (an f32 buffer) as an array of `width`-element vectors and returns its
   * name (every store to it must then be a whole vector), or undefined when the kernel already
   * reads that buffer as scalars (an input updated in place).
   */
  writeVectors(i: number, width: number): string | undefined {
    if (this.#aliasReads.has(i)) return undefined;
    this.#vectorWrites.set(i, width);
    return this.writeName(i);
  }

  /** True when a node was both reserved externally and read through `lookup`. */
  get conflict(): boolean {
    return this.#conflict;
  }

  /** Buffers read so far, in binding order. */
  get reads(): readonly BufferKey[] {
    return this.#reads;
  }

  /** Buffers written, in binding order after the reads. */
  get writes(): readonly BufferKey[] {
    return this.#writes;
  }

  /** WGSL declarations for all reads and writes. */
  declarations(): string {
    const lines = this.#reads.flatMap((n, i) =>
      this.#external.has(n) ? [] : [
        `@group(0) @binding(${i}) var<storage, read> b${i}: ` +
        `array<${wgslStorageType(n)}>;`,
      ]
    );
    this.#writes.forEach((w, i) => {
      lines.push(
        `@group(0) @binding(${this.#reads.length + i}) var<storage, read_write> ` +
          `${this.writeName(i)}: array<${
            this.#vectorWrites.has(i) ? `vec${this.#vectorWrites.get(i)}<f32>` : wgslStorageType(w)
          }>;`,
      );
    });
    return lines.join("\n");
  }

  /** Throws when the kernel would exceed the device's storage-buffer limit. */
  checkLimit(root: Node, limit: number): void {
    const needed = this.#reads.length + this.#writes.length;
    if (needed > limit) throw new TooManyBindingsError(root, needed, limit);
  }
}

/** Folds a workgroup count into x/y so neither exceeds the per-dimension limit. */
export function foldWorkgroups(count: number, maxPerDim: number): [number, number, number] {
  if (count <= maxPerDim) return [Math.max(count, 1), 1, 1];
  const y = Math.ceil(count / maxPerDim);
  if (y > maxPerDim) {
    throw new Error(`${count} workgroups exceed ${maxPerDim}² (the device's per-dimension limit)`);
  }
  return [maxPerDim, y, 1];
}

/** Checks a node fits u32 indexing. */
export function checkIndexable(node: Node): void {
  if (numel(node) > 0xffffffff) {
    throw new Error(`tensor [${node.axes.join(" ")}] has ${numel(node)} elements: over 2^32`);
  }
}
