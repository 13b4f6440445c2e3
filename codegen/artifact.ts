/**
 * What code generation produces for one kernel, and the binding registry kernels use while
 * emitting (every materialized node read becomes one read-only storage binding).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";

/** One generated kernel. Binding i is `reads[i]`; binding `reads.length` is `write`. */
export interface KernelArtifact {
  /** Readable name, used in errors and timings. */
  readonly name: string;
  /** The WGSL module (entry point `main`). */
  readonly wgsl: string;
  /** Workgroup counts. */
  readonly workgroups: readonly [number, number, number];
  /** Materialized nodes read, in binding order. */
  readonly reads: readonly Node[];
  /** The node written (binding `reads.length`). */
  readonly write: Node;
  /** Which kernel kind produced it. */
  readonly kind: "elementwise" | "reduce" | "matmul";
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

/** Collects the materialized nodes a kernel reads and names their WGSL arrays. */
export class BindingRegistry {
  readonly #materialized: ReadonlySet<Node>;
  readonly #exclude: Node;
  readonly #reads: Node[] = [];
  /** Bindings the kernel template declares itself (with its own array type). */
  readonly #external = new Set<Node>();
  /** Set when a hook reads a node that the template declared itself. */
  #conflict = false;

  /** `root` is the kernel's own output: never read back as an input. */
  constructor(materialized: ReadonlySet<Node>, root: Node) {
    this.#materialized = materialized;
    this.#exclude = root;
  }

  /** The array name of a materialized node (registering it), or undefined. */
  lookup = (node: Node): string | undefined => {
    if (node === this.#exclude || !this.#materialized.has(node)) return undefined;
    if (this.#external.has(node)) this.#conflict = true;
    let i = this.#reads.indexOf(node);
    if (i < 0) i = this.#reads.push(node) - 1;
    return `b${i}`;
  };

  /** Reserves a binding for `node` that the kernel template declares itself; its index. */
  reserveExternal(node: Node): number {
    if (this.#reads.includes(node)) this.#conflict = true;
    this.#external.add(node);
    return this.#reads.push(node) - 1;
  }

  /** True when a node was both reserved externally and read through `lookup`. */
  get conflict(): boolean {
    return this.#conflict;
  }

  /** Nodes read so far, in binding order. */
  get reads(): readonly Node[] {
    return this.#reads;
  }

  /** WGSL declarations for all reads plus the output array `out`. */
  declarations(write: Node): string {
    const lines = this.#reads.flatMap((n, i) =>
      this.#external.has(n) ? [] : [`@group(0) @binding(${i}) var<storage, read> b${i}: array<${n.dtype}>;`]
    );
    lines.push(
      `@group(0) @binding(${this.#reads.length}) var<storage, read_write> out: array<${write.dtype}>;`,
    );
    return lines.join("\n");
  }

  /** Throws when the kernel would exceed the device's storage-buffer limit. */
  checkLimit(root: Node, limit: number): void {
    const needed = this.#reads.length + 1;
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
