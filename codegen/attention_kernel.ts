/**
 * The fused attention kernels (FlashAttention-2's online softmax, flash-decoding's key splits).
 *
 * Main kernel: one workgroup per (batch position, tile of query rows, key split); `lanes`
 * threads per query row (row = t·group + r, so a tile's rows are consecutive queries of every
 * head of a group, which share the keys and values), and `ways` such groups of rows·lanes
 * threads, way w walking keys w, w + ways, … of each staged tile (decode: a handful of rows get
 * a full workgroup, each thread a short chain of keys). Each lane holds every lanes-th unit (a vec4
 * of features when the sizes allow, else one feature) of the scaled query and of the output
 * accumulator in registers (unrolled); q·k is summed over the lanes by subgroup shuffles (one
 * lane per row without subgroups). The workgroup walks its keys in tiles:
 * all threads stage a tile of K and V in workgroup memory (coalesced, operand prologues such as
 * rotary positions fused into the loads), then each row runs the online softmax over the tile:
 *
 *   s = q·k;  if s > m { acc *= exp(m − s); l *= exp(m − s); m = s }
 *   p = exp(s − m);  l += p;  acc += p·v
 *
 * The score matrix never touches memory. Tiles outside every row's causal/window band are never
 * visited (the loop runs over the union of the tile's rows' key ranges). With one split the
 * thread writes acc / l; with several, each split writes its (m, l, acc) to scratch and the
 * combine kernel merges them: out = Σ e^{m_i − M}·acc_i / Σ e^{m_i − M}·l_i. The ways of a
 * workgroup merge the same way, through the workgroup memory of the K and V tile, before the
 * write: decode is one kernel unless key splits are forced.
 *
 * @module
 */

import type { AttentionNode, Node } from "../dsl/ir.ts";
import {
  BindingRegistry,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
  type ScratchBuffer,
} from "./artifact.ts";
import { type AttentionPlan, type AttentionShapes, attentionShapes } from "./attention_shapes.ts";
import { laneSum } from "./delta_shapes.ts";
import { decodeIndex, type Env, ExprEmitter, offsetExpr } from "./expr.ts";
import { header, indent, laneTile, type LaneTileNames } from "./kernel_header.ts";
import type { DeviceLimits } from "./limits.ts";
import { f32Literal, u32Literal } from "./wgsl_math.ts";

/** A tile of query rows: `row0 ≤ row < row1`, `rowc` the row clamped into range. */
export const ROW_TILE: LaneTileNames = { first: "row0", end: "row1", item: "row", clamped: "rowc" };
/** A tile of keys: `s0 ≤ key < s1`, `keyc` the key clamped into range. */
export const KEY_TILE: LaneTileNames = { first: "s0", end: "s1", item: "key", clamped: "keyc" };

/** The running maximum before any key: finite, so exp(m − s) is 0 rather than NaN. */
export const NEG = "-1.0e30";

/** The scratch buffers of a split run: per (batch, row, split) m and l, and acc per feature. */
interface Partials {
  readonly m: ScratchBuffer;
  readonly l: ScratchBuffer;
  readonly acc: ScratchBuffer;
}

/**
 * The running max and sum before the first key: (sink, 1) with sinks (where `when` holds, if
 * given), else (NEG, 0).
 */
export function sinkStart(node: AttentionNode, e: ExprEmitter, env: Env, when?: string): string[] {
  if (!node.sinks) return [`var m: f32 = ${NEG};`, `var l: f32 = 0.0;`];
  const sink = e.emit(node.sinks, env);
  if (when === undefined) return [`var m: f32 = ${sink};`, `var l: f32 = 1.0;`];
  return [
    `var m: f32 = select(${NEG}, ${sink}, ${when});`,
    `var l: f32 = select(0.0, 1.0, ${when});`,
  ];
}

/** The WGSL environment of one query row (`row`, clamped) over q's and the output's axes. */
export function rowEnv(node: AttentionNode, s: AttentionShapes, batchEnv: Env, row: string): Env {
  const t = s.group === 1 ? row : `(${row} / ${u32Literal(s.group)})`;
  const env: Record<string, string> = { ...batchEnv, [node.queryAxis]: t };
  if (node.groupAxis !== undefined) env[node.groupAxis] = `(${row} % ${u32Literal(s.group)})`;
  return env;
}

/** Emits the kernel(s) of `node` for `plan`: the main kernel, then the combine when split. */
export function emitAttention(
  node: AttentionNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  plan: AttentionPlan,
): KernelArtifact[] {
  const s = attentionShapes(node);
  if (plan.splits === 1) return [mainKernel(node, s, plan, materialized, limits, name, aliases)];
  const slots = s.batches * s.rows * plan.splits;
  const parts: Partials = {
    m: scratch(`${name}_m`, slots),
    l: scratch(`${name}_l`, slots),
    acc: scratch(`${name}_acc`, slots * s.dv),
  };
  return [
    mainKernel(node, s, plan, materialized, limits, `${name}_split`, aliases, parts),
    combineKernel(node, s, plan, parts, limits, `${name}_combine`),
  ];
}

function mainKernel(
  node: AttentionNode,
  s: AttentionShapes,
  plan: AttentionPlan,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  parts?: Partials,
): KernelArtifact {
  const { rowsPerWorkgroup: bq, lanes, threads, keysPerTile: bk, queryTiles, splits, ways } = plan;
  const writes = parts ? [parts.m, parts.l, parts.acc] : [node];
  const reg = new BindingRegistry(materialized, writes, aliases);
  const top = new ExprEmitter(reg.lookup, "pe");
  const batch = decodeIndex("bpos", s.batch, s.batchShape, "bi_");
  const env = rowEnv(node, s, batch.env, "rowc");
  const u = u32Literal;
  const dk = s.dk, dv = s.dv;
  // Features are held in units of `w` (4 when both feature sizes are multiples of 4: vec4
  // registers and vec4 loads of the staged tiles, a quarter of the load instructions). Lane l
  // of a row holds units l, l + lanes, …: neighbouring lanes read neighbouring words of a
  // staged key (no bank conflicts), and each row's lanes sit in one subgroup.
  const w = plan.vec4 ? 4 : 1;
  const ty = w === 4 ? "vec4<f32>" : "f32";
  const zero = w === 4 ? "vec4<f32>(0.0)" : "0.0";
  const nk = dk / w, nv = dv / w; // units (exact when w = 4)
  const unitOf = (
    i: number,
  ) => (lanes === 1 ? u(i) : i === 0 ? "lane" : `(lane + ${u(i * lanes)})`);
  const inRange = (
    i: number,
    units: number,
  ) => ((i + 1) * lanes <= units ? "" : `${unitOf(i)} < ${u(units)}`);
  const clamped = (i: number, units: number) =>
    inRange(i, units) ? `min(${unitOf(i)}, ${u(units - 1)})` : unitOf(i);
  /** Feature c of unit expression `unit`. */
  const featureAt = (unit: string, c: number) => (w === 1 ? unit : `(${unit} * 4u + ${u(c)})`);
  const qn = Math.ceil(nk / lanes), an = Math.ceil(nv / lanes);

  // The scaled query of this thread's row, one register per unit it holds.
  const qLines: string[] = [];
  for (let i = 0; i < qn; i++) {
    const parts = Array.from(
      { length: w },
      (_, c) => top.emit(node.q, { ...env, [node.featureAxis]: featureAt(clamped(i, nk), c) }),
    );
    const value = w === 4 ? `vec4<f32>(${parts.join(", ")})` : parts[0];
    const scaled = `${f32Literal(node.scale)} * ${value}`;
    const guard = inRange(i, nk);
    qLines.push(`let q${i}: ${ty} = ${guard ? `select(${zero}, ${scaled}, ${guard})` : scaled};`);
  }

  // Staging: unit i of the K tile is key k0 + i / units, unit i % units (V likewise). One
  // workgroup array holds the K tile, then the V tile (at vOff), and after the key loop the
  // ways' partial accumulators. With `prefetch` each thread holds its slots of the next tile in
  // registers, loaded while the current tile is walked (the loads' latency hides behind the key
  // loop; the default with ways, where few workgroups must keep many loads in flight).
  const vOff = bk * nk;
  let loadCalls = 0;
  const stage = (which: "k" | "v", feature: string, units: number, base: number) => {
    const slots = bk * units;
    const per = Math.ceil(slots / threads);
    const decl: string[] = [], store: string[] = [];
    const guardOf = (p: number, idx: string) =>
      (p + 1) * threads > slots ? `${idx} < ${u(slots)}` : "";
    for (let p = 0; p < per; p++) {
      const idx = p === 0 ? "lid" : `(lid + ${u(p * threads)})`;
      decl.push(`var ${which}r${p}: ${ty} = ${zero};`);
      const st = `kv[${base ? `${u(base)} + ` : ""}${idx}] = ${which}r${p};`;
      const guard = guardOf(p, idx);
      store.push(guard ? `if (${guard}) { ${st} }` : st);
    }
    const load = (k0: string) =>
      Array.from({ length: per }, (_, p) => {
        const idx = p === 0 ? "lid" : `(lid + ${u(p * threads)})`;
        const e = top.fork(`${which}e${loadCalls++}_`);
        const key = `${which}key`;
        const parts = Array.from({ length: w }, (_, c) =>
          e.emit(node[which], {
            ...batch.env,
            [node.keyAxis]: key,
            [feature]: featureAt(`(${idx} % ${u(units)})`, c),
          }));
        const value = w === 4 ? `vec4<f32>(${parts.join(", ")})` : parts[0];
        const guard = guardOf(p, idx);
        return [
          `${guard ? `if (${guard}) ` : ""}{`,
          `  let ${key}: u32 = min(${k0} + ${idx} / ${u(units)}, ${u(s.keys - 1)});`,
          ...e.lines.map((l) => `  ${l}`),
          `  ${which}r${p} = ${value};`,
          `}`,
        ];
      }).flat();
    return { decl, load, store };
  };

  // The thread's key range [rlo, rhi) and the workgroup's (the union over its rows) ∩ split.
  const off1 = s.keys - s.queries + 1; // key bound past the diagonal of query 0
  const tOf = (row: string) => s.group === 1 ? row : `${row} / ${u(s.group)}`;
  const range: string[] = [];
  if (node.causal) {
    const win = node.window;
    const loOf = (t: string) =>
      win === undefined
        ? "0u"
        : `select(0u, ${t} + ${u(off1)} - ${u(win)}, ${t} + ${u(off1)} > ${u(win)})`;
    range.push(
      `let rt: u32 = ${tOf("rowc")};`,
      `let rlo: u32 = ${loOf("rt")};`,
      `let rhi: u32 = rt + ${u(off1)};`,
      `let tmin: u32 = ${tOf("row0")};`,
      `let tmax: u32 = ${tOf("(row1 - 1u)")};`,
      `let wlo: u32 = max(${loOf("tmin")}, split * ${u(plan.splitLength)});`,
      `let whi: u32 = min(tmax + ${u(off1)}, min(${u(s.keys)}, (split + 1u) * ${
        u(plan.splitLength)
      }));`,
    );
  } else {
    range.push(
      `let rlo: u32 = 0u;`,
      `let rhi: u32 = ${u(s.keys)};`,
      `let wlo: u32 = split * ${u(plan.splitLength)};`,
      `let whi: u32 = min(${u(s.keys)}, (split + 1u) * ${u(plan.splitLength)});`,
    );
  }

  const prods = Array.from({ length: qn }, (_, i) => {
    const k = `kv[kb + ${clamped(i, nk)}]`;
    return w === 4 ? `dot(q${i}, ${k})` : `q${i} * ${k}`;
  });
  // Sum the products in a few independent chains (more instruction-level parallelism).
  const chains = Math.min(4, qn);
  const chainLines: string[] = [];
  for (let c = 0; c < chains; c++) {
    const terms = prods.filter((_, j) => j % chains === c);
    chainLines.push(`let sc${c}: f32 = ${terms.join(" + ")};`);
  }
  const accs = Array.from({ length: an }, (_, e) => `a${e}`);
  const pv = w === 4 ? "vec4<f32>(p)" : "p";
  // No early exits in the loop: every lane of a row must reach the shuffles.
  const keyLoop = [
    // With ways the trip count stays uniform (the shuffles need every lane of a row).
    `for (var jw: u32 = 0u; jw < ${u(bk / ways)}; jw++) {`,
    `  let j: u32 = ${ways === 1 ? "jw" : `jw * ${u(ways)} + min(way, ${u(ways - 1)})`};`,
    `  let key: u32 = k0 + j;`,
    `  let ok: bool = key >= rlo && key < rhi && key < whi;`,
    `  let kb: u32 = j * ${u(nk)};`,
    `  let vb: u32 = ${u(vOff)} + j * ${u(nv)};`,
    ...chainLines.map((l) => `  ${l}`),
    `  var qk: f32 = ${Array.from({ length: chains }, (_, c) => `sc${c}`).join(" + ")};`,
    ...laneSum("qk", lanes).map((l) => `  ${l}`),
    `  let sc: f32 = select(${NEG}, qk, ok);`,
    `  if (sc > m) {`,
    `    let corr: f32 = exp(m - sc);`,
    `    l = l * corr;`,
    ...accs.map((a) => `    ${a} = ${a} * corr;`),
    `    m = sc;`,
    `  }`,
    `  let p: f32 = select(0.0, exp(sc - m), ok);`,
    `  l = l + p;`,
    ...accs.map((a, i) => `  ${a} = fma(${pv}, kv[vb + ${clamped(i, nv)}], ${a});`),
    `}`,
  ];

  /** The writes of accumulator i, one per feature of its unit, guarded past the end. */
  const outAt = (i: number, write: (feature: string, value: string) => string) => {
    const guard = inRange(i, nv);
    const ws = Array.from(
      { length: w },
      (_, c) => write(featureAt(unitOf(i), c), w === 4 ? `a${i}[${c}]` : `a${i}`),
    );
    return guard ? `if (${guard}) { ${ws.join(" ")} }` : ws.join(" ");
  };
  let finish: string[];
  if (!parts) {
    finish = accs.map((_, i) =>
      outAt(i, (e, v) => `out[${offsetExpr(node, { ...env, [node.valueAxis]: e })}] = ${v} / l;`)
    );
  } else {
    const slot = `((bpos * ${u(s.rows)} + row) * ${u(splits)} + split)`;
    finish = [
      `let slot: u32 = ${slot};`,
      `if (lane == 0u) {`,
      `  out[slot] = m;`,
      `  out1[slot] = l;`,
      `}`,
      ...accs.map((_, i) => outAt(i, (e, v) => `out2[slot * ${u(dv)} + ${e}] = ${v};`)),
    ];
  }

  // A sink starts the softmax as a key of logit `sink` and value zero (in split 0 and way 0).
  const sinkWhen = [parts ? "split == 0u" : "", ways > 1 ? "way == 0u" : ""].filter((c) => c);
  const sinkInit = sinkStart(node, top, env, sinkWhen.length ? sinkWhen.join(" && ") : undefined);
  const kStage = stage("k", node.featureAxis, nk, 0);
  const vStage = stage("v", node.valueAxis, nv, vOff);
  // Emitted before the header: emitting a load registers its bindings.
  const prefetch = plan.prefetch;
  const firstLoads = prefetch ? [...kStage.load("wlo"), ...vStage.load("wlo")] : [];
  const nextLoads = prefetch
    ? [...kStage.load("kn"), ...vStage.load("kn")]
    : [...kStage.load("k0"), ...vStage.load("k0")];
  const merge = ways > 1 ? mergeWays(plan, nv, ty, accs) : [];
  reg.checkLimit(node, limits.maxStorageBuffersPerShaderStage);
  const total = s.batches * queryTiles * splits;
  const ind = (ls: string[], d: string) => ls.map((l) => d + l).join("\n");
  const wgsl = `${
    header(reg, threads, [
      `var<workgroup> kv: array<${ty}, ${
        Math.max(bk * (nk + nv), ways > 1 ? ways * bq * nv : 0)
      }>;`,
      ...(ways > 1
        ? [
          `var<workgroup> wm: array<f32, ${ways * bq}>;`,
          `var<workgroup> wl: array<f32, ${ways * bq}>;`,
        ]
        : []),
    ])
  }
  if (wid >= ${u(total)}) { return; }
  let split = wid % ${u(splits)};
  let tile = (wid / ${u(splits)}) % ${u(queryTiles)};
  let bpos = wid / ${u(splits * queryTiles)};
${indent(wayTile(bq, s.rows, lanes, ways))}
${ind(batch.lines, "  ")}
${ind(range, "  ")}
${ind(top.lines, "  ")}
${ind(qLines, "  ")}
${ind(sinkInit, "  ")}
${ind(accs.map((a) => `var ${a}: ${ty} = ${zero};`), "  ")}
${ind([...kStage.decl, ...vStage.decl], "  ")}
${
    prefetch
      ? `  if (wlo < whi) {
${ind(firstLoads, "    ")}
  }
`
      : ""
  }  for (var k0: u32 = wlo; k0 < whi; k0 += ${u(bk)}) {
${
    prefetch ? "" : `${ind(nextLoads, "    ")}
`
  }${ind([...kStage.store, ...vStage.store], "    ")}
    workgroupBarrier();
${
    prefetch
      ? `    let kn: u32 = k0 + ${u(bk)};
    if (kn < whi) {
${ind(nextLoads, "      ")}
    }
`
      : ""
  }${ind(keyLoop, "    ")}
    workgroupBarrier();
  }
${ind(merge, "  ")}
  if (live) {
${ind(finish, "    ")}
  }
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
 * The thread's row and way: `lane`, `way`, `row` (of the tile starting at `row0`), `rowc` and
 * `live` (a row in range; with ways, way 0's threads alone write the result).
 */
function wayTile(bq: number, rows: number, lanes: number, ways: number): string[] {
  const lines = laneTile("tile", bq, rows, lanes, ROW_TILE);
  if (ways === 1) return lines;
  const u = u32Literal;
  return [
    `let way = lid / ${u(bq * lanes)};`,
    ...lines.map((l) =>
      l.replace(`lid / ${u(lanes)}`, `(lid % ${u(bq * lanes)}) / ${u(lanes)}`)
        .replace(`let live = lid < ${u(bq * lanes)}`, `let inway = way < ${u(ways)}`)
    ),
    `let live = inway && way == 0u;`,
  ];
}

/**
 * WGSL merging the ways' (m, l, acc) after the key loop into way 0's registers: each way stores
 * its row's partials in workgroup memory (the accumulators over the K and V tile), and way 0
 * takes M = max m_w, l = Σ e^{m_w − M}·l_w, acc = Σ e^{m_w − M}·acc_w.
 */
function mergeWays(plan: AttentionPlan, nv: number, ty: string, accs: string[]): string[] {
  const u = u32Literal;
  const { ways, rowsPerWorkgroup: bq, lanes } = plan;
  const slot = `way * ${u(bq)} + (row - row0)`;
  const unit = (i: number) => (lanes === 1 ? u(i) : i === 0 ? "lane" : `(lane + ${u(i * lanes)})`);
  const inRange = (i: number) => ((i + 1) * lanes <= nv ? "" : `${unit(i)} < ${u(nv)}`);
  const store = accs.map((a, i) => {
    const st = `kv[(${slot}) * ${u(nv)} + ${unit(i)}] = ${a};`;
    return inRange(i) ? `if (${inRange(i)}) { ${st} }` : st;
  });
  const gather = accs.map((a, i) => {
    const ld = `${a} = ${a} + e * kv[(w * ${u(bq)} + (row - row0)) * ${u(nv)} + ${unit(i)}];`;
    return inRange(i) ? `if (${inRange(i)}) { ${ld} }` : ld;
  });
  return [
    `if (inway && row < row1) {`,
    `  if (lane == 0u) {`,
    `    wm[${slot}] = m;`,
    `    wl[${slot}] = l;`,
    `  }`,
    ...store.map((l) => `  ${l}`),
    `}`,
    `workgroupBarrier();`,
    `if (live) {`,
    `  var mx: f32 = m;`,
    `  for (var w: u32 = 1u; w < ${u(ways)}; w++) { mx = max(mx, wm[w * ${
      u(bq)
    } + (row - row0)]); }`,
    `  let e0: f32 = exp(m - mx);`,
    `  l = l * e0;`,
    ...accs.map((a) => `  ${a} = ${a} * ${ty === "f32" ? "e0" : "vec4<f32>(e0)"};`),
    `  for (var w: u32 = 1u; w < ${u(ways)}; w++) {`,
    `    let ws: u32 = w * ${u(bq)} + (row - row0);`,
    `    let e: ${ty} = ${ty === "f32" ? "" : "vec4<f32>"}(exp(wm[ws] - mx));`,
    `    l = fma(exp(wm[ws] - mx), wl[ws], l);`,
    ...gather.map((l) => `    ${l}`),
    `  }`,
    `  m = mx;`,
    `}`,
  ];
}

/** One thread per output element: merges the splits' (m, l, acc) into acc / l. */
function combineKernel(
  node: AttentionNode,
  s: AttentionShapes,
  plan: AttentionPlan,
  parts: Partials,
  limits: DeviceLimits,
  name: string,
): KernelArtifact {
  const reg = new BindingRegistry(new Set(), [node]);
  const m = reg.read(parts.m), l = reg.read(parts.l), acc = reg.read(parts.acc);
  const u = u32Literal;
  const total = s.batches * s.rows * s.dv;
  const batch = decodeIndex("bpos", s.batch, s.batchShape, "bi_");
  const env = rowEnv(node, s, batch.env, "row");
  const threads = 64;
  const wgsl = `${reg.declarations()}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wg.x + wg.y * nwg.x) * ${u(threads)} + lid;
  if (i >= ${u(total)}) { return; }
  let e = i % ${u(s.dv)};
  let row = (i / ${u(s.dv)}) % ${u(s.rows)};
  let bpos = i / ${u(s.dv * s.rows)};
${batch.lines.map((x) => `  ${x}`).join("\n")}
  let base = (bpos * ${u(s.rows)} + row) * ${u(plan.splits)};
  var mx: f32 = ${NEG};
  for (var p: u32 = 0u; p < ${u(plan.splits)}; p++) { mx = max(mx, ${m}[base + p]); }
  var num: f32 = 0.0;
  var den: f32 = 0.0;
  for (var p: u32 = 0u; p < ${u(plan.splits)}; p++) {
    let w = exp(${m}[base + p] - mx);
    num = fma(w, ${acc}[(base + p) * ${u(s.dv)} + e], num);
    den = fma(w, ${l}[base + p], den);
  }
  out[${offsetExpr(node, { ...env, [node.valueAxis]: "e" })}] = num / den;
}
`;
  return {
    name,
    wgsl,
    workgroups: foldWorkgroups(Math.ceil(total / threads), limits.maxComputeWorkgroupsPerDimension),
    reads: reg.reads,
    writes: reg.writes,
    kind: "scan",
  };
}
