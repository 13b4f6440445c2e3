/**
 * GPU buffers: a size-class pool, uploads, and batched readback (one staging buffer and one
 * `mapAsync` per call, since every map costs at least 10 ms under Deno).
 *
 * @module
 */

import type { GpuContext } from "./gpu_device.ts";

/** Host arrays that can be uploaded. */
export type UploadArray = Float32Array | Int32Array | Uint32Array | Uint16Array;

/** Usage of buffers kernels read and write, and that can be uploaded to and read back. */
export const STORAGE_USAGE: number = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

/** The pool's size class of a byte length: a multiple of 256, at least 16 (so 256). */
export function sizeClass(byteLength: number): number {
  return Math.max(256, Math.ceil(byteLength / 256) * 256);
}

/** Buffers recycled by (size class, usage); `release` returns one for reuse. */
export class BufferPool {
  readonly #ctx: GpuContext;
  readonly #free = new Map<string, GPUBuffer[]>();
  readonly #owned = new Set<GPUBuffer>();
  readonly #inUse = new Set<GPUBuffer>();

  /** Creates an empty pool for `ctx`'s device. */
  constructor(ctx: GpuContext) {
    this.#ctx = ctx;
  }

  /** A buffer of at least `byteLength` bytes with exactly `usage`, reused when one is free. */
  acquire(byteLength: number, usage: number): GPUBuffer {
    if (!Number.isInteger(byteLength) || byteLength < 0) {
      throw new Error(
        `BufferPool.acquire: byteLength must be a non-negative integer, got ${byteLength}`,
      );
    }
    const size = sizeClass(byteLength);
    const max = this.#ctx.limits.maxBufferSize;
    if (max !== undefined && size > max) {
      throw new Error(
        `BufferPool.acquire: ${byteLength} bytes exceed the device's maxBufferSize (${max})`,
      );
    }
    const free = this.#free.get(keyOf(size, usage));
    let buffer = free?.pop();
    if (!buffer) {
      buffer = this.#ctx.device.createBuffer({ size, usage, label: `pool ${size}B` });
      this.#owned.add(buffer);
    }
    this.#inUse.add(buffer);
    return buffer;
  }

  /** Returns `buffer` (from `acquire`) to the pool; its contents are kept but not promised. */
  release(buffer: GPUBuffer): void {
    if (!this.#owned.has(buffer)) {
      throw new Error("BufferPool.release: the buffer was not acquired from this pool");
    }
    if (!this.#inUse.delete(buffer)) {
      throw new Error("BufferPool.release: the buffer was already released");
    }
    const key = keyOf(buffer.size, buffer.usage);
    const free = this.#free.get(key);
    if (free) free.push(buffer);
    else this.#free.set(key, [buffer]);
  }

  /** Destroys `buffer` (from `acquire`) instead of reusing it, e.g. after a failed map. */
  discard(buffer: GPUBuffer): void {
    if (!this.#owned.delete(buffer)) {
      throw new Error("BufferPool.discard: the buffer was not acquired from this pool");
    }
    this.#inUse.delete(buffer);
    buffer.destroy();
  }

  /** Number of buffers currently handed out. */
  get inUse(): number {
    return this.#inUse.size;
  }

  /** Destroys every buffer this pool created, in use or free. */
  destroyAll(): void {
    for (const b of this.#owned) b.destroy();
    this.#owned.clear();
    this.#inUse.clear();
    this.#free.clear();
  }
}

function keyOf(size: number, usage: number): string {
  return `${size}:${usage}`;
}

/**
 * Uploads `data` into a new (or pooled) storage buffer via `queue.writeBuffer`. Without a pool
 * the buffer is the data's size rounded up to 16 bytes.
 */
export function uploadArray(ctx: GpuContext, data: UploadArray, pool?: BufferPool): GPUBuffer {
  const valid = data instanceof Float32Array || data instanceof Int32Array ||
    data instanceof Uint32Array || data instanceof Uint16Array;
  if (!valid) {
    throw new Error(
      "uploadArray: expected a Float32Array, Int32Array, Uint32Array or Uint16Array, got " +
        (data as object)?.constructor?.name,
    );
  }
  const bytes = data.byteLength;
  const buffer = pool ? pool.acquire(bytes, STORAGE_USAGE) : ctx.device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: STORAGE_USAGE,
  });
  if (bytes % 4 === 0) {
    ctx.device.queue.writeBuffer(buffer, 0, data.buffer as ArrayBuffer, data.byteOffset, bytes);
  } else {
    // writeBuffer needs a multiple of 4 bytes (odd-length Uint16Array): pad a copy.
    const padded = new Uint8Array(Math.ceil(bytes / 4) * 4);
    padded.set(new Uint8Array(data.buffer, data.byteOffset, bytes));
    ctx.device.queue.writeBuffer(buffer, 0, padded);
  }
  return buffer;
}

/** One range of a buffer to read back. */
export interface ReadPart {
  /** The buffer (needs COPY_SRC usage). */
  buffer: GPUBuffer;
  /** Start in bytes (multiple of 4; default 0). */
  byteOffset?: number;
  /** Bytes to read. */
  byteLength: number;
}

// Staging buffers are pooled per device; sizes are powers of two so few classes exist.
const stagingPools = new WeakMap<GPUDevice, BufferPool>();
const STAGING_USAGE = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;

/**
 * Reads all `parts` back with one command encoder, one submit and one `mapAsync`; returns a
 * fresh ArrayBuffer of exactly `byteLength` bytes per part.
 */
export async function readBuffers(ctx: GpuContext, parts: ReadPart[]): Promise<ArrayBuffer[]> {
  if (parts.length === 0) return [];
  // Lay the parts out in one staging buffer; validate everything before touching the GPU.
  const layout: { src: number; dst: number; copy: number; length: number }[] = [];
  let total = 0;
  parts.forEach((p, i) => {
    const offset = p.byteOffset ?? 0;
    const where = `readBuffers: part ${i}${p.buffer?.label ? ` ("${p.buffer.label}")` : ""}`;
    if (!p.buffer || typeof p.buffer.size !== "number") throw new Error(`${where}: no GPUBuffer`);
    if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0) {
      throw new Error(`${where}: byteOffset ${offset} must be a non-negative multiple of 4`);
    }
    if (!Number.isInteger(p.byteLength) || p.byteLength < 0) {
      throw new Error(`${where}: byteLength ${p.byteLength} must be a non-negative integer`);
    }
    if (offset + p.byteLength > p.buffer.size) {
      throw new Error(
        `${where}: bytes ${offset}..${offset + p.byteLength} lie outside the buffer ` +
          `(${p.buffer.size} bytes)`,
      );
    }
    if ((p.buffer.usage & GPUBufferUsage.COPY_SRC) === 0) {
      throw new Error(`${where}: the buffer lacks COPY_SRC usage, so it cannot be read back`);
    }
    // Copies move multiples of 4 bytes; round up inside the source when the length is odd.
    const copy = Math.ceil(p.byteLength / 4) * 4;
    if (offset + copy > p.buffer.size) {
      throw new Error(`${where}: byteLength ${p.byteLength} is not a multiple of 4 at the end`);
    }
    layout.push({ src: offset, dst: total, copy, length: p.byteLength });
    total += Math.ceil(copy / 16) * 16;
  });

  const device = ctx.device;
  let pool = stagingPools.get(device);
  if (!pool) stagingPools.set(device, pool = new BufferPool(ctx));
  const max = ctx.limits.maxBufferSize ?? Infinity;
  const pow2 = 2 ** Math.ceil(Math.log2(Math.max(total, 4096)));
  const staging = pool.acquire(pow2 <= max ? pow2 : total, STAGING_USAGE);
  let ok = false;
  try {
    device.pushErrorScope("validation");
    let scope: Promise<GPUError | null>;
    try {
      const encoder = device.createCommandEncoder({ label: "ssmkit readback" });
      parts.forEach((p, i) => {
        const l = layout[i];
        if (l.copy > 0) encoder.copyBufferToBuffer(p.buffer, l.src, staging, l.dst, l.copy);
      });
      device.queue.submit([encoder.finish()]);
    } finally {
      scope = device.popErrorScope();
    }
    // The map is requested before this function first yields, i.e. right behind the copy:
    // in Deno a map waits for all work submitted before it was requested, so a caller that
    // submits more work after this call returns does not delay it.
    const range = Math.max(16, total);
    const mapping = staging.mapAsync(GPUMapMode.READ, 0, range);
    mapping.catch(() => {}); // awaited below unless the copy failed
    const error = await scope;
    if (error) {
      throw new Error(`readBuffers: copying to the staging buffer failed: ${error.message}`);
    }
    try {
      await mapping;
    } catch (e) {
      throw new Error(`readBuffers: mapping the staging buffer failed: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const mapped = staging.getMappedRange(0, range);
    const out = layout.map((l) => mapped.slice(l.dst, l.dst + l.length));
    staging.unmap();
    ok = true;
    return out;
  } finally {
    // A staging buffer in an unknown state is not reused.
    if (ok) pool.release(staging);
    else pool.discard(staging);
  }
}
