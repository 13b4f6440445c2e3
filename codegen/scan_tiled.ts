/**
 * The workgroup-tiled scan kernel (`ScanStrategy.tileSteps`). A workgroup holds CH channels ×
 * L lanes (lane j of a channel keeps a share of its states) and walks the sequence in tiles
 * of T steps; per tile:
 *
 * 1. stage: every thread evaluates the state-independent per-step values (Δ, Δ·x… for a
 *    selective scan) of its T/L items (step, channel) — consecutive threads take consecutive
 *    channels of one step, so those loads are coalesced — into workgroup memory, and the
 *    workgroup loads the tile's per-state values that all its channels share (B, C) into
 *    workgroup memory, once;
 * 2. barrier; each lane runs the tile's T steps on its states, reading those values; its part
 *    of every contraction (Σ over its states of C·h) is summed with the other lanes' parts
 *    either by subgroup shuffles after each step body (`tileReduce` "shuffle", the default
 *    where subgroups allow: lane j then writes the finished sums of U/L of the body's U steps)
 *    or in the epilogue (`tileReduce` "workgroup": every lane writes its part of every step);
 * 3. barrier; every thread reads the sums for its items and writes their epilogues.
 *
 * No per-lane global load inside the step loop unless a per-state value differs between the
 * workgroup's channels (B of another batch when the workgroup's channels straddle batches:
 * such loads are read by each lane where used). The lane-transposed kernel's per-step
 * shuffles of Δ, x… and per-lane B/C loads are what bound it (bench/RESULTS.md, 2026-12-03;
 * a hand-written kernel of this design, "ST" in bench/RESULTS.md, measured 0.60 ms against 0.69
 * for the lane-transposed one on the H200). The lane sums by shuffles took the benchmark scan
 * from 0.571 to 0.507 ms: each step's part written to workgroup memory and the epilogue's four
 * bank-conflicted reads per item had cost 0.04 and 0.03 ms. One pass only: no chunks.
 *
 * The workgroup arrays are rows of one step (`sk_sd[row][channel]`, `sk_yp[row][thread]` or,
 * with shuffles, `sk_yp[row][channel]` padded against bank conflicts and given a spare row, and
 * one `sk_stageQ[row][lane]` per shared load Q). By default (`unroll` 8) the tile's steps run
 * as a loop of 8-step bodies reading row `base + sgu`, and the next tile is filled after the
 * epilogue, so each iteration is: steps, barrier, epilogue, fill of tile k + 1, barrier. With
 * `unroll` = tileSteps the steps are straight-line (every read has a constant row) and tile k
 * is filled at the top of its iteration. Each form has the order measured fastest for it on the
 * H200; the epilogue's channel guard is left out where every item is real (bench/RESULTS.md).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { BindingRegistry, foldWorkgroups, type KernelArtifact } from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import {
  contractionPart,
  finalStores,
  guarded,
  laneContext,
  type Layout,
  stateLanes,
  stateUpdates,
} from "./scan_layout.ts";
import {
  interceptLoop,
  invariantOffsets,
  Log2eFold,
  type LoopTools,
  Prefetcher,
  SCAN_MATH_PRELUDE,
} from "./scan_loop.ts";
import type { ScanSpec } from "./scan_spec.ts";
import { earlierOutputs } from "./scan_outputs.ts";
import { storeEnv, storeViews } from "./store_view.ts";
import { sizeOf } from "./scan_strategy.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

/** Identifiers that vary inside the tile loop (alternatives of a regular expression). */
const LOOP_VARIABLES = [
  "k",
  "sg",
  "sgu",
  "tt\\d+(?:_c)?",
  "t\\d+(?:_c)?",
  "live\\d+",
  "v\\d+",
  "tta\\d+",
  "ta\\d+",
  "livea\\d+",
  "a[pn]?\\d+_\\d+",
  "e\\d+_\\d+_\\d+",
  "sk[tvn]\\d+(?:_\\d+)?",
  "[pn]f\\d+",
  "inx",
  "inxd",
  "vl\\d+",
];
const LOOP_VARIABLE = new RegExp(`\\b(${LOOP_VARIABLES.join("|")})\\b`);

/** A state-independent per-step value the step loop reads from workgroup memory. */
interface StagedValue {
  readonly node: Node;
  /** Index expressions of the node's axes: `@STEP` for the step, the item's channel (ich_). */
  readonly template: Env;
}

/** The tiled kernel's workgroup arrays exceed the device's workgroup memory. */
export class TiledMemoryError extends Error {}

/** Emits the single pass of a workgroup-tiled scan (see the module comment). */
export function emitTiledPass(
  spec: ScanSpec,
  layout: Layout,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const { scan } = spec;
  const { lanes, perLane, nc, len, math, workgroup } = layout;
  const T = layout.tileSteps;
  // The tile's steps run as a loop of T / U iterations of U straight-line steps (U = T: no
  // loop); `sgu` is the first step of the iteration, and rows of step u are `row(u)`.
  const U = layout.unroll;
  const looped = U < T;
  const row = (base: number) => (looped ? `${u32Literal(base)} + sgu` : u32Literal(base));
  const perGroup = workgroup / lanes;
  const items = T / lanes;
  const tiles = Math.ceil(len / T);
  const partial = tiles * T !== len;
  const writes = [...spec.outputs.map((o) => o.root), ...spec.finals];
  const registry = new BindingRegistry(materialized, writes, aliases);
  const workgroups = foldWorkgroups(
    Math.ceil(nc / perGroup),
    limits.maxComputeWorkgroupsPerDimension,
  );
  // Per-state loads go to workgroup memory when every channel of the workgroup reads the same
  // value; the others are read by each lane.
  const lane = laneContext(
    spec,
    layout,
    registry,
    (node) => materialized.has(node) && !writes.includes(node) && !aliases.has(node),
    perGroup,
  );
  const { ch, st, vectors, pre, stateIndex, varyingChannel } = lane;
  const ich = decodeIndex(
    "ic",
    spec.channelAxes,
    spec.channelAxes.map((a) => sizeOf(scan, a)),
    "ich_",
  );
  const init: string[] = [];
  for (let r = 0; r < perLane; r++) {
    const h0 = scan.init ? pre.emit(scan.init, { ...ch.env, ...st.envs[r] }) : "0.0";
    init.push(`var h${r}: f32 = ${h0};`);
  }

  let currentStep = 0;
  let stagedInStep = 0;
  const prefetch = new Prefetcher({
    mode: "all",
    steps: /\bt\d+\b/,
    loopVar: LOOP_VARIABLE,
    stateVar: stateIndex,
    stateLoads: "staged",
    stageable: (load) => !varyingChannel.test(load),
    // Staged load number i of step u sits in its own array, row u, column j (see the stage).
    stagedRead: () => {
      const i = stagedInStep++;
      return `sk_stage${i}[${row(currentStep)}][j]`;
    },
    unstaged: "direct",
  });
  const tools: LoopTools = {
    math,
    prefetch,
    vectors,
    lookup: registry.lookup,
    buffered: registry.buffered,
    fold: layout.foldLog2e ? new Log2eFold(pre, LOOP_VARIABLE) : undefined,
  };

  // The step loop. State-independent values of step u are read from `sk_sd`, where the
  // stage put them; `values` collects them (each once) for the stage.
  const values: StagedValue[] = [];
  const valueSlots = new Map<string, number>();

  const redirect = (node: Node, env: Env): string | undefined => {
    if (node.kind === "const" || node.axes.some((a) => spec.stateAxes.includes(a))) {
      return undefined;
    }
    if (node.axes.some((a) => stateIndex.test(env[a]))) return undefined;
    const mine = new RegExp(`\\bt${currentStep}\\b`, "g");
    const indices = node.axes.map((a) => env[a]);
    if (!indices.some((v) => new RegExp(mine.source).test(v))) return undefined;
    if (indices.some((v) => LOOP_VARIABLE.test(v.replace(mine, "")))) return undefined;
    const template: Record<string, string> = {};
    for (const a of node.axes) {
      template[a] = env[a].replace(mine, "@STEP").replace(/\bch_/g, "ich_");
    }
    const key = `${node.id}|${node.axes.map((a) => template[a]).join(",")}`;
    let slot = valueSlots.get(key);
    if (slot === undefined) {
      valueSlots.set(key, slot = values.length);
      values.push({ node, template });
    }
    // Where the value sits is decided once all values are known (see `sdRead`).
    return `@SD${slot}_${currentStep}@`;
  };
  const loop = new ExprEmitter(registry.lookup, "v").hoistTo(pre, LOOP_VARIABLES);
  interceptLoop(loop, tools, redirect);
  const stepLines: string[] = [];
  const templates: string[][] = [];
  // The lanes' parts of output k's contraction for the body's U steps (yq{k}_{u}), summed by a
  // butterfly: at mask m, a lane keeps the half of its values whose steps have bit m of its
  // lane index and adds its partner's (lane j ^ m) values for those steps. After log2(lanes)
  // rounds lane j holds the finished sums of steps j·U/L … j·U/L + U/L − 1 of the body, and
  // writes them to row k·T + step, column cl: the epilogue reads one value per item.
  const shuffled = layout.tileReduce === "shuffle";
  const kept = U / lanes;
  const laneButterfly = (k: number): string[] => {
    const lines: string[] = [];
    let held = Array.from({ length: U }, (_, u) => `yq${k}_${u}`);
    for (let m = lanes / 2; m >= 1; m /= 2) {
      const half = held.length / 2;
      held = held.slice(0, half).map((low, r) => {
        const high = held[r + half], sum = `yr${k}_${m}_${r}`;
        lines.push(
          `let ${sum}: f32 = select(${low}, ${high}, yb${m}) + ` +
            `subgroupShuffleXor(select(${high}, ${low}, yb${m}), ${u32Literal(m)});`,
        );
        return sum;
      });
    }
    held.forEach((v, r) =>
      lines.push(`sk_yp[${row(k * T + r)} + j * ${u32Literal(kept)}][cl] = ${v};`)
    );
    return lines;
  };
  for (let u = 0; u < U; u++) {
    currentStep = u;
    stagedInStep = 0;
    const stagedBefore = prefetch.staged.length;
    const t = `t${u}`, live = `live${u}`;
    const mark = loop.lines.length;
    const updates = stateUpdates(loop, spec, lane, t, partial ? live : undefined).lines;
    const parts = spec.outputs.map((o, k) => {
      const part = contractionPart(loop, spec, lane, o.contract!, t);
      return shuffled
        ? `let yq${k}_${u}: f32 = ${part};`
        : `sk_yp[${row(k * T + u)}][lid] = ${part};`;
    });
    stepLines.push(...loop.lines.splice(mark), ...updates, ...parts);
    templates.push(
      prefetch.staged.slice(stagedBefore).map((l) =>
        l.load.replace(new RegExp(`\\bt${u}\\b`, "g"), "@STEP")
      ),
    );
  }
  if (shuffled) stepLines.push(...spec.outputs.flatMap((_, k) => laneButterfly(k)));
  // Two to four values per item are packed in one vector per (step, channel): one read per
  // step instead of one per value. Otherwise value b of step u has its own row, b·T + u.
  const packed = values.length >= 2 && values.length <= 4;
  const sdRead = (slot: number, u: number) =>
    packed ? `sk_sd[${row(u)}][cl][${slot}]` : `sk_sd[${row(slot * T + u)}][cl]`;
  for (let i = 0; i < stepLines.length; i++) {
    stepLines[i] = stepLines[i].replace(/@SD(\d+)_(\d+)@/g, (_, b, u) => sdRead(+b, +u));
  }
  // Every step stages the same loads at its own position (the steps are one expression).
  if (templates.some((ts) => ts.join(";") !== templates[0].join(";"))) {
    throw new Error("internal: the tiled scan's steps stage different per-state loads");
  }
  if (prefetch.size !== prefetch.staged.length) {
    throw new Error(`internal: the tiled scan kernel took ${prefetch.size} loads into registers`);
  }

  // Step positions: step u of tile `tile` (names suffixed `sfx`), and item e of the thread.
  const position = (within: string) =>
    scan.reverse ? `${u32Literal(len - 1)} - (${within})` : `(${within})`;
  const clamp = (v: string) => (partial ? `min(${v}, ${u32Literal(len - 1)})` : v);
  const stepHeads = (tile: string, sfx: string) =>
    Array.from({ length: U }, (_, u) => {
      const within = `${tile} * ${u32Literal(T)} + ${looped ? "sgu + " : ""}${u32Literal(u)}`;
      return [
        `let tt${u}${sfx} = ${position(within)};`,
        `let t${u}${sfx} = ${clamp(`tt${u}${sfx}`)};`,
        ...(partial && sfx === "" ? [`let live${u} = ${within} < ${u32Literal(len)};`] : []),
      ];
    }).flat();
  /** The thread's item positions in tile `tile` (names suffixed `sfx`). */
  const itemHeads = (tile: string, sfx: string) =>
    Array.from({ length: items }, (_, e) => {
      const within = `${tile} * ${u32Literal(T)} + ts0 + ${u32Literal(e * lanes)}`;
      return [
        `let tta${e}${sfx} = ${position(within)};`,
        `let ta${e}${sfx} = ${clamp(`tta${e}${sfx}`)};`,
        ...(partial && sfx === "" ? [`let livea${e} = ${within} < ${u32Literal(len)};`] : []),
      ];
    }).flat();

  // The stage: the items' values into sk_sd, the shared per-state loads into sk_stage. The
  // items' loads (x, Δ, z…) are issued `prefetchDepth` tiles ahead into registers (default
  // one; two and three measured slower on the H200, bench/RESULTS.md).
  const depth = layout.prefetchDepth;
  const itemPrefetch = new Prefetcher({
    mode: "all",
    depth,
    steps: /\bta\d+\b/,
    loopVar: LOOP_VARIABLE,
    stateVar: stateIndex,
  });
  // An item's channel part of its offset is computed once, before the loop.
  const itemOffset = invariantOffsets(pre, LOOP_VARIABLE);
  const itemTools: LoopTools = { ...tools, prefetch: itemPrefetch, offset: itemOffset };
  // The items' values and their stores for one tile, from emitters named `${prefix}${e}_`:
  // the same loads (registers) and expressions each time; where they run depends on the order.
  const itemStage = (prefix: string) => {
    const ems = Array.from({ length: items }, (_, e) => {
      const em = new ExprEmitter(registry.lookup, `${prefix}${e}_`).hoistTo(pre, LOOP_VARIABLES);
      return interceptLoop(em, itemTools);
    });
    // `body`: each item's values then its store; `lines`: the values alone.
    const lines: string[] = [], body: string[] = [];
    ems.forEach((em, e) => {
      const itemValues = values.map((v) => {
        const env: Record<string, string> = {};
        for (const a of v.node.axes) env[a] = v.template[a].replaceAll("@STEP", `ta${e}`);
        return em.emit(v.node, env);
      });
      lines.push(...em.lines);
      body.push(
        ...em.lines,
        ...(packed
          ? [
            `sk_sd[${u32Literal(e * lanes)} + ts0][cs] = vec${itemValues.length}<f32>(${
              itemValues.join(", ")
            });`,
          ]
          : itemValues.map((value, b) =>
            `sk_sd[${u32Literal(b * T + e * lanes)} + ts0][cs] = ${value};`
          )),
      );
    });
    return { ems, lines, body };
  };
  // This tile's: the epilogue continues from these emitters (x of the item, …).
  const current = itemStage("a");
  const phaseA = current.ems;
  const stage: string[] = [];
  // The shared per-state loads: element e < T·lanes of the tile is step ⌊e / lanes⌋ for lane
  // e mod lanes; thread lid fills elements lid, lid + WG… of every load template, each template
  // into its own array (one array for all of them, C's rows after B's, measured 0.641 against
  // 0.575 ms in a hand-written kernel on the H200: bench/RESULTS.md, 2026-12-03).
  const loadTemplates = templates[0];
  const stagedType = prefetch.staged[0]?.dtype ?? "f32";
  const stagedPerLoad = T * lanes;
  const stagedCount = loadTemplates.length * stagedPerLoad;
  const fillSlots = loadTemplates.length > 0 ? Math.ceil(stagedPerLoad / workgroup) : 0;
  const stagingInvariant: string[] = [];
  const fillBefore: string[] = [], fillNext: string[] = [], fillRotate: string[] = [];
  for (let sl = 0; sl < fillSlots; sl++) {
    const e = `ske${sl}`, prefix = `sk${sl}_`;
    stagingInvariant.push(
      `let ${e} = lid + ${u32Literal(sl * workgroup)};`,
      `let sku${sl} = (${e} / ${u32Literal(lanes)}) % ${u32Literal(T)};`,
      `let skj${sl} = ${e} % ${u32Literal(lanes)};`,
      ...stateLanes(spec, layout, `skj${sl}`, prefix).lines,
    );
    // A fill slot's loads for tile `tile`, template q into `${target}_q` (declared here).
    const fill = (tile: string, target: string, step: string) => [
      `let ${step} = ${clamp(position(`${tile} * ${u32Literal(T)} + sku${sl}`))};`,
      ...loadTemplates.map((l, q) =>
        `var ${target}_${q}: ${stagedType} = ${
          l.replace(/\b(st\d+_\w+|s\d+)\b/g, (m) => `${prefix}${m}`).replaceAll("@STEP", step)
        };`
      ),
    ];
    // Tile 0's before the loop; tile k + 1's at the top of iteration k (into skn), kept in
    // skv until iteration k + 1 stores it.
    fillBefore.push(...fill("0u", `skv${sl}`, `skt${sl}_0`));
    fillNext.push(...fill("inx", `skn${sl}`, `skt${sl}`));
    fillRotate.push(...loadTemplates.map((_, q) => `skv${sl}_${q} = skn${sl}_${q};`));
    stage.push(
      ...guarded(
        (sl + 1) * workgroup > stagedPerLoad ? [`${e} < ${u32Literal(stagedPerLoad)}`] : [],
        loadTemplates.map((_, q) => `sk_stage${q}[sku${sl}][skj${sl}] = skv${sl}_${q};`),
      ),
    );
  }

  // The epilogue: each item's contraction is the sum of its channel's lanes' parts.
  const allValid = nc % perGroup === 0;
  const epilogue: string[] = [];
  phaseA.forEach((em, e) => {
    spec.outputs.forEach((o, k) => {
      const partials = `sk_yp[${u32Literal(k * T + e * lanes)} + ts0]`;
      const sum = shuffled ? `${partials}[cs]` : Array.from(
        { length: lanes },
        (_, jj) => `${partials}[cs * ${u32Literal(lanes)} + ${u32Literal(jj)}]`,
      ).join(" + ");
      const y = `y${k}_${e}`;
      const earlier = earlierOutputs(
        spec,
        k,
        { ...ich.env, [scan.axis]: `ta${e}` },
        (j) => `y${j}_${e}`,
      );
      const epi = interceptLoop(
        em.fork(`e${k}_${e}_`, { node: o.contract!, value: y }),
        itemTools,
        earlier,
      );
      const v = epi.emit(storeViews(o.root).base, { ...ich.env, [scan.axis]: `ta${e}` });
      // No guard where every item is real: the guards cost time on the H200 (bench/RESULTS.md).
      const guard = [...(allValid ? [] : ["ivalid"]), ...(partial ? [`livea${e}`] : [])];
      epilogue.push(
        `let ${y}: f32 = ${sum};`,
        ...guarded(guard, [
          ...epi.lines,
          `${registry.writeName(k)}[${
            itemOffset(o.root, storeEnv(o.root, { ...ich.env, [scan.axis]: `ta${e}` }))
          }] = ${v};`,
        ]),
      );
    });
  });

  // The tile order. Straight-line tiles fill tile k at the top of iteration k (barrier, steps,
  // barrier, epilogue). Looped tiles fill tile 0 before the loop and tile k + 1 after tile k's
  // epilogue, from the registers just rotated (steps, barrier, epilogue, fill, barrier). On the
  // H200 (bench/RESULTS.md, 2026-12-03): a loop of 4-step bodies took 0.605 ms in this order
  // and 0.693 filled at the top; straight-line tiles 0.640 filled at the top and 0.697 here.
  // Only where the items' values come from the rotated registers alone (no other read of the
  // item's position, which would still be tile k's).
  const first = looped ? itemStage("ap") : { lines: [], body: [] };
  const next = looped ? itemStage("an") : { lines: [], body: [] };
  const fillLast = looped && !next.body.some((l) => /\bta\d+\b/.test(l));
  // Registers of the next tile: its positions, then its loads, at the top of the body.
  // Tiles 0 … depth − 1 of the items' loads before the loop (suffixes _0, _1…), clamped.
  const before = [
    ...Array.from(
      { length: itemPrefetch.size > 0 ? depth : 1 },
      (_, d) => itemHeads(`${u32Literal(Math.min(d, tiles - 1))}`, `_${d}`),
    ).flat(),
    ...itemPrefetch.declare((d) => `_${d}`),
    ...fillBefore,
  ];
  const ahead = itemPrefetch.size > 0 || fillNext.length > 0;
  const top = [
    ...(ahead ? [`let inx = min(k + 1u, ${u32Literal(tiles - 1)});`] : []),
    ...(itemPrefetch.size > 0 && depth > 1
      ? [`let inxd = min(k + ${u32Literal(depth)}, ${u32Literal(tiles - 1)});`]
      : []),
    ...(itemPrefetch.size > 0 ? itemHeads(depth > 1 ? "inxd" : "inx", "_n") : []),
    ...itemPrefetch.next(() => "_n"),
    ...fillNext,
    ...itemHeads("k", ""),
  ];
  const tail = finalStores(spec, registry, lane);
  if (registry.conflict) {
    // As in scan_kernel.ts: a vector-bound tensor also read through a plain binding.
    const scalar = { ...layout, vectorWidth: 1 };
    return emitTiledPass(spec, scalar, materialized, limits, name, aliases);
  }
  registry.checkLimit(spec.outputs[0]?.root ?? scan, limits.maxStorageBuffersPerShaderStage);
  // Rows of sk_sd: one per step when packed (a vec3 takes four floats, its alignment), else
  // one per value and step.
  const sdRows = packed ? T : Math.max(1, values.length * T);
  const sdFloats = packed ? (values.length === 3 ? 4 : values.length) : 1;
  // Shuffled sums: one column per channel, rows padded so one store of a warp's sums (lanes
  // at rows kept·j apart) hits 32 different banks.
  const ypColumns = shuffled ? conflictFreeRow(perGroup, lanes, kept) : workgroup;
  const sdCount = sdRows * perGroup * sdFloats;
  const width = stagedType === "f32" ? 1 : Number(stagedType.match(/vec(\d)/)?.[1] ?? 1);
  const ypUsed = Math.max(1, spec.outputs.length * T);
  const bytesWith = (ypRows: number) => 4 * (sdCount + ypRows * ypColumns + width * stagedCount);
  // Shuffled sums get one spare row of sk_yp where it fits (never read or written). Measured
  // on the H200 (bench/RESULTS.md, 2026-12-03): the benchmark scan took 0.501 ms with 1 to 7
  // spare rows against 0.506-0.507 without, 32-step tiles 0.331 against 0.333 (b=4) and 0.264
  // against 0.265 (b=2); spare rows in sk_sd or sk_stage did not help, nor did reordering the
  // arrays, and 8 or more spare rows were slower (0.511). A property of the driver's code for
  // this array's shape, not of the algorithm; the row costs ypColumns floats.
  const spare = shuffled && bytesWith(ypUsed + 1) <= limits.maxComputeWorkgroupStorageSize;
  const ypRows = ypUsed + (spare ? 1 : 0);
  const shared = bytesWith(ypRows);
  if (shared > limits.maxComputeWorkgroupStorageSize) {
    throw new TiledMemoryError(
      `scan: tileSteps ${T} with ${perGroup} channels × ${lanes} lanes needs ${shared} bytes of ` +
        `workgroup memory; the device allows ${limits.maxComputeWorkgroupStorageSize} ` +
        `(use fewer steps per tile or a smaller workgroup)`,
    );
  }
  const header = [
    `let wg = wid.x + wid.y * ${u32Literal(workgroups[0])};`,
    `let cl = lid / ${u32Literal(lanes)};`,
    `let j = lid % ${u32Literal(lanes)};`,
    `let cf = wg * ${u32Literal(perGroup)} + cl;`,
    `let valid = cf < ${u32Literal(nc)};`,
    `let c = min(cf, ${u32Literal(nc - 1)});`,
    `let cs = lid % ${u32Literal(perGroup)};`,
    `let ts0 = lid / ${u32Literal(perGroup)};`,
    `let icf = wg * ${u32Literal(perGroup)} + cs;`,
    `let ivalid = icf < ${u32Literal(nc)};`,
    `let ic = min(icf, ${u32Literal(nc - 1)});`,
    // The butterfly's choices: whether bit m of the lane index is set.
    ...(shuffled
      ? Array.from(
        { length: Math.log2(lanes) },
        (_, i) => `let yb${2 ** i} = (j & ${u32Literal(2 ** i)}) != 0u;`,
      )
      : []),
  ];
  const wgsl = `// ${name}: scan over ${scan.axis} (${len}${scan.reverse ? ", reverse" : ""}), ` +
    `${nc} channels × ${layout.ns} states, tiled: ${perGroup} channels × ${lanes} lane(s) per ` +
    `workgroup, ${T}-step tiles${looped ? ` (${T / U} × ${U} steps)` : ""}, ` +
    `${values.length} staged value(s), ` +
    `${prefetch.staged.length * (T / U)} staged load(s), math ${math}` +
    `${layout.foldLog2e ? " (log2e folded)" : ""}, vector ${layout.vectorWidth}, ` +
    `lane sums ${shuffled ? "by shuffles" : "in workgroup memory"}, single
${registry.declarations()}
${vectors?.declarations() ?? ""}
var<workgroup> sk_sd: array<array<${
      packed ? `vec${values.length}<f32>` : "f32"
    }, ${perGroup}>, ${sdRows}>;
var<workgroup> sk_yp: array<array<f32, ${ypColumns}>, ${ypRows}>;
${
      loadTemplates.map((_, q) =>
        `var<workgroup> sk_stage${q}: array<array<${stagedType}, ${lanes}>, ${T}>;`
      ).join("\n")
    }
${MATH_PRELUDE}${math === "prelude" ? "" : SCAN_MATH_PRELUDE}
@compute @workgroup_size(${workgroup})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  ${[...header, ...ch.lines, ...ich.lines, ...st.lines, ...stagingInvariant].join("\n  ")}
  ${[...pre.lines, ...init, ...before].join("\n  ")}
  ${fillLast ? [...first.body, ...stage, "workgroupBarrier();"].join("\n  ") : ""}
  for (var k: u32 = 0u; k < ${u32Literal(tiles)}; k++) {
    ${
      (fillLast
        ? [...top, ...current.lines]
        : [...top, ...current.body, ...stage, "workgroupBarrier();"])
        .join("\n    ")
    }
    ${
      looped
        ? [
          `for (var sg: u32 = 0u; sg < ${u32Literal(T / U)}; sg++) {`,
          `  let sgu = sg * ${u32Literal(U)};`,
          ...[...stepHeads("k", ""), ...stepLines].map((l) => `  ${l}`),
          `}`,
        ].join("\n    ")
        : [...stepHeads("k", ""), ...stepLines].join("\n    ")
    }
    workgroupBarrier();
    ${
      [
        ...epilogue,
        ...itemPrefetch.rotate(),
        ...fillRotate,
        ...(fillLast ? [...next.body, ...stage, "workgroupBarrier();"] : []),
      ].join("\n    ")
    }
  }
  ${tail.join("\n  ")}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/**
 * Columns of a row of shuffled sums (`perGroup` or a few more) such that the sums one warp of 32
 * threads stores at once (thread cl·lanes + j at column cl, `kept`·j rows down) fall in distinct
 * banks of 4 bytes, or as few per bank as the search finds.
 */
export function conflictFreeRow(perGroup: number, lanes: number, kept: number): number {
  let best = perGroup, bestWorst = Infinity;
  for (let columns = perGroup; columns < perGroup + 32; columns++) {
    const perBank = new Map<number, number>();
    for (let lid = 0; lid < 32; lid++) {
      const bank = (Math.floor(lid / lanes) + (lid % lanes) * kept * columns) % 32;
      perBank.set(bank, (perBank.get(bank) ?? 0) + 1);
    }
    const worst = Math.max(...perBank.values());
    if (worst < bestWorst) [best, bestWorst] = [columns, worst];
    if (worst === 1) break;
  }
  return best;
}
