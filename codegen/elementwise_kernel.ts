/**
 * Elementwise kernels: one thread per output element, the whole fused expression inline.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
} from "./artifact.ts";
import { decodeIndex, ExprEmitter } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

const WORKGROUP = 256;

/** Emits the kernel that writes `root` elementwise. */
export function emitElementwiseKernel(
  root: Node,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node> = new Map(),
): KernelArtifact {
  checkIndexable(root);
  const total = numel(root);
  const registry = new BindingRegistry(materialized, [root], aliases);
  const { lines: decode, env } = decodeIndex("flat", root.axes, root.shape, "i_");
  const body = new ExprEmitter(registry.lookup);
  const value = body.emit(root, env);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const workgroups = foldWorkgroups(
    Math.ceil(total / WORKGROUP),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const wgsl = `// ${name}: elementwise, ${total} elements
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let flat = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${WORKGROUP}u + lid;
  if (flat >= ${u32Literal(total)}) { return; }
  ${[...decode, ...body.lines].join("\n  ")}
  out[flat] = ${value};
}
`;
  return {
    name,
    wgsl,
    workgroups,
    reads: registry.reads,
    writes: registry.writes,
    kind: "elementwise",
  };
}
