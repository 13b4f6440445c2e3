/**
 * The transpose rule of `deltaRule`. Each value row i of the state evolves on its own:
 * S_t[i] = α_t(S_{t−1}[i] − β_t a_i k_t) + β_t v_t[i] k_t with a_i = S_{t−1}[i]·k_t, and
 * y_t[i] = scale·S_t[i]·q_t. With G_t = ∂L/∂S_t (through every later step), the cotangents
 * dy of y and dS of the final state:
 *
 *   G_T = dS + scale·dy_T q_Tᵀ,   G_{t−1} = α_t(G_t − β_t b k_tᵀ) + scale·dy_{t−1} q_{t−1}ᵀ
 *   (b_i = G_t[i]·k_t; the transition I − β k kᵀ is symmetric)
 *   dv_t = β_t b,   dβ_t = Σ_i b_i(v_t[i] − α_t a_i),   dq_t = scale·S_tᵀ dy_t,
 *   dk_t = G_tᵀ u_t − α_t β_t S_{t−1}ᵀ b   (u_t = β_t(v_t − α_t a)),   d init = α_1(G_1 − β_1 b kᵀ)
 *
 * computed by `delta_grad` nodes (the compiler's kernel recomputes the forward states from
 * checkpoints: codegen/delta_backward.ts). The gate needs no state: S_t = e^{P_t}·S̃_t with P
 * the cumulative log-decay, where S̃ runs the same recurrence on ṽ_t = e^{−P_t}v_t and
 * y_t = e^{P_t}·scale·S̃_t q_t, so ∂L/∂P_t = dy_t·y_t − dv_t·v_t (plus ⟨dS, S_T⟩ at the last
 * step), and d gate_τ = Σ_{t≥τ} ∂L/∂P_t: a reverse cumulative sum.
 *
 * @module
 */

import {
  binary,
  constant,
  type Contribution,
  freshAxis,
  materializeAs,
  padAlong,
  productTo,
  sizeOf,
  unary,
  withUnitAxis,
} from "./grad_builders.ts";
import {
  type DeltaGradNode,
  type DeltaNode,
  type DeltaStateNode,
  makeNode,
  type Node,
} from "./ir.ts";

/**
 * The cotangents of a delta node's operands, given the cotangent `ct` of its y or `ctState` of
 * its final state (`state`, the node reading it); the other is zero.
 */
export function deltaRuleTranspose(
  node: DeltaNode,
  ct: Node | undefined,
  ctState: { ct: Node; state: DeltaStateNode } | undefined,
  wanted: (input: Node) => boolean,
): Contribution[] {
  const dy = ct && materializeAs(ct, node);
  const dS = ctState && materializeAs(ctState.ct, ctState.state);
  const grad = (wrt: DeltaGradNode["wrt"]): DeltaGradNode => {
    const target = node[wrt]!;
    return makeNode({
      kind: "delta_grad",
      of: node,
      ct: dy,
      ctState: dS,
      wrt,
      axes: target.axes,
      shape: target.shape,
      dtype: "f32",
    });
  };
  const out: Contribution[] = [];
  for (const wrt of ["q", "k", "beta", "init"] as const) {
    const operand = node[wrt];
    if (operand && wanted(operand)) out.push([operand, grad(wrt)]);
  }
  const gate = node.gate && wanted(node.gate) ? node.gate : undefined;
  const dv = wanted(node.v) || gate ? grad("v") : undefined;
  if (dv && wanted(node.v)) out.push([node.v, dv]);
  const final = ctState && dS ? { dS, state: ctState.state } : undefined;
  if (gate) out.push([gate, gateCotangent(node, gate, dy, dv!, final)]);
  return out;
}

/**
 * d gate: the reverse cumulative sum along time of dy·y − dv·v (summed over the value axis),
 * plus ⟨dS, S_T⟩ at the last step; over the gate's axes.
 */
function gateCotangent(
  node: DeltaNode,
  gate: Node,
  dy: Node | undefined,
  dv: Node,
  final: { dS: Node; state: DeltaStateNode } | undefined,
): Node {
  const keep = gate.axes;
  let dP = unary("neg", productTo(dv, node.v, keep));
  if (dy) dP = binary("add", productTo(dy, node, keep), dP);
  if (final) {
    const batch = keep.filter((a) => a !== node.axis);
    const unit = freshAxis(node.axis);
    const last = withUnitAxis(productTo(final.dS, final.state, batch), unit);
    dP = binary("add", dP, padAlong(last, unit, sizeOf(node, node.axis) - 1, 0, node.axis));
  }
  const input = materializeAs(dP, gate);
  return makeNode({
    kind: "scan",
    axis: node.axis,
    decay: constant(1),
    input,
    reverse: true,
    axes: input.axes,
    shape: input.shape,
    dtype: "f32",
  });
}
