/**
 * The kernels of horizontal fusion (`horizontal_plan.ts`): a segmented elementwise kernel, and
 * the partial-sum and finish kernels of a sum of full reductions. A segment owns a contiguous
 * range of workgroups; the workgroup index selects it through a chain of comparisons with the
 * ranges' ends (constants), so every workgroup runs one segment's code, without divergence.
 *
 * @module
 */

import type { Node, ReduceNode } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
} from "./artifact.ts";
import { decodeIndex, ExprEmitter } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

const WORKGROUP = 256;
/** Elements one thread sums in a partial-sum kernel (a workgroup: 4096). */
const PER_THREAD = 16;

/** WGSL selecting segment code by workgroup index `w`: `if (w < end) { … } else if …`. */
function segmentChain(blocks: readonly { end: number; lines: readonly string[] }[]): string[] {
  const out: string[] = [];
  blocks.forEach((b, j) => {
    out.push(`${j === 0 ? "if" : "} else if"} (w < ${u32Literal(b.end)}) {`);
    out.push(...b.lines.map((l) => `  ${l}`));
  });
  out.push("}");
  return out;
}

/**
 * One dispatch computing several segments of elementwise roots: segment j's threads each
 * compute every root of the segment at one element (the roots share an index space; a root
 * reading another takes its value from the thread) and store them after computing them all.
 */
export function emitHorizontal(
  segments: readonly (readonly Node[])[],
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const roots = segments.flat();
  for (const r of roots) checkIndexable(r);
  const registry = new BindingRegistry(materialized, roots, aliases);
  const blocks: { end: number; lines: string[] }[] = [];
  let start = 0;
  segments.forEach((seg, j) => {
    const space = seg[0];
    const total = numel(space);
    const count = Math.max(1, Math.ceil(total / WORKGROUP));
    const { lines: decode, env } = decodeIndex("flat", space.axes, space.shape, `s${j}_`);
    const body = new ExprEmitter(registry.lookup, `s${j}v`);
    const values = seg.map((r) => body.emit(r, env));
    const stores = seg.map((r, k) =>
      `${registry.writeName(roots.indexOf(r))}[flat] = ${values[k]};`
    );
    blocks.push({
      end: start + count,
      lines: [
        `let flat = (w - ${u32Literal(start)}) * ${WORKGROUP}u + lid;`,
        `if (flat < ${u32Literal(total)}) {`,
        ...[...decode, ...body.lines, ...stores].map((l) => `  ${l}`),
        `}`,
      ],
    });
    start += count;
  });
  registry.checkLimit(roots[0], limits.maxStorageBuffersPerShaderStage);
  const workgroups = foldWorkgroups(start, limits.maxComputeWorkgroupsPerDimension);
  const wgsl = `// ${name}: ${segments.length} elementwise segments, ${roots.length} outputs
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * ${u32Literal(workgroups[0])};
  ${segmentChain(blocks).join("\n  ")}
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

/** A workgroup-memory tree sum of `red` into `red[0]` (every thread must reach it). */
const TREE_SUM = [
  "workgroupBarrier();",
  `for (var s = ${WORKGROUP / 2}u; s > 0u; s = s >> 1u) {`,
  "  if (lid < s) { red[lid] = red[lid] + red[lid + s]; }",
  "  workgroupBarrier();",
  "}",
];

/**
 * The kernels of a scalar `root` over full sums `parts`: partial-sum kernels, each over as
 * many parts as its bindings allow (`batches`, indices into `parts`), each workgroup writing
 * the sum of up to 4096 elements of one part into a scratch buffer; then one workgroup sums
 * each part's partials (in order: deterministic) and evaluates `root`.
 */
export function emitMultiReduce(
  root: Node,
  parts: readonly ReduceNode[],
  batches: readonly (readonly number[])[],
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact[] {
  const perGroup = WORKGROUP * PER_THREAD;
  const slots: number[] = [0];
  for (const p of parts) {
    checkIndexable(p.x);
    slots.push(slots[slots.length - 1] + Math.max(1, Math.ceil(numel(p.x) / perGroup)));
  }
  const partials = scratch(`${name}_partials`, slots[parts.length]);
  const kernels = batches.map((batch, b) => {
    const registry = new BindingRegistry(materialized, [partials], aliases);
    const blocks: { end: number; lines: string[] }[] = [];
    let start = 0;
    for (const j of batch) {
      const x = parts[j].x;
      const count = slots[j + 1] - slots[j];
      const { lines: decode, env } = decodeIndex("flat", x.axes, x.shape, `p${j}_`);
      const body = new ExprEmitter(registry.lookup, `p${j}v`);
      const value = body.emit(x, env);
      blocks.push({
        end: start + count,
        lines: [
          `slot = ${u32Literal(slots[j])} + w - ${u32Literal(start)};`,
          `let base = (w - ${u32Literal(start)}) * ${u32Literal(perGroup)} + lid;`,
          `for (var k = 0u; k < ${PER_THREAD}u; k = k + 1u) {`,
          `  let flat = base + k * ${WORKGROUP}u;`,
          `  if (flat < ${u32Literal(numel(x))}) {`,
          ...[...decode, ...body.lines, `acc = acc + ${value};`].map((l) => `    ${l}`),
          "  }",
          "}",
        ],
      });
      start += count;
    }
    registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
    const workgroups = foldWorkgroups(start, limits.maxComputeWorkgroupsPerDimension);
    const wgsl = `// ${name}_part${b}: partial sums of ${batch.length} tensors
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> red: array<f32, ${WORKGROUP}>;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * ${u32Literal(workgroups[0])};
  if (w >= ${u32Literal(start)}) { return; }
  var acc = 0.0;
  var slot = 0u;
  ${segmentChain(blocks).join("\n  ")}
  red[lid] = acc;
  ${TREE_SUM.join("\n  ")}
  if (lid == 0u) { out[slot] = red[0]; }
}
`;
    return {
      name: `${name}_part${b}`,
      wgsl,
      workgroups,
      reads: registry.reads,
      writes: registry.writes,
      kind: "reduce",
    } satisfies KernelArtifact;
  });
  // The finish: one workgroup; part j's sum goes to sums[j], then thread 0 evaluates the root.
  const registry = new BindingRegistry(materialized, [root], aliases);
  const partialsName = registry.read(partials);
  const epi = new ExprEmitter(registry.lookup, "e").interceptWith((n) => {
    const j = parts.indexOf(n as ReduceNode);
    return j >= 0 ? `sums[${j}]` : undefined;
  });
  const value = epi.emit(root, {});
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const wgsl = `// ${name}_finish: ${parts.length} sums from ${slots[parts.length]} partials
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> red: array<f32, ${WORKGROUP}>;
var<workgroup> sums: array<f32, ${parts.length}>;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(local_invocation_index) lid: u32) {
  var starts = array<u32, ${parts.length + 1}>(${slots.map((s) => u32Literal(s)).join(", ")});
  for (var j = 0u; j < ${parts.length}u; j = j + 1u) {
    var acc = 0.0;
    for (var i = starts[j] + lid; i < starts[j + 1u]; i = i + ${WORKGROUP}u) {
      acc = acc + ${partialsName}[i];
    }
    red[lid] = acc;
    ${TREE_SUM.join("\n    ")}
    if (lid == 0u) { sums[j] = red[0]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    ${[...epi.lines, `out[0] = ${value};`].join("\n    ")}
  }
}
`;
  kernels.push({
    name: `${name}_finish`,
    wgsl,
    workgroups: [1, 1, 1],
    reads: registry.reads,
    writes: registry.writes,
    kind: "reduce",
  });
  return kernels;
}
