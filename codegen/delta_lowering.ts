/**
 * The delta rule's lowering: the recurrent kernel (delta_recurrent.ts) or the chunked WY/UT
 * kernels (delta_chunked.ts), chosen by the cost model of delta_plan.ts unless forced with
 * the scan strategy's `mode`.
 *
 * @module
 */

import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import { emitDeltaChunked } from "./delta_chunked.ts";
import { TILED_PASS_ROWS } from "./delta_pass_tiled.ts";
import { chooseDeltaLowering } from "./delta_plan.ts";
import { emitDeltaRecurrent } from "./delta_recurrent.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanStrategy } from "./scan_strategy.ts";

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
 * chunks; `passRows` the chunked state pass's tile form and `prep` the form of its first kernel.
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
  const mode = strategy.mode ?? chooseDeltaLowering(node, limits);
  if (mode === "chunked") {
    return emitDeltaChunked(
      node,
      state,
      materialized,
      limits,
      name,
      aliases,
      strategy.chunks,
      strategy.lanes,
      strategy.workgroup,
      strategy.passRows,
      strategy.prep,
    );
  }
  return [emitDeltaRecurrent(node, state, materialized, limits, name, aliases, strategy.lanes)];
}
