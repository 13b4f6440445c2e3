/**
 * The float64 meaning of `attention`: for each batch position and query, the scores over the
 * allowed keys, an exact softmax (shifted by their maximum), and the weighted sum of values.
 *
 * @module
 */

import { attendedKeys } from "../dsl/attention.ts";
import type { AttentionNode, Node } from "../dsl/ir.ts";
import { numel, stridesOf } from "../dsl/ir.ts";

/** Evaluates `node` on its operands' values. */
export function evalAttention(node: AttentionNode, get: (n: Node) => Float64Array): Float64Array {
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const q = get(node.q), k = get(node.k), v = get(node.v);
  const [sq, sk, sv, so] = [node.q, node.k, node.v, node].map((n) => stridesOf(n));
  const queries = size(node.q, node.queryAxis), keys = size(node.k, node.keyAxis);
  const dk = size(node.k, node.featureAxis), dv = size(node.v, node.valueAxis);
  // Every axis of the result but the query and value axes: batch axes and the group axis.
  const outer = node.axes.filter((a) => a !== node.queryAxis && a !== node.valueAxis);
  const outerShape = outer.map((a) => size(node, a));
  const out = new Float64Array(numel(node));
  const scores = new Float64Array(keys);
  const count = outerShape.reduce((p, s) => p * s, 1);
  for (let b = 0; b < count; b++) {
    let rest = b, qBase = 0, kBase = 0, vBase = 0, oBase = 0;
    for (let d = outer.length - 1; d >= 0; d--) {
      const i = rest % outerShape[d];
      rest = Math.floor(rest / outerShape[d]);
      const a = outer[d];
      qBase += i * sq[a];
      kBase += i * (sk[a] ?? 0);
      vBase += i * (sv[a] ?? 0);
      oBase += i * so[a];
    }
    for (let t = 0; t < queries; t++) {
      const [lo, hi] = attendedKeys(t, queries, keys, node.causal, node.window);
      let m = -Infinity;
      for (let s = lo; s < hi; s++) {
        let dot = 0;
        for (let j = 0; j < dk; j++) {
          dot += q[qBase + t * sq[node.queryAxis] + j * sq[node.featureAxis]] *
            k[kBase + s * sk[node.keyAxis] + j * sk[node.featureAxis]];
        }
        scores[s] = node.scale * dot;
        m = Math.max(m, scores[s]);
      }
      let total = 0;
      for (let s = lo; s < hi; s++) {
        scores[s] = Math.exp(scores[s] - m);
        total += scores[s];
      }
      for (let e = 0; e < dv; e++) {
        let acc = 0;
        for (let s = lo; s < hi; s++) {
          acc += scores[s] * v[vBase + s * sv[node.keyAxis] + e * sv[node.valueAxis]];
        }
        out[oBase + t * so[node.queryAxis] + e * so[node.valueAxis]] = acc / total;
      }
    }
  }
  return out;
}
