/**
 * Kernels of the associative scan (`assocScan` nodes). The scanned record is a WGSL struct
 * `Rec` and the traced combine a WGSL function `comb(a, b)` in processing order (for a reverse
 * scan the operands swap, so every loop below runs forward over p, with t = L − 1 − p).
 * The elements are computed inline from their fused trees (the prologue) and the output's
 * elementwise epilogue is written at each step.
 *
 * - **Sequential**: one thread per channel folds its whole axis; for many channels.
 * - **Chunked** (few channels, long axis): the axis is cut into chunks of whole tiles, and a
 *   workgroup walks a chunk tile by tile; in a tile each thread folds V consecutive elements,
 *   the workgroup scans the thread totals (Hillis–Steele in workgroup memory), and each thread
 *   rescans its elements from its exclusive prefix. Three kernels: (1) each chunk's total,
 *   (2) per channel, the exclusive scan of chunk totals (the carries), (3) each chunk again
 *   from its carry, writing the outputs (chunks in reverse order: the first start on what (1)
 *   read last, which may still be cached).
 * - **Single pass** (opt-in, `singlePass`): one workgroup per tile, tiles chained by a
 *   decoupled look-back with fallback (`assoc_scan_lookback.ts`), so the input is read once:
 *   2N bytes against the three kernels' 3N. With `lookbackChunkTiles` C > 1 a workgroup takes a
 *   chunk of C tiles: it folds the chunk (kernel 1's loop), publishes and looks back once, then
 *   rescans the chunk (kernel 3's loop), whose second read of a few tens of KB per workgroup
 *   should come from the L2 cache. C times fewer look-backs: a tile's look-back waits on the
 *   predecessors' inclusive prefixes, and with one per 2,048-element tile the chain, not the
 *   memory, set the pace on an H100 (bench/RESULTS.md, 2026-12-06, late).
 *
 * @module
 */

import type { AssocScanNode, Node } from "../dsl/ir.ts";
import { prefersChunks } from "../dsl/assoc_scan.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
  type ScratchBuffer,
} from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter, offsetExpr } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";
import {
  commutativeDeclarations,
  commutativeFold,
  stageDeclarations,
  tileBuiltins,
  tileDeclarations,
  tileLoop,
  tileRecordWords,
  type Tiling,
} from "./assoc_scan_tiles.ts";
import {
  DEFAULT_LOOKBACK_SPINS,
  lookBack,
  LOOKBACK_WINDOW,
  publishAggregate,
  singlePassBody,
  singlePassDeclarations,
  type SinglePassLayout,
  stateWords,
  takeTile,
} from "./assoc_scan_lookback.ts";

/** Forced choices of the associative-scan lowering (tests, benchmarks). */
export interface AssocScanStrategy {
  /** One thread per channel, or the three chunked kernels. */
  mode?: "sequential" | "chunked";
  /** Chunked: threads per workgroup. */
  workgroup?: number;
  /** Chunked: consecutive elements each thread folds per tile. */
  perThread?: number;
  /** Chunked: tiles (workgroup × perThread elements) per chunk. */
  chunkTiles?: number;
  /**
   * Chunked: scan a tile's thread totals with subgroup shuffles (the default where the device
   * has subgroups) or in workgroup memory.
   */
  tileScan?: "subgroup" | "workgroup";
  /**
   * Chunked: compute elements and write outputs at coalesced positions, passing them to and
   * from the scanning thread through workgroup memory (default: where it fits).
   */
  stage?: boolean;
  /**
   * Chunked: pass 1 of a built-in (commutative) scan folds with coalesced strided loads
   * (default true); false uses the tile loop every combine uses.
   */
  commutativeTotals?: boolean;
  /**
   * Chunked: one kernel with a decoupled look-back (each tile reads its input once) instead of
   * the three chunk kernels. Default: off (on the H100 the three kernels took 0.325 ms for 64M
   * elements and the look-back kernel 0.746 ms: bench/RESULTS.md, 2026-12-05).
   */
  singlePass?: boolean;
  /**
   * Single pass: polls of a predecessor tile's published words before the workgroup computes
   * that tile's reduction from the input instead (default 64). 0 never reads them: every
   * predecessor is recomputed (quadratic; it tests the fallback).
   */
  lookbackSpins?: number;
  /**
   * Single pass: tiles per look-back slot (default 1). C > 1 folds a chunk of C tiles, looks
   * back once and rescans the chunk (see the module docs).
   */
  lookbackChunkTiles?: number;
  /**
   * Single pass, for tests: tiles k with k mod n = n − 1 publish nothing and those with
   * k mod n = n − 2 only their aggregate, so look-backs fold aggregates across windows and
   * recompute tiles between them. Default 0: every tile publishes.
   */
  lookbackWithhold?: number;
}

/** Workgroups the chunked passes aim for, across channels and chunks. */
const TARGET_WORKGROUPS = 4096;
const SEQUENTIAL_WORKGROUP = 64;

/** Loop-variant identifiers of these kernels (values mentioning them are not hoisted). */
const LOOP_VARIABLES = [
  "base",
  "p\\d+",
  "t\\d+",
  "x\\d+_\\d+",
  "y\\d+_\\d+",
  "j\\d+w?",
  "k\\d+",
  "q\\d+",
];

interface Shape {
  readonly len: number;
  readonly channels: number;
  readonly channelAxes: string[];
  readonly channelShape: number[];
}

function shapeOf(core: AssocScanNode): Shape {
  const k = core.axes.indexOf(core.axis);
  const len = core.shape[k];
  return {
    len,
    channels: numel(core) / len,
    channelAxes: core.axes.filter((a) => a !== core.axis),
    channelShape: core.shape.filter((_, i) => i !== k),
  };
}

/** WGSL of the record struct and `comb(a, b)`, the combine in processing order. */
function combineModule(core: AssocScanNode): string {
  const { left, right, results } = core.combine;
  const n = results.length;
  const [first, second] = core.reverse ? ["b", "a"] : ["a", "b"];
  const env: Env = Object.fromEntries(core.axes.map((a) => [a, "0u"]));
  const body = new ExprEmitter(() => undefined, "c").interceptWith((node) => {
    const i = left.indexOf(node as typeof left[number]);
    if (i >= 0) return `${first}.c${i}`;
    const j = right.indexOf(node as typeof right[number]);
    return j >= 0 ? `${second}.c${j}` : undefined;
  });
  const values = results.map((r) => body.emit(r, env));
  const fields = Array.from({ length: n }, (_, i) => `c${i}: f32`).join(", ");
  return `struct Rec { ${fields} }
fn comb(a: Rec, b: Rec) -> Rec {
  ${body.lines.join("\n  ")}
  return Rec(${values.join(", ")});
}`;
}

/** Emits the kernels of `root`, which is `core` or an elementwise epilogue of it. */
export function emitAssocScan(
  root: Node,
  core: AssocScanNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: AssocScanStrategy = {},
): KernelArtifact[] {
  checkIndexable(root);
  const shape = shapeOf(core);
  const innermost = root.axes[root.axes.length - 1] === core.axis;
  const chunked = force.mode
    ? force.mode === "chunked"
    : prefersChunks(shape.channels, shape.len, innermost);
  const ctx = { root, core, materialized, limits, name, aliases, shape };
  return chunked ? emitChunked(ctx, force) : [emitSequential(ctx)];
}

interface Context {
  readonly root: Node;
  readonly core: AssocScanNode;
  readonly materialized: ReadonlySet<Node>;
  readonly limits: DeviceLimits;
  readonly name: string;
  readonly aliases: ReadonlyMap<Node, Node>;
  readonly shape: Shape;
}

/** The scan position of processing step `p` (a WGSL u32 expression). */
function positionOf(ctx: Context, p: string): string {
  return ctx.core.reverse ? `${u32Literal(ctx.shape.len - 1)} - ${p}` : p;
}

/** Statements computing the record of elements at `env` into `target`. */
function elementLines(emitter: ExprEmitter, core: AssocScanNode, env: Env, target: string) {
  const values = core.elems.map((e) => emitter.emit(e, env));
  return [...emitter.lines, `${target} = Rec(${values.join(", ")});`];
}

/** Statements writing the epilogue at `env`, the scan's value being `value` (a Rec). */
function epilogueLines(ctx: Context, emitter: ExprEmitter, env: Env, out: string): string[] {
  const v = emitter.emit(ctx.root, env);
  return [...emitter.lines, `${out}[${offsetExpr(ctx.root, env)}] = ${v};`];
}

function emitSequential(ctx: Context): KernelArtifact {
  const { core, shape, limits } = ctx;
  const registry = new BindingRegistry(ctx.materialized, [ctx.root], ctx.aliases);
  const wg = SEQUENTIAL_WORKGROUP;
  const channel = decodeIndex("ch", shape.channelAxes, shape.channelShape, "ch_");
  const outer = new ExprEmitter(registry.lookup, "h");
  const env: Env = { ...channel.env, [core.axis]: "t0" };
  const load = new ExprEmitter(registry.lookup, "x0_").hoistTo(outer, LOOP_VARIABLES);
  const loadLines = elementLines(load, core, env, "x");
  const epi = load.fork("y0_", { node: core, value: `acc.c${core.component}` });
  const epiLines = epilogueLines(ctx, epi, env, registry.writeName(0));
  registry.checkLimit(ctx.root, limits.maxStorageBuffersPerShaderStage);
  const workgroups = foldWorkgroups(
    Math.ceil(shape.channels / wg),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const wgsl = `// ${ctx.name}: associative scan along ${core.axis} (${shape.len}), ` +
    `sequential, ${shape.channels} channels
${registry.declarations()}
${MATH_PRELUDE}
${combineModule(core)}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${wg}u + lid;
  if (ch >= ${u32Literal(shape.channels)}) { return; }
  ${channel.lines.join("\n  ")}
  ${outer.lines.join("\n  ")}
  var acc: Rec;
  var x: Rec;
  for (var p0: u32 = 0u; p0 < ${u32Literal(shape.len)}; p0++) {
    let t0 = ${positionOf(ctx, "p0")};
    ${loadLines.join("\n    ")}
    if (p0 == 0u) { acc = x; } else { acc = comb(acc, x); }
    ${epiLines.join("\n    ")}
  }
}
`;
  return {
    name: ctx.name,
    wgsl,
    workgroups,
    reads: registry.reads,
    writes: registry.writes,
    kind: "scan",
  };
}

function tilingOf(ctx: Context, force: AssocScanStrategy): Tiling {
  const comps = ctx.core.elems.length;
  const memoryCap = Math.floor(ctx.limits.maxComputeWorkgroupStorageSize / (4 * comps));
  const wg = Math.min(
    force.workgroup ?? 256,
    ctx.limits.maxComputeInvocationsPerWorkgroup,
    memoryCap,
  );
  if (wg < 1) throw new Error(`${ctx.name}: the scanned record does not fit workgroup memory`);
  // 8 per thread where its staged tile fits workgroup memory (it measured faster than 4 on an
  // H100 for cummax over 64M), else 4.
  // Workgroup memory: sh (wg Recs), shTotal, the stage (padded tile) and pass 1's flags (wg
  // words), or the single pass's look-back status (≤ wg words), carry (a Rec) and 3 words.
  const stagedBytes = (p: number) => 4 * (tileRecordWords(comps, wg, wg * p) + wg + 3);
  const per = force.perThread ??
    (stagedBytes(8) <= ctx.limits.maxComputeWorkgroupStorageSize ? 8 : 4);
  const tile = wg * per;
  const tiles = Math.ceil(ctx.shape.len / tile);
  const wantChunks = Math.max(1, Math.ceil(TARGET_WORKGROUPS / ctx.shape.channels));
  const chunkTiles = force.chunkTiles ?? Math.max(1, Math.ceil(tiles / wantChunks));
  const chunkLen = chunkTiles * tile;
  const scan = force.tileScan ?? (ctx.limits.subgroups ? "subgroup" : "workgroup");
  if (scan === "subgroup" && !ctx.limits.subgroups) {
    throw new Error(`${ctx.name}: tileScan "subgroup" needs a device with subgroups`);
  }
  const bytes = stagedBytes(per);
  const fits = bytes <= ctx.limits.maxComputeWorkgroupStorageSize;
  if (force.stage && !fits) {
    throw new Error(
      `${ctx.name}: a staged tile of ${tile} needs ${bytes} bytes of workgroup memory`,
    );
  }
  const stage = force.stage ?? fits;
  return { wg, per, tile, chunkLen, chunks: Math.ceil(ctx.shape.len / chunkLen), scan, stage };
}

/**
 * Pass 2's tiling: one workgroup per channel walks the chunk totals, so its tiles run one after
 * another; a workgroup as large as the device allows (up to 1,024 threads) takes them in fewer
 * tiles (4,096 chunks of 64M elements: one tile of 512 × 8 rather than two of 256 × 8). Its
 * loads and "before" writes are not staged.
 */
function carriesTiling(ctx: Context, t: Tiling): Tiling {
  const comps = ctx.core.elems.length;
  // Workgroup memory: sh (wg Recs) and shTotal.
  const memoryCap = Math.floor(ctx.limits.maxComputeWorkgroupStorageSize / (4 * comps)) - 1;
  const cap = Math.min(1024, ctx.limits.maxComputeInvocationsPerWorkgroup, memoryCap);
  let wg = t.wg;
  while (wg * 2 <= cap && wg * t.per < t.chunks) wg *= 2;
  return { ...t, wg, tile: wg * t.per, stage: false };
}

function header(
  ctx: Context,
  registry: BindingRegistry,
  t: Tiling,
  what: string,
  extra = "",
): string {
  return `// ${ctx.name}: associative scan along ${ctx.core.axis} (${ctx.shape.len}), ${what}, ` +
    `${ctx.shape.channels} channels × ${t.chunks} chunks of ${t.chunkLen}, workgroup ${t.wg} × ` +
    `${t.per}, ${t.scan} tile scan
${registry.declarations()}
${MATH_PRELUDE}
${combineModule(ctx.core)}
${tileDeclarations(t)}
${stageDeclarations(t)}${extra ? `\n${extra}` : ""}
@compute @workgroup_size(${t.wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${
      tileBuiltins(t)
    }) {`;
}

function emitChunked(ctx: Context, force: AssocScanStrategy): KernelArtifact[] {
  const t = tilingOf(ctx, force);
  const tiles = Math.ceil(ctx.shape.len / t.tile);
  // The rule: the three chunk kernels unless the look-back kernel is asked for (it reads the
  // input once, but measured slower on the H100: its polls wait on predecessors) and the tile
  // numbers fit the counter's 31 bits. One tile per channel is one kernel either way: the
  // three-pass path's pass 3 alone.
  const fits = ctx.shape.channels * tiles < 2 ** 31;
  if (force.singlePass && !fits) {
    throw new Error(`${ctx.name}: singlePass needs fewer than 2^31 tiles`);
  }
  const single = (force.singlePass ?? false) && tiles > 1 && fits;
  if (!single) return emitThreePass(ctx, t, force);
  const chunkTiles = force.lookbackChunkTiles ?? 1;
  if (!Number.isInteger(chunkTiles) || chunkTiles < 1) {
    throw new Error(
      `${ctx.name}: lookbackChunkTiles must be a whole number ≥ 1, got ${chunkTiles}`,
    );
  }
  return [
    chunkTiles > 1
      ? emitChunkedSinglePass(ctx, t, force, chunkTiles)
      : emitSinglePass(ctx, t, force),
  ];
}

/**
 * The elements at scan step j, computed inline into `x{v}`; channel-invariant values hoisted
 * (`tag` keeps the hoisted names of several loops over the elements apart).
 */
function elementItem(
  ctx: Context,
  registry: BindingRegistry,
  outer: ExprEmitter,
  env: Env,
  tag = "",
) {
  return (v: number, j: string) => {
    const e = new ExprEmitter(registry.lookup, `x${v}_${tag}`).hoistTo(outer, LOOP_VARIABLES);
    const pos = `q${v}`;
    return [
      `let ${pos} = ${positionOf(ctx, j)};`,
      ...elementLines(e, ctx.core, { ...env, [ctx.core.axis]: pos }, `x${v}`),
    ];
  };
}

/** Writes of item j's output (its epilogue), the scanned Rec being `value`. */
function outputItem(ctx: Context, registry: BindingRegistry, outer: ExprEmitter, env: Env) {
  return (v: number, j: string, value: string) => {
    const e = new ExprEmitter(registry.lookup, `y${v}_`, {
      node: ctx.core,
      value: `${value}.c${ctx.core.component}`,
    }).hoistTo(outer, LOOP_VARIABLES);
    return [
      `let q${v} = ${positionOf(ctx, j)};`,
      ...epilogueLines(ctx, e, { ...env, [ctx.core.axis]: `q${v}` }, registry.writeName(0)),
    ];
  };
}

/** The look-back state of `slotsPerChannel` slots per channel: its registry and layout. */
function lookbackLayout(
  ctx: Context,
  force: AssocScanStrategy,
  slotsPerChannel: number,
): { registry: BindingRegistry; layout: SinglePassLayout } {
  const comps = ctx.core.elems.length;
  const slots = ctx.shape.channels * slotsPerChannel;
  const spins = force.lookbackSpins ?? DEFAULT_LOOKBACK_SPINS;
  if (!Number.isInteger(spins) || spins < 0) {
    throw new Error(`${ctx.name}: lookbackSpins must be a whole number ≥ 0, got ${spins}`);
  }
  const state = scratch(`${ctx.name}_lookback`, stateWords({ slots, comps }), "atomic<u32>");
  const registry = new BindingRegistry(ctx.materialized, [ctx.root, state], ctx.aliases);
  const withhold = force.lookbackWithhold ?? 0;
  if (!Number.isInteger(withhold) || withhold < 0) {
    throw new Error(`${ctx.name}: lookbackWithhold must be a whole number ≥ 0, got ${withhold}`);
  }
  const layout = {
    len: ctx.shape.len,
    tiles: slotsPerChannel,
    slots,
    comps,
    spins,
    withhold,
    state: registry.writeName(1),
  };
  return { registry, layout };
}

/**
 * The single pass over chunks of `chunkTiles` tiles: per chunk (a ticket in scan order), its
 * fold, its aggregate published, one look-back (a stalled predecessor chunk is folded from the
 * input), then the chunk rescanned from the carry, writing the outputs.
 */
function emitChunkedSinglePass(
  ctx: Context,
  t: Tiling,
  force: AssocScanStrategy,
  chunkTiles: number,
): KernelArtifact {
  const { core, shape, limits } = ctx;
  const comps = core.elems.length;
  const chunkLen = chunkTiles * t.tile;
  const chunks = Math.ceil(shape.len / chunkLen);
  const { registry, layout } = lookbackLayout(ctx, force, chunks);
  const commutative = core.op !== undefined && (force.commutativeTotals ?? true);
  // Workgroup memory: the tiles' sh, shTotal and stage, the fold's flags, the look-back's
  // status window, carry and three words.
  const words = tileRecordWords(comps, t.wg, t.stage ? t.tile : undefined) +
    (commutative ? t.wg : 0) + Math.min(LOOKBACK_WINDOW, t.wg) + 3;
  if (4 * words > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `${ctx.name}: a chunked single pass with workgroup ${t.wg} × ${t.per} needs ${4 * words} ` +
        `bytes of workgroup memory; the device allows ${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  const channel = decodeIndex("ch", shape.channelAxes, shape.channelShape, "ch_");
  const outer = new ExprEmitter(registry.lookup, "h");
  const items = (tag: string) => elementItem(ctx, registry, outer, channel.env, tag);
  const fold = (tag: string) =>
    commutative
      ? commutativeFold(t, "start", "end", items(tag))
      : tileLoop(t, comps, "start", "end", items(tag), { when: "none", lines: () => [] });
  const range = (chunk: string) => [
    `let start = ${chunk} * ${u32Literal(chunkLen)};`,
    `let end = min(start + ${u32Literal(chunkLen)}, ${u32Literal(shape.len)});`,
  ];
  // A stalled predecessor chunk j, folded from the input into shTotal.
  const fallback = [
    `{`,
    ...range("j").map((l) => `  ${l}`),
    `  var carry: Rec;`,
    `  var hasCarry = false;`,
    `  ${fold("f")}`,
    `  if (lid == 0u) { shTotal = carry; }`,
    `  workgroupBarrier();`,
    `}`,
  ];
  const rescan = tileLoop(t, comps, "start", "end", items("c"), {
    when: "after",
    lines: outputItem(ctx, registry, outer, channel.env),
  });
  const body = [
    ...range("k"),
    `var carry: Rec;`,
    `var hasCarry = false;`,
    fold("a"),
    `let aggregate = carry;`,
    ...publishAggregate(layout),
    ...lookBack(t, layout, fallback),
    `hasCarry = false;`,
    `if (k > 0u) {`,
    `  carry = workgroupUniformLoad(&shCarry);`,
    `  hasCarry = true;`,
    `}`,
    rescan,
  ];
  registry.checkLimit(ctx.root, limits.maxStorageBuffersPerShaderStage);
  const extra = singlePassDeclarations(t, layout) +
    (commutative ? `\n${commutativeDeclarations(t)}` : "");
  const head = header(
    ctx,
    registry,
    { ...t, chunkLen, chunks },
    `single pass over chunks of ${chunkTiles} tiles (decoupled look-back with fallback)`,
    extra,
  );
  return singlePassArtifact(ctx, registry, layout, head, [channel.lines, outer.lines, body]);
}

/**
 * A single-pass kernel: `head` (the header up to `main`'s opening), the ticket, then `parts`
 * (the channel's decode, the hoisted values, the body).
 */
function singlePassArtifact(
  ctx: Context,
  registry: BindingRegistry,
  layout: SinglePassLayout,
  head: string,
  parts: string[][],
): KernelArtifact {
  const workgroups = foldWorkgroups(layout.slots, ctx.limits.maxComputeWorkgroupsPerDimension);
  const take = takeTile(layout, `wid.x + wid.y * ${u32Literal(workgroups[0])}`);
  const wgsl = `${head}
  ${[take, ...parts].map((lines) => lines.join("\n  ")).join("\n  ")}
}
`;
  return {
    name: `${ctx.name}_single_pass`,
    wgsl,
    workgroups,
    reads: registry.reads,
    writes: registry.writes,
    kind: "scan",
  };
}

function emitSinglePass(ctx: Context, t: Tiling, force: AssocScanStrategy): KernelArtifact {
  const { shape, limits } = ctx;
  const tiles = Math.ceil(shape.len / t.tile);
  const { registry, layout } = lookbackLayout(ctx, force, tiles);
  const channel = decodeIndex("ch", shape.channelAxes, shape.channelShape, "ch_");
  const outer = new ExprEmitter(registry.lookup, "h");
  const body = singlePassBody(
    t,
    layout,
    elementItem(ctx, registry, outer, channel.env),
    outputItem(ctx, registry, outer, channel.env),
  );
  registry.checkLimit(ctx.root, limits.maxStorageBuffersPerShaderStage);
  const head = header(
    ctx,
    registry,
    { ...t, chunkLen: t.tile, chunks: tiles },
    "single pass (decoupled look-back with fallback)",
    singlePassDeclarations(t, layout),
  );
  return singlePassArtifact(ctx, registry, layout, head, [channel.lines, outer.lines, [body]]);
}

function emitThreePass(ctx: Context, t: Tiling, force: AssocScanStrategy): KernelArtifact[] {
  const { core, shape, limits } = ctx;
  const comps = core.elems.length;
  const slots = shape.channels * t.chunks;
  // One buffer each for all components (component i at i·slots): two bindings at most.
  const totals: ScratchBuffer = scratch(`${ctx.name}_totals`, comps * slots);
  const carries: ScratchBuffer = scratch(`${ctx.name}_carries`, comps * slots);
  const chunkWorkgroups = foldWorkgroups(slots, limits.maxComputeWorkgroupsPerDimension);
  const channel = decodeIndex("ch", shape.channelAxes, shape.channelShape, "ch_");
  // Workgroup g takes slot g, or slot slots − 1 − g in `reversed` order (pass 3): GPUs start
  // workgroups roughly in index order, so pass 3 then begins with the chunks pass 1 read last,
  // while they may still be in the L2 cache (up to tens of MB of the input read once, not twice).
  const chunkIndex = (reversed: boolean) => [
    `let g = wid.x + wid.y * ${u32Literal(chunkWorkgroups[0])};`,
    `if (g >= ${u32Literal(slots)}) { return; }`,
    reversed ? `let w = ${u32Literal(slots - 1)} - g;` : `let w = g;`,
    `let ch = w / ${u32Literal(t.chunks)};`,
    `let k = w % ${u32Literal(t.chunks)};`,
    ...channel.lines,
    `let start = k * ${u32Literal(t.chunkLen)};`,
    `let end = min(start + ${u32Literal(t.chunkLen)}, ${u32Literal(shape.len)});`,
  ];

  const items = (r: BindingRegistry, outer: ExprEmitter) => elementItem(ctx, r, outer, channel.env);
  const at = (i: number, index: string) => i === 0 ? index : `${u32Literal(i * slots)} + ${index}`;
  const components = Array.from({ length: comps }, (_, i) => i);
  const recordAt = (buf: string, index: string) =>
    `Rec(${components.map((i) => `${buf}[${at(i, index)}]`).join(", ")})`;
  const storeAt = (buf: string, index: string, value: string) =>
    components.map((i) => `${buf}[${at(i, index)}] = ${value}.c${i};`);

  // (1) Each chunk's total.
  const r1 = new BindingRegistry(ctx.materialized, [totals], ctx.aliases);
  const outer1 = new ExprEmitter(r1.lookup, "h");
  // Every built-in combine commutes: its totals need no order, so no scan per tile.
  const commutative = core.op !== undefined && (force.commutativeTotals ?? true);
  const loop1 = commutative
    ? commutativeFold(t, "start", "end", items(r1, outer1))
    : tileLoop(t, comps, "start", "end", items(r1, outer1), {
      when: "none",
      lines: () => [],
    });
  const totalNames = r1.writeName(0);
  r1.checkLimit(ctx.root, limits.maxStorageBuffersPerShaderStage);
  const pass1 = `${
    header(ctx, r1, t, "pass 1/3: chunk totals", commutative ? commutativeDeclarations(t) : "")
  }
  ${chunkIndex(false).join("\n  ")}
  ${outer1.lines.join("\n  ")}
  var carry: Rec;
  var hasCarry = false;
  ${loop1}
  if (lid == 0u) {
    ${storeAt(totalNames, "w", "carry").join("\n    ")}
  }
}
`;

  // (2) Per channel, the exclusive scan of chunk totals: chunk k's carry.
  const r2 = new BindingRegistry(ctx.materialized, [carries], ctx.aliases);
  const totalReads = r2.read(totals);
  const carryNames = r2.writeName(0);
  const slot = (j: string) => `ch * ${u32Literal(t.chunks)} + ${j}`;
  const t2 = carriesTiling(ctx, t);
  const loop2 = tileLoop(
    t2,
    comps,
    "0u",
    u32Literal(t.chunks),
    (v, j) => [`x${v} = ${recordAt(totalReads, slot(j))};`],
    {
      when: "before",
      lines: (_, j) => [`if (has) {`, ...storeAt(carryNames, slot(j), "pre"), `}`],
    },
  );
  const channelWorkgroups = foldWorkgroups(shape.channels, limits.maxComputeWorkgroupsPerDimension);
  const pass2 = `${header(ctx, r2, t2, "pass 2/3: chunk carries")}
  let ch = wid.x + wid.y * ${u32Literal(channelWorkgroups[0])};
  if (ch >= ${u32Literal(shape.channels)}) { return; }
  var carry: Rec;
  var hasCarry = false;
  ${loop2}
}
`;

  // (3) Each chunk again from its carry, writing the outputs and their epilogue.
  const r3 = new BindingRegistry(ctx.materialized, [ctx.root], ctx.aliases);
  // One chunk per channel: no carries, and passes 1 and 2 are not needed.
  const single = t.chunks === 1;
  const carryIn = single ? `var hasCarry = false;` : `var hasCarry = k > 0u;
  if (hasCarry) { carry = ${recordAt(r3.read(carries), "w")}; }`;
  const outer3 = new ExprEmitter(r3.lookup, "h");
  const loop3 = tileLoop(t, comps, "start", "end", items(r3, outer3), {
    when: "after",
    lines: outputItem(ctx, r3, outer3, channel.env),
  });
  r3.checkLimit(ctx.root, limits.maxStorageBuffersPerShaderStage);
  const pass3 = `${
    header(ctx, r3, t, single ? "pass 3/3: outputs" : "pass 3/3: outputs, chunks in reverse order")
  }
  ${chunkIndex(!single).join("\n  ")}
  ${outer3.lines.join("\n  ")}
  var carry: Rec;
  ${carryIn}
  ${loop3}
}
`;
  const artifact = (
    suffix: string,
    wgsl: string,
    r: BindingRegistry,
    workgroups: [number, number, number],
  ): KernelArtifact => ({
    name: `${ctx.name}_${suffix}`,
    wgsl,
    workgroups,
    reads: r.reads,
    writes: r.writes,
    kind: "scan",
  });
  if (single) return [artifact("outputs", pass3, r3, chunkWorkgroups)];
  return [
    artifact("totals", pass1, r1, chunkWorkgroups),
    artifact("carries", pass2, r2, channelWorkgroups),
    artifact("outputs", pass3, r3, chunkWorkgroups),
  ];
}
