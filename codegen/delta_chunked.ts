import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";
/** placeholder */
export function emitDeltaChunked(
  _node: DeltaNode,
  _state: DeltaStateNode | undefined,
  _materialized: ReadonlySet<Node>,
  _limits: DeviceLimits,
  _name: string,
  _aliases: ReadonlyMap<Node, Node>,
  _chunks?: number,
): KernelArtifact[] {
  throw new Error("not yet");
}
