/**
 * The delta rule's lowering: the recurrent kernel (delta_recurrent.ts) or the chunked WY/UT
 * kernels (delta_chunked.ts), chosen by the cost model of delta_plan.ts unless forced with
 * the scan strategy's `mode`; where the model picks the recurrent kernel, the autotuner may
 * pick its lanes per value row or the chunked kernels instead.
 *
 * @module
 */

import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import { emitDeltaChunked } from "./delta_chunked.ts";
import { TILED_PASS_ROWS } from "./delta_pass_tiled.ts";
import { chooseDeltaLowering, DELTA_CHUNKS, deltaChunk } from "./delta_plan.ts";
import { deltaLanes, emitDeltaRecurrent, maxDeltaLanes } from "./delta_recurrent.ts";
import { deltaShapes } from "./delta_shapes.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanStrategy } from "./scan_strategy.ts";
import { emitTuned } from "./tuning.ts";

/** The final-state node of `node` among the materialized nodes, if the program reads it. */
function stateOf(node: DeltaNode, materialized: ReadonlySet<Node>): DeltaStateNode | undefined {
  for (const n of materialized) if (n.kind === "delta_state" && n.x === node) return n;
  return undefined;
}

/**
 * Kernels computing a delta node's outputs and its final state (when materialized). The
 * scan strategy's `mode` forces the lowering, `lanes` the lanes per value row (of the recurrent
 * kernel or the chunked state pass), `workgroup` the chunked state pass's threads and `chunks`
 * the chunked lowering's chunk length: the shortest of 8, 16, 32, 64 giving at most that many
 * chunks; `passRows` the chunked state pass's tile form.
 */
export function emitDelta(
  node: DeltaNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  strategy: ScanStrategy = {},
): KernelArtifact[] {
  const state = stateOf(node, materialized);
  if (strategy.passRows !== undefined && !TILED_PASS_ROWS.includes(strategy.passRows)) {
    throw new Error(
      `deltaRule: the scan strategy's passRows must be one of ${TILED_PASS_ROWS.join(", ")} ` +
        `(got ${strategy.passRows})`,
    );
  }
  const chunkedWith = (maxChunks?: number) => () =>
    emitDeltaChunked(
      node,
      state,
      materialized,
      limits,
      name,
      aliases,
      maxChunks,
      strategy.lanes,
      strategy.workgroup,
      strategy.passRows,
    );
  const chunked = () =>
    strategy.chunks !== undefined
      ? chunkedWith(strategy.chunks)()
      : tunedChunkLength(node, limits, chunkedWith);
  const recurrent = (lanes?: number) => () => [
    emitDeltaRecurrent(node, state, materialized, limits, name, aliases, lanes),
  ];
  const mode = strategy.mode ?? chooseDeltaLowering(node, limits);
  if (mode === "chunked") return chunked();
  if (strategy.mode !== undefined || strategy.lanes !== undefined) {
    return recurrent(strategy.lanes)();
  }
  // Where the model picks the recurrent kernel, the lowering is a tuning point: the recurrent
  // kernel with each number of lanes per value row (its latency per step depends on it), or the
  // chunked kernels, whose own points the autotuner tunes first (nested) and times the candidate
  // with (an H100 at (8, 2048, 16, 64), 2026-12-07: chunked with 64 pass rows 1.350 ms, with the
  // defaults 1.473, recurrent with 8 lanes 1.444). (Where the model picks the chunked kernels,
  // their own points are tuned directly.)
  const s = deltaShapes(node);
  const byDefault = deltaLanes(s.dk, limits);
  // (The chunked candidate's chunk length is a point of its own, nested.)
  const candidates = new Map<string, () => KernelArtifact[]>([["recurrent", recurrent()]]);
  for (let g = Math.max(1, byDefault / 2); g <= maxDeltaLanes(limits); g *= 2) {
    if (g !== byDefault) candidates.set(`recurrent_lanes${g}`, recurrent(g));
  }
  if (s.len > 1) candidates.set("chunked", chunked);
  const key = `delta b${s.batches} t${s.len} dk${s.dk} dv${s.dv}`;
  return emitTuned(limits, key, candidates, "recurrent");
}

/**
 * The chunked kernels at the longest chunk length that fits (deltaChunk), or at half of it: a
 * tuning point. Half the chunk halves the first kernel's work per step (L = K·Kᵀ and the
 * substitution) and the output kernel's intra-chunk products, for twice as many sequential steps
 * in the state pass: at (1, 8192, 32, 128) about 20% fewer multiply-adds in all. Lengths giving
 * the same number of chunks are no choice.
 */
function tunedChunkLength(
  node: DeltaNode,
  limits: DeviceLimits,
  chunkedWith: (maxChunks?: number) => () => KernelArtifact[],
): KernelArtifact[] {
  const s = deltaShapes(node);
  let longest: number;
  try {
    longest = deltaChunk(s, limits);
  } catch {
    return chunkedWith()(); // the kernels' own error names what does not fit
  }
  const candidates = new Map([[`chunk${longest}`, chunkedWith()]]);
  const half = longest / 2;
  if (DELTA_CHUNKS.includes(half) && Math.ceil(s.len / half) > Math.ceil(s.len / longest)) {
    candidates.set(`chunk${half}`, chunkedWith(Math.ceil(s.len / half)));
  }
  const key = `delta-chunk b${s.batches} t${s.len} dk${s.dk} dv${s.dv}`;
  return emitTuned(limits, key, candidates, `chunk${longest}`);
}
