/**
 * Recognizes softmax attention written by hand in the DSL and replaces it with an `attention`
 * node, so it runs as the fused kernel (the score matrix never in memory):
 *
 *   scores = einsum(q, k → over the feature)      a contraction with one summed axis
 *   x      = scores (· c or / c)                   optional constant scale
 *   x      = where(mask, x, c)                     optional mask, c ≤ −1e4 or −∞; the mask a
 *                                                  function of the query and key positions
 *                                                  only that keeps the causal band (with or
 *                                                  without a window) of `attention`
 *   w      = softmax(x, key)                      max-shift, exp, sum, divide (dsl softmax)
 *   out    = einsum(w, v → over the key)
 *
 * Runs before fusion (like scan_merge.ts); the graph's other readers of intermediate values
 * keep them. The mask is checked by evaluating it at every (query, key) pair, so only masks
 * over at most {@link MASK_PAIRS_MAX} pairs are recognized (T = S = 2048 takes about 0.2 s).
 *
 * @module
 */

import { attendedKeys } from "../dsl/attention.ts";
import {
  type AttentionNode,
  collectNodes,
  type ContractNode,
  type Graph,
  makeNode,
  type NewNode,
  type Node,
  nodeInputs,
} from "../dsl/ir.ts";

/** The most (query, key) pairs a mask is evaluated at to recognize it. */
export const MASK_PAIRS_MAX = 1 << 22;
/** A masked score at or below this is treated as −∞ (its weight is e^{−10⁴} = 0 in f64). */
const MASKED_MAX = -1e4;

/**
 * The graph with every recognized softmax(q·kᵀ)·v replaced by an `attention` node; `graph`
 * itself when there is none. Outputs in `keep` (in-place aliases) are never rebuilt.
 */
export function recognizeAttention(graph: Graph, keep: ReadonlySet<Node> = new Set()): Graph {
  const outputs = Object.values(graph.outputs);
  const nodes = collectNodes(outputs);
  const replaced = new Map<Node, Node>();
  for (const n of nodes) {
    if (n.kind !== "contract") continue;
    const found = match(n);
    if (found) replaced.set(n, found);
  }
  if (replaced.size === 0) return graph;
  const rebuilt = rebuild(nodes, replaced);
  if ([...keep].some((n) => rebuilt.get(n) !== undefined && rebuilt.get(n) !== n)) return graph;
  const mapped: Record<string, Node> = {};
  for (const [name, node] of Object.entries(graph.outputs)) {
    mapped[name] = rebuilt.get(node) ?? node;
  }
  return { ...graph, outputs: mapped };
}

function constValue(n: Node): number | undefined {
  return n.kind === "const" ? n.value : undefined;
}

function sizeOf(n: Node, axis: string): number {
  return n.shape[n.axes.indexOf(axis)];
}

/** The attention node `out` computes, or undefined when it is not the pattern. */
function match(out: ContractNode): AttentionNode | undefined {
  if (out.summed.length !== 1 || out.dtype !== "f32") return undefined;
  const key = out.summed[0];
  for (const [w, v] of [[out.a, out.b], [out.b, out.a]]) {
    const soft = matchSoftmax(w, key);
    if (!soft) continue;
    const found = matchScores(soft, key, v, out);
    if (found) return found;
  }
  return undefined;
}

/** div(e, sum(e, key)), e = exp(x − max(x, key)): returns x. */
function matchSoftmax(w: Node, key: string): Node | undefined {
  if (w.kind !== "binary" || w.op !== "div") return undefined;
  const e = w.a, z = w.b;
  if (z.kind !== "reduce" || z.op !== "sum" || z.x !== e || z.over.join() !== key) return undefined;
  if (e.kind !== "unary" || e.op !== "exp") return undefined;
  const sh = e.x;
  if (sh.kind !== "binary" || sh.op !== "sub") return undefined;
  const mx = sh.b;
  if (mx.kind !== "reduce" || mx.op !== "max" || mx.x !== sh.a || mx.over.join() !== key) {
    return undefined;
  }
  return sh.a;
}

function matchScores(
  x: Node,
  key: string,
  v: Node,
  out: ContractNode,
): AttentionNode | undefined {
  let mask: Node | undefined;
  if (x.kind === "where") {
    const c = constValue(x.b);
    if (c === undefined || !(c <= MASKED_MAX)) return undefined;
    mask = x.cond;
    x = x.a;
  }
  let scale = 1;
  if (x.kind === "binary" && (x.op === "mul" || x.op === "div")) {
    const cb = constValue(x.b), ca = x.op === "mul" ? constValue(x.a) : undefined;
    if (cb !== undefined) {
      scale = x.op === "mul" ? cb : 1 / cb;
      x = x.a;
    } else if (ca !== undefined) {
      scale = ca;
      x = x.b;
    } else return undefined;
  }
  if (x.kind === "permute") x = x.x;
  if (x.kind !== "contract" || x.summed.length !== 1) return undefined;
  const feature = x.summed[0];
  const [k, q] = x.b.axes.includes(key) ? [x.b, x.a] : [x.a, x.b];
  if (!k.axes.includes(key) || q.axes.includes(key)) return undefined;
  const batch = k.axes.filter((a) => a !== key && a !== feature);
  if (!batch.every((a) => q.axes.includes(a))) return undefined;
  const rows = q.axes.filter((a) => !batch.includes(a) && a !== feature);
  if (rows.length < 1 || rows.length > 2) return undefined;
  // v: the batch axes, the key axis and one value axis.
  const valueAxes = v.axes.filter((a) => !batch.includes(a) && a !== key);
  if (valueAxes.length !== 1 || v.axes.length !== batch.length + 2) return undefined;
  const valueAxis = valueAxes[0];
  if (rows.includes(valueAxis)) return undefined;
  // The result: q's row and batch axes and the value axis.
  const want = [...batch, ...rows, valueAxis];
  if (out.axes.length !== want.length || !want.every((a) => out.axes.includes(a))) {
    return undefined;
  }
  let queryAxis = rows[rows.length - 1];
  let window: number | undefined;
  let causal = false;
  if (mask) {
    const band = maskBand(mask, rows, key, q, k);
    if (!band) return undefined;
    queryAxis = band.query;
    causal = true;
    window = band.window;
  }
  const groupAxis = rows.find((a) => a !== queryAxis);
  if (!scaleIsFinite(scale)) return undefined;
  return makeNode({
    kind: "attention",
    q,
    k,
    v,
    queryAxis,
    keyAxis: key,
    featureAxis: feature,
    valueAxis,
    groupAxis,
    scale,
    causal,
    window,
    axes: out.axes,
    shape: out.shape,
    dtype: "f32",
  });
}

function scaleIsFinite(s: number): boolean {
  return Number.isFinite(s);
}

/**
 * Whether `mask` (nonzero keeps) is the causal band of `attention` over one of the row axes
 * and the key axis: its query axis and window, or undefined.
 */
function maskBand(
  mask: Node,
  rows: readonly string[],
  key: string,
  q: Node,
  k: Node,
): { query: string; window?: number } | undefined {
  const axes = mask.axes.filter((a) => a !== key);
  if (axes.length !== 1 || !rows.includes(axes[0]) || !mask.axes.includes(key)) return undefined;
  const query = axes[0];
  const T = sizeOf(q, query), S = sizeOf(k, key);
  if (S < T || T * S > MASK_PAIRS_MAX) return undefined;
  const at = compileMask(mask, query, key);
  if (!at) return undefined;
  // The last query's kept keys fix the window; every row must then match attention's band.
  let lo = S;
  for (let s = 0; s < S; s++) {
    if (at(T - 1, s) !== 0) {
      lo = s;
      break;
    }
  }
  const window = lo > 0 ? S - lo : undefined;
  for (let t = 0; t < T; t++) {
    const [rlo, rhi] = attendedKeys(t, T, S, true, window);
    for (let s = 0; s < S; s++) {
      const kept = at(t, s);
      if ((kept !== 0) !== (s >= rlo && s < rhi)) return undefined;
    }
  }
  return { query, window };
}

/** A mask compiled to a function of the query and key positions (NaN: not a mask). */
type MaskFn = (t: number, s: number) => number;

const MASK_BINARY: Partial<Record<string, (a: number, b: number) => number>> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  max: Math.max,
  min: Math.min,
  lt: (a, b) => Number(a < b),
  le: (a, b) => Number(a <= b),
  gt: (a, b) => Number(a > b),
  ge: (a, b) => Number(a >= b),
  eq: (a, b) => Number(a === b),
  ne: (a, b) => Number(a !== b),
};

/**
 * Compiles a mask expression (aranges of the two position axes, constants, elementwise
 * comparisons and arithmetic) once, so it can be evaluated at millions of positions; undefined
 * when it reads anything else.
 */
function compileMask(n: Node, query: string, key: string): MaskFn | undefined {
  switch (n.kind) {
    case "const": {
      const v = n.value;
      return () => v;
    }
    case "arange":
      return n.axis === query ? (t) => t : n.axis === key ? (_, s) => s : undefined;
    case "permute":
      return compileMask(n.x, query, key);
    case "unary": {
      const x = compileMask(n.x, query, key);
      if (!x) return undefined;
      if (n.op === "neg") return (t, s) => -x(t, s);
      if (n.op === "abs") return (t, s) => Math.abs(x(t, s));
      return undefined;
    }
    case "where": {
      const c = compileMask(n.cond, query, key);
      const a = compileMask(n.a, query, key), b = compileMask(n.b, query, key);
      if (!c || !a || !b) return undefined;
      return (t, s) => (c(t, s) !== 0 ? a(t, s) : b(t, s));
    }
    case "binary": {
      const f = MASK_BINARY[n.op];
      const a = compileMask(n.a, query, key), b = compileMask(n.b, query, key);
      if (!f || !a || !b) return undefined;
      return (t, s) => f(a(t, s), b(t, s));
    }
    default:
      return undefined;
  }
}

function isNode(v: unknown): v is Node {
  return typeof v === "object" && v !== null && "kind" in v && "id" in v && "axes" in v;
}

/** Every node downstream of a replaced one, rebuilt over the replacements (same axes). */
function rebuild(nodes: readonly Node[], replaced: Map<Node, Node>): Map<Node, Node> {
  const out = new Map<Node, Node>(replaced);
  for (const n of nodes) {
    if (out.has(n) || !nodeInputs(n).some((m) => out.has(m))) continue;
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(n)) {
      if (key === "id") continue;
      const low = (v: unknown) => (isNode(v) ? out.get(v) ?? v : v);
      fields[key] = Array.isArray(value) ? value.map(low) : low(value);
    }
    out.set(n, makeNode(fields as unknown as NewNode));
  }
  return out;
}
