/**
 * The attention backward kernels (FlashAttention-2's backward; the probabilities are recomputed
 * per tile, never stored). With dO the output's cotangent, P = softmax(scale·q·kᵀ) over the
 * allowed keys, lse each row's log-sum-exp and Δ = rowsum(dO ∘ O):
 *
 *   p = exp(scale·q·k − lse),  dp = dO·v,  ds = p·(dp − Δ)
 *   dQ = scale·Σ_keys ds·k,  dK = scale·Σ_rows ds·q,  dV = Σ_rows p·dO
 *
 * Row kernel (one workgroup per tile of query rows, lanes per row as in the forward): a pass over
 * the keys gives lse; Δ from dO and O; then, for dQ, a second pass accumulates ds·k in registers.
 * Without a dQ to compute it only writes (lse, Δ) per row to scratch (the stats kernel).
 * Key kernel (one workgroup per tile of keys, `lanes` threads per key holding its k, v, dK and dV
 * features): walks the query rows that may see its keys in tiles staged in workgroup memory
 * (scaled q, dO, lse, Δ) and accumulates dK and dV; the heads sharing a key/value head are rows
 * of the same walk, so their sum needs no atomics.
 *
 * @module
 */

import type { AttentionGradNode, AttentionNode, Node } from "../dsl/ir.ts";
import {
  BindingRegistry,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
  type ScratchBuffer,
} from "./artifact.ts";
import { KEY_TILE, NEG, ROW_TILE, rowEnv, sinkStart } from "./attention_kernel.ts";
import {
  attentionLanes,
  type AttentionShapes,
  attentionShapes,
  type AttentionStrategy,
} from "./attention_shapes.ts";
import { laneSum, laneSums } from "./delta_shapes.ts";
import { decodeIndex, ExprEmitter, offsetExpr } from "./expr.ts";
import { header, indent, laneTile } from "./kernel_header.ts";
import type { DeviceLimits } from "./limits.ts";
import { f32Literal, u32Literal } from "./wgsl_math.ts";

const u = u32Literal;
const MIN_THREADS = 64;
const MAX_ROWS = 64;

/** Per-lane feature helpers: lane l holds features l, l + lanes, …. */
function features(lanes: number) {
  const of = (i: number) => (lanes === 1 ? u(i) : i === 0 ? "lane" : `(lane + ${u(i * lanes)})`);
  const inRange = (
    i: number,
    size: number,
  ) => ((i + 1) * lanes <= size ? "" : `${of(i)} < ${u(size)}`);
  const clamped = (i: number, size: number) =>
    inRange(i, size) ? `min(${of(i)}, ${u(size - 1)})` : of(i);
  const guarded = (i: number, size: number, v: string) =>
    inRange(i, size) ? `select(0.0, ${v}, ${inRange(i, size)})` : v;
  return { of, inRange, clamped, guarded };
}

/** The largest power of two ≤ 32 of items whose `bytes` each fit the workgroup memory. */
function tileOf(bytes: number, limits: DeviceLimits): number {
  let n = 32;
  while (n > 1 && n * bytes > limits.maxComputeWorkgroupStorageSize) n /= 2;
  if (n * bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `attention backward: one tile row needs ${bytes} bytes of workgroup memory; the device ` +
        `has ${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  return n;
}

/**
 * The kernels of one gradient node: dQ's row kernel; or, for dK (with the dV it pairs with)
 * or a lone dV, the stats kernel and the key kernel. A dV paired with a materialized dK has no
 * kernel of its own.
 */
export function emitAttentionGrad(
  node: AttentionGradNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  strategy: AttentionStrategy = {},
): KernelArtifact[] {
  if (node.wrt === "v" && node.pair && materialized.has(node.pair)) return [];
  const f = node.of;
  const s = attentionShapes(f);
  const lanes = attentionLanes(Math.max(s.dk, s.dv), limits, strategy.lanes);
  if (node.wrt === "q") {
    return [rowKernel(node, undefined, s, lanes, materialized, limits, name, aliases, strategy)];
  }
  if (node.wrt === "sinks") {
    const stats = scratch(`${name}_stats`, s.batches * s.rows * 2);
    return [
      rowKernel(node, stats, s, lanes, materialized, limits, `${name}_stats`, aliases, strategy),
      sinkKernel(node, stats, s, materialized, limits, `${name}_sum`, aliases),
    ];
  }
  let dv: AttentionGradNode | undefined = node.wrt === "v" ? node : undefined;
  for (const n of materialized) {
    if (n.kind === "attention_grad" && n.wrt === "v" && n.pair === node) dv = n;
  }
  const dk = node.wrt === "k" ? node : undefined;
  const stats = scratch(`${name}_stats`, s.batches * s.rows * 2);
  return [
    rowKernel(node, stats, s, lanes, materialized, limits, `${name}_stats`, aliases, strategy),
    keyKernel(f, node.ct, dk, dv, stats, s, lanes, materialized, limits, `${name}_dkv`, aliases),
  ];
}

/** The key range lines of a row kernel's workgroup (as the forward's, one split). */
function rowRange(f: AttentionNode, s: AttentionShapes): string[] {
  const off1 = s.keys - s.queries + 1;
  const tOf = (row: string) => (s.group === 1 ? row : `${row} / ${u(s.group)}`);
  if (!f.causal) {
    return [
      `let rlo: u32 = 0u;`,
      `let rhi: u32 = ${u(s.keys)};`,
      `let wlo: u32 = 0u;`,
      `let whi: u32 = ${u(s.keys)};`,
    ];
  }
  const w = f.window;
  const loOf = (t: string) =>
    w === undefined ? "0u" : `select(0u, ${t} + ${u(off1)} - ${u(w)}, ${t} + ${u(off1)} > ${u(w)})`;
  return [
    `let rt: u32 = ${tOf("rowc")};`,
    `let rlo: u32 = ${loOf("rt")};`,
    `let rhi: u32 = rt + ${u(off1)};`,
    `let wlo: u32 = ${loOf(tOf("row0"))};`,
    `let whi: u32 = min(${tOf("(row1 - 1u)")} + ${u(off1)}, ${u(s.keys)});`,
  ];
}

function rowKernel(
  node: AttentionGradNode,
  stats: ScratchBuffer | undefined,
  s: AttentionShapes,
  lanes: number,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  strategy: AttentionStrategy,
): KernelArtifact {
  const f = node.of;
  const ft = features(lanes);
  const maxRows = Math.max(
    1,
    Math.min(MAX_ROWS, Math.floor(limits.maxComputeInvocationsPerWorkgroup / lanes)),
  );
  const bq = Math.min(strategy.rowsPerWorkgroup ?? maxRows, maxRows, s.rows);
  const threads = Math.min(
    limits.maxComputeInvocationsPerWorkgroup,
    Math.max(MIN_THREADS, bq * lanes),
  );
  const bk = strategy.keysPerTile ?? tileOf((s.dk + s.dv) * 4, limits);
  const tiles = Math.ceil(s.rows / bq);
  const reg = new BindingRegistry(materialized, stats ? [stats] : [node], aliases);
  const top = new ExprEmitter(reg.lookup, "pe");
  const batch = decodeIndex("bpos", s.batch, s.batchShape, "bi_");
  const env = rowEnv(f, s, batch.env, "rowc");
  const qn = Math.ceil(s.dk / lanes), gn = Math.ceil(s.dv / lanes);
  const lines: string[] = [];
  for (let i = 0; i < qn; i++) {
    const v = top.emit(f.q, { ...env, [f.featureAxis]: ft.clamped(i, s.dk) });
    lines.push(`let q${i}: f32 = ${ft.guarded(i, s.dk, `${f32Literal(f.scale)} * ${v}`)};`);
  }
  const delta: string[] = [];
  for (let i = 0; i < gn; i++) {
    const e = ft.clamped(i, s.dv);
    const g = top.emit(node.ct, { ...env, [f.valueAxis]: e });
    const o = top.emit(f, { ...env, [f.valueAxis]: e });
    lines.push(`let g${i}: f32 = ${ft.guarded(i, s.dv, g)};`);
    delta.push(`g${i} * ${o}`);
  }
  const stage = (which: "k" | "v", feature: string, width: number) => {
    const e = top.fork(`${which}e`);
    const value = e.emit(f[which], {
      ...batch.env,
      [f.keyAxis]: `${which}key`,
      [feature]: `(${which}i % ${u(width)})`,
    });
    return [
      `for (var ${which}i: u32 = lid; ${which}i < ${u(bk * width)}; ${which}i += ${u(threads)}) {`,
      `  let ${which}key: u32 = min(k0 + ${which}i / ${u(width)}, ${u(s.keys - 1)});`,
      ...e.lines.map((l) => `  ${l}`),
      `  ${which}s[${which}i] = ${value};`,
      `}`,
    ];
  };
  const qk = Array.from({ length: qn }, (_, i) => `q${i} * ks[kb + ${ft.clamped(i, s.dk)}]`);
  const gv = Array.from({ length: gn }, (_, i) => `g${i} * vs[vb + ${ft.clamped(i, s.dv)}]`);
  const head = [
    `  let key: u32 = k0 + j;`,
    `  let ok: bool = key >= rlo && key < rhi && key < whi;`,
    `  let kb: u32 = j * ${u(s.dk)};`,
    `  var dot: f32 = ${qk.join(" + ")};`,
  ];
  const pass1 = [
    `for (var k0: u32 = wlo; k0 < whi; k0 += ${u(bk)}) {`,
    ...stage("k", f.featureAxis, s.dk).map((l) => `  ${l}`),
    `  workgroupBarrier();`,
    `  for (var j: u32 = 0u; j < ${u(bk)}; j++) {`,
    ...head.map((l) => `  ${l}`),
    ...laneSum("dot", lanes).map((l) => `    ${l}`),
    `    let sc: f32 = select(${NEG}, dot, ok);`,
    `    if (sc > m) { l = l * exp(m - sc); m = sc; }`,
    `    l = l + select(0.0, exp(sc - m), ok);`,
    `  }`,
    `  workgroupBarrier();`,
    `}`,
    `let lse: f32 = m + log(l);`,
    `var delta: f32 = ${delta.join(" + ")};`,
    ...laneSum("delta", lanes),
  ];
  let finish: string[];
  let pass2: string[] = [];
  if (stats) {
    finish = [
      `if (live && lane == 0u) {`,
      `  let slot: u32 = (bpos * ${u(s.rows)} + row) * 2u;`,
      `  out[slot] = lse;`,
      `  out[slot + 1u] = delta;`,
      `}`,
    ];
  } else {
    const accs = Array.from({ length: qn }, (_, i) => `a${i}`);
    pass2 = [
      ...accs.map((a) => `var ${a}: f32 = 0.0;`),
      `for (var k0: u32 = wlo; k0 < whi; k0 += ${u(bk)}) {`,
      ...stage("k", f.featureAxis, s.dk).map((l) => `  ${l}`),
      ...stage("v", f.valueAxis, s.dv).map((l) => `  ${l}`),
      `  workgroupBarrier();`,
      `  for (var j: u32 = 0u; j < ${u(bk)}; j++) {`,
      ...head.map((l) => `  ${l}`),
      `    let vb: u32 = j * ${u(s.dv)};`,
      `    var dp: f32 = ${gv.join(" + ")};`,
      ...laneSums(["dot", "dp"], lanes).map((l) => `    ${l}`),
      `    let p: f32 = select(0.0, exp(dot - lse), ok);`,
      `    let ds: f32 = p * (dp - delta);`,
      ...accs.map((a, i) => `    ${a} = fma(ds, ks[kb + ${ft.clamped(i, s.dk)}], ${a});`),
      `  }`,
      `  workgroupBarrier();`,
      `}`,
    ];
    finish = [
      `if (live) {`,
      ...accs.map((a, i) => {
        const off = offsetExpr(node, { ...env, [f.featureAxis]: ft.of(i) });
        const write = `out[${off}] = ${f32Literal(f.scale)} * ${a};`;
        const guard = ft.inRange(i, s.dk);
        return `  ${guard ? `if (${guard}) { ${write} }` : write}`;
      }),
      `}`,
    ];
  }
  const start = sinkStart(f, top, env);
  reg.checkLimit(node, limits.maxStorageBuffersPerShaderStage);
  const total = s.batches * tiles;
  const ind = (ls: string[]) => ls.map((l) => `  ${l}`).join("\n");
  const wgsl = `${
    header(reg, threads, [
      `var<workgroup> ks: array<f32, ${bk * s.dk}>;`,
      `var<workgroup> vs: array<f32, ${bk * s.dv}>;`,
    ])
  }
  if (wid >= ${u(total)}) { return; }
  let tile = wid % ${u(tiles)};
  let bpos = wid / ${u(tiles)};
${indent(laneTile("tile", bq, s.rows, lanes, ROW_TILE))}
${ind(batch.lines)}
${ind(rowRange(f, s))}
${ind(top.lines)}
${ind(lines)}
${ind(start)}
${ind(pass1)}
${ind(pass2)}
${ind(finish)}
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

function keyKernel(
  f: AttentionNode,
  ct: Node,
  dk: AttentionGradNode | undefined,
  dv: AttentionGradNode | undefined,
  stats: ScratchBuffer,
  s: AttentionShapes,
  lanes: number,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const ft = features(lanes);
  const root = (dk ?? dv)!;
  const writes = [dk, dv].filter((n) => n !== undefined);
  const reg = new BindingRegistry(materialized, writes, aliases);
  const st = reg.read(stats);
  const top = new ExprEmitter(reg.lookup, "pe");
  const batch = decodeIndex("bpos", s.batch, s.batchShape, "bi_");
  const maxKeys = Math.max(
    1,
    Math.min(MAX_ROWS, Math.floor(limits.maxComputeInvocationsPerWorkgroup / lanes)),
  );
  const bkr = Math.min(maxKeys, s.keys);
  const threads = Math.min(
    limits.maxComputeInvocationsPerWorkgroup,
    Math.max(MIN_THREADS, bkr * lanes),
  );
  const br = tileOf((s.dk + s.dv + 2) * 4, limits);
  const tiles = Math.ceil(s.keys / bkr);
  const kn = Math.ceil(s.dk / lanes), vn = Math.ceil(s.dv / lanes);
  const keyEnv = { ...batch.env, [f.keyAxis]: "keyc" };
  const lines: string[] = [];
  for (let i = 0; i < kn; i++) {
    lines.push(
      `let k${i}: f32 = ${
        ft.guarded(i, s.dk, top.emit(f.k, { ...keyEnv, [f.featureAxis]: ft.clamped(i, s.dk) }))
      };`,
    );
  }
  for (let i = 0; i < vn; i++) {
    lines.push(
      `let v${i}: f32 = ${
        ft.guarded(i, s.dv, top.emit(f.v, { ...keyEnv, [f.valueAxis]: ft.clamped(i, s.dv) }))
      };`,
    );
  }
  // Staging a tile of rows: scaled q, dO, and (lse, Δ) from the stats kernel.
  const stage = (which: "q" | "g", width: number) => {
    const e = top.fork(`${which}e`);
    const env = rowEnv(f, s, batch.env, `${which}row`);
    const feature = which === "q" ? f.featureAxis : f.valueAxis;
    const v = e.emit(which === "q" ? f.q : ct, { ...env, [feature]: `(${which}i % ${u(width)})` });
    const value = which === "q" ? `${f32Literal(f.scale)} * ${v}` : v;
    return [
      `for (var ${which}i: u32 = lid; ${which}i < ${u(br * width)}; ${which}i += ${u(threads)}) {`,
      `  let ${which}row: u32 = min(r0 + ${which}i / ${u(width)}, ${u(s.rows - 1)});`,
      ...e.lines.map((l) => `  ${l}`),
      `  ${which}s[${which}i] = ${value};`,
      `}`,
    ];
  };
  const off1 = s.keys - s.queries + 1;
  const w = f.window;
  // The rows that may see keys [s0, s1): t ≥ s0 + 1 − off1, and with a window t < s1 − off1 + w.
  const range = f.causal
    ? [
      `let tlo: u32 = select(0u, s0 + 1u - ${u(off1)}, s0 + 1u > ${u(off1)});`,
      w === undefined
        ? `let thi: u32 = ${u(s.queries)};`
        : `let thi: u32 = min(${u(s.queries)}, select(0u, s1 + ${u(w)} - ${u(off1)}, s1 + ${
          u(w)
        } > ${u(off1)}));`,
    ]
    : [`let tlo: u32 = 0u;`, `let thi: u32 = ${u(s.queries)};`];
  const tOf = (row: string) => (s.group === 1 ? row : `${row} / ${u(s.group)}`);
  const mask = f.causal
    ? `key < rt + ${u(off1)}${w === undefined ? "" : ` && key + ${u(w)} >= rt + ${u(off1)}`}`
    : "true";
  const qk = Array.from({ length: kn }, (_, i) => `k${i} * qs[qb + ${ft.clamped(i, s.dk)}]`);
  const vg = Array.from({ length: vn }, (_, i) => `v${i} * gs[gb + ${ft.clamped(i, s.dv)}]`);
  const dks = Array.from({ length: kn }, (_, i) => `dk${i}`);
  const dvs = Array.from({ length: vn }, (_, i) => `dv${i}`);
  const walk = [
    `for (var r0: u32 = rlo0; r0 < rhi0; r0 += ${u(br)}) {`,
    ...stage("q", s.dk).map((l) => `  ${l}`),
    ...stage("g", s.dv).map((l) => `  ${l}`),
    `  for (var li: u32 = lid; li < ${u(br)}; li += ${u(threads)}) {`,
    `    let slot: u32 = (bpos * ${u(s.rows)} + min(r0 + li, ${u(s.rows - 1)})) * 2u;`,
    `    ls[li] = ${st}[slot];`,
    `    ds_[li] = ${st}[slot + 1u];`,
    `  }`,
    `  workgroupBarrier();`,
    `  for (var j: u32 = 0u; j < ${u(br)}; j++) {`,
    `    let rw: u32 = r0 + j;`,
    `    let rt: u32 = ${tOf("rw")};`,
    `    let ok: bool = rw < rhi0 && ${mask};`,
    `    let qb: u32 = j * ${u(s.dk)};`,
    `    let gb: u32 = j * ${u(s.dv)};`,
    `    var dot: f32 = ${qk.join(" + ")};`,
    `    var dp: f32 = ${vg.join(" + ")};`,
    ...laneSums(["dot", "dp"], lanes).map((l) => `    ${l}`),
    `    let p: f32 = select(0.0, exp(dot - ls[j]), ok);`,
    `    let ds: f32 = p * (dp - ds_[j]);`,
    ...dvs.map((a, i) => `    ${a} = fma(p, gs[gb + ${ft.clamped(i, s.dv)}], ${a});`),
    ...dks.map((a, i) => `    ${a} = fma(ds, qs[qb + ${ft.clamped(i, s.dk)}], ${a});`),
    `  }`,
    `  workgroupBarrier();`,
    `}`,
  ];
  const writeOf = (
    node: AttentionGradNode | undefined,
    accs: string[],
    feature: string,
    size: number,
  ) => {
    if (!node) return [];
    const out = reg.writeName(writes.indexOf(node));
    return accs.map((a, i) => {
      const write = `${out}[${
        offsetExpr(node, { ...keyEnv, [f.keyAxis]: "key", [feature]: ft.of(i) })
      }] = ${a};`;
      const guard = ft.inRange(i, size);
      return guard ? `if (${guard}) { ${write} }` : write;
    });
  };
  const finish = [
    `if (live) {`,
    ...writeOf(dk, dks, f.featureAxis, s.dk).map((l) => `  ${l}`),
    ...writeOf(dv, dvs, f.valueAxis, s.dv).map((l) => `  ${l}`),
    `}`,
  ];
  reg.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const total = s.batches * tiles;
  const ind = (ls: string[]) => ls.map((l) => `  ${l}`).join("\n");
  const wgsl = `${
    header(reg, threads, [
      `var<workgroup> qs: array<f32, ${br * s.dk}>;`,
      `var<workgroup> gs: array<f32, ${br * s.dv}>;`,
      `var<workgroup> ls: array<f32, ${br}>;`,
      `var<workgroup> ds_: array<f32, ${br}>;`,
    ])
  }
  if (wid >= ${u(total)}) { return; }
  let tile = wid % ${u(tiles)};
  let bpos = wid / ${u(tiles)};
${indent(laneTile("tile", bkr, s.keys, lanes, KEY_TILE))}
${ind(batch.lines)}
${ind(range)}
  let rlo0: u32 = tlo * ${u(s.group)};
  let rhi0: u32 = thi * ${u(s.group)};
${ind(top.lines)}
${ind(lines)}
${ind([...dks, ...dvs].map((a) => `var ${a}: f32 = 0.0;`))}
${ind(walk)}
${ind(finish)}
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
 * d(sink) = −Σ exp(sink − lse)·Δ over the rows sharing each sink element: one workgroup per
 * element sums its rows (strided over the threads, then a tree in workgroup memory).
 */
function sinkKernel(
  node: AttentionGradNode,
  stats: ScratchBuffer,
  s: AttentionShapes,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const f = node.of, sinks = f.sinks!;
  const reg = new BindingRegistry(materialized, [node], aliases);
  const st = reg.read(stats);
  const top = new ExprEmitter(reg.lookup, "pe");
  const own = decodeIndex("wid", sinks.axes, sinks.shape, "si_");
  const sizeOf = (a: string) => f.q.shape[f.q.axes.indexOf(a)];
  // The axes each sink element is summed over: the others of q's rows and batch positions.
  const outer = [...s.batch, ...(f.groupAxis ? [f.groupAxis] : []), f.queryAxis];
  const free = outer.filter((a) => !sinks.axes.includes(a));
  const count = free.reduce((p, a) => p * sizeOf(a), 1);
  const it = decodeIndex("i", free, free.map(sizeOf), "fi_");
  const idx = (a: string) => (sinks.axes.includes(a) ? own.env[a] : it.env[a]);
  const bposTerms: string[] = [];
  let stride = 1;
  for (let d = s.batch.length - 1; d >= 0; d--) {
    bposTerms.push(`${idx(s.batch[d])} * ${u(stride)}`);
    stride *= s.batchShape[d];
  }
  const bpos = bposTerms.length ? bposTerms.join(" + ") : "0u";
  const row = f.groupAxis
    ? `${idx(f.queryAxis)} * ${u(s.group)} + ${idx(f.groupAxis)}`
    : idx(f.queryAxis);
  const sink = top.emit(sinks, own.env);
  const threads = 64;
  reg.checkLimit(node, limits.maxStorageBuffersPerShaderStage);
  const ind = (ls: string[], d: string) => ls.map((l) => d + l).join("\n");
  const wgsl = `${header(reg, threads, [`var<workgroup> part: array<f32, ${threads}>;`])}
  if (wid >= ${u(sinks.shape.reduce((p, x) => p * x, 1))}) { return; }
${ind(own.lines, "  ")}
${ind(top.lines, "  ")}
  var acc: f32 = 0.0;
  for (var i: u32 = lid; i < ${u(count)}; i += ${u(threads)}) {
${ind(it.lines, "    ")}
    let slot: u32 = ((${bpos}) * ${u(s.rows)} + ${row}) * 2u;
    acc = acc - exp(${sink} - ${st}[slot]) * ${st}[slot + 1u];
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var w: u32 = ${u(threads / 2)}; w > 0u; w = w / 2u) {
    if (lid < w) { part[lid] = part[lid] + part[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[wid] = part[0]; }
}
`;
  return {
    name,
    wgsl,
    workgroups: foldWorkgroups(
      sinks.shape.reduce((p, x) => p * x, 1),
      limits.maxComputeWorkgroupsPerDimension,
    ),
    reads: reg.reads,
    writes: reg.writes,
    kind: "scan",
  };
}
