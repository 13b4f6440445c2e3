/**
 * The scan-backward kernels ({@link ./scan_backward_plan.ts}): a primal scan h and its adjoint
 * g computed together without either state in memory.
 *
 * 1. `_ckpt`: one thread per (channel, state element) runs h and writes the state entering
 *    each chunk of T steps (K·channels·states floats).
 * 2. `_bwd`: one thread per channel, states in private arrays. Chunks in g's order: load the
 *    chunk's checkpoint, recompute its T states of h into `hist` (slot 0 … T, the checkpoint
 *    at h's start end), then walk the chunk in g's direction: update g, evaluate every root.
 *    Sums over state axes run in the thread; a summed scan axis accumulates in registers;
 *    channel axes summed per step are reduced in the workgroup (segments of threads with one
 *    kept index, a fixed-order loop) and written as per-workgroup partials, those summed at
 *    the end as per-thread partials.
 * 3. `_sum<k>`: per output element, the partials in a fixed order, then the epilogue.
 *
 * Roots a `_bwd` kernel writes are recomputed where other roots read them (their values in
 * the thread are the same). When the roots need more buffers than the device binds, they are
 * split over several `_bwd` kernels, each walking the scan again.
 *
 * @module
 */

import type { ContractNode, Node, ReduceNode, ScanNode } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import {
  BindingRegistry,
  type BufferKey,
  checkIndexable,
  foldWorkgroups,
  type KernelArtifact,
  scratch,
  type ScratchBuffer,
  TooManyBindingsError,
} from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter, type Intercepted, offsetExpr } from "./expr.ts";
import type { DeviceLimits } from "./limits.ts";
import { type BackwardRoot, reachesVia, type ScanBackwardGroup } from "./scan_backward_plan.ts";
import { emitTuned } from "./tuning.ts";
import { MATH_PRELUDE, u32Literal } from "./wgsl_math.ts";

/** Knobs of the scan-backward kernels (tests force them). */
export interface ScanBackwardStrategy {
  /** Steps per checkpointed chunk (default 16). */
  chunk?: number;
  /**
   * Channels per workgroup of the backward pass (64 when emitted directly;
   * {@link emitTunedScanBackward} picks fewer for scans with few channels).
   */
  workgroup?: number;
  /**
   * Threads per channel (default 1): each owns every `lanes`-th index of one state axis (the
   * largest whose size `lanes` divides), so a walk over few channels still fills the GPU; sums
   * over that axis are combined across the lanes through workgroup memory in a fixed order.
   * A power of two; a group whose reads of h or g the lanes cannot own keeps one lane.
   */
  lanes?: number;
}

const WG_CKPT = 64;

/** A read of h or g at a state index the reading lane does not own (lanes fall back to 1). */
class LaneOwnershipError extends Error {
  constructor() {
    super("scan backward: a read of the state at an index another lane owns");
  }
}

/** A walk whose per-step channel sums need more workgroup memory than the device has. */
class SharedMemoryError extends Error {
  constructor(bytes: number) {
    super(`scan backward: per-step channel sums need ${bytes} bytes of workgroup memory`);
  }
}

/** Sizes and names shared by the kernels of one group. */
interface Shape {
  readonly h: ScanNode;
  readonly g: ScanNode;
  readonly len: number;
  readonly nc: number;
  readonly ns: number;
  readonly chunk: number;
  readonly chunks: number;
  /** Channels per workgroup. */
  readonly workgroup: number;
  /** Threads per channel, each owning every `lanes`-th index of `laneAxis`. */
  readonly lanes: number;
  readonly laneAxis: string;
  readonly stateShape: number[];
  readonly channelShape: number[];
}

function sizeIn(n: Node, a: string): number {
  return n.shape[n.axes.indexOf(a)];
}

function prod(xs: readonly number[]): number {
  return xs.reduce((p, x) => p * x, 1);
}

/** The row-major index over `axes` (sizes `shape`) at `env`. */
function flatIndex(axes: readonly string[], shape: readonly number[], env: Env): string {
  if (axes.length === 0) return "0u";
  return offsetExpr({ axes, shape } as unknown as Node, env);
}

/** A root's reduction, split by what sums it. */
interface Reduction {
  readonly root: Node;
  readonly core: ContractNode | ReduceNode;
  readonly keptStates: string[];
  readonly summedStates: string[];
  readonly summedChannels: string[];
  readonly perStep: boolean;
  /** Partials and their slot count, when channel axes are summed. */
  readonly partials?: ScratchBuffer;
  readonly slots: number;
}

/** Emits the kernels of a scan-backward group. */
export function emitScanBackward(
  group: ScanBackwardGroup,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanBackwardStrategy = {},
): KernelArtifact[] {
  const h = group.primal;
  const g = group.adjoint;
  checkIndexable(h);
  const len = sizeIn(h, h.axis);
  const chunk = Math.max(1, Math.min(force.chunk ?? 16, len));
  const stateShape = group.stateAxes.map((a) => sizeIn(h, a));
  const channelShape = group.channelAxes.map((a) => sizeIn(h, a));
  // One root's per-step channel sums (a value per kept state and thread) must fit workgroup
  // memory; roots are split over kernels beyond that.
  const keptMost = Math.max(
    1,
    ...group.roots.map((r) =>
      r.form === "reduce" && r.core!.axes.includes(h.axis)
        ? prod(group.stateAxes.filter((a) => r.core!.axes.includes(a)).map((a) => sizeIn(h, a)))
        : 1
    ),
  );
  const lanePlan = laneAxisFor(group, force.lanes ?? 1);
  const lanes = lanePlan.lanes;
  let workgroup = Math.min(
    force.workgroup ?? 64,
    Math.floor(limits.maxComputeInvocationsPerWorkgroup / lanes),
  );
  const sharedBytes = (w: number) => (keptMost * w + (lanes > 1 ? w * lanes : 0)) * 4;
  while (workgroup > 1 && sharedBytes(workgroup) > limits.maxComputeWorkgroupStorageSize) {
    workgroup /= 2;
  }
  const shape: Shape = {
    h,
    g,
    len,
    nc: prod(channelShape),
    ns: prod(stateShape),
    chunk,
    chunks: Math.ceil(len / chunk),
    workgroup,
    lanes,
    laneAxis: lanePlan.axis,
    stateShape,
    channelShape,
  };
  const reductions = new Map<BackwardRoot, Reduction>();
  group.roots.forEach((r, k) => {
    if (r.form !== "reduce") return;
    const core = r.core!;
    const summed = core.kind === "contract" ? core.summed : core.over;
    const summedChannels = group.channelAxes.filter((a) => !core.axes.includes(a));
    const perStep = core.axes.includes(h.axis);
    const s = prod(summedChannels.map((a) => sizeIn(h, a)));
    const slots = summedChannels.length === 0 ? 0 : perStep ? Math.ceil(s / workgroup) + 1 : s;
    reductions.set(r, {
      root: r.root,
      core,
      keptStates: group.stateAxes.filter((a) => core.axes.includes(a)),
      summedStates: group.stateAxes.filter((a) => summed.includes(a)),
      summedChannels,
      perStep,
      slots,
      partials: slots > 0 ? scratch(`${name}_partials${k}`, slots * numel(core)) : undefined,
    });
  });
  if (lanes > 1) {
    try {
      return emitGroup(group, shape, reductions, materialized, limits, name, aliases);
    } catch (e) {
      if (!(e instanceof LaneOwnershipError)) throw e;
      return emitScanBackward(group, materialized, limits, name, aliases, { ...force, lanes: 1 });
    }
  }
  return emitGroup(group, shape, reductions, materialized, limits, name, aliases);
}

/**
 * The lane axis for `lanes` threads per channel: the largest state axis `lanes` divides (the
 * first on ties); one lane when none does or there are no state axes.
 */
function laneAxisFor(group: ScanBackwardGroup, lanes: number): { lanes: number; axis: string } {
  if (lanes <= 1) return { lanes: 1, axis: "" };
  if ((lanes & (lanes - 1)) !== 0) {
    throw new Error(`scan backward: lanes ${lanes} is not a power of two`);
  }
  let best = "";
  for (const a of group.stateAxes) {
    const n = sizeIn(group.primal, a);
    if (n % lanes === 0 && (best === "" || n > sizeIn(group.primal, best))) best = a;
  }
  return best === "" ? { lanes: 1, axis: "" } : { lanes, axis: best };
}

/** The checkpoint, walk and partial-sum kernels of a group, for one shape. */
function emitGroup(
  group: ScanBackwardGroup,
  shape: Shape,
  reductions: Map<BackwardRoot, Reduction>,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact[] {
  const ckpt = scratch(`${name}_checkpoints`, shape.chunks * shape.nc * shape.ns);
  const out: KernelArtifact[] = [
    emitCheckpoints(group, shape, materialized, limits, `${name}_ckpt`, ckpt),
  ];
  const emitSome = (roots: readonly BackwardRoot[], part: string): void => {
    try {
      out.push(
        emitWalk(
          group,
          shape,
          roots,
          reductions,
          materialized,
          limits,
          `${name}_bwd${part}`,
          aliases,
          ckpt,
        ),
      );
    } catch (e) {
      const splittable = e instanceof TooManyBindingsError || e instanceof SharedMemoryError;
      if (!splittable || roots.length < 2) throw e;
      const half = Math.ceil(roots.length / 2);
      emitSome(roots.slice(0, half), `${part}a`);
      emitSome(roots.slice(half), `${part}b`);
    }
  };
  emitSome(group.roots, "");
  let k = 0;
  for (const red of reductions.values()) {
    if (red.partials) {
      out.push(emitPartialSum(shape, red, materialized, limits, `${name}_sum${k++}`, aliases));
    }
  }
  return out;
}

/** The forward pass writing the state entering each chunk. */
function emitCheckpoints(
  group: ScanBackwardGroup,
  shape: Shape,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  ckpt: BufferKey,
): KernelArtifact {
  const { h, nc, ns, chunk, chunks, len } = shape;
  const registry = new BindingRegistry(materialized, [ckpt]);
  const total = nc * ns;
  const workgroups = foldWorkgroups(
    Math.ceil(total / WG_CKPT),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const ch = decodeIndex("c", group.channelAxes, shape.channelShape, "ch_");
  const st = decodeIndex("s", group.stateAxes, shape.stateShape, "st_");
  const pre = new ExprEmitter(registry.lookup, "q");
  const env = { ...ch.env, ...st.env };
  const init = h.init ? pre.emit(h.init, env) : "0.0";
  const step = new ExprEmitter(registry.lookup, "w");
  const stepEnv = { ...env, [h.axis]: "t" };
  const a = step.emit(h.decay, stepEnv);
  const u = step.emit(h.input, stepEnv);
  const order = h.reverse ? `${u32Literal(chunks - 1)} - kk` : "kk";
  const t = h.reverse ? `c0 + lenk - 1u - j` : `c0 + j`;
  registry.checkLimit(group.roots[0].root, limits.maxStorageBuffersPerShaderStage);
  const wgsl = `// ${name}: checkpoints of the scan over ${h.axis} (${len}${
    h.reverse ? ", reverse" : ""
  }) every ${chunk} steps, ${nc} channels × ${ns} states
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${WG_CKPT})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${WG_CKPT}u + lid;
  if (e >= ${u32Literal(total)}) { return; }
  let c = e / ${u32Literal(ns)};
  let s = e % ${u32Literal(ns)};
  ${[...ch.lines, ...st.lines, ...pre.lines].join("\n  ")}
  var hv: f32 = ${init};
  for (var kk: u32 = 0u; kk < ${u32Literal(chunks)}; kk++) {
    let ck = ${order};
    let c0 = ck * ${u32Literal(chunk)};
    let lenk = min(${u32Literal(chunk)}, ${u32Literal(len)} - c0);
    out[(ck * ${u32Literal(nc)} + c) * ${u32Literal(ns)} + s] = hv;
    for (var j: u32 = 0u; j < lenk; j++) {
      let t = ${t};
      ${step.lines.join("\n      ")}
      hv = ${a} * hv + ${u};
    }
  }
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** The backward walk writing `roots` (direct values and partials). */
function emitWalk(
  group: ScanBackwardGroup,
  shape: Shape,
  roots: readonly BackwardRoot[],
  reductions: ReadonlyMap<BackwardRoot, Reduction>,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  ckpt: BufferKey,
): KernelArtifact {
  const { h, g, nc, ns, chunk, chunks, len, workgroup, lanes, laneAxis } = shape;
  const threads = workgroup * lanes;
  // A thread holds the states whose lane-axis index is its lane modulo `lanes`.
  const localShape = group.stateAxes.map((a, i) =>
    a === laneAxis ? shape.stateShape[i] / lanes : shape.stateShape[i]
  );
  const nsl = ns / lanes;
  const splits = (axes: readonly string[]) => lanes > 1 && axes.includes(laneAxis);
  /** The names of lane-axis indices the thread owns (loop indices of its lane). */
  const owned = new Set<string>();
  // Direct outputs, then partials.
  const writes: BufferKey[] = [];
  const writeOf = new Map<Node | ScratchBuffer, string>();
  for (const r of roots) {
    const red = reductions.get(r);
    const key: BufferKey = red?.partials ?? r.root;
    writeOf.set(key, "");
    writes.push(key);
  }
  const registry = new BindingRegistry(materialized, writes, aliases);
  writes.forEach((w, i) => writeOf.set(w, registry.writeName(i)));
  const ckptName = registry.read(ckpt);
  // Every root of the group is recomputed where another reads it (not loaded: it may not
  // have been written yet).
  const groupRoots = new Set(group.roots.map((r) => r.root));
  const lookup = (n: Node) => (groupRoots.has(n) ? undefined : registry.lookup(n));
  // Probing must not register bindings: only what is emitted is read.
  const stop = (n: Node) => materialized.has(n) && !groupRoots.has(n);
  const reaches = reachesVia(h, g, stop);
  let counter = 0;
  const fresh = () => `x${counter++}_`;
  /** The thread's slot of the state at `env` (which must be its own). */
  const stateIdx = (env: Env) => {
    if (lanes === 1) return flatIndex(group.stateAxes, shape.stateShape, env);
    const x = env[laneAxis];
    if (!owned.has(x)) throw new LaneOwnershipError();
    return flatIndex(group.stateAxes, localShape, { ...env, [laneAxis]: `(${x} / ${lanes}u)` });
  };
  const slotOf = (idx: string) =>
    h.reverse
      ? `min((${idx}) - c0, ${u32Literal(chunk)})`
      : `min((${idx}) + 1u - c0, ${u32Literal(chunk)})`;
  /**
   * An emitter whose h, g and in-thread state sums come from this kernel; with `hoist`, values
   * whose indices avoid `hoist.loop` (a loop's variables) and this emitter's own lets go to
   * `hoist.to`, emitted before the loop.
   */
  const emitter = (
    core?: { node: Node; value: string },
    hoist?: { to: ExprEmitter; loop: readonly string[] },
  ): ExprEmitter => {
    const prefix = fresh();
    const em = new ExprEmitter(lookup, prefix, core);
    if (hoist) em.hoistTo(hoist.to, [...hoist.loop, `${prefix}\\d+`]);
    em.interceptWith((node, env): Intercepted => {
      if (node === g) return `gs[${stateIdx(env)}]`;
      if (node === h) return `hist[${slotOf(env[h.axis])} * ${u32Literal(nsl)} + ${stateIdx(env)}]`;
      if ((node.kind === "contract" || node.kind === "reduce") && reaches(node)) {
        const summed = node.kind === "contract" ? node.summed : node.over;
        const operand = node.kind === "contract" ? node.a : node.x;
        const sizes = summed.map((a) =>
          sizeIn(operand.axes.includes(a) ? operand : (node as ContractNode).b, a)
        );
        return sumLoop(
          em,
          summed,
          sizes,
          env,
          (body, inner) =>
            node.kind === "contract"
              ? `${body.emit(node.a, inner)} * ${body.emit(node.b, inner)}`
              : body.emit(node.x, inner),
        );
      }
      return undefined;
    });
    return em;
  };
  /**
   * Decodes loop index `k` over `axes`; with `split`, over the thread's own lane-axis indices
   * (`count` iterations), the lane-axis index named so the state reads can check ownership.
   */
  const laneDecode = (
    k: string,
    axes: readonly string[],
    sizes: readonly number[],
    prefix: string,
    split: boolean,
  ) => {
    const local = axes.map((a, i) => (split && a === laneAxis ? sizes[i] / lanes : sizes[i]));
    const decoded = decodeIndex(k, axes, local, prefix);
    if (split) {
      const own = `${decoded.env[laneAxis]}_own`;
      decoded.lines.push(`let ${own}: u32 = lane + ${lanes}u * ${decoded.env[laneAxis]};`);
      decoded.env[laneAxis] = own;
      owned.add(own);
    }
    return { ...decoded, count: prod(local) };
  };
  /** Σ over `axes` of `term`, as a loop whose lines go to `em`; the accumulator's name. */
  const sumLoop = (
    em: ExprEmitter,
    axes: readonly string[],
    sizes: readonly number[],
    env: Env,
    term: (body: ExprEmitter, inner: Env) => string,
  ): string => {
    const id = fresh();
    const acc = `${id}acc`;
    if (axes.length === 0) {
      const v = term(em, env);
      em.lines.push(`let ${acc} = ${v};`);
      return acc;
    }
    const k = `${id}k`;
    const split = splits(axes);
    const decoded = laneDecode(k, axes, sizes, `${id}i_`, split);
    // Values that do not depend on the summed index are computed once, before the loop.
    const body = emitter(undefined, { to: em, loop: [k, `${id}i_\\w+`] });
    const v = term(body, { ...env, ...decoded.env });
    em.lines.push(
      `var ${acc}: f32 = 0.0;`,
      `for (var ${k}: u32 = 0u; ${k} < ${u32Literal(decoded.count)}; ${k}++) {`,
      ...[...decoded.lines, ...body.lines, `${acc} += ${v};`].map((l) => `  ${l}`),
      `}`,
    );
    if (!split) return acc;
    // The lanes' partial sums, added in lane order by every lane (all get the same value).
    const all = `${id}all`;
    const terms = Array.from({ length: lanes }, (_, q) => `xch[lid - lane + ${q}u]`);
    em.lines.push(
      `xch[lid] = ${acc};`,
      `workgroupBarrier();`,
      `let ${all}: f32 = ${terms.join(" + ")};`,
      `workgroupBarrier();`,
    );
    return all;
  };
  /** A loop over `axes` (state axes kept by a root) around `body`. */
  // `inner()` gives the body an emitter that computes the values not depending on the loop's
  // index once, before the loop: a walk step's per-channel values (softplus of Δ, the conv,
  // gates) would otherwise be recomputed, loads and all, for every state.
  // With `shared`, those values go to that emitter instead (its lines are the caller's to
  // place), so loops of one walk step share them.
  // With lanes, a loop over axes holding the lane axis visits the thread's own indices: `flat`
  // counts them (a slot of the thread's arrays), `whole` is the index among all of them.
  const forEach = (
    axes: readonly string[],
    body: (env: Env, flat: string, inner: () => ExprEmitter, whole: string) => string[],
    shared?: ExprEmitter,
    mine = true,
  ): string[] => {
    const id = fresh();
    const k = `${id}k`;
    const sizes = axes.map((a) => sizeIn(h, a));
    const split = mine && splits(axes);
    const decoded = laneDecode(k, axes, sizes, `${id}i_`, split);
    const pre = shared ?? emitter();
    const inner = () => emitter(undefined, { to: pre, loop: [k, `${id}i_\\w+`] });
    const whole = split ? flatIndex(axes, sizes, decoded.env) : k;
    const lines = body(decoded.env, k, inner, whole);
    return [
      ...(shared ? [] : pre.lines),
      `for (var ${k}: u32 = 0u; ${k} < ${u32Literal(decoded.count)}; ${k}++) {`,
      ...[...decoded.lines, ...lines].map((l) => `  ${l}`),
      `}`,
    ];
  };

  const ch = decodeIndex("c", group.channelAxes, shape.channelShape, "ch_");
  const stepEnv: Env = { ...ch.env, [h.axis]: "t" };
  // Recompute the chunk's states of h into hist.
  const hEnv = { ...stepEnv };
  const recompute = forEach(group.stateAxes, (env, s, inner) => {
    const em = inner();
    const a = em.emit(h.decay, { ...hEnv, ...env });
    const u = em.emit(h.input, { ...hEnv, ...env });
    const [to, from] = h.reverse ? ["j", "j + 1u"] : ["j + 1u", "j"];
    return [
      ...em.lines,
      `hist[(${to}) * ${u32Literal(nsl)} + ${s}] = ${a} * hist[(${from}) * ${
        u32Literal(nsl)
      } + ${s}] + ${u};`,
    ];
  });
  // Update g at step t.
  const gUpdate = forEach(group.stateAxes, (env, s, inner) => {
    const em = inner();
    const a = em.emit(g.decay, { ...stepEnv, ...env });
    const u = em.emit(g.input, { ...stepEnv, ...env });
    return [...em.lines, `gs[${s}] = ${a} * gs[${s}] + ${u};`];
  });
  const steps: string[] = [];
  const tail: string[] = [];
  const accumulators: string[] = [];
  const valid = "valid";
  // Values every lane holds alike are written by lane 0; a loop over the lane axis writes its own.
  const writer = (axes: readonly string[]) =>
    lanes === 1 || splits(axes) ? valid : `${valid} && lane == 0u`;
  // Per-step channel sums: every value of the step staged, one barrier, then either a tree over
  // the workgroup (when each workgroup holds one whole segment of summed channels: `aligned`)
  // or the segment heads sum in order. Both orders are fixed, so results repeat bitwise.
  const shared = { count: 0, heads: [] as string[], treeWrites: [] as string[], aligned: true };
  // The step's values that no state index touches, computed once for all roots (after g's
  // update, so values summing g over its states see this step's g).
  const stepValues = emitter();
  const forEachInStep = (
    axes: readonly string[],
    body: (env: Env, flat: string, inner: () => ExprEmitter, whole: string) => string[],
  ) => forEach(axes, body, stepValues);
  for (const r of roots) {
    const target = writeOf.get(reductions.get(r)?.partials ?? r.root)!;
    if (r.form === "step") {
      const em = emitter(undefined, { to: stepValues, loop: [] });
      const v = em.emit(r.root, stepEnv);
      steps.push(
        ...em.lines,
        `if (${writer([])}) { ${target}[${offsetExpr(r.root, stepEnv)}] = ${v}; }`,
      );
      continue;
    }
    if (r.form === "final") {
      const kept = group.stateAxes.filter((a) => r.root.axes.includes(a));
      tail.push(...forEach(kept, (env, _k, inner) => {
        const em = inner();
        const full = { ...ch.env, ...env };
        const v = em.emit(r.root, full);
        return [
          ...em.lines,
          `if (${writer(kept)}) { ${target}[${offsetExpr(r.root, full)}] = ${v}; }`,
        ];
      }));
      continue;
    }
    const red = reductions.get(r)!;
    const { core } = red;
    const termAt = (body: ExprEmitter, inner: Env) =>
      core.kind === "contract"
        ? `${body.emit(core.a, inner)} * ${body.emit(core.b, inner)}`
        : body.emit(core.x, inner);
    const summedSizes = red.summedStates.map((a) => sizeIn(h, a));
    const keptCount = prod(red.keptStates.map((a) => sizeIn(h, a)));
    const keptHere = splits(red.keptStates) ? keptCount / lanes : keptCount;
    const coreSize = u32Literal(numel(core));
    const channelKey = flatIndex(
      red.summedChannels,
      red.summedChannels.map((a) => sizeIn(h, a)),
      ch.env,
    );
    const s = prod(red.summedChannels.map((a) => sizeIn(h, a)));
    if (red.perStep) {
      steps.push(...forEachInStep(red.keptStates, (env, _k, inner, whole) => {
        const em = inner();
        const full = { ...stepEnv, ...env };
        const v = sumLoop(em, red.summedStates, summedSizes, full, termAt);
        if (!red.partials) {
          const epi = emitter({ node: core, value: v });
          const w = epi.emit(r.root, full);
          return [
            ...em.lines,
            ...epi.lines,
            `if (${writer(red.keptStates)}) { ${target}[${offsetExpr(r.root, full)}] = ${w}; }`,
          ];
        }
        // Staged in workgroup memory; summed after the step's one barrier (below).
        const stage = `wsh[(${u32Literal(shared.count)} + ${whole}) * ${
          u32Literal(workgroup)
        } + cl] = ${v};`;
        return [
          ...em.lines,
          lanes === 1 || splits(red.keptStates) ? stage : `if (lane == 0u) { ${stage} }`,
        ];
      }));
      if (red.partials) {
        const base = shared.count;
        shared.count += keptCount;
        // (The tree halves its strides: the workgroup must be a power of two.)
        shared.aligned &&= s % workgroup === 0 && (workgroup & (workgroup - 1)) === 0;
        // After the tree, row base + k holds the workgroup's sum in its first lane; threads
        // take the rows in turn to write them.
        shared.treeWrites.push(...forEach(
          red.keptStates,
          (env, k) => {
            const full = { ...stepEnv, ...env };
            const row = `(${u32Literal(base)} + ${k})`;
            return [
              `if (lid == ${row} % ${u32Literal(threads)}) {`,
              `  let slot = wg - ((cc / ${u32Literal(s)}) * ${u32Literal(s)}) / ${
                u32Literal(workgroup)
              };`,
              `  ${target}[slot * ${coreSize} + ${offsetExpr(core, full)}] = wsh[${row} * ${
                u32Literal(workgroup)
              }];`,
              `}`,
            ];
          },
          undefined,
          false,
        ));
        // Segments of threads with one kept channel index: the first sums them in order.
        const key = (c: string) => `(${c}) / ${u32Literal(s)}`;
        // The largest power of two ≤ 64 dividing the workgroup (the whole default workgroup).
        const unroll = [64, 32, 16, 8, 4, 2, 1].find((u) => workgroup % u === 0)!;
        shared.heads.push(
          `if (${valid} && lane == 0u && (cl == 0u || ${key("cc")} != ${key("cc - 1u")})) {`,
          ...forEach(
            red.keptStates,
            (env, k) => {
              const full = { ...stepEnv, ...env };
              return [
                `var sum: f32 = 0.0;`,
                // Unrolled by `unroll`: lavapipe ends every loop of a shader once 65535
                // iterations of all its loops together have run (LP_MAX_TGSI_LOOP_ITERATIONS),
                // and this loop is the walk's largest count per step.
                `for (var q0: u32 = 0u; q0 < ${u32Literal(workgroup)}; q0 += ${unroll}u) {`,
                ...Array.from({ length: unroll }, (_, i) => [
                  `  let q${i} = q0 + ${i}u;`,
                  `  let cq${i} = wg * ${u32Literal(workgroup)} + q${i};`,
                  `  let mine${i} = q${i} >= cl && cq${i} < ${u32Literal(nc)} && ${
                    key(`cq${i}`)
                  } == ${key("cc")};`,
                  `  sum += select(0.0, wsh[(${u32Literal(base)} + ${k}) * ${
                    u32Literal(workgroup)
                  } + q${i}], mine${i});`,
                ]).flat(),
                `}`,
                `let slot = wg - (${key("cc")} * ${u32Literal(s)}) / ${u32Literal(workgroup)};`,
                `${target}[slot * ${coreSize} + ${offsetExpr(core, full)}] = sum;`,
              ];
            },
            undefined,
            false,
          ).map((l) => `  ${l}`),
          `}`,
        );
      }
      continue;
    }
    const acc = `acc${accumulators.length}`;
    accumulators.push(`var ${acc}: array<f32, ${Math.max(keptHere, 1)}>;`);
    steps.push(...forEachInStep(red.keptStates, (env, k, inner) => {
      const em = inner();
      const v = sumLoop(em, red.summedStates, summedSizes, { ...stepEnv, ...env }, termAt);
      return [...em.lines, `${acc}[${k}] += ${v};`];
    }));
    tail.push(...forEach(red.keptStates, (env, k) => {
      const full = { ...ch.env, ...env };
      if (red.partials) {
        return [
          `if (${writer(red.keptStates)}) { ${target}[${channelKey} * ${coreSize} + ${
            offsetExpr(core, full)
          }] = ${acc}[${k}]; }`,
        ];
      }
      const epi = emitter({ node: core, value: `${acc}[${k}]` });
      const w = epi.emit(r.root, full);
      return [
        ...epi.lines,
        `if (${writer(red.keptStates)}) { ${target}[${offsetExpr(r.root, full)}] = ${w}; }`,
      ];
    }));
  }
  const groups = Math.ceil(nc / workgroup);
  const workgroups = foldWorkgroups(groups, limits.maxComputeWorkgroupsPerDimension);
  registry.checkLimit(roots[0].root, limits.maxStorageBuffersPerShaderStage);
  const first = h.reverse ? "kk" : `${u32Literal(chunks - 1)} - kk`;
  const walk = h.reverse ? "jj" : "lenk - 1u - jj";
  steps.unshift(...stepValues.lines);
  const exchange = lanes > 1 ? threads : 0;
  if (shared.count > 0 || exchange > 0) {
    const bytes = (shared.count * workgroup + exchange) * 4;
    if (bytes > limits.maxComputeWorkgroupStorageSize) throw new SharedMemoryError(bytes);
  }
  if (shared.count > 0) {
    const sum = shared.aligned
      ? [...treeRounds(shared.count, workgroup, threads), ...shared.treeWrites]
      : shared.heads;
    steps.push("workgroupBarrier();", ...sum, "workgroupBarrier();");
  }
  // The thread's own states of the checkpoint at the chunk's start.
  const loadCheckpoint = forEach(group.stateAxes, (_env, k, _inner, whole) => [
    `hist[${h.reverse ? "lenk" : "0u"} * ${u32Literal(nsl)} + ${k}] = ${ckptName}[(ck * ${
      u32Literal(nc)
    } + c) * ${u32Literal(ns)} + ${whole}];`,
  ]);
  const wgsl = `// ${name}: backward of the scan over ${h.axis} (${len}${
    h.reverse ? ", reverse" : ""
  }): ${nc} channels × ${ns} states, chunks of ${chunk}, ${roots.length} root(s)
${registry.declarations()}
${shared.count > 0 ? `var<workgroup> wsh: array<f32, ${shared.count * workgroup}>;` : ""}
${exchange > 0 ? `var<workgroup> xch: array<f32, ${exchange}>;` : ""}
${MATH_PRELUDE}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wg = wid.x + wid.y * ${u32Literal(workgroups[0])};
  let cl = lid / ${lanes}u;
  let lane = lid % ${lanes}u;
  let cc = wg * ${u32Literal(workgroup)} + cl;
  let valid = cc < ${u32Literal(nc)};
  let c = min(cc, ${u32Literal(nc - 1)});
  ${ch.lines.join("\n  ")}
  var gs: array<f32, ${nsl}>;
  var hist: array<f32, ${(chunk + 1) * nsl}>;
  ${accumulators.join("\n  ")}
  var c0: u32 = 0u;
  for (var kk: u32 = 0u; kk < ${u32Literal(chunks)}; kk++) {
    let ck = ${first};
    c0 = ck * ${u32Literal(chunk)};
    let lenk = min(${u32Literal(chunk)}, ${u32Literal(len)} - c0);
    ${loadCheckpoint.join("\n    ")}
    for (var jj: u32 = 0u; jj < lenk; jj++) {
      let j = ${h.reverse ? "lenk - 1u - jj" : "jj"};
      let t = c0 + j;
      ${recompute.join("\n      ")}
    }
    for (var jj: u32 = 0u; jj < lenk; jj++) {
      let j = ${walk};
      let t = c0 + j;
      ${gUpdate.join("\n      ")}
      ${steps.join("\n      ")}
    }
  }
  ${tail.join("\n  ")}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/**
 * Sums each of `rows` rows of `workgroup` staged values (`wsh`) into its first lane: halving
 * strides, a barrier after each, the adds of a stride spread over all threads. Unrolled (no
 * loops: lavapipe caps a shader's total loop iterations, and the walk runs this every step).
 */
function treeRounds(rows: number, workgroup: number, threads: number): string[] {
  const lines: string[] = [];
  for (let stride = workgroup / 2; stride >= 1; stride /= 2) {
    const adds = rows * stride;
    for (let r = 0; r * threads < adds; r++) {
      lines.push(
        `{ let e = lid + ${u32Literal(r * threads)}; if (e < ${u32Literal(adds)}) { ` +
          `let w = (e / ${u32Literal(stride)}) * ${u32Literal(workgroup)} + e % ${
            u32Literal(stride)
          }; wsh[w] += wsh[w + ${u32Literal(stride)}]; } }`,
      );
    }
    lines.push("workgroupBarrier();");
  }
  return lines;
}

/** Sums one root's partials in a fixed order and writes its epilogue. */
function emitPartialSum(
  shape: Shape,
  red: Reduction,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const { h, workgroup } = shape;
  const { core, root } = red;
  const registry = new BindingRegistry(materialized, [root], aliases);
  const partials = registry.read(red.partials!);
  const total = numel(core);
  const wgSize = 64;
  const workgroups = foldWorkgroups(
    Math.ceil(total / wgSize),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const idx = decodeIndex("e", core.axes, core.shape, "o_");
  const s = prod(red.summedChannels.map((a) => sizeIn(h, a)));
  const keptChannels = shape.h.axes.filter((a) =>
    a !== h.axis && core.axes.includes(a) && !red.keptStates.includes(a)
  );
  const key = flatIndex(keptChannels, keptChannels.map((a) => sizeIn(h, a)), idx.env);
  const count = red.perStep
    ? `(((${key}) * ${u32Literal(s)} + ${u32Literal(s - 1)}) / ${
      u32Literal(workgroup)
    } - ((${key}) * ${u32Literal(s)}) / ${u32Literal(workgroup)} + 1u)`
    : u32Literal(s);
  const epi = new ExprEmitter(registry.lookup, "p", { node: core, value: "sum" });
  const v = epi.emit(root, idx.env);
  registry.checkLimit(root, limits.maxStorageBuffersPerShaderStage);
  const wgsl = `// ${name}: sums ${
    red.perStep ? "per-workgroup" : "per-channel"
  } partials of a scan-backward root
${registry.declarations()}
${MATH_PRELUDE}
@compute @workgroup_size(${wgSize})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * ${u32Literal(workgroups[0])}) * ${wgSize}u + lid;
  if (e >= ${u32Literal(total)}) { return; }
  ${idx.lines.join("\n  ")}
  var sum: f32 = 0.0;
  let count = ${count};
  for (var q: u32 = 0u; q < count; q++) {
    sum += ${partials}[q * ${u32Literal(total)} + e];
  }
  ${epi.lines.join("\n  ")}
  out[${offsetExpr(root, idx.env)}] = ${v};
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "reduce" };
}

/**
 * {@link emitScanBackward} with its chunk, workgroup and lanes as a tuning point
 * (codegen/tuning.ts) unless `force` sets any of them: channels per workgroup 16–128 with one
 * lane, and around the default with its lanes, × steps per checkpoint 8–32 (recompute against
 * checkpoint traffic). The default takes 16 steps; lanes so that the walk has about
 * {@link SCAN_BACKWARD_TARGET_THREADS} threads (at most 16, a power of two dividing a state
 * axis); and the largest of 64 … 4 channels per workgroup (at most 256 threads; 16 with one
 * lane) that still gives
 * {@link SCAN_BACKWARD_MIN_WORKGROUPS} workgroups (a walk has few threads: big workgroups would
 * leave most cores idle).
 */
export function emitTunedScanBackward(
  group: ScanBackwardGroup,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanBackwardStrategy = {},
): KernelArtifact[] {
  const emit = (s: ScanBackwardStrategy) =>
    emitScanBackward(group, materialized, limits, name, aliases, s);
  if (force.chunk !== undefined || force.workgroup !== undefined || force.lanes !== undefined) {
    return emit(force);
  }
  const h = group.primal;
  const channels = prod(group.channelAxes.map((a) => sizeIn(h, a)));
  const maxThreads = Math.min(256, limits.maxComputeInvocationsPerWorkgroup);
  let lanes = 1;
  while (
    lanes < 16 && channels * lanes < SCAN_BACKWARD_TARGET_THREADS &&
    laneAxisFor(group, lanes * 2).lanes === lanes * 2 && lanes * 2 * 4 <= maxThreads
  ) lanes *= 2;
  const widths = (l: number) => [64, 32, 16, 8, 4].filter((w) => w * l <= maxThreads);
  const pick = (l: number) => {
    // One lane: 64, 32 or 16 channels, the candidates' range.
    const fit = l === 1 ? [64, 32, 16] : widths(l);
    return fit.find((w) => channels / w >= SCAN_BACKWARD_MIN_WORKGROUPS) ?? fit[fit.length - 1];
  };
  const label = (w: number, l: number, c: number) =>
    l === 1 ? `wg${w}_chunk${c}` : `wg${w}x${l}_chunk${c}`;
  const candidates = new Map<string, () => KernelArtifact[]>();
  const widthsOf = new Map<number, number[]>([[1, [16, 32, 64, 128]]]);
  if (lanes > 1) {
    const w = pick(lanes);
    widthsOf.set(lanes, [w / 2, w, w * 2].filter((x) => x >= 1 && x * lanes <= maxThreads));
  }
  for (const [l, ws] of widthsOf) {
    for (const workgroup of ws) {
      if (workgroup * l > limits.maxComputeInvocationsPerWorkgroup) continue;
      for (const chunk of [8, 16, 32]) {
        candidates.set(label(workgroup, l, chunk), () => emit({ workgroup, chunk, lanes: l }));
      }
    }
  }
  const key = `scan-backward ${h.axes.join(",")}=${h.shape.join("x")} over ${h.axis}, ` +
    `${group.roots.length} roots`;
  // WebGPU guarantees 256 invocations per workgroup, so the default is always a candidate.
  return emitTuned(limits, key, candidates, label(pick(lanes), lanes, 16));
}

/**
 * Workgroups the default scan backward aims for: about one per core of a large GPU (an H100 has
 * 132). On the H100 (2026-12-06) the induction model's walk over 1,024 channels took 11.1 ms
 * with 64 threads per workgroup (16 workgroups) and 5.9 ms with 16 (64 workgroups).
 */
export const SCAN_BACKWARD_MIN_WORKGROUPS = 128;

/**
 * Threads the default scan backward aims for, through lanes per channel: a walk over 1,024
 * channels (the induction model) or 12,288 (Mamba-130M at b = 8) leaves a large GPU's cores
 * mostly waiting on one thread's sequential steps.
 */
export const SCAN_BACKWARD_TARGET_THREADS = 65536;
