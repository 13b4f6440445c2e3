/**
 * Lowers a contraction (with fused prologues and epilogue) to the tiled matmul emitter:
 * axes are classified into batch / M / N / K groups, each group addressed by one flat index
 * that the hooks decode back into named axes. Operands that are plain buffers with affine
 * group strides take the emitter's direct (vectorized) path.
 *
 * @module
 */

import type { ContractNode, Node, ReduceNode } from "../dsl/ir.ts";
import { storageDtype } from "./dtypes.ts";
import { nodeInputs, stridesOf } from "../dsl/ir.ts";
import { BindingRegistry, checkIndexable, type KernelArtifact } from "./artifact.ts";
import { decodeIndex, ExprEmitter, offsetExpr } from "./expr.ts";
import { storeEnv, storeViews } from "./store_view.ts";
import type { DeviceLimits } from "./limits.ts";
import {
  emitMatmul,
  type HalfOrF32,
  matmulCandidates,
  type MatmulKernelSpec,
  modelChoice,
  modelledSeconds,
} from "./matmul_kernel.ts";
import { emitTuned } from "./tuning.ts";
import { MATH_PRELUDE } from "./wgsl_math.ts";
import { combineWgsl, initWgsl } from "./reduce_kernel.ts";
import {
  emitGemv,
  GEMV_MAX_ROWS,
  GEMV_THREADS_PER_COLUMN,
  gemvDefaultThreadsPerColumn,
  type GemvSpec,
  gemvWorkgroups,
} from "./gemv_kernel.ts";

/** Candidates the autotuner times: those modelled within this factor of the model's best. */
const TUNE_WITHIN_MODEL = 4;

interface Groups {
  batch: string[];
  m: string[];
  n: string[];
  k: string[];
}

function sizeOf(nodes: Node[], axis: string): number {
  for (const n of nodes) {
    const i = n.axes.indexOf(axis);
    if (i >= 0) return n.shape[i];
  }
  throw new Error(`internal: axis ${axis}`);
}

/** Splits the axes of `a · b → out` into matmul groups, in output / layout order. */
function classify(a: Node, b: Node, out: Node, summed: readonly string[]): Groups {
  return {
    batch: out.axes.filter((x) => a.axes.includes(x) && b.axes.includes(x)),
    m: out.axes.filter((x) => a.axes.includes(x) && !b.axes.includes(x)),
    n: out.axes.filter((x) => b.axes.includes(x) && !a.axes.includes(x)),
    k: a.axes.filter((x) => summed.includes(x)),
  };
}

/** The single stride of a group of axes in `node`'s layout, if the group is affine there. */
function groupStride(node: Node, axes: string[]): number | undefined {
  if (axes.length === 0) return 0;
  const s = stridesOf(node);
  for (let i = 0; i + 1 < axes.length; i++) {
    const next = axes[i + 1];
    if (s[axes[i]] !== s[next] * node.shape[node.axes.indexOf(next)]) return undefined;
  }
  return s[axes[axes.length - 1]];
}

/** The materialized buffer behind an operand, seeing through permutations. */
function directSource(node: Node, materialized: ReadonlySet<Node>): Node | undefined {
  let n = node;
  while (!materialized.has(n) && n.kind === "permute") n = n.x;
  return materialized.has(n) ? n : undefined;
}

/** A decode-shaped contraction: a few activation rows times a weight stored [N, K]. */
export interface GemvPlan {
  /** The contraction's axis groups (operands ordered as {@link orderOperands} does). */
  groups: Groups;
  /** The weight's buffer and its [batch, k, n] strides (k's is 1). */
  weight: { src: Node; strides: number[] };
  N: number;
  K: number;
}

/** Orders the operands so that N lands on the output's innermost axis when possible. */
function orderOperands(root: Node, core: ContractNode): [Node, Node] {
  const [a, b] = [core.a, core.b];
  const innermost = root.axes[root.axes.length - 1];
  return a.axes.includes(innermost) && !b.axes.includes(innermost) ? [b, a] : [a, b];
}

/**
 * The matrix-vector plan of `core` (written through `root`) when it takes the GEMV kernel: one
 * batch, at most GEMV_MAX_ROWS rows, N ≥ 64 and a weight buffer with K contiguous.
 */
export function gemvPlan(
  root: Node,
  core: ContractNode,
  materialized: ReadonlySet<Node>,
): GemvPlan | undefined {
  const [a, b] = orderOperands(storeViews(root).base, core);
  const g = classify(a, b, core, core.summed);
  const size = (axes: string[]) => axes.reduce((p, x) => p * sizeOf([a, b], x), 1);
  const src = directSource(b, materialized);
  if (!src || src === root) return undefined;
  const strides = [g.batch, g.k, g.n].map((grp) => groupStride(src, grp));
  if (strides.some((x) => x === undefined) || strides[1] !== 1) return undefined;
  if (size(g.batch) !== 1 || size(g.m) > GEMV_MAX_ROWS || size(g.n) < 64) return undefined;
  return { groups: g, weight: { src, strides: strides as number[] }, N: size(g.n), K: size(g.k) };
}

/** Longest reduction a matrix-vector kernel computes itself (per workgroup, redundantly). */
const ABSORBED_REDUCE_MAX = 8192;
/** Above this many workgroups, recomputing a reduction in each costs more than a kernel. */
const ABSORBED_REDUCE_MAX_GROUPS = 1024;

/**
 * Whether the GEMV kernel of `core` can compute `reduce` itself instead of reading it from a
 * buffer (e.g. RMSNorm's mean square before in_proj in decode, saving a dispatch): the
 * reduction runs over exactly the contracted axes, yields one value per activation row, is
 * short, and the kernel has few workgroups. (The fusion pass also requires that only
 * elementwise work lies below it.)
 */
export function gemvAbsorbsReduce(
  root: Node,
  core: ContractNode,
  reduce: Node,
  materialized: ReadonlySet<Node>,
): boolean {
  if (reduce.kind !== "reduce") return false;
  const plan = gemvPlan(root, core, materialized);
  if (!plan) return false;
  const { groups: g, K, N } = plan;
  if (reduce.over.length !== g.k.length || !reduce.over.every((x) => g.k.includes(x))) return false;
  if (!reduce.axes.every((x) => g.m.includes(x))) return false;
  return K <= ABSORBED_REDUCE_MAX && gemvWorkgroups(N, K) <= ABSORBED_REDUCE_MAX_GROUPS;
}

/** Emits the kernel writing `root` (= `core`, or an elementwise epilogue of it). */
export function emitMatmulKernel(
  root: Node,
  core: ContractNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node> = new Map(),
  strategy: MatmulStrategy = {},
): KernelArtifact {
  return emitWith(root, core, materialized, limits, name, true, aliases, strategy) ??
    emitWith(root, core, materialized, limits, name, false, aliases, strategy)!;
}

/** Knobs of the contraction kernels (benchmarks force them; otherwise chosen by shape). */
export interface MatmulStrategy {
  /**
   * Matrix-vector kernels: stage the activation rows in workgroup memory (default: when they
   * fit), or evaluate the prologue per weight element (false).
   */
  gemvStage?: boolean;
  /**
   * Matrix-vector kernels: threads per output column, a power of two up to 256 (default: the
   * autotuner's choice among 32, 64 and 128, else a rule of the column count and row length).
   */
  gemvThreadsPerColumn?: number;
}

function emitWith(
  root: Node,
  core: ContractNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  allowDirect: boolean,
  aliases: ReadonlyMap<Node, Node>,
  strategy: MatmulStrategy,
): KernelArtifact | undefined {
  checkIndexable(root);
  // Put N on the output's innermost axis when possible: stores are then contiguous. Layout
  // views at the root (store_view.ts) are applied at the store: the epilogue is their base.
  const { base } = storeViews(root);
  const [a, b] = orderOperands(base, core);
  const g = classify(a, b, core, core.summed);
  const all = [a, b];
  const size = (axes: string[]) => axes.reduce((p, x) => p * sizeOf(all, x), 1);
  const registry = new BindingRegistry(materialized, [root], aliases);

  const decodeGroups = (parts: [string, string[]][], prefix: string) => {
    const lines: string[] = [];
    let env: Record<string, string> = {};
    for (const [flat, axes] of parts) {
      const d = decodeIndex(flat, axes, axes.map((x) => sizeOf(all, x)), `${prefix}${flat}_`);
      lines.push(...d.lines);
      env = { ...env, ...d.env };
    }
    return { lines, env };
  };
  // Reductions a GEMV kernel computes itself: their values sit in workgroup memory, per row.
  const absorbed: Node[] = [];
  const interceptAbsorbed = (node: Node) => {
    const j = absorbed.indexOf(node);
    return j >= 0 ? `gemv_red${j}[m]` : undefined;
  };
  const hook = (operand: Node, parts: [string, string[]][], prefix: string): string => {
    const { lines, env } = decodeGroups(parts, prefix);
    const em = new ExprEmitter(registry.lookup, prefix).interceptWith(interceptAbsorbed);
    const v = em.emit(operand, env);
    return [...lines, ...em.lines, `return ${v};`].join("\n  ");
  };
  // A plain buffer whose batch/row/depth groups each have one stride is read directly.
  const direct = (operand: Node, groups: string[][]) => {
    if (!allowDirect) return undefined;
    const src = directSource(operand, materialized);
    if (!src || src === root) return undefined;
    const strides = groups.map((grp) => groupStride(src, grp));
    if (strides.some((s) => s === undefined)) return undefined;
    return { src, strides: strides as number[] };
  };
  // Decode-shaped products (a few activation rows times a weight stored [N, K] with K
  // contiguous) take the matrix-vector kernel.
  const plan = allowDirect ? gemvPlan(root, core, materialized) : undefined;
  if (plan) {
    const weight = plan.weight;
    absorbed.push(...unmaterializedReduces(root, materialized));
    const reductions = absorbed.map((r, j) => {
      const red = r as ReduceNode;
      const { lines, env } = decodeGroups([["m", g.m], ["k", g.k]], `rd${j}`);
      const em = new ExprEmitter(registry.lookup, `rd${j}`);
      const v = em.emit(red.x, env);
      return {
        init: initWgsl(red.op),
        combine: (x: string, y: string) => combineWgsl(red.op, x, y),
        body: [...lines, ...em.lines, `return ${v};`].join("\n  "),
      };
    });
    // The weight gets its own vec4 binding unless a prologue also reads it (a tied embedding
    // gathered in the prologue): then both share the scalar binding.
    const shared = gemvSharesWeight(a, weight.src, materialized);
    const weightRef = shared
      ? { array: registry.read(weight.src), rowStride: weight.strides[2] }
      : { binding: registry.reserveExternal(weight.src), rowStride: weight.strides[2] };
    // Factors of the activation without the summed axes (RMSNorm's 1/rms) scale the row's sum
    // instead of every element: the staged activations no longer wait for the reduction.
    const factors = rowFactors(a, new Set(g.k), materialized);
    const loadA = hook(factors.rest, [["bi", g.batch], ["m", g.m], ["k", g.k]], "la");
    const st = decodeGroups([["bi", g.batch], ["m", g.m], ["n", g.n]], "sc");
    const scaleEm = new ExprEmitter(registry.lookup, "rs").interceptWith(interceptAbsorbed);
    const scales = factors.row.map((f) => scaleEm.emit(f, st.env));
    const acc = scales.length === 0 ? "acc" : `(acc * ${scales.join(" * ")})`;
    const epi = new ExprEmitter(registry.lookup, "e", { node: core, value: acc })
      .interceptWith(interceptAbsorbed);
    const value = epi.emit(base, st.env);
    const at = offsetExpr(root, storeEnv(root, st.env));
    const storeC = [...st.lines, ...scaleEm.lines, ...epi.lines, `out[${at}] = ${value};`]
      .join("\n  ");
    if (registry.conflict) return undefined;
    registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
    const gemvSpec: GemvSpec = {
      M: size(g.m),
      N: size(g.n),
      K: size(g.k),
      declarations: `${registry.declarations()}\n${MATH_PRELUDE}`,
      loadA,
      storeC,
      weight: weightRef,
      weightDtype: storageDtype(weight.src) as "f32" | "f16" | "bf16",
      reductions,
    };
    const device = {
      maxWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxWorkgroupStorage: limits.maxComputeWorkgroupStorageSize,
      subgroupMinSize: limits.subgroups ? limits.subgroupMinSize : 0,
    };
    const artifactWith = (threadsPerColumn: number): KernelArtifact => {
      const kernel = emitGemv(gemvSpec, device, {
        stage: strategy.gemvStage,
        threadsPerColumn,
      });
      return {
        name,
        wgsl: `// ${name}: matrix-vector M=${gemvSpec.M} N=${gemvSpec.N} K=${gemvSpec.K} ` +
          `(${threadsPerColumn} threads per column)\n${kernel.wgsl}`,
        workgroups: kernel.workgroups,
        reads: registry.reads,
        writes: registry.writes,
        kind: "matmul",
      };
    };
    // Threads per column: forced, or the autotuner's measured choice for this shape, else the
    // heuristic's (gemvThreadsPerColumn). The shape, weight type and absorbed reductions make
    // the key.
    if (strategy.gemvThreadsPerColumn !== undefined) {
      return artifactWith(strategy.gemvThreadsPerColumn);
    }
    const byDefault = gemvDefaultThreadsPerColumn(gemvSpec);
    const key = `gemv m${gemvSpec.M} n${gemvSpec.N} k${gemvSpec.K} w:${gemvSpec.weightDtype} ` +
      `r${reductions.length}${
        strategy.gemvStage === undefined ? "" : ` stage:${strategy.gemvStage}`
      }`;
    const emitters = new Map(
      [...new Set([byDefault, ...GEMV_THREADS_PER_COLUMN])].map((t) => [
        `t${t}`,
        () => [artifactWith(t)],
      ]),
    );
    return emitTuned(limits, key, emitters, `t${byDefault}`)[0];
  }
  if (unmaterializedReduces(root, materialized).length > 0) {
    throw new Error(`internal: ${name} has a reduction in its prologue but is no matrix-vector`);
  }
  const da = direct(a, [g.batch, g.m, g.k]);
  const dbCandidate = direct(b, [g.batch, g.k, g.n]);
  const db = dbCandidate && dbCandidate.src !== da?.src ? dbCandidate : undefined;
  const aDirect = da && {
    binding: registry.reserveExternal(da.src),
    offset: 0,
    batchStride: da.strides[0],
    mStride: da.strides[1],
    kStride: da.strides[2],
    dtype: storageDtype(da.src) as HalfOrF32,
  };
  const bDirect = db && {
    binding: registry.reserveExternal(db.src),
    offset: 0,
    batchStride: db.strides[0],
    kStride: db.strides[1],
    nStride: db.strides[2],
    dtype: storageDtype(db.src) as HalfOrF32,
  };
  const loadA = aDirect ? undefined : hook(a, [["bi", g.batch], ["m", g.m], ["k", g.k]], "la");
  const loadB = bDirect ? undefined : hook(b, [["bi", g.batch], ["k", g.k], ["n", g.n]], "lb");
  const st = decodeGroups([["bi", g.batch], ["m", g.m], ["n", g.n]], "sc");
  const epi = new ExprEmitter(registry.lookup, "e", { node: core, value: "acc" });
  const value = epi.emit(base, st.env);
  const at = offsetExpr(root, storeEnv(root, st.env));
  const storeC = [...st.lines, ...epi.lines, `out[${at}] = ${value};`].join("\n  ");
  // The template declares direct operands with its own array type: no other reads of them.
  if (registry.conflict) return undefined;
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);

  const spec: MatmulKernelSpec = {
    name: "main",
    batch: size(g.batch),
    M: size(g.m),
    N: size(g.n),
    K: size(g.k),
    declarations: `${registry.declarations()}\n${MATH_PRELUDE}`,
    loadA,
    loadB,
    storeC,
    aDirect,
    bDirect,
  };
  // The tile config: the autotuner's measured choice for this shape, else the cost model's.
  const candidates = matmulCandidates(spec, limits);
  const key = `matmul b${spec.batch} m${spec.M} n${spec.N} k${spec.K} ` +
    `a:${aDirect ? "direct" : "hook"} b:${bDirect ? "direct" : "hook"}`;
  const artifactWith = (tile: string): KernelArtifact => {
    const kernel = emitMatmul({ ...spec, tile: candidates.get(tile) }, limits);
    return {
      name,
      wgsl: `// ${name}: matmul batch=${spec.batch} M=${spec.M} N=${spec.N} K=${spec.K} ` +
        `(loads: ${kernel.loads.a}/${kernel.loads.b}, tile ${tile})\n${kernel.wgsl}`,
      workgroups: kernel.workgroups,
      reads: registry.reads,
      writes: registry.writes,
      kind: "matmul",
    };
  };
  // The autotuner times the candidates the model does not rule out: on the 38 shapes of the
  // 130M training steps (H100, 2026-12-06) the measured best was modelled within 3× of the
  // model's best, and a quarter of the candidates (the skinny tiles on large shapes) beyond 4×.
  const modelled = modelledSeconds(spec, limits);
  const byModel = modelChoice(spec, limits, modelled);
  const fastest = modelled.get(byModel)!;
  const plausible = [...modelled].filter(([, t]) => t <= TUNE_WITHIN_MODEL * fastest);
  const emitters = new Map(plausible.map(([t]) => [t, () => [artifactWith(t)]]));
  return emitTuned(limits, key, emitters, byModel)[0];
}

/**
 * Splits a product `a` (computed inline, not a buffer) into the factors that do not depend on
 * the summed axes (`row`: Σ_k a_k·s·w_k = s·Σ_k a_k·w_k) and the product of the others
 * (`rest`, a new node only when some factor moved).
 */
function rowFactors(
  a: Node,
  summed: ReadonlySet<string>,
  materialized: ReadonlySet<Node>,
): { rest: Node; row: Node[] } {
  const row: Node[] = [];
  const split = (n: Node): Node | undefined => {
    if (!n.axes.some((x) => summed.has(x))) {
      row.push(n);
      return undefined;
    }
    if (n.kind !== "binary" || n.op !== "mul" || materialized.has(n)) return n;
    const l = split(n.a), r = split(n.b);
    if (l === n.a && r === n.b) return n;
    if (l === undefined || r === undefined) return l ?? r;
    return { ...n, a: l, b: r, id: -n.id - 1 } as Node;
  };
  const rest = split(a);
  // A product with no summed axis at all is no contraction operand: leave it whole.
  if (rest === undefined) return { rest: a, row: [] };
  return { rest, row };
}

/** Reductions computed inside the kernel of `root` (the ones a GEMV kernel absorbed). */
function unmaterializedReduces(root: Node, materialized: ReadonlySet<Node>): Node[] {
  const found: Node[] = [];
  const seen = new Set<Node>();
  const stack = [...nodeInputs(root)];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n)) continue;
    seen.add(n);
    if (n.kind === "reduce") found.push(n);
    else stack.push(...nodeInputs(n));
  }
  return found;
}

/** Whether the fused tree of `a` reads `weight` (so both must use one binding). */
function gemvSharesWeight(a: Node, weight: Node, materialized: ReadonlySet<Node>): boolean {
  const seen = new Set<Node>();
  const stack = [a];
  while (stack.length) {
    const n = stack.pop()!;
    if (n === weight) return true;
    if (seen.has(n) || materialized.has(n)) continue;
    seen.add(n);
    stack.push(...nodeInputs(n));
  }
  return false;
}
