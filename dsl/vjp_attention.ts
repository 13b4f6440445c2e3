/**
 * The transpose rule of `attention`: the probabilities P are recomputed from q and k (nothing
 * is saved by the forward kernel but its output O), then, with dO the output's cotangent,
 *
 *   dV = Pᵀ·dO,   dP = dO·Vᵀ,   dS = P ∘ (dP − rowsum(dO ∘ O)),
 *   dQ = scale·dS·K,   dK = scale·dSᵀ·Q      (summed over the query heads sharing k and v)
 *
 * (FlashAttention-2's backward algebra). This first form is ordinary IR, so P and dS are
 * tensors the size of the score matrix in the backward program; a fused backward kernel that
 * keeps them on chip is the next step (docs/attention.md).
 *
 * @module
 */

import {
  binary,
  constant,
  type Contribution,
  freshAxis,
  inLayout,
  materializeAs,
  productTo,
  scale,
  select,
  sliceAlong,
  sumTo,
  unary,
} from "./grad_builders.ts";
import { type AttentionNode, makeNode, type Node } from "./ir.ts";

function arangeOf(axis: string, size: number): Node {
  return makeNode({ kind: "arange", axis, axes: [axis], shape: [size], dtype: "f32" });
}

/** The cotangents of q, k and v given the cotangent `ct` of the output. */
export function attentionRule(
  node: AttentionNode,
  ct: Node,
  wanted: (input: Node) => boolean,
): Contribution[] {
  const { q, featureAxis, valueAxis } = node;
  if (![q, node.k, node.v].some(wanted)) return [];
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const T = size(q, node.queryAxis), S = size(node.k, node.keyAxis);
  // The key axis under a fresh name: the score matrix has both positions (even if named alike).
  const key = freshAxis(node.keyAxis);
  const k = sliceAlong(node.k, node.keyAxis, 0, S, key);
  const v = sliceAlong(node.v, node.keyAxis, 0, S, key);
  const rows = q.axes.filter((a) => a !== featureAxis);
  const batch = k.axes.filter((a) => a !== key && a !== featureAxis);

  let scores = scale(productTo(q, k, [...rows, key]), node.scale);
  if (node.causal) {
    const diff = binary("sub", arangeOf(key, S), arangeOf(node.queryAxis, T));
    let keep = binary("le", diff, constant(S - T));
    if (node.window !== undefined) {
      keep = binary("mul", keep, binary("gt", diff, constant(S - T - node.window)));
    }
    scores = select(keep, scores, constant(-Infinity));
  }
  const kept = rows.map((a) => ({ a, s: size(q, a) }));
  const mx = makeNode({
    kind: "reduce",
    op: "max",
    x: scores,
    over: [key],
    axes: kept.map((x) => x.a),
    shape: kept.map((x) => x.s),
    dtype: "f32",
  });
  const e = unary("exp", binary("sub", scores, mx));
  const p = binary("div", e, sumTo(e, rows));

  const dO = materializeAs(ct, node);
  const out: Contribution[] = [];
  const back = (x: Node, target: Node) =>
    inLayout(sliceAlong(x, key, 0, S, node.keyAxis), target.axes);
  if (wanted(node.v)) {
    out.push([node.v, back(productTo(p, dO, [...batch, key, valueAxis]), node.v)]);
  }
  if (wanted(q) || wanted(node.k)) {
    const dp = productTo(dO, v, [...rows, key]);
    const delta = sumTo(binary("mul", dO, node), rows);
    const ds = scale(binary("mul", p, binary("sub", dp, delta)), node.scale);
    if (wanted(q)) out.push([q, inLayout(productTo(ds, k, q.axes), q.axes)]);
    if (wanted(node.k)) {
      out.push([node.k, back(productTo(ds, q, [...batch, key, featureAxis]), node.k)]);
    }
  }
  return out;
}
