/**
 * The float64 meaning of the delta rule (`deltaRule`): the plain sequential loop over time,
 * S_t = α_t·S_{t−1} + β_t (v_t − α_t·S_{t−1} k_t) k_tᵀ (the same recurrence as
 * S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ), y_t = scale·S_t q_t.
 *
 * @module
 */

import type { DeltaNode, Node } from "../dsl/ir.ts";
import { numel, stridesOf } from "../dsl/ir.ts";

/** y (the node's layout) and the final state ([batch…, value, key], row-major). */
export interface DeltaValues {
  /** The outputs. */
  readonly y: Float64Array;
  /** The state after the last step. */
  readonly state: Float64Array;
}

/** Runs the recurrence of `node` on its operands' values. */
export function evalDelta(node: DeltaNode, get: (n: Node) => Float64Array): DeltaValues {
  const { axis, keyAxis, valueAxis } = node;
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const len = size(node.v, axis), dk = size(node.k, keyAxis), dv = size(node.v, valueAxis);
  const batch = node.beta.axes.filter((a) => a !== axis);
  const batchShape = batch.map((a) => size(node.beta, a));
  const operands = [node.q, node.k, node.v, node.beta, node.gate, node.init];
  const [q, k, v, beta, gate, init] = operands.map((n) => n && get(n));
  const [sq, sk, sv, sb, sg, si] = operands.map((n) => n && stridesOf(n));
  const sy = stridesOf(node);
  const y = new Float64Array(numel(node));
  const state = new Float64Array(numel(node.beta) / len * dv * dk);
  const batches = batchShape.reduce((p, s) => p * s, 1);
  const S = new Float64Array(dv * dk);
  const kS = new Float64Array(dv);
  for (let b = 0; b < batches; b++) {
    // The base offset of batch position b in each operand.
    const env: Record<string, number> = {};
    let rest = b;
    for (let d = batch.length - 1; d >= 0; d--) {
      env[batch[d]] = rest % batchShape[d];
      rest = Math.floor(rest / batchShape[d]);
    }
    const base = (s: Record<string, number> | undefined) =>
      s ? batch.reduce((o, a) => o + env[a] * s[a], 0) : 0;
    const [bq, bk, bv, bb, bg, bi, by] = [sq, sk, sv, sb, sg, si, sy].map(base);
    for (let i = 0; i < dv; i++) {
      for (let j = 0; j < dk; j++) {
        S[i * dk + j] = init ? init[bi + i * si![valueAxis] + j * si![keyAxis]] : 0;
      }
    }
    for (let t = 0; t < len; t++) {
      const alpha = gate ? Math.exp(gate[bg + t * sg![axis]]) : 1;
      const bt = beta![bb + t * sb![axis]];
      const kAt = (j: number) => k![bk + t * sk![axis] + j * sk![keyAxis]];
      for (let i = 0; i < dv; i++) {
        let acc = 0;
        for (let j = 0; j < dk; j++) acc += S[i * dk + j] * kAt(j);
        kS[i] = alpha * acc;
      }
      for (let i = 0; i < dv; i++) {
        const u = bt * (v![bv + t * sv![axis] + i * sv![valueAxis]] - kS[i]);
        let acc = 0;
        for (let j = 0; j < dk; j++) {
          const s = alpha * S[i * dk + j] + u * kAt(j);
          S[i * dk + j] = s;
          acc += s * q![bq + t * sq![axis] + j * sq![keyAxis]];
        }
        y[by + t * sy[axis] + i * sy[valueAxis]] = node.scale * acc;
      }
    }
    state.set(S, b * dv * dk);
  }
  return { y, state };
}
