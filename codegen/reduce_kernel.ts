/**
 * Reduction kernels with fused prologue (the reduced expression) and epilogue (elementwise ops
 * on the result). Long reductions use one workgroup per output and a tree in workgroup memory;
 * short ones one thread per output with a serial loop.
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
} from "./artifact.ts";
import { decodeIndex, ExprEmitter } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

const SERIAL_BELOW = 32;

/** WGSL combining two partial results of a reduction. */
export function combineWgsl(op: ReduceNode["op"], a: string, b: string): string {
  return op === "sum" ? `${a} + ${b}` : `${op}(${a}, ${b})`;
}

/** WGSL identity of a reduction. */
export function initWgsl(op: ReduceNode["op"]): string {
  if (op === "sum") return "0.0";
  return op === "max" ? "bitcast<f32>(0xff800000u)" : "bitcast<f32>(0x7f800000u)";
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
  partial[lid] = acc;
  workgroupBarrier();
  for (var s: u32 = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { partial[lid] = ${combineWgsl(core.op, "partial[lid]", "partial[lid + s]")}; }
    workgroupBarrier();
  }
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
