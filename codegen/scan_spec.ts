/**
 * What one scan group computes: the description every scan lowering (the lane kernel, the
 * tiled kernel, the chunked SSD kernels) and the strategy chooser read. It lives in a module of
 * its own so those files import it without importing each other.
 *
 * @module
 */

import type { ContractNode, Node, PickNode, ScanNode } from "../dsl/ir.ts";

/** What one scan kernel computes. */
export interface ScanSpec {
  readonly scan: ScanNode;
  readonly stateAxes: readonly string[];
  readonly channelAxes: readonly string[];
  /** Per-step outputs: with a contraction (reduced over the state), or the state itself. */
  readonly outputs: readonly { root: Node; contract?: ContractNode }[];
  readonly finals: readonly PickNode[];
}
