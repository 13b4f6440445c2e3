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
 * thread writes acc / l; with several, each split publishes its (m, l, acc) and they are merged:
 * out = Σ e^{m_i − M}·acc_i / Σ e^{m_i − M}·l_i. The ways of a workgroup merge the same way,
 * through the workgroup memory of the K and V tile, before the write.
 *
 * **Splits merged in the kernel** (the default): each split stores its words, then takes a
 * ticket from its row tile's counter; the workgroup that takes the last ticket folds the others'
 * words (in groups of threads that merge on chip like the ways) and writes the output, so decode
 * is one kernel. As in the single-pass scan (`assoc_scan_lookback.ts`), WGSL's relaxed atomics
 * order nothing across locations, so every word is self-describing: an f32 is stored as two
 * atomic 16-bit halves tagged with the run's parity (the counter's top bit, flipped by the last
 * ticket, so nothing is cleared between runs), and a word is accepted only with this run's tag.
 * A split whose words stay invisible for `splitSpins` polls (no time bound exists in WGSL) makes
 * the merging workgroup walk every key of its rows itself: correct under any scheduling.
 * `combine: "kernel"` merges in a second kernel instead (one thread per output).
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
import { taggedWordFunctions } from "./assoc_scan_lookback.ts";
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

/** The unit index (WGSL) of register i of the thread whose lane is `lane`: lane + i·lanes. */
function laneUnit(lanes: number, lane: string, i: number): string {
  return lanes === 1 ? u32Literal(i) : i === 0 ? lane : `(${lane} + ${u32Literal(i * lanes)})`;
}

/** The guard of register i when some lanes' unit lies past `units`, else "". */
function laneUnitGuard(lanes: number, lane: string, i: number, units: number): string {
  return (i + 1) * lanes <= units ? "" : `${laneUnit(lanes, lane, i)} < ${u32Literal(units)}`;
}

/** The words of an inline split merge: a counter per row tile, then each slot's tagged words. */
function splitWords(s: AttentionShapes, plan: AttentionPlan) {
  const counters = s.batches * plan.queryTiles;
  // Two words (16-bit halves) for each of m, l and the dv accumulators.
  const perSlot = 2 * (s.dv + 2);
  return { counters, perSlot, total: counters + s.batches * s.rows * plan.splits * perSlot };
}

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
  if (plan.combine === "inline") {
    const state = scratch(`${name}_splits`, splitWords(s, plan).total, "atomic<u32>");
    return [
      mainKernel(node, s, plan, materialized, limits, name, aliases, undefined, state),
    ];
  }
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
  state?: ScratchBuffer,
): KernelArtifact {
  const { rowsPerWorkgroup: bq, lanes, threads, keysPerTile: bk, queryTiles, splits, ways } = plan;
  const writes = parts ? [parts.m, parts.l, parts.acc] : state ? [node, state] : [node];
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
  const unitOf = (i: number) => laneUnit(lanes, "lane", i);
  const inRange = (i: number, units: number) => laneUnitGuard(lanes, "lane", i, units);
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
  // The split's keys; merged inline, phase 1 (the fallback) walks every split's keys.
  const splitLo = state ? "slo" : `split * ${u(plan.splitLength)}`;
  const splitHi = state ? "shi" : `(split + 1u) * ${u(plan.splitLength)}`;
  if (state) {
    range.push(
      `let slo: u32 = select(split * ${u(plan.splitLength)}, 0u, phase == 1u);`,
      `let shi: u32 = select((split + 1u) * ${u(plan.splitLength)}, ${
        u(splits * plan.splitLength)
      }, phase == 1u);`,
    );
  }
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
      `let wlo: u32 = max(${loOf("tmin")}, ${splitLo});`,
      `let whi: u32 = min(tmax + ${u(off1)}, min(${u(s.keys)}, ${splitHi}));`,
    );
  } else {
    range.push(
      `let rlo: u32 = 0u;`,
      `let rhi: u32 = ${u(s.keys)};`,
      `let wlo: u32 = ${splitLo};`,
      `let whi: u32 = min(${u(s.keys)}, ${splitHi});`,
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
  const sinkWhen = [
    parts ? "split == 0u" : state ? "(split == 0u || phase == 1u)" : "",
    ways > 1 ? "way == 0u" : "",
  ].filter((c) => c);
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
  const groups = Math.max(ways, plan.mergeGroups);
  const ind = (ls: string[], d: string) => ls.map((l) => d + l).join("\n");
  // The walk over the thread's keys (wlo..whi), its ways merged: (m, l, acc) in registers.
  const walk = (d: string) =>
    `${ind(sinkInit, d)}
${ind(accs.map((a) => `var ${a}: ${ty} = ${zero};`), d)}
${ind([...kStage.decl, ...vStage.decl], d)}
${
      prefetch
        ? `${d}if (wlo < whi) {
${ind(firstLoads, `${d}  `)}
${d}}
`
        : ""
    }${d}for (var k0: u32 = wlo; k0 < whi; k0 += ${u(bk)}) {
${
      prefetch ? "" : `${ind(nextLoads, `${d}  `)}
`
    }${ind([...kStage.store, ...vStage.store], `${d}  `)}
${d}  workgroupBarrier();
${
      prefetch
        ? `${d}  let kn: u32 = k0 + ${u(bk)};
${d}  if (kn < whi) {
${ind(nextLoads, `${d}    `)}
${d}  }
`
        : ""
    }${ind(keyLoop, `${d}  `)}
${d}  workgroupBarrier();
${d}}
${ind(merge, d)}`;
  const shared = [
    `var<workgroup> kv: array<${ty}, ${
      Math.max(bk * (nk + nv), groups > 1 ? groups * bq * nv : 0)
    }>;`,
    ...(groups > 1
      ? [
        `var<workgroup> wm: array<f32, ${groups * bq}>;`,
        `var<workgroup> wl: array<f32, ${groups * bq}>;`,
      ]
      : []),
    ...(state ? inlineMergeDeclarations(reg.writeName(1)) : []),
  ];
  const body = state
    ? `${ind(top.lines, "  ")}
${ind(qLines, "  ")}
  let ctr: u32 = bpos * ${u(queryTiles)} + tile;
  for (var phase: u32 = 0u; phase < 2u; phase++) {
${ind(range, "    ")}
${walk("    ")}
    if (phase == 0u) {
${ind(inlineMerge(reg.writeName(1), s, plan, nv, ty, zero, accs), "      ")}
    }
    if (live) {
${ind(finish, "      ")}
    }
    return;
  }`
    : `${ind(range, "  ")}
${ind(top.lines, "  ")}
${ind(qLines, "  ")}
${walk("  ")}
  if (live) {
${ind(finish, "    ")}
  }`;
  const wgsl = `${header(reg, threads, shared)}
  if (wid >= ${u(total)}) { return; }
  let split = wid % ${u(splits)};
  let tile = (wid / ${u(splits)}) % ${u(queryTiles)};
  let bpos = wid / ${u(splits * queryTiles)};
${indent(wayTile(bq, s.rows, lanes, ways))}
${ind(batch.lines, "  ")}
${body}
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

/** The WGSL names of a merge of thread groups (ways, or the split merge's groups). */
interface GroupNames {
  /** The thread's group. */
  readonly group: string;
  /** Its query row. */
  readonly row: string;
  /** Its lane within the row. */
  readonly lane: string;
  /** Whether the thread belongs to a group that takes part. */
  readonly inGroup: string;
  /** The threads that hold the merged result (group 0's, in range). */
  readonly keep: string;
}

/**
 * WGSL merging the ways' (m, l, acc) after the key loop into way 0's registers: each way stores
 * its row's partials in workgroup memory (the accumulators over the K and V tile), and way 0
 * takes M = max m_w, l = Σ e^{m_w − M}·l_w, acc = Σ e^{m_w − M}·acc_w.
 */
function mergeWays(plan: AttentionPlan, nv: number, ty: string, accs: string[]): string[] {
  const names = { group: "way", row: "row", lane: "lane", inGroup: "inway", keep: "live" };
  return mergeGroups(plan.ways, plan, nv, ty, accs, names);
}

/** {@link mergeWays} for `count` groups of rows·lanes threads, named by `n`. */
function mergeGroups(
  count: number,
  plan: AttentionPlan,
  nv: number,
  ty: string,
  accs: string[],
  n: GroupNames,
): string[] {
  const u = u32Literal;
  const { rowsPerWorkgroup: bq, lanes } = plan;
  const slot = `${n.group} * ${u(bq)} + (${n.row} - row0)`;
  const unit = (i: number) => laneUnit(lanes, n.lane, i);
  const inRange = (i: number) => laneUnitGuard(lanes, n.lane, i, nv);
  const store = accs.map((a, i) => {
    const st = `kv[(${slot}) * ${u(nv)} + ${unit(i)}] = ${a};`;
    return inRange(i) ? `if (${inRange(i)}) { ${st} }` : st;
  });
  const gather = accs.map((a, i) => {
    const ld = `${a} = ${a} + e * kv[(w * ${u(bq)} + (${n.row} - row0)) * ${u(nv)} + ${unit(i)}];`;
    return inRange(i) ? `if (${inRange(i)}) { ${ld} }` : ld;
  });
  return [
    `if (${n.inGroup} && ${n.row} < row1) {`,
    `  if (${n.lane} == 0u) {`,
    `    wm[${slot}] = m;`,
    `    wl[${slot}] = l;`,
    `  }`,
    ...store.map((l) => `  ${l}`),
    `}`,
    `workgroupBarrier();`,
    `if (${n.keep}) {`,
    `  var mx: f32 = m;`,
    `  for (var w: u32 = 1u; w < ${u(count)}; w++) { mx = max(mx, wm[w * ${
      u(bq)
    } + (${n.row} - row0)]); }`,
    `  let e0: f32 = exp(m - mx);`,
    `  l = l * e0;`,
    ...accs.map((a) => `  ${a} = ${a} * ${ty === "f32" ? "e0" : "vec4<f32>(e0)"};`),
    `  for (var w: u32 = 1u; w < ${u(count)}; w++) {`,
    `    let ws: u32 = w * ${u(bq)} + (${n.row} - row0);`,
    `    let e: ${ty} = ${ty === "f32" ? "" : "vec4<f32>"}(exp(wm[ws] - mx));`,
    `    l = fma(exp(wm[ws] - mx), wl[ws], l);`,
    ...gather.map((l) => `    ${l}`),
    `  }`,
    `  m = mx;`,
    `}`,
  ];
}

/**
 * Module-scope WGSL of the inline split merge: the tagged words' store and load over the
 * `state` binding (the single-pass scan's, `taggedWordFunctions`), and the workgroup values the
 * merge shares.
 */
function inlineMergeDeclarations(state: string): string[] {
  return [
    taggedWordFunctions(state),
    `var<workgroup> shTag: u32;`,
    `var<workgroup> shLast: u32;`,
    `var<workgroup> shMiss: u32;`,
    `var<workgroup> shMissA: atomic<u32>;`,
  ];
}

/**
 * WGSL of phase 0's end when splits merge inline (inside the phase loop; `live` threads hold the
 * split's (m, l, acc)): publish them, take a ticket, and in the last split's workgroup fold the
 * others' words in {@link AttentionPlan.mergeGroups} groups and merge the groups on chip. A
 * split whose words stay invisible `continue`s to phase 1, which walks every key.
 */
function inlineMerge(
  state: string,
  s: AttentionShapes,
  plan: AttentionPlan,
  nv: number,
  ty: string,
  zero: string,
  accs: string[],
): string[] {
  const u = u32Literal;
  const { rowsPerWorkgroup: bq, lanes, splits, mergeGroups: groups } = plan;
  const w = ty === "f32" ? 1 : 4;
  const { counters, perSlot } = splitWords(s, plan);
  const guard = (lane: string, i: number) => laneUnitGuard(lanes, lane, i, nv);
  const feature = (lane: string, i: number, c: number) =>
    w === 1 ? laneUnit(lanes, lane, i) : `(${laneUnit(lanes, lane, i)} * 4u + ${u(c)})`;
  const comp = (a: string, c: number) => (w === 1 ? a : `${a}[${c}]`);
  const slotBase = (row: string, p: string) =>
    `${u(counters)} + ((bpos * ${u(s.rows)} + ${row}) * ${u(splits)} + ${p}) * ${u(perSlot)}`;
  const publish = accs.flatMap((a, i) => {
    const words = Array.from(
      { length: w },
      (_, c) => `publishWord(pb + 4u + 2u * ${feature("lane", i, c)}, tag, ${comp(a, c)});`,
    );
    const g = guard("lane", i);
    return g ? [`if (${g}) {`, ...words.map((x) => `  ${x}`), `}`] : words;
  });
  const loads = accs.flatMap((a, i) => {
    const words = Array.from({ length: w }, (_, c) => [
      `let r${i}_${c} = readWord(pb + 4u + 2u * ${feature("mlane", i, c)}, tag);`,
      `good = good && r${i}_${c}.ok;`,
      `p${comp(a, c)} = r${i}_${c}.v;`,
    ]).flat();
    const g = guard("mlane", i);
    return g ? [`if (${g}) {`, ...words.map((x) => `  ${x}`), `}`] : words;
  });
  const e1 = ty === "f32" ? "e1" : "vec4<f32>(e1)";
  const e0 = ty === "f32" ? "e0" : "vec4<f32>(e0)";
  const rowThreads = bq * lanes;
  const names = {
    group: "mg",
    row: "mrow",
    lane: "mlane",
    inGroup: `mg < ${u(groups)}`,
    keep: "live",
  };
  return [
    // This run's tag: the counter's parity, flipped only by this run's last ticket.
    `if (lid == 0u) { shTag = 1u + (atomicLoad(&${state}[ctr]) >> 31u); }`,
    `let tag: u32 = workgroupUniformLoad(&shTag);`,
    `if (live) {`,
    `  let pb: u32 = ${slotBase("row", "split")};`,
    `  if (lane == 0u) {`,
    `    publishWord(pb, tag, m);`,
    `    publishWord(pb + 2u, tag, l);`,
    `  }`,
    ...publish.map((x) => `  ${x}`),
    `}`,
    `storageBarrier();`,
    `if (lid == 0u) {`,
    `  let ticket: u32 = atomicAdd(&${state}[ctr], 1u);`,
    `  var last: u32 = 0u;`,
    // The last ticket zeroes the count and flips the parity for the next run.
    `  if ((ticket & 0x7fffffffu) == ${u(splits - 1)}) {`,
    `    atomicAdd(&${state}[ctr], ${u(2 ** 31 - splits)});`,
    `    last = 1u;`,
    `  }`,
    `  shLast = last;`,
    `  atomicStore(&shMissA, 0u);`,
    `}`,
    `if (workgroupUniformLoad(&shLast) == 0u) { return; }`,
    // The last split's workgroup: group g folds splits g, g + groups, … (its own from registers).
    `let mg: u32 = lid / ${u(rowThreads)};`,
    `let mrow: u32 = row0 + (lid % ${u(rowThreads)}) / ${u(lanes)};`,
    `let mlane: u32 = ${lanes === 1 ? "0u" : `lid % ${u(lanes)}`};`,
    `if (mg != 0u) {`,
    `  m = ${NEG};`,
    `  l = 0.0;`,
    ...accs.map((a) => `  ${a} = ${zero};`),
    `}`,
    `if (mg < ${u(groups)} && mrow < row1) {`,
    `  for (var p: u32 = mg; p < ${u(splits)}; p += ${u(groups)}) {`,
    `    if (p == split) { continue; }`,
    `    let pb: u32 = ${slotBase("mrow", "p")};`,
    `    var ok: bool = false;`,
    `    var pm: f32 = ${NEG};`,
    `    var pl: f32 = 0.0;`,
    ...accs.map((a) => `    var p${a}: ${ty} = ${zero};`),
    `    for (var spin: u32 = 0u; spin < ${u(plan.splitSpins)}; spin++) {`,
    `      let wm0 = readWord(pb, tag);`,
    `      let wl0 = readWord(pb + 2u, tag);`,
    `      var good: bool = wm0.ok && wl0.ok;`,
    `      pm = wm0.v;`,
    `      pl = wl0.v;`,
    ...loads.map((x) => `      ${x}`),
    `      if (good) {`,
    `        ok = true;`,
    `        break;`,
    `      }`,
    `    }`,
    `    if (!ok) {`,
    `      atomicMax(&shMissA, 1u);`,
    `      break;`,
    `    }`,
    `    let mx: f32 = max(m, pm);`,
    `    let e0: f32 = exp(m - mx);`,
    `    let e1: f32 = exp(pm - mx);`,
    `    l = l * e0 + pl * e1;`,
    ...accs.map((a) => `    ${a} = ${a} * ${e0} + p${a} * ${e1};`),
    `    m = mx;`,
    `  }`,
    `}`,
    `workgroupBarrier();`,
    `if (lid == 0u) { shMiss = atomicLoad(&shMissA); }`,
    // A split's words not seen: walk every key instead (phase 1).
    `if (workgroupUniformLoad(&shMiss) != 0u) { continue; }`,
    ...(groups > 1 ? mergeGroups(groups, plan, nv, ty, accs, names) : []),
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
