/**
 * The float64 meaning of `attention`: for each batch position and query, the scores over the
 * allowed keys, an exact softmax (shifted by their maximum), and the weighted sum of values.
 *
 * @module
 */

import { attendedKeys } from "../dsl/attention.ts";
import type { AttentionGradNode, AttentionNode, Node } from "../dsl/ir.ts";
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
  const sinks = node.sinks && get(node.sinks);
  const ss = node.sinks && stridesOf(node.sinks);
  for (let b = 0; b < count; b++) {
    let rest = b, qBase = 0, kBase = 0, vBase = 0, oBase = 0, sBase = 0;
    for (let d = outer.length - 1; d >= 0; d--) {
      const i = rest % outerShape[d];
      rest = Math.floor(rest / outerShape[d]);
      const a = outer[d];
      qBase += i * sq[a];
      kBase += i * (sk[a] ?? 0);
      vBase += i * (sv[a] ?? 0);
      oBase += i * so[a];
      sBase += i * (ss?.[a] ?? 0);
    }
    // A sink is one more logit, whose value is zero.
    const sink = sinks ? sinks[sBase] : -Infinity;
    for (let t = 0; t < queries; t++) {
      const [lo, hi] = attendedKeys(t, queries, keys, node.causal, node.window);
      let m = sink;
      for (let s = lo; s < hi; s++) {
        let dot = 0;
        for (let j = 0; j < dk; j++) {
          dot += q[qBase + t * sq[node.queryAxis] + j * sq[node.featureAxis]] *
            k[kBase + s * sk[node.keyAxis] + j * sk[node.featureAxis]];
        }
        scores[s] = node.scale * dot;
        m = Math.max(m, scores[s]);
      }
      let total = Math.exp(sink - m);
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

/**
 * The gradient of an attention's value with respect to q, k, v or the sinks (`node.wrt`), in
 * float64: dV = Pᵀ·dO, dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)), dQ = scale·dS·K, dK = scale·dSᵀ·Q,
 * d(sink) = −Σ P_sink·rowsum(dO ∘ O) over the rows that share it.
 */
export function evalAttentionGrad(
  node: AttentionGradNode,
  get: (n: Node) => Float64Array,
): Float64Array {
  const f = node.of;
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const q = get(f.q), k = get(f.k), v = get(f.v), dO = get(node.ct);
  const [sq, sk, sv, sc] = [f.q, f.k, f.v, node.ct].map((n) => stridesOf(n));
  const queries = size(f.q, f.queryAxis), keys = size(f.k, f.keyAxis);
  const dk = size(f.k, f.featureAxis), dv = size(f.v, f.valueAxis);
  const target = node.wrt === "sinks" ? f.sinks! : f[node.wrt];
  const sinks = f.sinks && get(f.sinks);
  const ss = f.sinks && stridesOf(f.sinks);
  const st = stridesOf(target);
  const out = new Float64Array(numel(target));
  const outer = f.axes.filter((a) => a !== f.queryAxis && a !== f.valueAxis);
  const outerShape = outer.map((a) => size(f, a));
  const count = outerShape.reduce((p, s) => p * s, 1);
  const p = new Float64Array(keys), o = new Float64Array(dv);
  for (let b = 0; b < count; b++) {
    let rest = b, qb = 0, kb = 0, vb = 0, cb = 0, tb = 0, sb = 0;
    for (let d = outer.length - 1; d >= 0; d--) {
      const i = rest % outerShape[d];
      rest = Math.floor(rest / outerShape[d]);
      const a = outer[d];
      qb += i * sq[a];
      kb += i * (sk[a] ?? 0);
      vb += i * (sv[a] ?? 0);
      cb += i * sc[a];
      tb += i * (st[a] ?? 0);
      sb += i * (ss?.[a] ?? 0);
    }
    const sink = sinks ? sinks[sb] : -Infinity;
    const Q = (t: number, j: number) => q[qb + t * sq[f.queryAxis] + j * sq[f.featureAxis]];
    const K = (s: number, j: number) => k[kb + s * sk[f.keyAxis] + j * sk[f.featureAxis]];
    const V = (s: number, e: number) => v[vb + s * sv[f.keyAxis] + e * sv[f.valueAxis]];
    const G = (t: number, e: number) => dO[cb + t * sc[f.queryAxis] + e * sc[f.valueAxis]];
    for (let t = 0; t < queries; t++) {
      const [lo, hi] = attendedKeys(t, queries, keys, f.causal, f.window);
      let m = sink;
      for (let s = lo; s < hi; s++) {
        let dot = 0;
        for (let j = 0; j < dk; j++) dot += Q(t, j) * K(s, j);
        p[s] = f.scale * dot;
        m = Math.max(m, p[s]);
      }
      let z = Math.exp(sink - m);
      for (let s = lo; s < hi; s++) z += p[s] = Math.exp(p[s] - m);
      o.fill(0);
      for (let s = lo; s < hi; s++) {
        p[s] /= z;
        for (let e = 0; e < dv; e++) o[e] += p[s] * V(s, e);
      }
      let delta = 0;
      for (let e = 0; e < dv; e++) delta += G(t, e) * o[e];
      // The sink's logit: its probability times (0 − Δ), its value being zero.
      if (node.wrt === "sinks") {
        out[tb] -= Math.exp(sink - m) / z * delta;
        continue;
      }
      for (let s = lo; s < hi; s++) {
        if (node.wrt === "v") {
          for (let e = 0; e < dv; e++) {
            out[tb + s * st[f.keyAxis] + e * st[f.valueAxis]] += p[s] * G(t, e);
          }
          continue;
        }
        let dp = 0;
        for (let e = 0; e < dv; e++) dp += G(t, e) * V(s, e);
        const ds = f.scale * p[s] * (dp - delta);
        for (let j = 0; j < dk; j++) {
          if (node.wrt === "q") {
            out[tb + t * st[f.queryAxis] + j * st[f.featureAxis]] += ds * K(s, j);
          } else out[tb + s * st[f.keyAxis] + j * st[f.featureAxis]] += ds * Q(t, j);
        }
      }
    }
  }
  return out;
}
