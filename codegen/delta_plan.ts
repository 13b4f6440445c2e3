/**
 * The delta rule's cost model: the recurrent kernel (one sequential pass, state in registers)
 * against the chunked WY/UT kernels (three passes, the sequential part one step per chunk).
 *
 * In words: the recurrent kernel's time is the larger of its arithmetic (4·dk·dv multiply-adds
 * per step and batch position at a scalar rate) and the latency of its dependent chain
 * (one step after another: loads, two lane reductions); the chunked lowering's time is its
 * arithmetic at a higher rate (chunk-sized products, reused loads), plus the sequential state
 * pass (one short step per position, but independent within a chunk) and two more dispatches.
 * So decode and short sequences keep the recurrent kernel; long sequences, or many steps for
 * few batch positions, take the chunked one. Scratch larger than a binding keeps the recurrent
 * kernel. The constants are estimates (not yet fitted to a GPU measurement: bench/delta_bench.ts
 * is the experiment that will fit them).
 *
 * @module
 */

import type { DeltaNode } from "../dsl/ir.ts";
import { type DeltaShapes, deltaShapes } from "./delta_shapes.ts";
import type { DeviceLimits } from "./limits.ts";
import { fitTile, stagedSizes, tileThreads } from "./ssd_gemm.ts";
import { passLanes, passWorkgroupBytes } from "./delta_pass.ts";
import { prepWorkgroupBytes } from "./delta_prep.ts";
import { OUT_KT } from "./delta_chunk_parts.ts";

/** Chunk lengths the chunked lowering supports. */
export const DELTA_CHUNKS: readonly number[] = [8, 16, 32, 64];

const SCALAR_RATE = 4e12;
const CHUNK_RATE = 15e12;
const DISPATCH_SECONDS = 20e-6;
const RECURRENT_SECONDS_PER_STEP = 0.4e-6;
const PASS_SECONDS_PER_STEP = 0.03e-6;

/** Output tiles of kernel 3: the chunk's rows × up to this many value columns. */
const OUT_TILE_COLUMNS = 64;
/** Threads of kernel 3 (at most; fewer when the device allows fewer). */
const OUT_THREADS = 256;

/**
 * The tiles of kernel 3: P = Q·Kᵀ (C × C) and y (C × value columns), each with the largest
 * block per thread that still gives `minThreads` threads (64 by default: 8 × 8 blocks at C = 64;
 * 256 takes 4 × 4 blocks); `columns` value columns per workgroup (P is recomputed for each block
 * of them). The workgroup has as many threads as the larger tile uses.
 */
export function outputTiles(
  c: number,
  dv: number,
  maxThreads: number,
  minThreads = 64,
  columns = OUT_TILE_COLUMNS,
) {
  const cap = Math.min(OUT_THREADS, maxThreads);
  const nt = Math.min(columns, Math.ceil(dv / 4) * 4);
  const p = fitTile(c, c, OUT_KT, cap, minThreads);
  const y = fitTile(c, nt, OUT_KT, cap, minThreads);
  // The workgroup has the threads its larger tile uses (threads past both tiles would idle).
  const threads = Math.max(tileThreads(p).threads, tileThreads(y).threads);
  return { threads, p, y, columnTiles: Math.ceil(dv / nt) };
}

/**
 * Workgroup bytes of kernel 3 (P in workgroup memory plus the staged tile slices), with the
 * block per thread of `minThreads` and `columns` value columns (outputTiles).
 */
export function outputWorkgroupBytes(
  c: number,
  dv: number,
  maxThreads: number,
  minThreads?: number,
  columns?: number,
): number {
  const t = outputTiles(c, dv, maxThreads, minThreads, columns);
  const p = stagedSizes(t.p), y = stagedSizes(t.y);
  return 4 * c * c + 16 * (Math.max(p.a, y.a) + Math.max(p.b, y.b));
}

/** Workgroup memory (bytes) the chunked kernels need at chunk length `c`. */
export function deltaWorkgroupBytes(c: number, dv: number, maxThreads: number): number {
  return Math.max(prepWorkgroupBytes(c, maxThreads), outputWorkgroupBytes(c, dv, maxThreads));
}

/**
 * The chunk length: the longest supported one whose workgroup arrays fit the device, or the
 * one giving at most `maxChunks` chunks when forced (the scan strategy's `chunks`).
 */
export function deltaChunk(s: DeltaShapes, limits: DeviceLimits, maxChunks?: number): number {
  const { len } = s;
  if (passWorkgroupBytes(s.dk, passLanes(s.dk, limits)) > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `deltaRule: the chunked state pass needs more workgroup memory than the device has ` +
        `(key size ${s.dk}); use the recurrent mode`,
    );
  }
  const fits = DELTA_CHUNKS.filter((c) =>
    deltaWorkgroupBytes(c, s.dv, limits.maxComputeInvocationsPerWorkgroup) <=
      limits.maxComputeWorkgroupStorageSize &&
    c <= limits.maxComputeInvocationsPerWorkgroup
  );
  if (fits.length === 0) throw new Error("deltaRule: the device's workgroup memory is too small");
  if (maxChunks === undefined) return fits[fits.length - 1];
  return fits.find((c) => Math.ceil(len / c) <= maxChunks) ?? fits[fits.length - 1];
}

/** Scratch bytes of the chunked lowering at chunk length `c`. */
export function deltaScratchBytes(s: DeltaShapes, c: number): number {
  const padded = Math.ceil(s.len / c) * c;
  const chunks = padded / c;
  return 4 * s.batches * (padded * (s.dk + s.dv + 1) + chunks * s.dk * s.dv);
}

/** Bytes of the largest single scratch buffer (each is bound on its own). */
export function deltaLargestScratchBytes(s: DeltaShapes, c: number): number {
  const padded = Math.ceil(s.len / c) * c;
  const chunks = padded / c;
  return 4 * s.batches * Math.max(padded * (s.dk + s.dv + 1), chunks * s.dk * s.dv);
}

/** Modelled seconds of the recurrent kernel. */
export function deltaRecurrentSeconds(s: DeltaShapes): number {
  const work = 4 * s.batches * s.len * s.dk * s.dv / SCALAR_RATE;
  return Math.max(work, s.len * RECURRENT_SECONDS_PER_STEP) + DISPATCH_SECONDS;
}

/** Modelled seconds of the chunked kernels at chunk length `c`. */
export function deltaChunkedSeconds(s: DeltaShapes, c: number): number {
  const perStep = 4 * c * s.dk + c * (s.dk + s.dv) + 2 * c * s.dv + 6 * s.dk * s.dv;
  const work = s.batches * s.len * perStep / CHUNK_RATE;
  return work + s.len * PASS_SECONDS_PER_STEP + 3 * DISPATCH_SECONDS;
}

/** Which lowering runs `node` by default. */
export function chooseDeltaLowering(
  node: DeltaNode,
  limits: DeviceLimits,
): "chunked" | "recurrent" {
  const s = deltaShapes(node);
  let c: number;
  try {
    c = deltaChunk(s, limits);
  } catch {
    return "recurrent"; // the chunked kernels' workgroup arrays do not fit this device
  }
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (deltaLargestScratchBytes(s, c) > limit) return "recurrent";
  return deltaChunkedSeconds(s, c) < deltaRecurrentSeconds(s) ? "chunked" : "recurrent";
}
