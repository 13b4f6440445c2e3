/**
 * Scan-backward analysis: fuses a scan's adjoint with its primal so that neither state is
 * written to memory. Autodiff builds the adjoint g of a scan h as a scan in the other direction
 * (`ScanNode.primal` links them) and forms ∂decay from g·h[t∓1], so the ordinary plan
 * materializes both b·l·d·n states. This pass runs after {@link ./fusion.ts}'s plan: when every
 * kernel that reads h or g fits one of the forms below, it takes h and g out of memory and
 * gives those kernels to one {@link ScanBackwardGroup} (lowered by `scan_backward_kernel.ts`):
 * per channel, in g's direction, chunk by chunk, it recomputes h from a checkpoint into
 * private memory and walks g back through the chunk, evaluating every root at each step.
 *
 * The root forms, with the state axes S (held per channel, looped) and the channels C (one
 * thread each) chosen from the contractions that sum h or g:
 * - `step`: axes C ∪ {scan axis}; every contraction inside it that reaches h or g sums only
 *   state axes (computed in the thread);
 * - `reduce`: a contraction or reduction over an index space inside h's axes that holds C and
 *   the scan axis; state axes it sums are summed in the thread, a summed scan axis is
 *   accumulated in registers, summed channel axes are summed across threads (per step: within
 *   a workgroup, then a small kernel over workgroup partials, so they must be the innermost
 *   channel axes; once at the end: per-thread partials, then a small kernel);
 * - `final`: no scan axis, every channel, reading h and g only at g's last step (∂init).
 * Every read of h must be at the current step or one step toward h's start, every read of g at
 * the current step (checked through the views between them). Anything else keeps the plan
 * (the materializing path: correct, memory-hungry).
 *
 * Forward consumers of h (contractions over the state axes, final-state picks) stay in an
 * ordinary fused scan group.
 *
 * @module
 */

import { collectNodes, type ContractNode, type Graph, type Node, nodeInputs } from "../dsl/ir.ts";
import type { PickNode, ReduceNode, ScanNode } from "../dsl/ir.ts";
import { fusedTree, type KernelGroup, type ScanGroup, type SimpleGroup } from "./fusion.ts";
import { type GroupAccess, hazardOrder } from "./kernel_order.ts";
import { analyzeScan, finalIndex } from "./scan_plan.ts";

/** How a root of a scan-backward group is computed. */
export interface BackwardRoot {
  /** The node written (materialized). */
  readonly root: Node;
  /** `step`, `reduce` or `final` (see the module comment). */
  readonly form: "step" | "reduce" | "final";
  /** For `reduce`: the contraction or reduction whose epilogue `root` is. */
  readonly core?: ContractNode | ReduceNode;
}

/** A primal scan and its adjoint computed together, with the roots that read them. */
export interface ScanBackwardGroup {
  /** Discriminant. */
  readonly kind: "scanBackward";
  /** The forward scan h (recomputed per chunk from checkpoints). */
  readonly primal: ScanNode;
  /** Its adjoint g (a scan in the other direction). */
  readonly adjoint: ScanNode;
  /** Axes held per channel and looped over (h's, in layout order). */
  readonly stateAxes: readonly string[];
  /** Axes with a thread each (h's, in layout order). */
  readonly channelAxes: readonly string[];
  /** What the group writes. */
  readonly roots: readonly BackwardRoot[];
}

/** Any planned kernel group, the scan-backward group included. */
export type PlannedGroup = KernelGroup | ScanBackwardGroup;

/** A fusion plan after this pass. */
export interface BackwardPlan {
  /** Nodes with their own buffer. */
  readonly materialized: ReadonlySet<Node>;
  /** Kernel groups in execution order. */
  readonly kernels: readonly PlannedGroup[];
}

/** The largest state (elements per channel) the backward kernel holds in private memory. */
export const MAX_BACKWARD_STATES = 256;

/** A step index relative to the current step t (sign·t + offset), or a constant index. */
type Form = { sign: number; offset: number } | { index: number };

/** The nodes of a group's trees: what reads of h and g are checked through. */
interface Context {
  readonly h: ScanNode;
  readonly g: ScanNode;
  readonly materialized: ReadonlySet<Node>;
  readonly stateAxes: readonly string[];
  readonly reaches: (n: Node) => boolean;
}

/** The summed axes of a contraction or reduction. */
function summedOf(n: ContractNode | ReduceNode): readonly string[] {
  return n.kind === "contract" ? n.summed : n.over;
}

/** The index space of a contraction or reduction (its axes and the summed ones). */
function indexSpace(n: ContractNode | ReduceNode): string[] {
  return [...n.axes, ...summedOf(n)];
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/**
 * Whether every read of h and g below `start` (down to materialized nodes) is one the kernel
 * has: `forms` maps axis names to their index as a function of the current step.
 */
function readsAreLocal(
  start: Node,
  forms: ReadonlyMap<string, Form>,
  ctx: Context,
  final: boolean,
): boolean {
  const { h, g } = ctx;
  const len = h.shape[h.axes.indexOf(h.axis)];
  const towardStart = h.reverse ? 1 : -1;
  const seen = new Set<string>();
  const stack: [Node, ReadonlyMap<string, Form>][] = [[start, forms]];
  while (stack.length) {
    const [n, map] = stack.pop()!;
    if (n !== start && ctx.materialized.has(n)) continue;
    if (!ctx.reaches(n)) continue;
    const key = `${n.id}|${[...map].map(([a, f]) => `${a}:${JSON.stringify(f)}`).join(",")}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (n === h || n === g) {
      const f = map.get(h.axis);
      if (!f) return false;
      if ("index" in f) {
        if (!final || f.index !== finalIndex(g)) return false;
      } else if (
        final || f.sign !== 1 || !(f.offset === 0 || (n === h && f.offset === towardStart))
      ) {
        return false;
      }
      continue;
    }
    const push = (x: Node, m: ReadonlyMap<string, Form>) => stack.push([x, m]);
    const moved = (from: string, to: string, fn: (f: Form) => Form) => {
      const m = new Map(map);
      const f = m.get(from);
      m.delete(from);
      if (f) m.set(to, fn(f));
      return m;
    };
    switch (n.kind) {
      case "unary":
      case "binary":
      case "where":
      case "permute":
        for (const x of nodeInputs(n)) push(x, map);
        break;
      case "slice":
        push(
          n.x,
          moved(
            n.newAxis,
            n.axis,
            (f) =>
              "index" in f ? { index: f.index + n.start } : { ...f, offset: f.offset + n.start },
          ),
        );
        break;
      case "concat":
        n.parts.forEach((p, k) =>
          push(
            p,
            moved(n.newAxis, n.partAxes[k], (f) =>
              "index" in f
                ? { index: f.index - n.offsets[k] }
                : { ...f, offset: f.offset - n.offsets[k] }),
          )
        );
        break;
      case "flip": {
        const size = n.shape[n.axes.indexOf(n.axis)];
        push(
          n.x,
          moved(
            n.axis,
            n.axis,
            (f) =>
              "index" in f
                ? { index: size - 1 - f.index }
                : { sign: -f.sign, offset: size - 1 - f.offset },
          ),
        );
        break;
      }
      case "pick": {
        const m = new Map(map);
        m.set(n.axis, { index: n.index });
        push(n.x, m);
        break;
      }
      case "contract":
      case "reduce": {
        // Summed inside the thread: only state axes, only sums.
        const summed = summedOf(n);
        if (n.kind === "reduce" && n.op !== "sum") return false;
        if (!summed.every((a) => ctx.stateAxes.includes(a))) return false;
        const m = new Map(map);
        for (const a of summed) m.delete(a);
        for (const x of nodeInputs(n)) push(x, m);
        break;
      }
      default:
        // Regroups, gathers, convolutions and other scans between the root and h or g.
        return false;
    }
  }
  void len;
  return true;
}

/**
 * Candidate state axes, best first: the summed sets of the contractions of h and g, the most
 * common first, then the fewest states.
 */
function stateAxesCandidates(h: ScanNode, g: ScanNode, nodes: readonly Node[]): string[][] {
  const counts = new Map<string, { axes: string[]; count: number; size: number }>();
  for (const n of nodes) {
    if (n.kind !== "contract" && n.kind !== "reduce") continue;
    if (!nodeInputs(n).some((x) => x === h || x === g)) continue;
    const summed = summedOf(n);
    if (summed.length === 0 || summed.includes(h.axis)) continue;
    if (!summed.every((a) => h.axes.includes(a))) continue;
    const axes = h.axes.filter((a) => summed.includes(a));
    const size = axes.reduce((p, a) => p * h.shape[h.axes.indexOf(a)], 1);
    const key = axes.join(" ");
    const entry = counts.get(key) ?? { axes, count: 0, size };
    entry.count++;
    counts.set(key, entry);
  }
  return [...counts.values()]
    .filter((e) => e.size <= MAX_BACKWARD_STATES)
    .sort((x, y) => y.count - x.count || x.size - y.size)
    .map((e) => e.axes);
}

/**
 * Rewrites `plan` so that each materialized scan with a materialized adjoint is computed by a
 * scan-backward group, where every kernel reading them fits; returns the plan unchanged
 * otherwise. `skip` lists adjoints to leave alone (their group did not fit the device);
 * `aliases` the in-place pairs (input → output), whose order a fused pair must keep (a pair
 * whose groups would need a reader of an input after its overwrite stays unfused).
 */
export function fuseScanBackward(
  graph: Graph,
  plan: { materialized: ReadonlySet<Node>; kernels: readonly KernelGroup[] },
  forced: ReadonlySet<Node> = new Set(),
  skip: ReadonlySet<Node> = new Set(),
  aliases: ReadonlyMap<Node, Node> = new Map(),
): BackwardPlan {
  const outputs = new Set(Object.values(graph.outputs));
  // Ordering the groups after every pair costs a pass over the whole plan per layer; fuse
  // every pair first and order once, and only where that order has a cycle go pair by pair,
  // each pair kept only if the groups still have an order.
  const fuseAll = (order: boolean): BackwardPlan => {
    let current: BackwardPlan = plan;
    for (const g of collectNodes([...outputs])) {
      if (g.kind !== "scan" || !g.primal || skip.has(g)) continue;
      const h = g.primal;
      if (!current.materialized.has(g) || !current.materialized.has(h)) continue;
      if ([g, h].some((n) => outputs.has(n) || forced.has(n))) continue;
      current = fusePair(h, g, current, aliases, order) ?? current;
    }
    return current;
  };
  const all = fuseAll(false);
  if (all === plan) return plan;
  const ordered = topologicalOrder(all.kernels, all.materialized, aliases);
  return ordered ? { materialized: all.materialized, kernels: ordered } : fuseAll(true);
}

/** One primal/adjoint pair fused, or undefined where the pattern does not fit. */
function fusePair(
  h: ScanNode,
  g: ScanNode,
  plan: BackwardPlan,
  aliases: ReadonlyMap<Node, Node>,
  order: boolean,
): BackwardPlan | undefined {
  if (g.init || g.axis !== h.axis || g.reverse === h.reverse) return undefined;
  if (
    !sameSet(g.axes, h.axes) || g.axes.some((a, i) => g.shape[i] !== h.shape[h.axes.indexOf(a)])
  ) {
    return undefined;
  }
  // The kernels that read h or g (with both materialized, they load them).
  const readers: { index: number; group: SimpleGroup }[] = [];
  const drop = new Set<number>();
  for (const [index, group] of plan.kernels.entries()) {
    if (group.kind !== "simple") {
      const tree = groupTree(group, plan.materialized);
      if (tree.some((n) => nodeInputs(n).some((x) => x === h || x === g))) return undefined;
      continue;
    }
    if (group.root === h || group.root === g) {
      if (group.core !== group.root) return undefined;
      drop.add(index);
      continue;
    }
    const tree = fusedTree(group.root, plan.materialized);
    if (tree.some((n) => nodeInputs(n).some((x) => x === h || x === g))) {
      readers.push({ index, group });
    }
  }
  const materialized = new Set(plan.materialized);
  materialized.delete(h);
  materialized.delete(g);
  if (drop.size !== 2) return undefined;
  const treeNodes = readers.flatMap((r) => fusedTree(r.group.root, plan.materialized));
  const candidates = stateAxesCandidates(h, g, [...treeNodes, ...readers.map((r) => r.group.root)]);
  for (const stateAxes of candidates) {
    // The group recomputes what its roots read of each other, so the checks see through them;
    // the forward outputs (y = Σ C·h, final states) are written by an ordinary scan group that
    // runs first, so they stay buffers the walk may read (Mamba-2's g reads y through the
    // gated RMSNorm's mean over every channel, which no thread of the walk could compute).
    const see = new Set(materialized);
    for (const r of readers) {
      if (!isForwardReader(r.group, h, g, stateAxes, plan.materialized)) see.delete(r.group.root);
    }
    const fused = withStateAxes(
      h,
      g,
      plan,
      {
        readers,
        drop,
        materialized,
        see,
        reaches: reachesVia(h, g, (m) => see.has(m)),
        aliases,
        order,
      },
      stateAxes,
    );
    if (fused) return fused;
  }
  return undefined;
}

/**
 * Whether `n` reaches h or g without passing a node (other than `n`) where `stop` holds
 * (memoized, iterative).
 */
export function reachesVia(
  h: ScanNode,
  g: ScanNode,
  stop: (m: Node) => boolean,
): (n: Node) => boolean {
  const reachCache = new Map<Node, boolean>();
  return (n: Node): boolean => {
    const hit = reachCache.get(n);
    if (hit !== undefined) return hit;
    // Post-order over the tree below n, iteratively (chains may be deep).
    const stack: [Node, boolean][] = [[n, false]];
    while (stack.length) {
      const [m, done] = stack.pop()!;
      if (reachCache.has(m)) continue;
      if (m === h || m === g) {
        reachCache.set(m, true);
        continue;
      }
      if (m !== n && stop(m)) {
        reachCache.set(m, false);
        continue;
      }
      const ins = nodeInputs(m);
      if (done) {
        reachCache.set(m, ins.some((x) => reachCache.get(x) === true));
        continue;
      }
      stack.push([m, true]);
      for (const x of ins) if (!reachCache.has(x)) stack.push([x, false]);
    }
    return reachCache.get(n)!;
  };
}

/**
 * Whether a kernel reading h is a forward output with these state axes (a contraction of h
 * over them, or final-state picks) and does not read g: the forward scan group writes it.
 */
function isForwardReader(
  group: SimpleGroup,
  h: ScanNode,
  g: ScanNode,
  stateAxes: readonly string[],
  materialized: ReadonlySet<Node>,
): boolean {
  const tree = fusedTree(group.root, materialized);
  if (tree.some((n) => nodeInputs(n).includes(g))) return false;
  const hReaders = tree.filter((n) => nodeInputs(n).includes(h));
  if (hReaders.length > 0 && hReaders.every((n) => isFinalPick(n, h))) return true;
  const core = group.core;
  return core?.kind === "contract" && hReaders.length === 1 && hReaders[0] === core &&
    sameSet(core.summed, stateAxes);
}

/** What {@link fusePair} found, shared by its attempts. */
interface Found {
  readonly readers: readonly { index: number; group: SimpleGroup }[];
  readonly drop: ReadonlySet<number>;
  readonly materialized: ReadonlySet<Node>;
  readonly see: ReadonlySet<Node>;
  readonly reaches: (n: Node) => boolean;
  /** In-place pairs (input → output): their writers wait for the input's other readers. */
  readonly aliases: ReadonlyMap<Node, Node>;
  /** Whether to order the groups now (else the caller orders them once at the end). */
  readonly order: boolean;
}

/** The pair fused with the given state axes, or undefined where a root does not fit. */
function withStateAxes(
  h: ScanNode,
  g: ScanNode,
  plan: BackwardPlan,
  found: Found,
  stateAxes: readonly string[],
): BackwardPlan | undefined {
  const { readers, see, reaches } = found;
  const drop = new Set(found.drop);
  const materialized = new Set(found.materialized);
  const channelAxes = h.axes.filter((a) => a !== h.axis && !stateAxes.includes(a));
  const ctx: Context = { h, g, materialized: see, stateAxes, reaches };
  const stepForms = new Map<string, Form>([[h.axis, { sign: 1, offset: 0 }]]);
  // g's own recurrence is evaluated at each step (its input may read h there).
  for (const x of [g.decay, g.input]) {
    if (reaches(x) && !readsAreLocal(x, stepForms, ctx, false)) return undefined;
  }
  const fwdContracts: { root: Node; contract: ContractNode }[] = [];
  const finals: PickNode[] = [];
  const roots: BackwardRoot[] = [];
  for (const { index, group } of readers) {
    const { root, core } = group;
    const tree = fusedTree(root, plan.materialized);
    const readsG = tree.some((n) => nodeInputs(n).includes(g));
    const hReaders = tree.filter((n) => nodeInputs(n).includes(h));
    // Forward: a contraction of h over the state axes, or final-state picks of h.
    if (!readsG && hReaders.every((n) => isFinalPick(n, h))) {
      finals.push(...(hReaders as PickNode[]));
      continue;
    }
    if (
      !readsG && core?.kind === "contract" && hReaders.length === 1 && hReaders[0] === core &&
      sameSet(core.summed, stateAxes)
    ) {
      // Other roots may read this output's buffer, so it cannot move into the walk.
      if (reaches(core.a === h ? core.b : core.a)) return undefined;
      fwdContracts.push({ root, contract: core });
      drop.add(index);
      continue;
    }
    const form = classify(root, core, h, channelAxes, ctx, stepForms);
    if (form) {
      roots.push(form);
      drop.add(index);
      continue;
    }
    // A root that also reads other things (e.g. gradients of one weight from two scans, added):
    // its contractions that read h or g become roots of the group, and it reads them.
    const peeled = peel(root, ctx, plan.materialized);
    if (!peeled) return undefined;
    for (const p of peeled) {
      const part = classify(p, p, h, channelAxes, ctx, stepForms);
      if (!part) return undefined;
      roots.push(part);
      materialized.add(p);
    }
  }
  if (roots.length === 0) return undefined;
  for (const f of finals) materialized.add(f);
  const backward: ScanBackwardGroup = {
    kind: "scanBackward",
    primal: h,
    adjoint: g,
    stateAxes,
    channelAxes,
    roots,
  };
  const kernels: PlannedGroup[] = plan.kernels.filter((_, i) => !drop.has(i));
  if (fwdContracts.length > 0 || finals.length > 0) {
    const use = analyzeScan(h, [...fwdContracts.map((o) => o.contract), ...finals]);
    if (!use) return undefined;
    const forward: ScanGroup = { kind: "scan", use, outputs: fwdContracts, finals };
    kernels.push(forward);
  }
  kernels.push(backward);
  if (!found.order) return { materialized, kernels };
  const ordered = topologicalOrder(kernels, materialized, found.aliases);
  return ordered ? { materialized, kernels: ordered } : undefined;
}

/**
 * The outermost contractions and reductions in the kernel of `root` that read h or g, when
 * every read of h and g goes through one of them; else undefined.
 */
function peel(
  root: Node,
  ctx: Context,
  materialized: ReadonlySet<Node>,
): (ContractNode | ReduceNode)[] | undefined {
  const found = new Set<ContractNode | ReduceNode>();
  const seen = new Set<Node>();
  const stack = [...nodeInputs(root)];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n) || !ctx.reaches(n)) continue;
    seen.add(n);
    if (n === ctx.h || n === ctx.g) return undefined;
    if (n.kind === "contract" || n.kind === "reduce") found.add(n);
    else stack.push(...nodeInputs(n));
  }
  return found.size > 0 ? [...found] : undefined;
}

/** A pick of the state after h's last step. */
function isFinalPick(n: Node, h: ScanNode): boolean {
  return n.kind === "pick" && n.x === h && n.axis === h.axis && n.index === finalIndex(h);
}

/** The form of one root, or undefined when the kernel cannot compute it. */
function classify(
  root: Node,
  core: Node | undefined,
  h: ScanNode,
  channelAxes: readonly string[],
  ctx: Context,
  stepForms: ReadonlyMap<string, Form>,
): BackwardRoot | undefined {
  const inH = (axes: readonly string[]) => axes.every((a) => h.axes.includes(a));
  const summable = core?.kind === "contract" || core?.kind === "reduce" && core.op === "sum";
  if (summable && ctx.reaches(core)) {
    const space = indexSpace(core);
    if (
      inH(space) && space.includes(h.axis) && channelAxes.every((a) => space.includes(a)) &&
      nodeInputs(core).every((x) => !ctx.reaches(x) || readsAreLocal(x, stepForms, ctx, false))
    ) {
      // Channel axes summed per step must be the innermost ones (contiguous threads).
      const summedChannels = channelAxes.filter((a) => !core.axes.includes(a));
      const perStep = core.axes.includes(h.axis);
      const suffix = channelAxes.slice(channelAxes.length - summedChannels.length);
      const epilogueLocal = !epilogueReaches(root, core, ctx);
      if (epilogueLocal && (!perStep || sameSet(summedChannels, suffix))) {
        return { root, form: "reduce", core };
      }
    }
  }
  if (sameSet(root.axes, [...channelAxes, h.axis])) {
    return readsAreLocal(root, stepForms, ctx, false) ? { root, form: "step" } : undefined;
  }
  if (
    !root.axes.includes(h.axis) && channelAxes.every((a) => root.axes.includes(a)) && inH(root.axes)
  ) {
    return readsAreLocal(root, new Map(), ctx, true) ? { root, form: "final" } : undefined;
  }
  return undefined;
}

/** Whether the elementwise chain from `root` down to `core` reads h or g besides the core. */
function epilogueReaches(root: Node, core: Node, ctx: Context): boolean {
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (n === core || seen.has(n) || (n !== root && ctx.materialized.has(n))) continue;
    seen.add(n);
    if (n !== root && ctx.reaches(n) && !reachesOnlyThrough(n, core, ctx)) return true;
    stack.push(...nodeInputs(n));
  }
  return false;
}

/** Whether every path from `n` to h or g passes through `core`. */
function reachesOnlyThrough(n: Node, core: Node, ctx: Context): boolean {
  const seen = new Set<Node>();
  const stack = [n];
  while (stack.length) {
    const m = stack.pop()!;
    if (m === core || seen.has(m) || (m !== n && ctx.materialized.has(m))) continue;
    seen.add(m);
    if (m === ctx.h || m === ctx.g) return false;
    stack.push(...nodeInputs(m));
  }
  return true;
}

/** The nodes a planned group computes (its roots' fused trees). */
function groupTree(group: PlannedGroup, materialized: ReadonlySet<Node>): Node[] {
  if (group.kind === "scan") {
    return [...group.outputs.map((o) => o.root), ...group.finals].flatMap((r) =>
      fusedTree(r, materialized)
    );
  }
  if (group.kind === "scanBackward") {
    return group.roots.flatMap((r) => fusedTree(r.root, materialized));
  }
  return fusedTree(group.root, materialized);
}

/** What a group writes. */
function groupWrites(group: PlannedGroup): Node[] {
  if (group.kind === "scan") return [...group.outputs.map((o) => o.root), ...group.finals];
  if (group.kind === "scanBackward") return group.roots.map((r) => r.root);
  return [group.root];
}

/** The materialized nodes a planned group reads and the nodes it writes. */
export function groupAccess(group: PlannedGroup, materialized: ReadonlySet<Node>): GroupAccess {
  const reads = new Set<Node>();
  for (const n of groupTree(group, materialized)) {
    for (const x of nodeInputs(n)) if (materialized.has(x)) reads.add(x);
  }
  return { reads, writes: groupWrites(group) };
}

/**
 * The groups in an order where each runs after the groups whose outputs it reads and every
 * in-place output after the other readers of its input (stable: the plan's order where it
 * can), or undefined if they wait on each other in a cycle.
 */
function topologicalOrder(
  groups: readonly PlannedGroup[],
  materialized: ReadonlySet<Node>,
  aliases: ReadonlyMap<Node, Node>,
): PlannedGroup[] | undefined {
  const result = hazardOrder(groups.map((g) => groupAccess(g, materialized)), aliases);
  return "order" in result ? result.order.map((i) => groups[i]) : undefined;
}
