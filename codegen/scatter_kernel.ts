/**
 * The backward of a gather (an embedding's gradient) as a scatter-add kernel. Autodiff writes it
 * as a contraction with a one-hot, ct_table[v, m] = Σ_k [ids[k] = v] · ct[k, m]
 * (`dsl/vjp_views.ts`), which the matmul kernel computes as a dense product: V·M·K
 * multiply-adds of which M·K are not zero (70 ms for a 50,280-row table and 16,384 tokens on an
 * H100). Here workgroup w owns rows [w·R, w·R + R) of the table and all M columns; its threads
 * read the ids in blocks of 256 into workgroup memory, then walk each block in order, adding a
 * token's cotangent row to the row it names when that row is theirs, stopping after the last
 * token of the block that names one (a workgroup's 16 rows of 50,280 appear in few blocks: the
 * full walk took 6.5 ms for 16,384 tokens on an H100). Each element is summed in token order, so
 * results are the same run to run; the only atomic finds the block's last match.
 *
 * A small table stays a dense product: its one-hot multiplies the work by the rows only, while
 * the scatter's workgroups, a few rows each, would each walk every token (the induction model's
 * 18-row embedding: 2 workgroups, 1.05 ms of a 4.8 ms training step on an H100, 2026-12-06).
 *
 * @module
 */

import type { BinaryNode, ContractNode, GatherNode, Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
} from "./artifact.ts";
import { decodeIndex, ExprEmitter, offsetExpr } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

/** Threads per workgroup (and ids per block). */
const THREADS = 256;
/** Accumulators a thread holds at most (rows per workgroup × columns per thread). */
const MAX_ACCUMULATORS = 64;

/** A contraction with a one-hot of gathered ids: what {@link emitScatterKernel} computes. */
export interface OneHotContraction {
  /** The table axis (the rows written). */
  readonly axis: string;
  /** The gather of a ramp 0…V−1 by the ids: the id of each token, as f32. */
  readonly ids: GatherNode;
  /** The other operand: the cotangent rows, over the ids' axes and the kept columns. */
  readonly rows: Node;
}

/**
 * Rows from which a table's gradient is scattered rather than computed as a dense one-hot
 * product (split over its tokens like any weight gradient): from about a thousand rows the
 * product's wasted work outweighs the scatter's serial walk over the tokens.
 */
export const SCATTER_MIN_ROWS = 1024;

/**
 * The one-hot form of `core`, when it is the gather backward's contraction into a table of at
 * least {@link SCATTER_MIN_ROWS} rows.
 */
export function oneHotContraction(core: ContractNode): OneHotContraction | undefined {
  for (const [hot, rows] of [[core.a, core.b], [core.b, core.a]]) {
    const form = oneHotOf(hot);
    if (!form || rows.axes.includes(form.axis) || !core.axes.includes(form.axis)) continue;
    if (core.shape[core.axes.indexOf(form.axis)] < SCATTER_MIN_ROWS) continue;
    // Summed: exactly the ids' axes.
    const idAxes = form.ids.axes;
    if (core.summed.length !== idAxes.length || !idAxes.every((a) => core.summed.includes(a))) {
      continue;
    }
    if (!idAxes.every((a) => rows.axes.includes(a))) continue;
    return { axis: form.axis, ids: form.ids, rows };
  }
  return undefined;
}

/** eq(gather(arange(v), ids), arange(v)), either way round, seen through a permute. */
function oneHotOf(n: Node): { axis: string; ids: GatherNode } | undefined {
  while (n.kind === "permute") n = n.x;
  if (n.kind !== "binary" || (n as BinaryNode).op !== "eq") return undefined;
  const b = n as BinaryNode;
  for (const [g, ramp] of [[b.a, b.b], [b.b, b.a]]) {
    const r = rampOf(ramp);
    if (g.kind !== "gather" || r?.kind !== "arange") continue;
    if (g.table.kind !== "arange" || g.axis !== r.axis || g.table.axis !== r.axis) continue;
    return { axis: r.axis, ids: g };
  }
  return undefined;
}

/** The ramp under a broadcast to the ids' axes (a product with the constant 1). */
function rampOf(n: Node): Node | undefined {
  while (n.kind === "permute") n = n.x;
  if (n.kind === "binary" && (n as BinaryNode).op === "mul") {
    const { a, b } = n as BinaryNode;
    if (b.kind === "const" && b.value === 1) return rampOf(a);
    if (a.kind === "const" && a.value === 1) return rampOf(b);
  }
  return n.kind === "arange" ? n : undefined;
}

/** Emits the scatter-add kernel writing `root` (`core` or an elementwise epilogue of it). */
export function emitScatterKernel(
  root: Node,
  core: ContractNode,
  form: OneHotContraction,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  checkIndexable(root);
  checkIndexable(form.rows);
  const v = form.axis;
  const rowsOf = core.shape[core.axes.indexOf(v)];
  const colAxes = core.axes.filter((a) => a !== v);
  const colShape = colAxes.map((a) => core.shape[core.axes.indexOf(a)]);
  const cols = colShape.reduce((p, s) => p * s, 1);
  const idAxes = form.ids.axes;
  const idShape = form.ids.shape;
  const tokens = numel(form.ids);
  const perThread = Math.ceil(cols / THREADS);
  const rowsPerGroup = Math.max(1, Math.min(16, Math.floor(MAX_ACCUMULATORS / perThread)));
  const groups = Math.ceil(rowsOf / rowsPerGroup);

  const registry = new BindingRegistry(materialized, [root], aliases);
  // Staging: the id of token ks, as the row of this workgroup it names (or -1).
  const staged = decodeIndex("ks", idAxes, idShape, "s_");
  const idEmitter = new ExprEmitter(registry.lookup, "i");
  const idValue = idEmitter.emit(form.ids, staged.env);
  // The walk: token k's cotangent in column m.
  const token = decodeIndex("k", idAxes, idShape, "k_");
  const col = decodeIndex("m", colAxes, colShape, "m_");
  const rowEmitter = new ExprEmitter(registry.lookup, "c");
  const rowValue = rowEmitter.emit(form.rows, { ...token.env, ...col.env });
  // The epilogue at (row v0 + i, column m).
  const outCol = decodeIndex("m", colAxes, colShape, "o_");
  const outEnv = { ...outCol.env, [v]: "row" };
  const epi = new ExprEmitter(registry.lookup, "e", { node: core, value: "accv" });
  const result = epi.emit(root, outEnv);
  const offset = offsetExpr(root, outEnv);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);

  const workgroups = foldWorkgroups(groups, limits.maxComputeWorkgroupsPerDimension);
  const wgsl = `// ${name}: scatter-add (gather backward) into ${rowsOf} rows × ${cols} columns ` +
    `from ${tokens} ids, ${rowsPerGroup} rows per workgroup
${registry.declarations()}
${MATH_PRELUDE}
var<workgroup> sc_rows: array<i32, ${THREADS}>;
// Per block (by parity): 1 + the last position holding one of this workgroup's rows, 0 if none.
var<workgroup> sc_last: array<atomic<u32>, 2>;
@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let v0 = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${rowsPerGroup}u;
  var acc: array<f32, ${rowsPerGroup * perThread}>;
  var parity: u32 = 0u;
  for (var k0: u32 = 0u; k0 < ${u32Literal(tokens)}; k0 += ${THREADS}u) {
    let ks = k0 + lid;
    var mine: i32 = -1;
    if (ks < ${u32Literal(tokens)}) {
      ${[...staged.lines, ...idEmitter.lines].join("\n      ")}
      let rel = i32(${idValue}) - i32(v0);
      if (rel >= 0 && rel < ${rowsPerGroup}) { mine = rel; }
    }
    sc_rows[lid] = mine;
    if (mine >= 0) { atomicMax(&sc_last[parity], lid + 1u); }
    workgroupBarrier();
    // Most blocks hold none of a workgroup's few rows: the walk stops after the last that does.
    let n = atomicLoad(&sc_last[parity]);
    // The other counter is next block's; nobody touches it before the barrier below.
    if (lid == 0u) { atomicStore(&sc_last[1u - parity], 0u); }
    parity = 1u - parity;
    for (var t: u32 = 0u; t < n; t++) {
      let r = sc_rows[t];
      if (r >= 0) {
        let k = k0 + t;
        ${token.lines.join("\n        ")}
        for (var j: u32 = 0u; j < ${perThread}u; j++) {
          let m = lid + j * ${THREADS}u;
          if (m < ${u32Literal(cols)}) {
            ${[...col.lines, ...rowEmitter.lines].join("\n            ")}
            acc[u32(r) * ${perThread}u + j] += ${rowValue};
          }
        }
      }
    }
    workgroupBarrier();
  }
  for (var i: u32 = 0u; i < ${rowsPerGroup}u; i++) {
    let row = v0 + i;
    if (row < ${u32Literal(rowsOf)}) {
      for (var j: u32 = 0u; j < ${perThread}u; j++) {
        let m = lid + j * ${THREADS}u;
        if (m < ${u32Literal(cols)}) {
          ${outCol.lines.join("\n          ")}
          let accv = acc[i * ${perThread}u + j];
          ${epi.lines.join("\n          ")}
          out[${offset}] = ${result};
        }
      }
    }
  }
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "matmul" };
}
