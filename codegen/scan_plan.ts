/**
 * Scan analysis: finds scans whose state never needs to be in memory. A scan qualifies when
 * every consumer either contracts away the same state axes (y = Σ_n C·h, with C's axes inside
 * the scan's) or picks the state after the last step. The state axes are read off the graph,
 * any number of them; the remaining non-scan axes are the independent channels.
 *
 * @module
 */

import type { ContractNode, Node, PickNode, ScanNode } from "../dsl/ir.ts";

/** How a fusable scan is used. */
export interface ScanUse {
  /** The scan node. */
  readonly scan: ScanNode;
  /** Axes the consumers sum over: held per channel, never written. */
  readonly stateAxes: readonly string[];
  /** Axes computed independently (everything but the scan axis and the state axes). */
  readonly channelAxes: readonly string[];
  /** Consumers Σ over `stateAxes` of h·other. */
  readonly contracts: readonly ContractNode[];
  /** Consumers taking the state after the last step. */
  readonly finals: readonly PickNode[];
}

/** The position a final-state pick reads. */
export function finalIndex(scan: ScanNode): number {
  return scan.reverse ? 0 : scan.shape[scan.axes.indexOf(scan.axis)] - 1;
}

/** The other operand of a contraction with the scan. */
export function otherOperand(c: ContractNode, scan: ScanNode): Node {
  return c.a === scan ? c.b : c.a;
}

/** Returns how `scan` is used when its state can stay on chip, else undefined. */
export function analyzeScan(scan: ScanNode, consumers: readonly Node[]): ScanUse | undefined {
  if (consumers.length === 0) return undefined;
  const contracts: ContractNode[] = [];
  const finals: PickNode[] = [];
  let stateAxes: string[] | undefined;
  for (const c of consumers) {
    if (c.kind === "pick" && c.x === scan && c.axis === scan.axis && c.index === finalIndex(scan)) {
      finals.push(c);
      continue;
    }
    if (c.kind !== "contract" || (c.a === scan) === (c.b === scan)) return undefined;
    const other = otherOperand(c, scan);
    const summed = [...c.summed];
    if (summed.includes(scan.axis) || !summed.every((a) => scan.axes.includes(a))) return undefined;
    if (!other.axes.every((a) => scan.axes.includes(a))) return undefined;
    if (
      stateAxes &&
      !(stateAxes.length === summed.length && summed.every((a) => stateAxes!.includes(a)))
    ) {
      return undefined;
    }
    stateAxes = scan.axes.filter((a) => summed.includes(a));
    contracts.push(c);
  }
  const state = stateAxes ?? [];
  return {
    scan,
    stateAxes: state,
    channelAxes: scan.axes.filter((a) => a !== scan.axis && !state.includes(a)),
    contracts,
    finals,
  };
}
