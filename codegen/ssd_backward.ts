/**
 * The chunked backward of a scalar-decay scan (Mamba-2's SSD), as a graph rewrite run before
 * fusion. Autodiff forms the decay's cotangent ∂a[t] = Σ_S g[t]·h[t−1] (S: the axes h has and
 * the decay lacks), which reads both states at every step, so the plain plan writes h and its
 * adjoint g (b·l·h·p·n floats each). For a decay without state axes that sum has a form
 * without states. With c the cotangent of h (g's input) and u the scan's input,
 * a[t]·h[t−1] = h[t] − u[t] and g[t] = a[t+1]·g[t+1] + c[t] telescope into
 *
 *   a[t]·∂a[t] = Σ_{k ≥ t} ( Σ_S c[k]·h[k] − Σ_S g[k]·u[k] )
 *
 * (the sum running toward h's end: k ≤ t for a reverse scan; `init` needs no term). When c
 * and u are products, both inner sums are contractions of the scans with the factors, one state axis at a time
 * (Σ_{p,n} (dy ⊗ C)·h = Σ_p dy·(Σ_n C·h) = Σ_p dy·y: mamba_ssm's "dout·y" term), and they reuse
 * the contractions the program already has. Afterwards every reader of h and g is a
 * contraction over some of the state axes (or a final state), so:
 * - a contraction that also sums channel axes (dB, dC sum the heads of a group) is split into
 *   the contraction over its state axes and a sum over the rest;
 * - each scan is copied once per set of summed state axes, so every copy's readers sum the
 *   same axes and fusion keeps each copy's state on chip; a copy whose form is Mamba-2's runs
 *   the chunked SSD kernels (matrix products per chunk), the others the fused recurrent ones.
 * No b·l·h·p·n tensor is written. The sum over k ≥ t runs inside chunks, with boundary terms
 * from chunk states (`ssd_backward_chunks.ts`), so f32 errors in the per-step terms do not
 * accumulate over the whole sequence.
 *
 * The rewrite applies to a scan (either direction) whose decay is `exp(e)` (then a = 0 only
 * where e underflows, and there ∂e = a·∂a = 0: the division by a is guarded to give that 0),
 * when both inner sums are such products. Elsewhere the graph is left as autodiff built it.
 *
 * @module
 */

import { uncheckedBinary, uncheckedWhere } from "../dsl/build.ts";
import { constant, inLayout, sumTo } from "../dsl/grad_builders.ts";
import {
  collectNodes,
  type ContractNode,
  type Graph,
  makeNode,
  type NewNode,
  type Node,
  nodeInputs,
  type ScanNode,
} from "../dsl/ir.ts";
import { substitute } from "./graph_substitute.ts";
import { chunkedDecaySum } from "./ssd_backward_chunks.ts";

/** Knobs of the rewrite (tests). */
export interface SsdBackwardStrategy {
  /** Steps per chunk of the boundary form (a power of two; default 64). */
  chunk?: number;
}

/** The graph with every eligible scan's backward rewritten (see the module doc). */
export function rewriteSsdBackward(graph: Graph, strategy: SsdBackwardStrategy = {}): Graph {
  const chunk = strategy.chunk;
  if (chunk !== undefined && !(Number.isInteger(Math.log2(chunk)) && chunk >= 1)) {
    throw new Error(`ssdBackward: chunk ${chunk} is not a power of two`);
  }
  const outputs = Object.values(graph.outputs);
  const nodes = collectNodes(outputs);
  const consumers = consumerMap(nodes);
  const replaced = new Map<Node, Node>();
  const scans = new Set<Node>();
  for (const g of nodes) {
    if (g.kind !== "scan" || !g.primal) continue;
    const pair = decayCotangent(g.primal, g, consumers);
    if (!pair) continue;
    const next = stateFree(pair, consumers, chunk);
    if (!next) continue;
    replaced.set(pair.cotangent, next);
    scans.add(pair.h).add(pair.g);
  }
  if (replaced.size === 0) return graph;
  const { graph: next, rebuilt } = substitute(graph, replaced);
  // Scans traced after the first replaced node were rebuilt (a later layer's adjoint).
  return splitScans(next, new Set([...scans].map((s) => rebuilt.get(s) ?? s))).graph;
}

/** A primal scan, its adjoint, and the node Σ_S g·h[t−1] autodiff built for ∂decay. */
interface Pair {
  readonly h: ScanNode;
  readonly g: ScanNode;
  readonly cotangent: ContractNode;
  /** The axes h has and the decay lacks. */
  readonly state: readonly string[];
  /** e, where the decay is exp(e). */
  readonly logDecay: Node;
}

function consumerMap(nodes: readonly Node[]): Map<Node, Node[]> {
  const consumers = new Map<Node, Node[]>();
  for (const n of nodes) {
    for (const i of new Set(nodeInputs(n))) consumers.set(i, [...consumers.get(i) ?? [], n]);
  }
  return consumers;
}

/** The decay node seen through permutations. */
function throughPermutes(n: Node): Node {
  while (n.kind === "permute") n = n.x;
  return n;
}

/**
 * Whether `n` is h one step toward its start, as autodiff's scan rule builds it: a concat of
 * the value before the first step (init or 0) and h without its last step (mirrored for a
 * reverse scan).
 */
function isPrevious(n: Node, h: ScanNode): boolean {
  n = throughPermutes(n);
  if (n.kind !== "concat" || n.newAxis !== h.axis || n.parts.length !== 2) return false;
  const len = h.shape[h.axes.indexOf(h.axis)];
  const i = h.reverse ? 0 : 1;
  const body = n.parts[i];
  return body.kind === "slice" && body.x === h && body.axis === h.axis &&
    body.start === (h.reverse ? 1 : 0) && n.offsets[i] === (h.reverse ? 0 : 1) &&
    body.shape[body.axes.indexOf(body.newAxis)] === len - 1;
}

/** The pair when h is a scalar-decay scan of `exp(e)` and ∂decay has autodiff's form. */
function decayCotangent(
  h: ScanNode,
  g: ScanNode,
  consumers: ReadonlyMap<Node, Node[]>,
): Pair | undefined {
  const decay = throughPermutes(h.decay);
  if (h.reverse === g.reverse || g.init || decay.kind !== "unary" || decay.op !== "exp") {
    return undefined;
  }
  if (!h.decay.axes.includes(h.axis) || !h.decay.axes.every((a) => h.axes.includes(a))) {
    return undefined;
  }
  const state = h.axes.filter((a) => !h.decay.axes.includes(a));
  if (state.length === 0) return undefined;
  const found = (consumers.get(g) ?? []).filter((c): c is ContractNode =>
    c.kind === "contract" && c.a !== c.b && isPrevious(c.a === g ? c.b : c.a, h)
  );
  if (found.length !== 1) return undefined;
  const cotangent = found[0];
  if (!sameSet(cotangent.summed, state) || !sameSet(cotangent.axes, h.decay.axes)) {
    return undefined;
  }
  return { h, g, cotangent, state, logDecay: decay.x };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** The products whose sum is `n` (seen through permutations), each as its list of factors. */
function sumOfProducts(n: Node): Node[][] {
  n = throughPermutes(n);
  if (n.kind === "binary" && n.op === "add") return [...sumOfProducts(n.a), ...sumOfProducts(n.b)];
  const factors: Node[] = [];
  const stack = [n];
  while (stack.length) {
    const m = throughPermutes(stack.pop()!);
    if (m.kind === "binary" && m.op === "mul") stack.push(m.b, m.a);
    else if (m.kind === "const" && m.value === 1) continue; // expandTo's ones: layout only
    else factors.push(m);
  }
  return [factors];
}

/**
 * Σ over `state` of s·Π factors, over `keep`: first one contraction of the scan s with one
 * factor over the state axes only that factor carries (reusing such a contraction where the
 * program has it), then the small products.
 */
function stateSum(
  s: ScanNode,
  factors: readonly Node[],
  state: readonly string[],
  keep: readonly string[],
  consumers: ReadonlyMap<Node, Node[]>,
): Node | undefined {
  if (factors.some((f) => !f.axes.every((a) => s.axes.includes(a)))) return undefined;
  const own = (f: Node) =>
    f.axes.filter((a) => state.includes(a) && !factors.some((o) => o !== f && o.axes.includes(a)));
  const existing = (f: Node) =>
    (consumers.get(s) ?? []).find((c): c is ContractNode =>
      c.kind === "contract" && (c.a === s ? c.b : c.a) === f && sameSet(c.summed, own(f))
    );
  const candidates = factors.filter((f) => own(f).length > 0);
  const first = candidates.find((f) => existing(f) !== undefined) ??
    candidates.sort((x, y) => own(y).length - own(x).length)[0];
  if (!first) return undefined;
  let acc: Node = existing(first) ?? contract(s, first, own(first));
  for (const f of factors) {
    if (f === first) continue;
    acc = uncheckedBinary("mul", acc, f);
  }
  // Σ over the state axes left (the factors share them) and any the result must lose.
  return inLayout(sumTo(acc, keep), keep);
}

/** Σ over `summed` of s·f (f's axes inside s's). */
function contract(s: Node, f: Node, summed: readonly string[]): Node {
  const axes = s.axes.filter((a) => !summed.includes(a));
  return makeNode({
    kind: "contract",
    a: s,
    b: f,
    summed: [...summed],
    axes,
    shape: axes.map((a) => s.shape[s.axes.indexOf(a)]),
    dtype: "f32",
  });
}

/** ∂a without states (the module doc's identity), over the decay's axes and layout. */
function stateFree(
  pair: Pair,
  consumers: ReadonlyMap<Node, Node[]>,
  chunk: number | undefined,
): Node | undefined {
  const { h, g, state } = pair;
  const keep = h.decay.axes;
  const terms: Node[] = [];
  const cotangent = sumOfProducts(g.input), input = sumOfProducts(h.input);
  for (const [s, products, sign] of [[h, cotangent, 1], [g, input, -1]] as const) {
    for (const factors of products) {
      const t = stateSum(s, factors, state, keep, consumers);
      if (!t) return undefined;
      terms.push(sign > 0 ? t : uncheckedBinary("mul", t, constant(-1)));
    }
  }
  const total = inLayout(terms.reduce((x, y) => uncheckedBinary("add", x, y)), keep);
  const logDecay = inLayout(pair.logDecay, keep);
  // Summed from t toward h's end, chunk by chunk (ssd_backward_chunks.ts).
  const after = chunkedDecaySum({ h, logDecay, terms: total, input, cotangent, chunk });
  // a·∂a is what the sum gives; a = 0 only where exp(e) underflowed, where a·∂a = 0 too.
  const a = h.decay;
  const zero = constant(0);
  const positive = uncheckedBinary("gt", a, zero);
  const safe = uncheckedWhere(positive, a, constant(1));
  return inLayout(uncheckedWhere(positive, uncheckedBinary("div", after, safe), zero), keep);
}

/**
 * Each of `scans` read only through contractions over state axes and final-state picks: its
 * contractions that also sum channel axes are split, and the
 * scan is copied once per set of summed state axes.
 */
function splitScans(graph: Graph, scans: ReadonlySet<Node>): { graph: Graph } {
  const nodes = collectNodes(Object.values(graph.outputs));
  const consumers = consumerMap(nodes);
  const outputs = new Set(Object.values(graph.outputs));
  const replaced = new Map<Node, Node>();
  for (const s of nodes) {
    if (s.kind !== "scan" || outputs.has(s) || !scans.has(s)) continue;
    const state = s.axes.filter((a) => a !== s.axis && !s.decay.axes.includes(a));
    const readers = consumers.get(s) ?? [];
    if (state.length === 0 || readers.length < 2) continue;
    const final = s.reverse ? 0 : s.shape[s.axes.indexOf(s.axis)] - 1;
    const fits = readers.every((r) =>
      r.kind === "pick" && r.axis === s.axis && r.index === final ||
      r.kind === "contract" && r.a !== r.b && !r.summed.includes(s.axis) &&
        r.summed.some((a) => state.includes(a)) &&
        (r.a === s ? r.b : r.a).axes.every((a) => s.axes.includes(a))
    );
    if (!fits) continue;
    const copies = new Map<string, Node>();
    let firstKey: string | undefined;
    for (const r of readers) {
      if (r.kind !== "contract") continue;
      const summedState: string[] = s.axes.filter((a) => r.summed.includes(a) && state.includes(a));
      const key: string = summedState.join(" ");
      firstKey ??= key;
      if (!copies.has(key)) {
        copies.set(key, key === firstKey ? s : makeNode({ ...fieldsOf(s) } as NewNode));
      }
      const scan: Node = copies.get(key)!;
      const other = r.a === s ? r.b : r.a;
      const rest = r.summed.filter((a) => !summedState.includes(a));
      if (scan === s && rest.length === 0) continue;
      const inner = contract(scan, other, summedState);
      replaced.set(r, inLayout(sumTo(inner, r.axes), r.axes));
    }
  }
  return replaced.size === 0 ? { graph } : substitute(graph, replaced);
}

/** A node's fields without its id (to build a copy). */
function fieldsOf(n: Node): Record<string, unknown> {
  const { id: _, ...rest } = n;
  return rest;
}
