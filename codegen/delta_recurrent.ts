/**
 * The fused recurrent delta-rule kernel (decode and short sequences): one workgroup per
 * (batch position, block of value rows); each value row i of the state S (dv × dk) is held in
 * registers by G lanes, lane l owning the keys j = l, l + G, …. Per step, with α = exp(gate):
 *
 *   a = Σ_j S[i][j]·k[j],  b = Σ_j S[i][j]·q[j],  c = Σ_j k[j]·q[j]   (of the old state)
 *   u = β·(v[i] − α·a)
 *   S[i][j] ← α·S[i][j] + u·k[j]
 *   y[i] = scale·(α·b + u·c)        (= scale·Σ_j S[i][j]·q[j] of the new state; lane 0 writes it)
 *
 * which is S_t = S_{t−1}·α(I − β k kᵀ) + β v kᵀ row by row. The three sums are lane partial
 * sums (each over two accumulators, halving the chain of dependent multiply-adds) reduced in one
 * butterfly of subgroup shuffles: a step waits on one chain of shuffles, not on two in a row
 * (y from the updated state needed the first sum first). G = 1 (no shuffles) without
 * subgroups. The state never touches memory between steps; `init` is read once and the final
 * state written once by the thread that read it, so decode may update the state in place.
 *
 * @module
 */

import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import { BindingRegistry, foldWorkgroups, type KernelArtifact } from "./artifact.ts";
import { batchEnv, clampIndex, DeltaLoads, deltaShapes, laneSums } from "./delta_shapes.ts";
import { ExprEmitter, offsetExpr } from "./expr.ts";
import { header } from "./kernel_header.ts";
import type { DeviceLimits } from "./limits.ts";
import { f32Literal, u32Literal } from "./wgsl_math.ts";

/** Threads per workgroup of the recurrent kernel. */
const WORKGROUP = 64;
/** Keys one lane holds in registers, at most, before more lanes share a row. */
const KEYS_PER_LANE = 16;

/** The most lanes a value row may have: the subgroup size (at most 32), 1 without subgroups. */
export function maxDeltaLanes(limits: DeviceLimits): number {
  return limits.subgroups && limits.subgroupMinSize >= 2 ? Math.min(limits.subgroupMinSize, 32) : 1;
}

/**
 * Lanes per value row: a power of two ≤ {@link maxDeltaLanes}, `forced` when given and valid.
 */
export function deltaLanes(dk: number, limits: DeviceLimits, forced?: number): number {
  const maxLanes = maxDeltaLanes(limits);
  if (forced !== undefined) {
    if (forced < 1 || (forced & (forced - 1)) !== 0 || forced > maxLanes) {
      throw new Error(
        `deltaRule: lanes ${forced} must be a power of two ≤ ${maxLanes} on this device ` +
          `(${limits.subgroups ? `subgroups of ${limits.subgroupMinSize}` : "no subgroups"})`,
      );
    }
    return forced;
  }
  return lanesFor(dk, limits, KEYS_PER_LANE);
}

/** The fewest lanes (a power of two ≤ {@link maxDeltaLanes}) giving at most `keysPerLane` keys. */
export function lanesFor(dk: number, limits: DeviceLimits, keysPerLane: number): number {
  const maxLanes = maxDeltaLanes(limits);
  let g = 1;
  while (g < maxLanes && Math.ceil(dk / g) > keysPerLane) g *= 2;
  return g;
}

/** Emits the recurrent kernel writing y (`node`) and, when asked, the final `state`. */
export function emitDeltaRecurrent(
  node: DeltaNode,
  state: DeltaStateNode | undefined,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  forcedLanes?: number,
): KernelArtifact {
  const s = deltaShapes(node);
  const lanes = deltaLanes(s.dk, limits, forcedLanes);
  const perLane = Math.ceil(s.dk / lanes);
  const rows = Math.max(1, Math.min(WORKGROUP / lanes, s.dv));
  const threads = rows * lanes;
  const blocks = Math.ceil(s.dv / rows);
  const total = s.batches * blocks;
  const writes = state ? [node, state] : [node];
  const reg = new BindingRegistry(materialized, writes, aliases);
  const top = new ExprEmitter(reg.lookup, "pe");
  const { lines: batchLines, env } = batchEnv(s, "bpos");
  const loads = new DeltaLoads(node, env);
  const i = "vi"; // the row, clamped for reads
  const keyOf = (m: number) =>
    lanes === 1 ? u32Literal(m) : m === 0 ? "lane" : `(lane + ${u32Literal(lanes * m)})`;
  const inKeys = (m: number) => (m + 1) * lanes <= s.dk ? "" : `${keyOf(m)} < ${u32Literal(s.dk)}`;
  const masked = (m: number, v: string) => inKeys(m) ? `select(0.0, ${v}, ${inKeys(m)})` : v;

  const initLines: string[] = [];
  for (let m = 0; m < perLane; m++) {
    const j = clampIndex(keyOf(m), s.dk);
    initLines.push(`s[${m}] = ${masked(m, loads.init(top, i, j))};`);
  }

  // A step's inputs (α, β, v, the lane's keys and queries) are loaded one step ahead: step t
  // computes with registers filled during step t − 1, so the loads' latency overlaps the
  // previous step's sums instead of opening every step.
  const names = [
    "al",
    "be",
    "vv",
    ...Array.from({ length: perLane }, (_, m) => [`k${m}`, `q${m}`])
      .flat(),
  ];
  const fetch = (em: ExprEmitter, t: string): string[] => {
    const values = [loads.alpha(em, t), loads.beta(em, t), loads.value(em, t, i)];
    for (let m = 0; m < perLane; m++) {
      const j = clampIndex(keyOf(m), s.dk);
      values.push(masked(m, loads.key(em, "k", t, j)), loads.key(em, "q", t, j));
    }
    return values;
  };
  const first = top.fork("f0");
  const firstValues = fetch(first, "0u");
  const ahead = top.fork("st");
  const nextValues = fetch(ahead, "tn");
  const t = "t";
  const yOffset = offsetExpr(node, { ...env, [node.axis]: t, [node.valueAxis]: "row" });
  const step = [
    `let tn = min(t + 1u, ${u32Literal(s.len - 1)});`,
    ...ahead.lines,
    ...nextValues.map((v, n) => `let n_${names[n]}: f32 = ${v};`),
    ...partialSums(perLane),
    ...laneSums(["a", "b", "c"], lanes),
    `let u: f32 = c_be * (c_vv - c_al * a);`,
    ...Array.from({ length: perLane }, (_, m) => `s[${m}] = fma(c_al, s[${m}], u * c_k${m});`),
    `if (lane == 0u && row < ${u32Literal(s.dv)}) { out[${yOffset}] = ${
      f32Literal(node.scale)
    } * fma(c_al, b, u * c); }`,
    ...names.map((n) => `c_${n} = n_${n};`),
  ];
  const prefetch = [
    ...first.lines,
    ...firstValues.map((v, n) => `var c_${names[n]}: f32 = ${v};`),
  ];

  const finalLines: string[] = [];
  if (state) {
    for (let m = 0; m < perLane; m++) {
      const off = offsetExpr(state, { ...env, [node.valueAxis]: "row", [node.keyAxis]: keyOf(m) });
      const guard = [`row < ${u32Literal(s.dv)}`, inKeys(m)].filter((c) => c).join(" && ");
      finalLines.push(`if (${guard}) { out1[${off}] = s[${m}]; }`);
    }
  }
  reg.checkLimit(node, limits.maxStorageBuffersPerShaderStage);
  const indent = (ls: string[], d: string) => ls.map((l) => d + l);
  const wgsl = `${header(reg, threads)}
  if (wid >= ${u32Literal(total)}) { return; }
  let bpos = wid / ${u32Literal(blocks)};
  let row = (wid % ${u32Literal(blocks)}) * ${u32Literal(rows)} + lid / ${u32Literal(lanes)};
  let lane = lid % ${u32Literal(lanes)};
  let ${i} = ${clampIndex("row", s.dv)};
${indent(batchLines, "  ").join("\n")}
  var s: array<f32, ${perLane}>;
${indent([...top.lines, ...initLines, ...prefetch], "  ").join("\n")}
  for (var t: u32 = 0u; t < ${u32Literal(s.len)}; t++) {
${indent(step, "    ").join("\n")}
  }
${indent(finalLines, "  ").join("\n")}
}
`;
  return {
    name,
    wgsl,
    workgroups: foldWorkgroups(total, limits.maxComputeWorkgroupsPerDimension),
    reads: reg.reads,
    writes: reg.writes,
    kind: "scan",
  };
}

/**
 * A lane's partial sums a = Σ s·k, b = Σ s·q and c = Σ k·q over its `perLane` keys, each in
 * two accumulators (even and odd keys) so the dependent multiply-adds form two chains.
 */
function partialSums(perLane: number): string[] {
  const lines: string[] = [];
  const terms = {
    a: (m: number) => [`s[${m}]`, `c_k${m}`],
    b: (m: number) => [`s[${m}]`, `c_q${m}`],
    c: (m: number) => [`c_k${m}`, `c_q${m}`],
  };
  for (const [v, of] of Object.entries(terms)) {
    for (let half = 0; half < 2 && half < perLane; half++) {
      const [x, y] = of(half);
      lines.push(`var ${v}${half}: f32 = ${x} * ${y};`);
      for (let m = half + 2; m < perLane; m += 2) {
        const [xm, ym] = of(m);
        lines.push(`${v}${half} = fma(${xm}, ${ym}, ${v}${half});`);
      }
    }
    lines.push(perLane > 1 ? `var ${v}: f32 = ${v}0 + ${v}1;` : `var ${v}: f32 = ${v}0;`);
  }
  return lines;
}
