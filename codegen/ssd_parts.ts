/**
 * Pieces the chunked SSD kernels share (ssd_kernel.ts, and ssd_vector.ts for vector decays):
 * the geometry of one lowering, its tile shapes and small WGSL snippets.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import type { BufferKey } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanSpec } from "./scan_spec.ts";
import type { TileShape } from "./ssd_gemm.ts";
import type { SsdForm, SsdSizes } from "./ssd_plan.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** Tiles of the three products (tests and benchmarks may override them). */
export interface SsdTiling {
  /** Chunk states: rows = state, columns = value, K = chunk steps. */
  state: TileShape;
  /** C·Bᵀ blocks: rows = key steps j, columns = query steps i, K = state. */
  cb: TileShape;
  /** Outputs: rows = steps of the chunk, columns = value, K = state then chunk steps. */
  out: TileShape;
}

/** Everything the kernels of one chunked scan share. */
export interface Geometry {
  /** The form's sizes. */
  sizes: SsdSizes;
  /** Chunk length. */
  q: number;
  /** Chunks over the scan (the last one may be partial). */
  chunks: number;
  /** Value elements rounded up to a multiple of 4 (the states' row length). */
  value4: number;
  /** Tile shapes of the products. */
  tiling: SsdTiling;
  /**
   * One scratch buffer of vec4s: chunk states, then C·Bᵀ blocks, then Λ (one per vec4); with a
   * vector decay, the in-chunk cumulative log-decays G and then Λ, both rows of `state4`.
   */
  scratchBuf: BufferKey;
  /** vec4 offset of the C·Bᵀ blocks (with a vector decay: the decayed intra-chunk products). */
  cbOff: number;
  /** vec4 offset of Λ. */
  lamOff: number;
  /** Whether the decay is a vector over the state (the kernels of ssd_vector.ts run too). */
  vector: boolean;
  /** State elements rounded up to a multiple of 4 (the rows of G and Λ of a vector decay). */
  state4: number;
  /** vec4 offset of G (vector decay only): heads × chunks × q rows of `state4`. */
  gOff: number;
}

/** What every kernel of one chunked lowering is emitted from. */
export interface SsdContext {
  /** The fused scan. */
  readonly spec: ScanSpec;
  /** Its SSD form. */
  readonly form: SsdForm;
  /** The lowering's chunking, tiles and scratch layout. */
  readonly geo: Geometry;
  /** Nodes with buffers (the plan's). */
  readonly materialized: ReadonlySet<Node>;
  /** The device's limits. */
  readonly limits: DeviceLimits;
  /** In-place aliases of the plan. */
  readonly aliases: ReadonlyMap<Node, Node>;
}

/** n rounded up to a multiple of m. */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Redeclares the named f32 storage arrays as vec4 arrays (scratch read 4 values at a time). */
export function vec4Arrays(decls: string, names: string[]): string {
  return decls.split("\n").map((line) => {
    const m = /var<storage, (?:read|read_write)> (\w+): array<f32>;/.exec(line);
    return m && names.includes(m[1]) ? line.replace("array<f32>", "array<vec4<f32>>") : line;
  }).join("\n");
}

/** `tmap(tp)`: position in scan order → time index (reverse scans read from the end). */
export function timeMap(spec: ScanSpec, len: number): string {
  const last = u(len - 1);
  const body = spec.scan.reverse ? `${last} - min(tp, ${last})` : `min(tp, ${last})`;
  return `fn tmap(tp: u32) -> u32 { return ${body}; }`;
}

/** The flat workgroup index (folded over x and y), clamped, and whether it is a real one. */
export function workgroupIndex(total: number, gx: number): string[] {
  return [
    `let wg = wid.x + wid.y * ${u(gx)};`,
    `let live = wg < ${u(total)};`,
    `let w = min(wg, ${u(total - 1)});`,
  ];
}

/** `vec4<f32>(…)` of four WGSL expressions. */
export function vec4Of(parts: string[]): string {
  return `vec4<f32>(${parts.join(", ")})`;
}
