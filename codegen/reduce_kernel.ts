/**
 * Reduction kernels with fused prologue (the reduced expression) and epilogue (elementwise ops
 * on the result). Long reductions use one workgroup per output and a tree in workgroup memory;
 * short ones one thread per output with a serial loop. A long reduction to few outputs (a loss,
 * a gradient's squared norm) would run on a handful of workgroups, i.e. on a handful of the
 * GPU's cores (a 64 MB sum to a scalar took 14.3 ms on the H100): it is split into two kernels,
 * the first reducing slices of the reduced axes in many workgroups into partial results, the
 * second reducing each output's partials and applying the epilogue. The split is fixed by the
 * shapes, so results are the same run to run.
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

const SERIAL_BELOW = 32;
/** Workgroups a split reduction aims for (enough to occupy every core of a large GPU). */
const SPLIT_WORKGROUPS = 1024;
/** Reduced elements per workgroup of a split reduction, at least (16 per thread). */
const SPLIT_SLICE = 4096;

/** How many slices each output's reduction is split into (1: not split). */
export function reduceSplits(outputs: number, extent: number): number {
  if (outputs >= SPLIT_WORKGROUPS / 2 || extent < 2 * SPLIT_SLICE) return 1;
  return Math.max(
    1,
    Math.min(Math.floor(extent / SPLIT_SLICE), Math.ceil(SPLIT_WORKGROUPS / outputs)),
  );
}

/** WGSL combining two partial results of a reduction. */
export function combineWgsl(op: ReduceNode["op"], a: string, b: string): string {
  return op === "sum" ? `${a} + ${b}` : `${op}(${a}, ${b})`;
}

/** WGSL identity of a reduction. */
export function initWgsl(op: ReduceNode["op"]): string {
  if (op === "sum") return "0.0";
  return op === "max" ? "bitcast<f32>(0xff800000u)" : "bitcast<f32>(0x7f800000u)";
}

/**
 * Emits the kernels writing `root`, which is `core` or an elementwise epilogue of it: one
 * kernel, or two for a long reduction to few outputs (see the module docs).
 */
export function emitReduceKernels(
  root: Node,
  core: ReduceNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node> = new Map(),
): KernelArtifact[] {
  const outputs = numel(core);
  const extent = core.over.reduce((p, a) => p * core.x.shape[core.x.axes.indexOf(a)], 1);
  const splits = reduceSplits(outputs, extent);
  if (splits === 1) return [emitReduceKernel(root, core, materialized, limits, name, aliases)];
  checkIndexable(root);
  checkIndexable(core.x);
  const partials = scratch(`${name}_partials`, outputs * splits);
  return [
    emitPartialsKernel(root, core, partials, splits, materialized, limits, `${name}_partials`),
    emitCombineKernel(root, core, partials, splits, materialized, limits, name, aliases),
  ];
}

/** Emits the kernel writing `root`, which is `core` or an elementwise epilogue of it. */
export function emitReduceKernel(
  root: Node,
  core: ReduceNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node> = new Map(),
): KernelArtifact {
  checkIndexable(root);
  checkIndexable(core.x);
  const outputs = numel(core);
  const overShape = core.over.map((a) => core.x.shape[core.x.axes.indexOf(a)]);
  const extent = overShape.reduce((p, s) => p * s, 1);
  const registry = new BindingRegistry(materialized, [root], aliases);
  const serial = extent < SERIAL_BELOW;
  const wg = serial ? 256 : Math.min(
    extent >= 1024 ? 256 : extent >= 256 ? 128 : 64,
    limits.maxComputeInvocationsPerWorkgroup,
  );

  // The output index: the root's layout order (the epilogue writes `out` in that order).
  const outIdx = decodeIndex("o", root.axes, root.shape, "o_");
  const red = decodeIndex("r", core.over, overShape, "r_");
  const inner = new ExprEmitter(registry.lookup, "p");
  const value = inner.emit(core.x, { ...outIdx.env, ...red.env });
  const epi = new ExprEmitter(registry.lookup, "e", { node: core, value: "acc" });
  const result = epi.emit(root, outIdx.env);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);

  const loopBody = [...red.lines, ...inner.lines, `acc = ${combineWgsl(core.op, "acc", value)};`]
    .join("\n    ");
  const epilogue = [...epi.lines, `out[o] = ${result};`].join("\n    ");
  let main: string;
  let workgroups: [number, number, number];
  if (serial) {
    workgroups = foldWorkgroups(Math.ceil(outputs / wg), limits.maxComputeWorkgroupsPerDimension);
    main = `@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${wg}u + lid;
  if (o >= ${u32Literal(outputs)}) { return; }
  ${outIdx.lines.join("\n  ")}
  var acc: f32 = ${initWgsl(core.op)};
  for (var r: u32 = 0u; r < ${u32Literal(extent)}; r++) {
    ${loopBody}
  }
  {
    ${epilogue}
  }
}`;
  } else {
    workgroups = foldWorkgroups(outputs, limits.maxComputeWorkgroupsPerDimension);
    main = `var<workgroup> partial: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = wid.x + wid.y * ${u32Literal(workgroups[0])};
  if (o >= ${u32Literal(outputs)}) { return; }
  ${outIdx.lines.join("\n  ")}
  var acc: f32 = ${initWgsl(core.op)};
  for (var r: u32 = lid; r < ${u32Literal(extent)}; r += ${wg}u) {
    ${loopBody}
  }
  ${treeLines(core.op, wg)}
  if (lid == 0u) {
    acc = partial[0];
    ${epilogue}
  }
}`;
  }
  const wgsl = `// ${name}: reduce ${core.op} over [${
    core.over.join(" ")
  }] (${extent}), ${outputs} outputs
${registry.declarations()}
${MATH_PRELUDE}
${main}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "reduce" };
}

/** The workgroup-memory tree that combines `partial[0..wg)` into `partial[0]`. */
function treeLines(op: ReduceNode["op"], wg: number): string {
  return `partial[lid] = acc;
  workgroupBarrier();
  for (var s: u32 = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { partial[lid] = ${combineWgsl(op, "partial[lid]", "partial[lid + s]")}; }
    workgroupBarrier();
  }`;
}

/** Split reduction, kernel 1: workgroup w reduces slice w % splits of output w / splits. */
function emitPartialsKernel(
  root: Node,
  core: ReduceNode,
  partials: ReturnType<typeof scratch>,
  splits: number,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
): KernelArtifact {
  const outputs = numel(core);
  const overShape = core.over.map((a) => core.x.shape[core.x.axes.indexOf(a)]);
  const extent = overShape.reduce((p, s) => p * s, 1);
  const slice = Math.ceil(extent / splits);
  const wg = Math.min(256, limits.maxComputeInvocationsPerWorkgroup);
  const registry = new BindingRegistry(materialized, [partials]);
  const outIdx = decodeIndex("o", root.axes, root.shape, "o_");
  const red = decodeIndex("r", core.over, overShape, "r_");
  const inner = new ExprEmitter(registry.lookup, "p");
  const value = inner.emit(core.x, { ...outIdx.env, ...red.env });
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const loopBody = [...red.lines, ...inner.lines, `acc = ${combineWgsl(core.op, "acc", value)};`]
    .join("\n    ");
  const workgroups = foldWorkgroups(outputs * splits, limits.maxComputeWorkgroupsPerDimension);
  const wgsl = `// ${name}: reduce ${core.op} over [${
    core.over.join(" ")
  }] (${extent}) in ${splits} slices of ${slice}, ${outputs} outputs
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> partial: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * ${u32Literal(workgroups[0])};
  if (w >= ${u32Literal(outputs * splits)}) { return; }
  let o = w / ${u32Literal(splits)};
  ${outIdx.lines.join("\n  ")}
  let r_end = min((w % ${u32Literal(splits)} + 1u) * ${u32Literal(slice)}, ${u32Literal(extent)});
  var acc: f32 = ${initWgsl(core.op)};
  for (var r: u32 = (w % ${u32Literal(splits)}) * ${
    u32Literal(slice)
  } + lid; r < r_end; r += ${wg}u) {
    ${loopBody}
  }
  ${treeLines(core.op, wg)}
  if (lid == 0u) { out[w] = partial[0]; }
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "reduce" };
}

/** Split reduction, kernel 2: one workgroup per output combines its partials, then the epilogue. */
function emitCombineKernel(
  root: Node,
  core: ReduceNode,
  partials: ReturnType<typeof scratch>,
  splits: number,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const outputs = numel(core);
  const wg = Math.min(splits >= 256 ? 256 : 64, limits.maxComputeInvocationsPerWorkgroup);
  const registry = new BindingRegistry(materialized, [root], aliases);
  const part = registry.read(partials);
  const outIdx = decodeIndex("o", root.axes, root.shape, "o_");
  const epi = new ExprEmitter(registry.lookup, "e", { node: core, value: "acc" });
  const result = epi.emit(root, outIdx.env);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const workgroups = foldWorkgroups(outputs, limits.maxComputeWorkgroupsPerDimension);
  const wgsl = `// ${name}: combine ${splits} partial ${core.op}s per output, ${outputs} outputs
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> partial: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let o = wid.x + wid.y * ${u32Literal(workgroups[0])};
  if (o >= ${u32Literal(outputs)}) { return; }
  ${outIdx.lines.join("\n  ")}
  var acc: f32 = ${initWgsl(core.op)};
  for (var r: u32 = lid; r < ${u32Literal(splits)}; r += ${wg}u) {
    acc = ${combineWgsl(core.op, "acc", `${part}[o * ${u32Literal(splits)} + r]`)};
  }
  ${treeLines(core.op, wg)}
  if (lid == 0u) {
    acc = partial[0];
    ${[...epi.lines, `out[o] = ${result};`].join("\n    ")}
  }
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "reduce" };
}
