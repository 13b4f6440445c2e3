/**
 * Horizontal fusion: after the plan is ordered, kernels that do not depend on each other are
 * merged into fewer dispatches. Two forms:
 *
 * - **Segmented elementwise kernels** (`HorizontalGroup`). Elementwise kernels over one index
 *   space where one reads the other at the same element (AdamW's m, v and θ of one parameter)
 *   become one *segment*: a thread computes every root of it at its element. Segments of one
 *   *height* (the longest chain of kernels waiting on them) never wait on each other, directly
 *   or not, so they run as one dispatch: each segment takes a range of workgroups, and the
 *   workgroup index picks the segment (a table of ranges baked into the WGSL). A dispatch binds
 *   every buffer of its segments, so segments are packed into as few dispatches as the
 *   device's storage-buffer limit allows (WebGPU's default of 8 fits one AdamW parameter).
 * - **Sums of full reductions** (`MultiReduceGroup`). A scalar expression over several sums of
 *   whole tensors (the squared gradient norm Σ_k Σ g_k²) would bind every one of them in one
 *   kernel. Instead, partial-sum kernels (segmented like the above, as few as the limit
 *   allows) write one partial per workgroup into one scratch buffer, and a one-workgroup
 *   kernel sums each part's partials in a fixed order and evaluates the expression.
 *
 * Merging only groups of equal height keeps the order acyclic: every dependency goes from a
 * greater height to a smaller one. The result is ordered again by `kernel_order.ts`.
 *
 * @module
 */

import type { Graph, Node, ReduceNode } from "../dsl/ir.ts";
import { collectNodes, nodeInputs } from "../dsl/ir.ts";
import { fusedTree } from "./fusion.ts";
import { type GroupAccess, hazardDeps, hazardOrder, heights } from "./kernel_order.ts";
import { type BackwardPlan, groupAccess, type PlannedGroup } from "./scan_backward_plan.ts";

/** Elementwise kernels merged into one dispatch, one segment of workgroups each. */
export interface HorizontalGroup {
  /** Discriminant. */
  readonly kind: "horizontal";
  /** Per segment, its roots (one index space), each after the roots it reads. */
  readonly segments: readonly (readonly Node[])[];
}

/** A scalar expression of several full sums, computed from per-workgroup partials. */
export interface MultiReduceGroup {
  /** Discriminant. */
  readonly kind: "multiReduce";
  /** The scalar written. */
  readonly root: Node;
  /** The full sums it reads (not written to memory). */
  readonly parts: readonly ReduceNode[];
  /** Parts (indices) per partial-sum kernel, packed within the device's binding limit. */
  readonly batches: readonly (readonly number[])[];
}

/** A kernel group after horizontal fusion. */
export type FinalGroup = PlannedGroup | HorizontalGroup | MultiReduceGroup;

/** The plan after horizontal fusion. */
export interface FinalPlan {
  /** Nodes with their own buffer. */
  readonly materialized: ReadonlySet<Node>;
  /** Kernel groups in execution order. */
  readonly kernels: readonly FinalGroup[];
}

/** The most segments one dispatch holds (each adds its code to the shader). */
export const MAX_SEGMENTS = 256;

/** What a group reads (materialized nodes) and writes. */
export function finalAccess(group: FinalGroup, materialized: ReadonlySet<Node>): GroupAccess {
  if (group.kind === "horizontal") {
    return union(group.segments.flat().map((root) => simpleAccess(root, materialized)));
  }
  if (group.kind === "multiReduce") {
    const access = union([group.root, ...group.parts].map((r) => simpleAccess(r, materialized)));
    return { reads: access.reads, writes: [group.root] };
  }
  return groupAccess(group, materialized);
}

function simpleAccess(root: Node, materialized: ReadonlySet<Node>): GroupAccess {
  return groupAccess({ kind: "simple", root }, materialized);
}

function union(parts: readonly GroupAccess[]): GroupAccess {
  const reads = new Set<Node>();
  for (const p of parts) for (const n of p.reads) reads.add(n);
  return { reads, writes: parts.flatMap((p) => p.writes) };
}

/**
 * Storage buffers a kernel over `access` binds: each node read or written once, an aliased
 * input read through its output's binding when the kernel writes that output.
 */
export function bindingCount(access: GroupAccess, aliases: ReadonlyMap<Node, Node>): number {
  const writes = new Set(access.writes);
  let n = writes.size;
  for (const r of access.reads) {
    const alias = aliases.get(r);
    if (!writes.has(r) && !(alias && writes.has(alias))) n++;
  }
  return n;
}

/** A plain elementwise kernel (no core): what segments are made of. */
function isElementwise(group: FinalGroup): group is Extract<PlannedGroup, { kind: "simple" }> {
  return group.kind === "simple" && group.core === undefined && group.root.kind !== "delta_state";
}

/**
 * Merges independent kernels (see the module comment). `segmented`: also merge elementwise
 * kernels (the sums of full reductions are always merged: unmerged they bind every sum).
 */
export function fuseHorizontally(
  plan: BackwardPlan,
  aliases: ReadonlyMap<Node, Node>,
  bindingLimit: number,
  outputs: ReadonlySet<Node>,
  segmented: boolean,
): FinalPlan {
  let current: FinalPlan = plan;
  current = mergeSums(current, aliases, bindingLimit, outputs) ?? current;
  if (segmented) current = mergeElementwise(current, aliases, bindingLimit) ?? current;
  return current;
}

/** The plan with groups replaced and reordered, or undefined if the order has a cycle. */
function reordered(
  materialized: ReadonlySet<Node>,
  groups: readonly FinalGroup[],
  aliases: ReadonlyMap<Node, Node>,
): FinalPlan | undefined {
  const order = hazardOrder(groups.map((g) => finalAccess(g, materialized)), aliases);
  if (!("order" in order)) return undefined;
  return { materialized, kernels: order.order.map((i) => groups[i]) };
}

/**
 * Full sums (reductions to a scalar) that meet, through scalar elementwise ops read once, in
 * one scalar with at least one other such sum. Fusion would make each sum the epilogue of the
 * next (a chain of kernels); given their own buffers instead, the scalar's kernel reads them
 * all and becomes a {@link MultiReduceGroup}.
 */
export function sumTreeParts(graph: Graph): Set<Node> {
  const outputs = new Set(Object.values(graph.outputs));
  const nodes = collectNodes([...outputs]);
  const users = new Map<Node, Node[]>();
  for (const n of nodes) for (const x of nodeInputs(n)) users.set(x, [...(users.get(x) ?? []), n]);
  const scalarOp = (n: Node) =>
    n.axes.length === 0 && (n.kind === "unary" || n.kind === "binary" || n.kind === "where");
  const byTop = new Map<Node, Node[]>();
  for (const n of nodes) {
    if (n.kind !== "reduce" || n.op !== "sum" || n.axes.length !== 0) continue;
    let top: Node = n;
    for (;;) {
      const u: Node[] = users.get(top) ?? [];
      if (u.length !== 1 || outputs.has(top) || !scalarOp(u[0])) break;
      top = u[0];
    }
    if (top !== n) byTop.set(top, [...(byTop.get(top) ?? []), n]);
  }
  return new Set([...byTop.values()].filter((parts) => parts.length >= 2).flat());
}

/** Replaces each scalar elementwise kernel over ≥ 2 full sums by a {@link MultiReduceGroup}. */
function mergeSums(
  plan: FinalPlan,
  aliases: ReadonlyMap<Node, Node>,
  bindingLimit: number,
  outputs: ReadonlySet<Node>,
): FinalPlan | undefined {
  const readers = new Map<Node, number>();
  for (const g of plan.kernels) {
    for (const n of finalAccess(g, plan.materialized).reads) {
      readers.set(n, (readers.get(n) ?? 0) + 1);
    }
  }
  const targets = new Set(aliases.values());
  const sumGroup = new Map<Node, number>();
  plan.kernels.forEach((g, i) => {
    if (
      g.kind === "simple" && g.core === g.root && g.root.kind === "reduce" &&
      g.root.op === "sum" && g.root.axes.length === 0 && !outputs.has(g.root) &&
      !targets.has(g.root) && readers.get(g.root) === 1
    ) {
      sumGroup.set(g.root, i);
    }
  });
  const drop = new Set<number>();
  const replaced = new Map<number, MultiReduceGroup>();
  const materialized = new Set(plan.materialized);
  plan.kernels.forEach((g, i) => {
    if (!isElementwise(g) || g.root.axes.length !== 0) return;
    const parts = [...finalAccess(g, plan.materialized).reads].filter((n) => sumGroup.has(n));
    if (parts.length < 2) return;
    // A partial-sum kernel binds what its parts read and the partials; each part must fit.
    const readsOf = parts.map((p) => simpleAccess(p, plan.materialized).reads);
    if (readsOf.some((r) => r.size + 1 > bindingLimit)) return;
    const batches: number[][] = [];
    let bound = new Set<Node>();
    readsOf.forEach((r, j) => {
      const last = batches[batches.length - 1];
      const merged = new Set([...bound, ...r]);
      if (last && last.length < MAX_SEGMENTS && merged.size + 1 <= bindingLimit) {
        last.push(j);
        bound = merged;
      } else {
        batches.push([j]);
        bound = new Set(r);
      }
    });
    for (const p of parts) {
      drop.add(sumGroup.get(p)!);
      materialized.delete(p);
    }
    replaced.set(i, { kind: "multiReduce", root: g.root, parts: parts as ReduceNode[], batches });
  });
  if (replaced.size === 0) return undefined;
  const groups = plan.kernels.flatMap((g, i) => drop.has(i) ? [] : [replaced.get(i) ?? g]);
  return reordered(materialized, groups, aliases);
}

/** Kinds through which a value at one element reads its operands at that element only. */
const SAME_ELEMENT = new Set(["unary", "binary", "where", "const"]);

/** Whether `root`'s fused tree reads `other` only at the root's own element. */
function readsAtSameElement(root: Node, other: Node, materialized: ReadonlySet<Node>): boolean {
  for (const n of fusedTree(root, materialized)) {
    if (nodeInputs(n).includes(other) && !SAME_ELEMENT.has(n.kind)) return false;
  }
  return true;
}

function sameSpace(a: Node, b: Node): boolean {
  return a.axes.length === b.axes.length && a.axes.every((x, i) => x === b.axes[i]) &&
    a.shape.every((s, i) => s === b.shape[i]);
}

/** Segments (same-element bundles of elementwise kernels) merged by height and bindings. */
function mergeElementwise(
  plan: FinalPlan,
  aliases: ReadonlyMap<Node, Node>,
  bindingLimit: number,
): FinalPlan | undefined {
  const { materialized } = plan;
  const groups = plan.kernels;
  const access = groups.map((g) => finalAccess(g, materialized));
  const deps = hazardDeps(access, aliases);
  const height = heights(deps, groups.map((_, i) => i));
  // Bundles: an elementwise kernel joins one it reads at the same element over the same index
  // space when that is its only path to it (heights one apart).
  const parent = groups.map((_, i) => i);
  const find = (i: number): number => parent[i] === i ? i : (parent[i] = find(parent[i]));
  groups.forEach((g, b) => {
    if (!isElementwise(g)) return;
    for (const a of deps[b]) {
      const ga = groups[a];
      if (
        isElementwise(ga) && height[a] === height[b] + 1 && sameSpace(ga.root, g.root) &&
        access[b].reads.has(ga.root) && readsAtSameElement(g.root, ga.root, materialized)
      ) {
        parent[find(a)] = find(b);
      }
    }
  });
  const bundles = new Map<number, number[]>();
  groups.forEach((_, i) => {
    if (isElementwise(groups[i])) bundles.set(find(i), [...(bundles.get(find(i)) ?? []), i]);
  });
  let units: FinalGroup[] = [];
  for (const [i, g] of groups.entries()) {
    if (!isElementwise(g)) units.push(g);
    else if (find(i) === i) {
      const members = bundles.get(i)!.sort((x, y) => x - y);
      const roots = members.map((m) => (groups[m] as { root: Node }).root);
      // A bundle over the binding limit stays apart (its kernels fit one by one).
      const fits = bindingCount(union(members.map((m) => access[m])), aliases) <= bindingLimit;
      if (members.length === 1) units.push(g);
      else if (fits) units.push({ kind: "horizontal", segments: [roots] });
      else units.push(...members.map((m) => groups[m]));
    }
  }
  // Bundles can wait on each other in a cycle; then keep every kernel its own segment.
  let ordered = reordered(materialized, units, aliases);
  if (!ordered) {
    units = [...groups];
    ordered = reordered(materialized, units, aliases)!;
  }
  units = [...ordered.kernels];
  const unitAccess = units.map((g) => finalAccess(g, materialized));
  const unitHeight = heights(hazardDeps(unitAccess, aliases), units.map((_, i) => i));
  // Pack segments of one height into dispatches, in order, while the bindings fit.
  const open = new Map<number, { segments: Node[][]; access: GroupAccess[]; at: number }>();
  const packed: (FinalGroup | undefined)[] = units.map(() => undefined);
  const close = (h: number) => {
    const o = open.get(h);
    if (!o) return;
    packed[o.at] = o.segments.length === 1 && o.segments[0].length === 1
      ? { kind: "simple", root: o.segments[0][0] }
      : { kind: "horizontal", segments: o.segments };
    open.delete(h);
  };
  units.forEach((g, i) => {
    const segs = segmentsOf(g);
    if (!segs || bindingCount(unitAccess[i], aliases) > bindingLimit) {
      packed[i] = g;
      return;
    }
    const h = unitHeight[i];
    const o = open.get(h);
    if (o) {
      const merged = union([...o.access, unitAccess[i]]);
      const full = o.segments.length + segs.length > MAX_SEGMENTS ||
        bindingCount(merged, aliases) > bindingLimit;
      if (!full) {
        o.segments.push(...segs.map((seg) => [...seg]));
        o.access.push(unitAccess[i]);
        return;
      }
      close(h);
    }
    open.set(h, { segments: [...segs.map((s) => [...s])], access: [unitAccess[i]], at: i });
  });
  for (const h of [...open.keys()]) close(h);
  const result = packed.filter((g): g is FinalGroup => g !== undefined);
  if (result.length === groups.length) return undefined;
  return reordered(materialized, result, aliases);
}

/** The segments of an elementwise unit, or undefined for other groups. */
function segmentsOf(g: FinalGroup): (readonly Node[])[] | undefined {
  if (g.kind === "horizontal") return [...g.segments];
  if (isElementwise(g)) return [[g.root]];
  return undefined;
}
