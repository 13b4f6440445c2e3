/**
 * The float64 meaning of the delta rule (`deltaRule`): the plain sequential loop over time,
 * S_t = α_t·S_{t−1} + β_t (v_t − α_t·S_{t−1} k_t) k_tᵀ (the same recurrence as
 * S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ), y_t = scale·S_t q_t.
 *
 * @module
 */

import type { DeltaGradNode, DeltaNode, Node } from "../dsl/ir.ts";
import { numel, stridesOf } from "../dsl/ir.ts";
import { type DeltaShapes, deltaShapes } from "../codegen/delta_shapes.ts";

/** Strides by axis name, or undefined for an absent operand. */
type Strides = Record<string, number> | undefined;

/** The base offsets of batch position `b` (row-major over `s`'s batch axes) in each `strides`. */
function batchBases(s: DeltaShapes, b: number, strides: readonly Strides[]): number[] {
  const env: Record<string, number> = {};
  let rest = b;
  for (let d = s.batch.length - 1; d >= 0; d--) {
    env[s.batch[d]] = rest % s.batchShape[d];
    rest = Math.floor(rest / s.batchShape[d]);
  }
  return strides.map((st) => st ? s.batch.reduce((o, a) => o + env[a] * st[a], 0) : 0);
}

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
  const shapes = deltaShapes(node);
  const { len, dk, dv, batches } = shapes;
  const operands = [node.q, node.k, node.v, node.beta, node.gate, node.init];
  const [q, k, v, beta, gate, init] = operands.map((n) => n && get(n));
  const [sq, sk, sv, sb, sg, si] = operands.map((n) => n && stridesOf(n));
  const sy = stridesOf(node);
  const y = new Float64Array(numel(node));
  const state = new Float64Array(numel(node.beta) / len * dv * dk);
  const S = new Float64Array(dv * dk);
  const kS = new Float64Array(dv);
  for (let b = 0; b < batches; b++) {
    // The base offset of batch position b in each operand.
    const [bq, bk, bv, bb, bg, bi, by] = batchBases(shapes, b, [sq, sk, sv, sb, sg, si, sy]);
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

/**
 * The float64 meaning of a `delta_grad` node (dsl/vjp_delta.ts has the equations): every state
 * of the forward kept, then the adjoint state G_t = ∂L/∂S_t walked from the last step to the
 * first, each step's gradient read off it.
 */
export function evalDeltaGrad(node: DeltaGradNode, get: (n: Node) => Float64Array): Float64Array {
  const f = node.of;
  const { axis, keyAxis, valueAxis } = f;
  const shapes = deltaShapes(f);
  const { len, dk, dv, batches } = shapes;
  const operands = [f.q, f.k, f.v, f.beta, f.gate, f.init, node.ct, node.ctState];
  const [q, k, v, beta, gate, init, dy, dS] = operands.map((n) => n && get(n));
  const [sq, sk, sv, sb, sg, si, sdy, sdS] = operands.map((n) => n && stridesOf(n));
  const so = stridesOf(node);
  const out = new Float64Array(numel(node));
  const states = new Float64Array((len + 1) * dv * dk);
  const G = new Float64Array(dv * dk);
  const a = new Float64Array(dv), b = new Float64Array(dv);
  for (let bp = 0; bp < batches; bp++) {
    const [bq, bk, bv, bb, bg, bi, bdy, bdS, bo] = batchBases(
      shapes,
      bp,
      [sq, sk, sv, sb, sg, si, sdy, sdS, so],
    );
    const kAt = (t: number, j: number) => k![bk + t * sk![axis] + j * sk![keyAxis]];
    const qAt = (t: number, j: number) => q![bq + t * sq![axis] + j * sq![keyAxis]];
    const vAt = (t: number, i: number) => v![bv + t * sv![axis] + i * sv![valueAxis]];
    const alphaAt = (t: number) => gate ? Math.exp(gate[bg + t * sg![axis]]) : 1;
    const betaAt = (t: number) => beta![bb + t * sb![axis]];
    // Forward: states[t] is the state before step t (states[0] = init).
    for (let i = 0; i < dv; i++) {
      for (let j = 0; j < dk; j++) {
        states[i * dk + j] = init ? init[bi + i * si![valueAxis] + j * si![keyAxis]] : 0;
      }
    }
    for (let t = 0; t < len; t++) {
      const al = alphaAt(t), be = betaAt(t);
      const from = t * dv * dk, to = from + dv * dk;
      for (let i = 0; i < dv; i++) {
        let acc = 0;
        for (let j = 0; j < dk; j++) acc += states[from + i * dk + j] * kAt(t, j);
        const u = be * (vAt(t, i) - al * acc);
        for (let j = 0; j < dk; j++) {
          states[to + i * dk + j] = al * states[from + i * dk + j] + u * kAt(t, j);
        }
      }
    }
    // Backward: G = ∂L/∂S_t from the last step down.
    for (let i = 0; i < dv; i++) {
      for (let j = 0; j < dk; j++) {
        G[i * dk + j] = dS ? dS[bdS + i * sdS![valueAxis] + j * sdS![keyAxis]] : 0;
      }
    }
    const dyAt = (t: number, i: number) => dy ? dy[bdy + t * sdy![axis] + i * sdy![valueAxis]] : 0;
    const put = (t: number | undefined, x: string | undefined, at: number, value: number) => {
      let o = bo;
      if (t !== undefined) o += t * so[axis];
      if (x !== undefined) o += at * so[x];
      out[o] = value;
    };
    for (let t = len - 1; t >= 0; t--) {
      const al = alphaAt(t), be = betaAt(t);
      const prev = t * dv * dk, next = prev + dv * dk;
      for (let i = 0; i < dv; i++) {
        const c = f.scale * dyAt(t, i);
        let ai = 0, bi2 = 0;
        for (let j = 0; j < dk; j++) {
          G[i * dk + j] += c * qAt(t, j);
          ai += states[prev + i * dk + j] * kAt(t, j);
          bi2 += G[i * dk + j] * kAt(t, j);
        }
        a[i] = ai;
        b[i] = bi2;
      }
      if (node.wrt === "v") { for (let i = 0; i < dv; i++) put(t, valueAxis, i, be * b[i]); }
      if (node.wrt === "beta") {
        let acc = 0;
        for (let i = 0; i < dv; i++) acc += b[i] * (vAt(t, i) - al * a[i]);
        put(t, undefined, 0, acc);
      }
      if (node.wrt === "k" || node.wrt === "q") {
        for (let j = 0; j < dk; j++) {
          let acc = 0;
          for (let i = 0; i < dv; i++) {
            acc += node.wrt === "q"
              ? f.scale * dyAt(t, i) * states[next + i * dk + j]
              : be * (vAt(t, i) - al * a[i]) * G[i * dk + j] -
                al * be * b[i] * states[prev + i * dk + j];
          }
          put(t, keyAxis, j, acc);
        }
      }
      for (let i = 0; i < dv; i++) {
        for (let j = 0; j < dk; j++) {
          G[i * dk + j] = al * (G[i * dk + j] - be * b[i] * kAt(t, j));
        }
      }
    }
    if (node.wrt === "init") {
      for (let i = 0; i < dv; i++) {
        for (let j = 0; j < dk; j++) out[bo + i * so[valueAxis] + j * so[keyAxis]] = G[i * dk + j];
      }
    }
  }
  return out;
}
