/**
 * Scans that share their decay, axis and direction run as one scan: mLSTM's matrix memory
 * C_t = f_t·C_{t−1} + i_t·v_t·k_tᵀ and its normalizer n_t = f_t·n_{t−1} + i_t·k_t are two scans
 * of one decay, each read only through sums over the same state axes (C·q and n·q). This
 * rewrite, run before fusion, stacks them along a new state axis `s` (one entry per scan):
 *
 *   H[…, s] = decay·H[…, s] + (s = j ? input_j : …),   Σ_{k} h_j·w = Σ_{k, s} H·(s = j ? w : 0)
 *
 * so one scan kernel carries both states and computes both sums, and an epilogue reading both
 * (y = C·q / max(|n·q|, 1)) fuses into it. A scan with fewer axes than the widest one (n lacks
 * C's value axis) is carried once per value channel: its sums come out constant along the
 * extra axes, and consumers are rebuilt over the wider sums where they are elementwise (a
 * `pick` at index 0 restores the original axes anywhere else). Only scans read through state
 * sums alone qualify (no final state, no per-step state output), all with `init` or none.
 *
 * @module
 */

import type { Graph, Node, ScanNode } from "../dsl/ir.ts";
import { collectNodes, makeNode, type NewNode, nodeInputs } from "../dsl/ir.ts";
import { uncheckedBinary, uncheckedWhere } from "../dsl/build.ts";
import { analyzeScan, otherOperand, type ScanUse } from "./scan_plan.ts";

/** A rebuilt node, constant along `extra` (axes the original lacks). */
interface Lifted {
  readonly node: Node;
  readonly extra: readonly string[];
}

/**
 * The graph with mergeable scans merged (see the module doc); `graph` itself when none is. A
 * merge that would change a node in `keep` (outputs sharing a buffer with an input) is skipped.
 */
export function mergeScans(graph: Graph, keep: ReadonlySet<Node> = new Set()): Graph {
  // One group at a time, each on the graph the previous merge rebuilt: a later group's scans may
  // read an earlier group's sums (stacked layers), which must be the merged ones.
  const skipped = new Set<string>();
  for (let next = mergeOne(graph, keep, skipped); next; next = mergeOne(graph, keep, skipped)) {
    graph = next;
  }
  return graph;
}

function mergeOne(graph: Graph, keep: ReadonlySet<Node>, skipped: Set<string>): Graph | undefined {
  const outputs = Object.values(graph.outputs);
  const nodes = collectNodes(outputs);
  const consumers = new Map<Node, Node[]>();
  for (const n of nodes) {
    for (const i of nodeInputs(n)) consumers.set(i, [...consumers.get(i) ?? [], n]);
  }
  const groups = new Map<string, ScanUse[]>();
  for (const n of nodes) {
    if (n.kind !== "scan" || outputs.includes(n)) continue;
    const readers = consumers.get(n) ?? [];
    const use = analyzeScan(n, readers);
    if (!use || use.finals.length > 0 || use.contracts.length !== readers.length) continue;
    const key = [n.decay.id, n.axis, n.reverse, n.init !== undefined, [...use.stateAxes].sort()]
      .join("|");
    groups.set(key, [...groups.get(key) ?? [], use]);
  }
  const taken = new Set(nodes.flatMap((n) => n.axes));
  for (const [key, uses] of groups) {
    const widest = uses.reduce((a, b) => (b.scan.axes.length > a.scan.axes.length ? b : a));
    const members = independent(
      uses.filter((u) => u.scan.axes.every((a) => widest.scan.axes.includes(a))),
    );
    if (members.length < 2 || skipped.has(key)) continue;
    let stack = "s";
    for (let i = 0; taken.has(stack); i++) stack = `stack${i}`;
    const replaced = new Map<Node, Lifted>();
    mergeGroup(members, widest.scan, stack, replaced);
    const rebuilt = rebuild(nodes, replaced);
    if ([...keep].some((n) => rebuilt.has(n) && rebuilt.get(n)!.node !== n)) {
      skipped.add(key);
      continue;
    }
    const mapped: Record<string, Node> = {};
    for (const [name, node] of Object.entries(graph.outputs)) {
      const r = rebuilt.get(node);
      mapped[name] = r ? lower(r, node) : node;
    }
    return { ...graph, outputs: mapped };
  }
  return undefined;
}

/**
 * The scans (in creation order) that read no sum of an earlier one kept: merged, such a scan
 * would read its own output (a second layer's scans sharing the first one's gates).
 */
function independent(uses: readonly ScanUse[]): ScanUse[] {
  const kept: ScanUse[] = [];
  for (const u of [...uses].sort((a, b) => a.scan.id - b.scan.id)) {
    const reads = [u.scan.input, ...(u.scan.init ? [u.scan.init] : [])];
    for (const c of u.contracts) reads.push(otherOperand(c, u.scan));
    const below = new Set(collectNodes(reads));
    if (!kept.some((k) => below.has(k.scan))) kept.push(u);
  }
  return kept;
}

function literal(values: number[], axis: string): Node {
  return makeNode({ kind: "literal", values, axes: [axis], shape: [values.length], dtype: "f32" });
}

/** Merges `members` into one scan over `widest`'s axes and `stack`; records the new sums. */
function mergeGroup(
  members: ScanUse[],
  widest: ScanNode,
  stack: string,
  replaced: Map<Node, Lifted>,
): void {
  const k = members.length;
  const oneHot = members.map((_, j) => literal(members.map((_, i) => (i === j ? 1 : 0)), stack));
  const zeros = literal(members.map(() => 0), stack);
  const stacked = (parts: Node[]) =>
    parts.slice(0, -1).reduceRight(
      (rest, p, j) => uncheckedWhere(oneHot[j], p, rest),
      parts[k - 1],
    );
  const first = members[0].scan;
  const init = first.init ? stacked(members.map((u) => u.scan.init!)) : undefined;
  const merged = makeNode({
    kind: "scan",
    axis: first.axis,
    decay: first.decay,
    input: stacked(members.map((u) => u.scan.input)),
    ...(init ? { init } : {}),
    reverse: first.reverse,
    axes: [...widest.axes, stack],
    shape: [...widest.shape, k],
    dtype: "f32",
  }) as Node;
  members.forEach((u, j) => {
    for (const c of u.contracts) {
      const w = uncheckedWhere(oneHot[j], otherOperand(c, u.scan), zeros);
      const summed = [...c.summed, stack];
      const extra = widest.axes.filter((a) => !c.axes.includes(a) && !summed.includes(a));
      const axes = [...c.axes, ...extra];
      const size = (a: string) =>
        merged.shape[merged.axes.indexOf(a)] ?? w.shape[w.axes.indexOf(a)];
      const [a, b] = c.a === u.scan ? [merged, w] : [w, merged];
      const sum = makeNode({
        kind: "contract",
        a,
        b,
        summed,
        axes,
        shape: axes.map(size),
        dtype: "f32",
      });
      replaced.set(c, { node: sum, extra });
    }
  });
}

/** The node with `target`'s axes and layout: picks at 0 along extra axes, then a permute. */
function lower(r: Lifted, target: Node): Node {
  let n = r.node;
  for (const axis of r.extra) {
    const i = n.axes.indexOf(axis);
    n = makeNode({
      kind: "pick",
      x: n,
      axis,
      index: 0,
      axes: n.axes.filter((_, q) => q !== i),
      shape: n.shape.filter((_, q) => q !== i),
      dtype: n.dtype,
    });
  }
  if (n.axes.join(" ") === target.axes.join(" ")) return n;
  return makeNode({
    kind: "permute",
    x: n,
    axes: [...target.axes],
    shape: [...target.shape],
    dtype: n.dtype,
  });
}

function isNode(v: unknown): v is Node {
  return typeof v === "object" && v !== null && "kind" in v && "id" in v && "axes" in v;
}

/** Every node downstream of a replaced one, rebuilt (elementwise ones over lifted operands). */
function rebuild(nodes: readonly Node[], replaced: Map<Node, Lifted>): Map<Node, Lifted> {
  const out = new Map<Node, Lifted>(replaced);
  for (const n of nodes) {
    if (out.has(n) || !nodeInputs(n).some((m) => out.has(m))) continue;
    const lifted = (m: Node) => out.get(m)?.node ?? m;
    let node: Node | undefined;
    if (n.kind === "unary") {
      const x = lifted(n.x);
      node = makeNode({ kind: "unary", op: n.op, x, axes: x.axes, shape: x.shape, dtype: n.dtype });
    } else if (n.kind === "binary" && n.dtype === "f32") {
      node = uncheckedBinary(n.op, lifted(n.a), lifted(n.b));
    } else if (n.kind === "where") {
      node = uncheckedWhere(lifted(n.cond), lifted(n.a), lifted(n.b));
    }
    if (node) {
      const extra = node.axes.filter((a) => !n.axes.includes(a));
      out.set(n, extra.length ? { node, extra } : { node: lower({ node, extra }, n), extra });
      continue;
    }
    // Any other kind reads its operands with their original axes.
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(n)) {
      if (key === "id") continue;
      const low = (v: unknown) => {
        if (!isNode(v)) return v;
        const r = out.get(v);
        return r ? lower(r, v) : v;
      };
      fields[key] = Array.isArray(value) ? value.map(low) : low(value);
    }
    out.set(n, { node: makeNode(fields as unknown as NewNode), extra: [] });
  }
  return out;
}
