/**
 * The fused selective-scan kernel. One group of G lanes per channel (every non-scan,
 * non-state index); each lane keeps R = ⌈NS / G⌉ state elements in registers for the whole
 * sequence. Per step, the decay and input prologues are computed inline, the state updated,
 * each contraction consumer reduced over the lanes with subgroup shuffles, and its epilogue
 * written by lane 0. The state never touches memory except for the final-state outputs.
 *
 * Long sequences with few channels are split into K chunks: (1) a chunk-local scan from a
 * zero state writes each chunk's end state and decay product, (2) a carry pass runs the
 * short recurrence over chunks (and writes the final state), (3) the main pass re-runs each
 * chunk from its carried-in state and writes the outputs.
 *
 * @module
 */

import type { Node, ScanNode } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  type BufferKey,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
} from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter, offsetExpr } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";
import {
  interceptLoop,
  invariantOffsets,
  Log2eFold,
  type LoopTools,
  Prefetcher,
  SCAN_MATH_PRELUDE,
  vectorWidth,
} from "./scan_loop.ts";
import { StagedBroadcast, stagingCode } from "./scan_staging.ts";
import { SharedPrologue } from "./scan_shared_prologue.ts";
import {
  contractionPart,
  finalStores,
  guarded,
  laneContext,
  type Layout,
  stateLanes,
  stateUpdates,
} from "./scan_layout.ts";
import type { ScanSpec } from "./scan_spec.ts";
import { earlierOutputs } from "./scan_outputs.ts";
import { storeEnv, storeViews } from "./store_view.ts";
import { emitTiledPass, TiledMemoryError } from "./scan_tiled.ts";
import {
  AUTO_TILE,
  AUTO_TILED_WORKGROUP,
  chooseScanStrategy,
  DEFAULT_WORKGROUP,
  product,
  type ScanStrategy,
  sizeOf,
} from "./scan_strategy.ts";

/** Identifiers that vary inside the step loop (alternatives of a regular expression). */
const LOOP_VARIABLES = [
  "i",
  "tt\\d+",
  "t\\d+",
  "live\\d+",
  "v\\d+",
  "e\\d+s\\d+_\\d+",
  "tta",
  "ta",
  "livea",
  "a\\d+",
  "e\\d+_\\d+",
  "r\\d+_\\d+",
  "inx\\d*",
  "[pn]f\\d+(?:_\\d+)?",
  "skc",
  "phc",
  "bv\\d+",
  "sk[nv]\\d+",
  "vl\\d+",
];
const LOOP_VARIABLE = new RegExp(`\\b(${LOOP_VARIABLES.join("|")})\\b`);

/**
 * Reduce-scatter over a group of `lanes` lanes: `values[s]` is each lane's part of step s;
 * afterwards lane j holds the sum over lanes of step j (lanes − 1 shuffles in all).
 */
function reduceScatter(values: string[], lanes: number, prefix: string, out: string[]): string {
  let live = values.map((v, s) => ({ v, s }));
  let n = 0;
  for (let m = lanes / 2; m >= 1; m /= 2) {
    const next: { v: string; s: number }[] = [];
    for (const lo of live.filter((e) => (e.s & m) === 0)) {
      const hi = live.find((e) => e.s === (lo.s | m))!;
      // Lanes with bit m clear keep the low step and send the high one; the others swap.
      const mineLow = `(j & ${m}u) == 0u`;
      const keep = `${prefix}${n++}`;
      const send = `${prefix}${n++}`;
      out.push(`let ${keep} = select(${hi.v}, ${lo.v}, ${mineLow});`);
      out.push(`let ${send} = select(${lo.v}, ${hi.v}, ${mineLow});`);
      const sum = `${prefix}${n++}`;
      out.push(`let ${sum} = ${keep} + subgroupShuffleXor(${send}, ${m}u);`);
      next.push({ v: sum, s: lo.s });
    }
    live = next;
  }
  return live[0].v;
}

type Mode = "single" | "local" | "final";

/**
 * Workgroup memory a short scan's shared prologue values may take (scan_shared_prologue.ts):
 * Mamba-2's decode step stages 2 × 128 values (2 KiB), a 16-step block of them 32 KiB.
 */
const SHARED_PROLOGUE_BYTES = 16384;

/** Emits the 1 (or 3, when chunked) kernels of a scan group. */
export function emitScanKernels(
  spec: ScanSpec,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanStrategy = {},
): KernelArtifact[] {
  const { scan } = spec;
  // The states are indexed by channel and state (never by a flat index of the whole node)
  // unless they are written: only then must the node itself fit u32 indexing. GLA at
  // (1, 8192, 32, 128) has 2^32 virtual states and writes none.
  if (materialized.has(scan)) checkIndexable(scan);
  const chosen = chooseScanStrategy(spec, limits, force);
  const { lanes, chunks, vector } = chosen;
  const ns = product(scan, spec.stateAxes);
  const nc = product(scan, spec.channelAxes);
  const len = sizeOf(scan, scan.axis);
  const layout: Layout = {
    ...chosen,
    perLane: Math.ceil(ns / lanes),
    ns,
    nc,
    len,
    chunkLen: Math.ceil(len / chunks),
    vectorWidth: vector && spec.stateAxes.length > 0
      ? vectorWidth(Math.ceil(ns / lanes), sizeOf(scan, spec.stateAxes[spec.stateAxes.length - 1]))
      : 1,
  };
  if (layout.tileSteps > 0) {
    try {
      return [emitTiledPass(spec, layout, materialized, limits, name, aliases)];
    } catch (e) {
      // The default choice of the tiled kernel stands only where its workgroup arrays fit:
      // narrow scans' 32-step tiles fall back to 16-step ones, those to the lane kernel.
      if (!(chosen.tiledAuto && e instanceof TiledMemoryError)) throw e;
      if (layout.tileSteps > AUTO_TILE) {
        const shorter = { ...force, tileSteps: AUTO_TILE, workgroup: AUTO_TILED_WORKGROUP };
        try {
          return emitScanKernels(spec, materialized, limits, name, aliases, shorter);
        } catch (e2) {
          if (!(e2 instanceof TiledMemoryError)) throw e2;
        }
      }
      const lane = { ...force, tileSteps: 0 };
      return emitScanKernels(spec, materialized, limits, name, aliases, lane);
    }
  }
  if (chunks === 1) {
    return [emitPass(spec, layout, "single", materialized, limits, `${name}`, aliases, [])];
  }
  const carryElems = nc * chunks * ns;
  const hEnd = scratch(`${name}_chunk_end`, carryElems);
  const prod = scratch(`${name}_chunk_decay`, carryElems);
  const carryIn = scratch(`${name}_carry_in`, carryElems);
  return [
    emitPass(spec, layout, "local", materialized, limits, `${name}_local`, aliases, [hEnd, prod]),
    emitCarry(spec, layout, materialized, limits, `${name}_carry`, aliases, hEnd, prod, carryIn),
    emitPass(spec, layout, "final", materialized, limits, `${name}_out`, aliases, [carryIn]),
  ];
}

function headerLines(layout: Layout, gx: number): string[] {
  const { lanes, nc, chunks, workgroup } = layout;
  const groups = nc * chunks;
  return [
    `let tid = (wid.x + wid.y * ${u32Literal(gx)}) * ${workgroup}u + lid;`,
    `let grp = tid / ${u32Literal(lanes)};`,
    `let j = tid % ${u32Literal(lanes)};`,
    // Lanes past the end still run (shuffles need every lane); they compute on a clamped
    // index and store nothing.
    `let valid = grp < ${u32Literal(groups)};`,
    `let g = min(grp, ${u32Literal(groups - 1)});`,
    `let c = g % ${u32Literal(nc)};`,
    `let chunk = g / ${u32Literal(nc)};`,
  ];
}

function emitPass(
  spec: ScanSpec,
  layout: Layout,
  mode: Mode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  scratchBuffers: BufferKey[],
): KernelArtifact {
  const { scan } = spec;
  const { lanes, perLane, nc, len, chunks, chunkLen, math } = layout;
  // Writes: outputs (final pass), finals (single pass), chunk scratch (local pass).
  const writes: BufferKey[] = mode === "local" ? scratchBuffers : [
    ...spec.outputs.map((o) => o.root),
    ...(mode === "single" ? spec.finals : []),
  ];
  const registry = new BindingRegistry(materialized, writes, aliases);
  const carryName = mode === "final" ? registry.read(scratchBuffers[0]) : "";
  const threads = nc * chunks * lanes;
  const workgroups = foldWorkgroups(
    Math.ceil(threads / layout.workgroup),
    limits.maxComputeWorkgroupsPerDimension,
  );
  // Lanes past the last channel exist only when the launch overshoots.
  const overshoot = workgroups[0] * workgroups[1] * layout.workgroup !== threads;
  // Staging (chooseScanStrategy checked that the channel count suits the workgroup).
  const perGroup = layout.workgroup / lanes;
  const lane = laneContext(
    spec,
    layout,
    registry,
    (node) => materialized.has(node) && !writes.includes(node) && !aliases.has(node),
    perGroup,
  );
  const { ch, st, vectors, pre, stateIndex, varying, varyingChannel } = lane;
  const init: string[] = [];
  const carryIdx = (r: number) =>
    `(chunk * ${u32Literal(nc)} + c) * ${u32Literal(layout.ns)} + s${r}`;
  for (let r = 0; r < perLane; r++) {
    let h0 = "0.0";
    if (mode === "single" && scan.init) h0 = pre.emit(scan.init, { ...ch.env, ...st.envs[r] });
    if (mode === "final") h0 = `${carryName}[${carryIdx(r)}]`;
    init.push(`var h${r}: f32 = ${h0};`);
    if (mode === "local") init.push(`var p${r}: f32 = 1.0;`);
  }

  // Each loop iteration runs `unroll` steps; step u of iteration i is step i·unroll + u of
  // the chunk, forward or reverse. Steps past the end (of the chunk or the sequence) keep the
  // state (decay 1, input 0), read clamped indices and store nothing.
  const unroll = layout.unroll;
  const iterations = Math.ceil(chunkLen / unroll);
  const partial = chunks * chunkLen !== len || iterations * unroll !== chunkLen;
  const start = chunks === 1 ? "" : `chunk * ${u32Literal(chunkLen)} + `;
  const transposed = layout.transpose;
  /** Step positions of block `block` (a u32 expression), names suffixed with `sfx`. */
  const stepHeads = (block: string, sfx: string): string[] => {
    const lines: string[] = [];
    const position = (k: string) => {
      const within = scan.reverse ? `${u32Literal(chunkLen - 1)} - (${k})` : `(${k})`;
      return `${start}${within}`;
    };
    const head = (tt: string, t: string, k: string) => {
      lines.push(`let ${tt}${sfx} = ${position(k)};`);
      lines.push(
        partial
          ? `let ${t}${sfx} = min(${tt}${sfx}, ${u32Literal(len - 1)});`
          : `let ${t}${sfx} = ${tt}${sfx};`,
      );
    };
    const scaled = unroll === 1 ? block : `${block} * ${u32Literal(unroll)}`;
    for (let u = 0; u < unroll; u++) {
      head(`tt${u}`, `t${u}`, unroll === 1 ? block : `${scaled} + ${u32Literal(u)}`);
    }
    if (transposed) head("tta", "ta", `${scaled} + j`);
    return lines;
  };
  const stateAxes = new Set(spec.stateAxes);
  const prefetch = new Prefetcher({
    mode: layout.prefetch,
    steps: /\b(tt?\d+|tt?a)\b/,
    loopVar: LOOP_VARIABLE,
    stateVar: stateIndex,
    depth: layout.prefetchDepth,
    stateLoads: layout.stateLoads,
    stageable: (load) => !varyingChannel.test(load),
    stagedRead: (k) => `sk_stage[skc + ${u32Literal(k * lanes)} + j]`,
  });
  const tools: LoopTools = {
    math,
    prefetch,
    vectors,
    lookup: registry.lookup,
    buffered: registry.buffered,
    // A load's channel part of its offset is computed once, before the loop.
    offset: invariantOffsets(pre, LOOP_VARIABLE, stateIndex),
    fold: layout.foldLog2e ? new Log2eFold(pre, LOOP_VARIABLE) : undefined,
  };
  const loop = new ExprEmitter(registry.lookup, "v").hoistTo(pre, LOOP_VARIABLES);
  // Lane-transposed mode: phase A evaluates, on lane j, state-independent values at step j of
  // the block; steps read them with a shuffle from the lane that owns that step.
  const phaseA = new ExprEmitter(registry.lookup, "a").hoistTo(pre, LOOP_VARIABLES);
  interceptLoop(phaseA, tools);
  let currentStep = 0;
  const broadcast = transposed && layout.broadcast === "staged"
    ? new StagedBroadcast(lanes, layout.workgroup)
    : undefined;
  const redirect = (node: Node, env: Env): string | undefined => {
    if (!transposed) return undefined;
    if (node.kind === "const" || node.axes.some((a) => stateAxes.has(a))) return undefined;
    // A node read at a state-dependent index (e.g. B sliced out of a wider tensor) differs
    // between lanes: it cannot come from another lane.
    if (node.axes.some((a) => stateIndex.test(env[a]))) return undefined;
    const mine = new RegExp(`\\bt${currentStep}\\b`);
    const values = node.axes.map((a) => env[a]);
    // Only values whose step dependence is this step's position can be moved to phase A.
    const other = values.some((v) => LOOP_VARIABLE.test(v.replace(new RegExp(mine, "g"), "")));
    if (other || !values.some((v) => mine.test(v))) return undefined;
    const envA: Record<string, string> = {};
    for (const a of node.axes) envA[a] = env[a].replace(new RegExp(mine, "g"), "ta");
    const value = phaseA.emit(node, envA);
    if (broadcast) return broadcast.read(value, currentStep, loop.lines);
    return `subgroupShuffle(${value}, lane0 + ${u32Literal(currentStep)})`;
  };
  // A short unchunked scan computes the values its workgroup's channels share (B and C behind
  // a conv) once per workgroup, before the loop (scan_shared_prologue.ts).
  const shared = mode === "single" && chunks === 1 && !transposed && perGroup >= 2 &&
      layout.sharedPrologue !== false
    ? new SharedPrologue({
      steps: len,
      stateAxes: spec.stateAxes,
      stateSizes: spec.stateAxes.map((a) => sizeOf(scan, a)),
      workgroup: layout.workgroup,
      channelVariables: Object.values(ch.env),
      varyingChannel,
      buffered: registry.buffered,
      lookup: registry.lookup,
      math,
      maxBytes: SHARED_PROLOGUE_BYTES,
    })
    : undefined;
  interceptLoop(loop, tools, (node, env) => redirect(node, env) ?? shared?.read(node, env));
  // A short contraction inline in the step (Mamba's dt projection, 48 terms) is the same in all
  // of a channel's lanes: each sums a share and shuffles add them up.
  if (!transposed) {
    loop.splitContractions(
      lanes,
      "j",
      (node, env) => !node.axes.some((a) => stateIndex.test(env[a])),
    );
  }
  const steps: string[] = [];
  const partials: string[][] = spec.outputs.map(() => []);
  for (let u = 0; u < unroll; u++) {
    currentStep = u;
    const t = `t${u}`, live = `live${u}`;
    const head: string[] = [];
    if (partial) {
      const k = unroll === 1 ? "i" : `i * ${u32Literal(unroll)} + ${u32Literal(u)}`;
      const inChunk = iterations * unroll !== chunkLen
        ? ` && (${k}) < ${u32Literal(chunkLen)}`
        : "";
      head.push(`let ${live} = tt${u} < ${u32Literal(len)}${inChunk};`);
    }
    const mark = loop.lines.length;
    const step = stateUpdates(loop, spec, lane, t, partial ? live : undefined);
    // The local pass also multiplies up each state's decay over its chunk.
    const updates = step.lines.flatMap((line, r) =>
      mode === "local" ? [line, `p${r} = p${r} * ${step.decays[r]};`] : [line]
    );
    const stores: string[] = [];
    if (mode !== "local") {
      spec.outputs.forEach((o, k) => {
        const outEnv = { ...ch.env, [scan.axis]: t };
        const guard = [
          ...(overshoot ? ["valid"] : []),
          ...(lanes > 1 ? ["j == 0u"] : []),
          ...(partial ? [live] : []),
        ];
        let value = "h0";
        let core: Node = scan;
        if (o.contract) {
          value = `y${k}s${u}`;
          core = o.contract;
          stores.push(`var ${value}: f32 = ${contractionPart(loop, spec, lane, o.contract, t)};`);
          if (transposed) {
            partials[k].push(value);
            return;
          }
          // Sum over the lanes of this channel (a butterfly inside each group of lanes).
          for (let m = lanes / 2; m >= 1; m /= 2) {
            stores.push(`${value} = ${value} + subgroupShuffleXor(${value}, ${m}u);`);
          }
        }
        const earlier = earlierOutputs(spec, k, outEnv, (j) => `y${j}s${u}`);
        const epi = interceptLoop(loop.fork(`e${k}s${u}_`, { node: core, value }), tools, earlier);
        const v = epi.emit(storeViews(o.root).base, outEnv);
        stores.push(...guarded(guard, [
          ...epi.lines,
          `${registry.writeName(k)}[${offsetExpr(o.root, storeEnv(o.root, outEnv))}] = ${v};`,
        ]));
      });
    }
    steps.push(...head, ...loop.lines.splice(mark), ...updates, ...stores);
  }
  if (transposed) {
    // Lane j's own step: its liveness, and the values phase A computes there.
    const headA: string[] = [];
    if (partial) {
      const k = `i * ${u32Literal(unroll)} + j`;
      const inChunk = iterations * unroll !== chunkLen
        ? ` && (${k}) < ${u32Literal(chunkLen)}`
        : "";
      headA.push(`let livea = tta < ${u32Literal(len)}${inChunk};`);
    }
    const stores: string[] = [];
    if (mode !== "local") {
      const sums: string[] = [];
      spec.outputs.forEach((o, k) => {
        const y = reduceScatter(partials[k], lanes, `r${k}_`, stores);
        sums.push(y);
        const outEnv = { ...ch.env, [scan.axis]: "ta" };
        const earlier = earlierOutputs(spec, k, outEnv, (j) => sums[j]);
        const epi = interceptLoop(
          phaseA.fork(`e${k}_`, { node: o.contract!, value: y }),
          tools,
          earlier,
        );
        const v = epi.emit(storeViews(o.root).base, outEnv);
        const guard = [...(overshoot ? ["valid"] : []), ...(partial ? ["livea"] : [])];
        stores.push(...guarded(guard, [
          ...epi.lines,
          `${registry.writeName(k)}[${offsetExpr(o.root, storeEnv(o.root, outEnv))}] = ${v};`,
        ]));
      });
    }
    steps.unshift(...headA, ...phaseA.lines);
    steps.push(...stores);
  }
  // The body: step positions, the later blocks' prefetched loads, the steps, the rotation.
  // Block k ahead of the loop has step names suffixed _k; inside it, block i + d has _n(d).
  const body = [...stepHeads("i", ""), ...steps];
  const before: string[] = [];
  const header: string[] = [];
  const declarations: string[] = [];
  if (prefetch.size > 0) {
    const depths = prefetch.depths;
    const ahead = (d: number) => (d === 1 ? "" : `${d}`);
    for (let k = 0; k < depths[depths.length - 1]; k++) {
      before.push(...stepHeads(u32Literal(Math.min(k, iterations - 1)), `_${k}`));
    }
    before.push(...prefetch.declare((k) => `_${k}`));
    const staging = stagingCode(
      layout,
      prefetch,
      (lane, prefix) => stateLanes(spec, layout, lane, prefix).lines,
    );
    if (layout.stateLoads === "staged" && staging.tile === 0) {
      throw new Error(
        `scan: stateLoads "staged": no per-state load has the same value in all ${perGroup} ` +
          `channels of a workgroup (they vary through ${varying.join(", ") || "the state"})`,
      );
    }
    const sharedBytes = staging.bytes + (broadcast?.bytes ?? 0) + (shared?.bytes ?? 0);
    if (sharedBytes > limits.maxComputeWorkgroupStorageSize) {
      if (shared && shared.count > 0) {
        // Without the shared prologue's array the staging may fit.
        const own = { ...layout, sharedPrologue: false };
        return emitPass(spec, own, mode, materialized, limits, name, aliases, scratchBuffers);
      }
      throw new Error(
        `scan: staging needs ${sharedBytes} bytes of workgroup memory (state loads ` +
          `${staging.bytes}, broadcasts ${broadcast?.bytes ?? 0}); the device allows ` +
          `${limits.maxComputeWorkgroupStorageSize}`,
      );
    }
    header.push(...staging.invariant);
    before.push(...staging.fill("_0", "skv"), ...staging.store("skv", "0u"));
    body.unshift(
      ...depths.flatMap((d) => [
        `let inx${ahead(d)} = min(i + ${u32Literal(d)}, ${u32Literal(iterations - 1)});`,
        ...stepHeads(`inx${ahead(d)}`, `_n${ahead(d)}`),
      ]),
      ...prefetch.next((d) => `_n${ahead(d)}`),
      ...staging.fill("_n", "skn"),
      ...(staging.tile > 0 ? [`let skc = (i % 2u) * ${u32Literal(staging.tile)};`] : []),
    );
    body.push(...prefetch.next((d) => `_n${ahead(d)}`, true), ...prefetch.rotate());
    // broadcast "staged": after the rotation the registers hold block i + 1, so phase A is
    // evaluated again on them and stored for the next iteration (block 0's before the loop).
    const slots = broadcast?.slots ?? 0;
    if (broadcast && slots > 0) {
      if (!depths.includes(1)) throw new Error("internal: broadcast staged needs depth-1 steps");
      header.push(...broadcast.header());
      before.push(...broadcast.ahead(phaseA.lines, "ap", "0u", "_0"));
      body.unshift(`let phc = (i % 2u) * ${u32Literal(slots)};`);
      body.push(
        ...broadcast.ahead(phaseA.lines, "an", `((i + 1u) % 2u) * ${u32Literal(slots)}`, "_n"),
      );
      declarations.push(broadcast.declaration());
    }
    if (staging.tile > 0) {
      body.push(...staging.store("skn", `((i + 1u) % 2u) * ${u32Literal(staging.tile)}`));
    }
    if (staging.tile > 0 || slots > 0) body.push("workgroupBarrier();");
    if (staging.declaration) declarations.push(staging.declaration);
    if (staging.tile > 0 || slots > 0) before.push("workgroupBarrier();");
  } else if (broadcast && broadcast.count > 0) {
    throw new Error(`scan: broadcast "staged": the step values' loads cannot be prefetched`);
  }
  if (shared && shared.count > 0) {
    declarations.push(shared.declaration());
    before.push(...shared.fill());
  }
  const stagedCount = prefetch.staged.length;
  const broadcastCount = broadcast?.count ?? 0;
  const tail: string[] = [];
  if (mode === "single") {
    tail.push(...finalStores(spec, registry, lane));
  }
  if (mode === "local") {
    for (let r = 0; r < perLane; r++) {
      const cond = st.owned[r] ? "valid" : `valid && own${r}`;
      tail.push(
        `if (${cond}) { ${registry.writeName(0)}[${carryIdx(r)}] = h${r}; ` +
          `${registry.writeName(1)}[${carryIdx(r)}] = p${r}; }`,
      );
    }
  }
  if (registry.conflict) {
    // A vector-bound tensor was also read through a plain binding (e.g. inside an inlined
    // contraction): emit the pass again with scalar loads.
    const scalar = { ...layout, vectorWidth: 1 };
    return emitPass(spec, scalar, mode, materialized, limits, name, aliases, scratchBuffers);
  }
  registry.checkLimit(spec.outputs[0]?.root ?? scan, limits.maxStorageBuffersPerShaderStage);
  const wgsl = `// ${name}: scan over ${scan.axis} (${len}${scan.reverse ? ", reverse" : ""}), ` +
    `${nc} channels × ${layout.ns} states, ${lanes} lane(s)/channel, ${chunks} chunk(s), ` +
    `unroll ${layout.unroll}, prefetch ${layout.prefetch} (${prefetch.size}` +
    `${layout.prefetchDepth > 1 ? `, depth ${layout.prefetchDepth}` : ""}` +
    `${layout.stateLoads !== "early" ? `, state loads ${layout.stateLoads}` : ""}` +
    `${stagedCount > 0 ? ` (${stagedCount})` : ""}), math ${math}` +
    `${layout.foldLog2e ? " (log2e folded)" : ""}, ` +
    `${shared && shared.count > 0 ? `shared prologue (${shared.count}), ` : ""}` +
    `${broadcastCount > 0 ? `broadcast staged (${broadcastCount}), ` : ""}` +
    `workgroup ${layout.workgroup}, ` +
    `vector ${layout.vectorWidth}${layout.vectorIndex === "split" ? " (split index)" : ""}, ${mode}
${registry.declarations()}
${vectors?.declarations() ?? ""}
${declarations.join("\n")}
${MATH_PRELUDE}${math === "prelude" ? "" : SCAN_MATH_PRELUDE}
@compute @workgroup_size(${layout.workgroup})
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,${
      transposed ? "\n  @builtin(subgroup_invocation_id) sgid: u32," : ""
    }
) {
  ${[...headerLines(layout, workgroups[0]), ...ch.lines, ...st.lines].join("\n  ")}
  ${transposed ? "let lane0 = sgid - j;" : ""}
  ${[...pre.lines, ...init, ...header, ...before].join("\n  ")}
  for (var i: u32 = 0u; i < ${u32Literal(iterations)}; i++) {
    ${body.join("\n    ")}
  }
  ${tail.join("\n  ")}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** The short recurrence over chunk states; it also writes the final-state outputs. */
function emitCarry(
  spec: ScanSpec,
  layout: Layout,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  hEnd: BufferKey,
  prod: BufferKey,
  carryIn: BufferKey,
): KernelArtifact {
  const { scan } = spec;
  const { nc, ns, chunks } = layout;
  const registry = new BindingRegistry(materialized, [carryIn, ...spec.finals], aliases);
  const hName = registry.read(hEnd);
  const pName = registry.read(prod);
  const total = nc * ns;
  const workgroups = foldWorkgroups(
    Math.ceil(total / DEFAULT_WORKGROUP),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const ch = decodeIndex(
    "c",
    spec.channelAxes,
    spec.channelAxes.map((a) => sizeOf(scan, a)),
    "ch_",
  );
  const st = decodeIndex("s", spec.stateAxes, spec.stateAxes.map((a) => sizeOf(scan, a)), "st_");
  const em = new ExprEmitter(registry.lookup, "q");
  const env = { ...ch.env, ...st.env };
  const init = scan.init ? em.emit(scan.init, env) : "0.0";
  const finals = spec.finals.map((f, k) =>
    `${registry.writeName(k + 1)}[${offsetExpr(f, env)}] = carry;`
  );
  registry.checkLimit(scan, limits.maxStorageBuffersPerShaderStage);
  const order = scan.reverse ? `${u32Literal(chunks - 1)} - i` : "i";
  const wgsl = `// ${name}: carry pass over ${chunks} chunks of the scan over ${scan.axis}
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${DEFAULT_WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${DEFAULT_WORKGROUP}u + lid;
  if (e >= ${u32Literal(total)}) { return; }
  let c = e / ${u32Literal(ns)};
  let s = e % ${u32Literal(ns)};
  ${[...ch.lines, ...st.lines, ...em.lines].join("\n  ")}
  var carry: f32 = ${init};
  for (var i: u32 = 0u; i < ${u32Literal(chunks)}; i++) {
    let idx = ((${order}) * ${u32Literal(nc)} + c) * ${u32Literal(ns)} + s;
    out[idx] = carry;
    carry = ${pName}[idx] * carry + ${hName}[idx];
  }
  ${finals.join("\n  ")}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** A scan whose state must be materialized (other consumers): every element is a channel. */
export function emitMaterializedScan(
  root: Node,
  scan: ScanNode,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanStrategy = {},
): KernelArtifact[] {
  checkIndexable(root);
  if (numel(root) !== numel(scan)) throw new Error("internal: scan epilogue changes the shape");
  const spec: ScanSpec = {
    scan,
    stateAxes: [],
    channelAxes: scan.axes.filter((a) => a !== scan.axis),
    outputs: [{ root }],
    finals: [],
  };
  return emitScanKernels(spec, materialized, limits, name, aliases, { ...force, lanes: 1 });
}
