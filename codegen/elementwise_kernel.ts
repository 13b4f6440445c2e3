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
/** Elements per thread for large tensors. */
const PER_THREAD = 4;

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
  // Large tensors: each thread computes several elements, one thread-grid apart (so every
  // load instruction stays coalesced), for more independent loads in flight per thread.
  const perThread = total >= PER_THREAD * WORKGROUP * 64 ? PER_THREAD : 1;
  const threads = Math.ceil(total / perThread);
  const blocks: string[] = [];
  for (let k = 0; k < perThread; k++) {
    const flat = `flat${k}`;
    const { lines: decode, env } = decodeIndex(flat, root.axes, root.shape, `i${k}_`);
    const body = new ExprEmitter(registry.lookup, `v${k}_`);
    const value = body.emit(root, env);
    const lines = [...decode, ...body.lines, `out[${flat}] = ${value};`];
    if (k === 0) {
      blocks.push(...lines);
      continue;
    }
    blocks.push(
      `let ${flat} = flat0 + ${u32Literal(k * threads)};`,
      `if (${flat} < ${u32Literal(total)}) {`,
      ...lines.map((l) => `  ${l}`),
      `}`,
    );
  }
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const workgroups = foldWorkgroups(
    Math.ceil(threads / WORKGROUP),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const wgsl = `// ${name}: elementwise, ${total} elements, ${perThread} per thread
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let flat0 = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${WORKGROUP}u + lid;
  if (flat0 >= ${u32Literal(threads)}) { return; }
  ${blocks.join("\n  ")}
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
