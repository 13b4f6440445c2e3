/**
 * Reduction kernels with fused prologue (the reduced expression) and epilogue (elementwise ops
 * on the result). Long reductions use one workgroup per output and a tree in workgroup memory;
 * short ones one thread per output with a serial loop; those in between (32–255 elements) to
 * many outputs a group of 4–32 threads per output, several outputs per workgroup. A long
 * reduction to few outputs (a loss, a gradient's squared norm) would run on a handful of
 * workgroups, i.e. on a handful of the GPU's cores (a 64 MB sum to a scalar took 14.3 ms on the
 * H100): it is split into two kernels, the first reducing slices of the reduced axes in many
 * workgroups into partial results, the second reducing each output's partials and applying the
 * epilogue. The split is fixed by the shapes, so results are the same run to run.
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
/**
 * Below this extent (and from {@link GROUPED_MIN_OUTPUTS} outputs) each output gets a group of
 * threads instead of a workgroup: one 64-thread workgroup per output of a 64-element sum (Mamba-2's
 * per-head Δ gradient, 393,216 outputs) spent six barriers on one element per thread and ran at
 * 0.7–1.1 TB/s on an H100.
 */
const GROUPED_BELOW = 256;
/** Outputs from which a short reduction is grouped. */
const GROUPED_MIN_OUTPUTS = 1024;
/** Elements each thread of a group folds, about. */
const GROUPED_PER_THREAD = 8;

/** Threads per output of a grouped reduction over `extent` elements (a power of two, 4–32). */
export function groupThreads(extent: number): number {
  let g = 4;
  while (g < 32 && g * GROUPED_PER_THREAD < extent) g *= 2;
  return g;
}
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
  accNode: Node = core,
): KernelArtifact[] {
  const outputs = numel(core);
  const extent = core.over.reduce((p, a) => p * core.x.shape[core.x.axes.indexOf(a)], 1);
  if (isColumnReduction(root, core, extent)) {
    return emitColumnReduction(root, core, materialized, limits, name, aliases, accNode);
  }
  const splits = reduceSplits(outputs, extent);
  if (splits === 1) {
    return [emitReduceKernel(root, core, materialized, limits, name, aliases, accNode)];
  }
  checkIndexable(root);
  checkIndexable(core.x);
  const partials = scratch(`${name}_partials`, outputs * splits);
  return [
    emitPartialsKernel(root, core, partials, splits, materialized, limits, `${name}_partials`),
    emitCombineKernel(root, core, partials, splits, materialized, limits, name, aliases, accNode),
  ];
}

/** Outputs per workgroup of a column reduction (neighbouring threads, neighbouring columns). */
const COLUMN_TILE = 64;
/** Threads per output in a column reduction's workgroup, each taking every 4th row. */
const COLUMN_GROUPS = 4;
/** Rows per slice of a column reduction, at least. */
const COLUMN_SLICE = 256;

/**
 * Whether `core` sums rows of columns: the innermost axis of its operand is kept, and the
 * root's innermost axis is that one, so outputs next to each other read elements next to each
 * other. One workgroup per output would read each element alone (a bias gradient over b·l took
 * 0.8 ms for 25 MB on an H100, 30 GB/s); a column reduction gives each workgroup 64 neighbouring
 * outputs, read by neighbouring threads.
 */
function isColumnReduction(root: Node, core: ReduceNode, extent: number): boolean {
  if (extent < SERIAL_BELOW || numel(core) < COLUMN_TILE) return false;
  // The column axis: the operand's innermost axis of 16 or more. Only kept axes may follow it
  // (a conv weight gradient's 4 taps), in the root's order too, few enough that the 64 outputs
  // of a tile still span 8 or more columns.
  const x = core.x;
  const col = x.axes.findLastIndex((_, i) => x.shape[i] >= 16);
  if (col < 0 || core.over.includes(x.axes[col])) return false;
  const trailing = x.axes.slice(col + 1);
  if (trailing.some((a) => core.over.includes(a))) return false;
  if (trailing.reduce((p, a) => p * x.shape[x.axes.indexOf(a)], 1) > 8) return false;
  const tail = root.axes.slice(root.axes.length - trailing.length - 1);
  return tail.join(" ") === x.axes.slice(col).join(" ");
}

/** Slices of the rows of a column reduction over `tiles` tiles (enough workgroups to fill a GPU). */
export function columnSlices(tiles: number, extent: number): number {
  return Math.max(
    1,
    Math.min(Math.ceil(SPLIT_WORKGROUPS / tiles), Math.floor(extent / COLUMN_SLICE)),
  );
}

/**
 * A column reduction: workgroup w takes the tile w % tiles of 64 outputs and the slice
 * w / tiles of the rows; its 4 thread groups take every 4th row of the slice, then group 0 adds
 * the four in a fixed order. One slice writes the result (and the epilogue); several write
 * partials that {@link emitCombineKernel} adds per output in a fixed order.
 */
function emitColumnReduction(
  root: Node,
  core: ReduceNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  accNode: Node = core,
): KernelArtifact[] {
  checkIndexable(root);
  checkIndexable(core.x);
  const outputs = numel(core);
  const extent = core.over.reduce((p, a) => p * core.x.shape[core.x.axes.indexOf(a)], 1);
  const tiles = Math.ceil(outputs / COLUMN_TILE);
  const slices = columnSlices(tiles, extent);
  const slice = Math.ceil(extent / slices);
  const wg = COLUMN_TILE * COLUMN_GROUPS;
  const partials = slices > 1 ? scratch(`${name}_partials`, outputs * slices) : undefined;
  const kernelName = partials ? `${name}_partials` : name;
  const registry = new BindingRegistry(materialized, partials ? [partials] : [root], aliases);
  const { outIdx, loopBody } = accumulation(root, core, registry);
  const epi = new ExprEmitter(registry.lookup, "e", { node: accNode, value: "acc" });
  const result = partials ? "" : epi.emit(root, outIdx.env);
  const finish = partials
    ? [`out[o * ${u32Literal(slices)} + s] = acc;`]
    : [...epi.lines, `out[o] = ${result};`];
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const sum = Array.from({ length: COLUMN_GROUPS }, (_, g) => `partial[lane + ${g * COLUMN_TILE}u]`)
    .reduce((a, b) => combineWgsl(core.op, a, b));
  const workgroups = foldWorkgroups(tiles * slices, limits.maxComputeWorkgroupsPerDimension);
  const wgsl = `// ${kernelName}: reduce ${core.op} over [${
    core.over.join(" ")
  }] (${extent}) by columns, ${outputs} outputs in tiles of ${COLUMN_TILE}, ${slices} slice(s) of ${slice}
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> partial: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * ${u32Literal(workgroups[0])};
  let s = w / ${u32Literal(tiles)};
  let lane = lid % ${COLUMN_TILE}u;
  let o_raw = (w % ${u32Literal(tiles)}) * ${COLUMN_TILE}u + lane;
  let o = min(o_raw, ${u32Literal(outputs - 1)});
  ${outIdx.lines.join("\n  ")}
  let r_end = min((s + 1u) * ${u32Literal(slice)}, ${u32Literal(extent)});
  var acc: f32 = ${initWgsl(core.op)};
  if (s < ${u32Literal(slices)}) {
    for (var r: u32 = s * ${
    u32Literal(slice)
  } + lid / ${COLUMN_TILE}u; r < r_end; r += ${COLUMN_GROUPS}u) {
      ${loopBody}
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  if (lid < ${COLUMN_TILE}u && o_raw < ${u32Literal(outputs)} && s < ${u32Literal(slices)}) {
    acc = ${sum};
    ${finish.join("\n    ")}
  }
}
`;
  const first: KernelArtifact = {
    name: kernelName,
    wgsl,
    workgroups,
    reads: registry.reads,
    writes: registry.writes,
    kind: "reduce",
  };
  if (!partials) return [first];
  return [
    first,
    emitCombineKernel(root, core, partials, slices, materialized, limits, name, aliases, accNode),
  ];
}

/**
 * What every reduction kernel computes per output: the output index `o` decoded over the root's
 * layout (the epilogue writes `out` in that order), and the loop body adding `core.x` at the
 * reduced index `r` into `acc`. `registry` binds the buffers the operand reads.
 */
function accumulation(
  root: Node,
  core: ReduceNode,
  registry: BindingRegistry,
): { outIdx: ReturnType<typeof decodeIndex>; loopBody: string; overShape: number[] } {
  const overShape = core.over.map((a) => core.x.shape[core.x.axes.indexOf(a)]);
  const outIdx = decodeIndex("o", root.axes, root.shape, "o_");
  const red = decodeIndex("r", core.over, overShape, "r_");
  const inner = new ExprEmitter(registry.lookup, "p");
  const value = inner.emit(core.x, { ...outIdx.env, ...red.env });
  const loopBody = [...red.lines, ...inner.lines, `acc = ${combineWgsl(core.op, "acc", value)};`]
    .join("\n    ");
  return { outIdx, loopBody, overShape };
}

/** Emits the kernel writing `root`, which is `core` or an elementwise epilogue of it. */
export function emitReduceKernel(
  root: Node,
  core: ReduceNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node> = new Map(),
  accNode: Node = core,
): KernelArtifact {
  checkIndexable(root);
  checkIndexable(core.x);
  const outputs = numel(core);
  const registry = new BindingRegistry(materialized, [root], aliases);
  const { outIdx, loopBody, overShape } = accumulation(root, core, registry);
  const extent = overShape.reduce((p, s) => p * s, 1);
  const serial = extent < SERIAL_BELOW;
  const grouped = !serial && extent < GROUPED_BELOW && outputs >= GROUPED_MIN_OUTPUTS &&
    limits.maxComputeInvocationsPerWorkgroup >= 256;
  const wg = serial || grouped ? 256 : Math.min(
    extent >= 1024 ? 256 : extent >= 256 ? 128 : 64,
    limits.maxComputeInvocationsPerWorkgroup,
  );

  const epi = new ExprEmitter(registry.lookup, "e", { node: accNode, value: "acc" });
  const result = epi.emit(root, outIdx.env);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);

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
  } else if (grouped) {
    // Thread j of a group takes elements j, j + g, …; the group's tree combines them in a fixed
    // order, so results are the same run to run.
    const g = groupThreads(extent);
    const per = wg / g;
    workgroups = foldWorkgroups(Math.ceil(outputs / per), limits.maxComputeWorkgroupsPerDimension);
    main = `var<workgroup> partial: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let j = lid % ${g}u;
  let o = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${per}u + lid / ${g}u;
  let live = o < ${u32Literal(outputs)};
  ${outIdx.lines.join("\n  ")}
  var acc: f32 = ${initWgsl(core.op)};
  if (live) {
    for (var r: u32 = j; r < ${u32Literal(extent)}; r += ${g}u) {
      ${loopBody}
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s: u32 = ${g / 2}u; s > 0u; s = s >> 1u) {
    if (j < s) { partial[lid] = ${combineWgsl(core.op, "partial[lid]", "partial[lid + s]")}; }
    workgroupBarrier();
  }
  if (live && j == 0u) {
    acc = partial[lid];
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
  const wg = Math.min(256, limits.maxComputeInvocationsPerWorkgroup);
  const registry = new BindingRegistry(materialized, [partials]);
  const { outIdx, loopBody, overShape } = accumulation(root, core, registry);
  const extent = overShape.reduce((p, s) => p * s, 1);
  const slice = Math.ceil(extent / splits);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
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
  accNode: Node = core,
): KernelArtifact {
  const outputs = numel(core);
  const wg = Math.min(splits >= 256 ? 256 : 64, limits.maxComputeInvocationsPerWorkgroup);
  const registry = new BindingRegistry(materialized, [root], aliases);
  const part = registry.read(partials);
  const outIdx = decodeIndex("o", root.axes, root.shape, "o_");
  const epi = new ExprEmitter(registry.lookup, "e", { node: accNode, value: "acc" });
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
