/**
 * Swapping nodes of a traced graph: immutable nodes mean every node downstream of a swapped
 * one is rebuilt. Used by graph rewrites that run before fusion (`ssd_backward.ts`).
 *
 * @module
 */

import {
  collectNodes,
  type Graph,
  makeNode,
  type NewNode,
  type Node,
  nodeInputs,
} from "../dsl/ir.ts";

/**
 * The graph with `replaced` nodes swapped in. Every node created after the first replaced one
 * is rebuilt, the new nodes where the node they replace was, so node ids (which order the
 * kernels) keep the program's order: an optimizer's in-place updates, traced last, stay after
 * every gradient kernel that reads the old weights. Returns the graph and, for every node
 * rebuilt or replaced, its new node.
 */
export function substitute(
  graph: Graph,
  replaced: ReadonlyMap<Node, Node>,
): { graph: Graph; rebuilt: ReadonlyMap<Node, Node> } {
  const nodes = collectNodes(Object.values(graph.outputs));
  const old = new Set(nodes);
  const first = Math.min(...[...replaced.keys()].map((n) => n.id));
  // Where each node goes: old nodes at their id, a replacement's new nodes just before it.
  const place = new Map<Node, number>();
  for (const n of nodes) if (n.id >= first) place.set(n, n.id);
  for (const [x, r] of replaced) {
    for (const m of collectNodes([r])) {
      if (!old.has(m) && !place.has(m)) place.set(m, x.id - 0.5 + m.id * 1e-9);
    }
  }
  const deps = (n: Node): Node[] => {
    const r = replaced.get(n);
    if (r) return [r];
    return n.kind === "scan" && n.primal ? [...nodeInputs(n), n.primal] : nodeInputs(n);
  };
  const out = new Map<Node, Node>();
  const rebuild = (n: Node) => {
    const r = replaced.get(n);
    if (r) {
      out.set(n, out.get(r) ?? r);
      return;
    }
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(n)) {
      if (key === "id") continue;
      const swap = (v: unknown) => (isNode(v) ? out.get(v) ?? v : v);
      fields[key] = Array.isArray(value) ? value.map(swap) : swap(value);
    }
    out.set(n, makeNode(fields as unknown as NewNode));
  };
  // In placement order, each node after the nodes it reads (iterative: chains are deep).
  const order = [...place.keys()].sort((a, b) => place.get(a)! - place.get(b)!);
  for (const start of order) {
    const stack: [Node, boolean][] = [[start, false]];
    while (stack.length) {
      const [n, ready] = stack.pop()!;
      if (out.has(n)) continue;
      if (ready) {
        rebuild(n);
        continue;
      }
      stack.push([n, true]);
      for (const d of deps(n)) if (place.has(d) && !out.has(d)) stack.push([d, false]);
    }
  }
  const outputs: Record<string, Node> = {};
  for (const [k, v] of Object.entries(graph.outputs)) outputs[k] = out.get(v) ?? v;
  return { graph: { ...graph, outputs }, rebuilt: out };
}

/** Whether a node field holds a node. */
function isNode(v: unknown): v is Node {
  return typeof v === "object" && v !== null && "kind" in v && "id" in v && "axes" in v;
}
