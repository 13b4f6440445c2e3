/**
 * The transpose rule of `attention`: its q, k and v cotangents are `attention_grad` nodes, which
 * the compiler runs as FlashAttention-2's backward kernels (codegen/attention_backward.ts: the
 * probabilities recomputed per tile from q, k and each row's log-sum-exp, never stored) and the
 * interpreter as float64 loops. With dO the output's cotangent:
 *
 *   dV = Pᵀ·dO,   dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)),   dQ = scale·dS·K,   dK = scale·dSᵀ·Q
 *
 * summed over the query heads that share a key/value head; a sink (a key whose value is zero)
 * gets d(sink) = −Σ P_sink·rowsum(dO ∘ O) over the rows that share it.
 *
 * @module
 */

import { type Contribution, materializeAs } from "./grad_builders.ts";
import { type AttentionGradNode, type AttentionNode, makeNode, type Node } from "./ir.ts";

/** The cotangents of q, k and v given the cotangent `ct` of the output. */
export function attentionRule(
  node: AttentionNode,
  ct: Node,
  wanted: (input: Node) => boolean,
): Contribution[] {
  const dO = materializeAs(ct, node);
  const grad = (wrt: AttentionGradNode["wrt"], pair?: AttentionGradNode): AttentionGradNode => {
    const target = wrt === "sinks" ? node.sinks! : node[wrt];
    return makeNode({
      kind: "attention_grad",
      of: node,
      ct: dO,
      wrt,
      pair,
      axes: target.axes,
      shape: target.shape,
      dtype: "f32",
    });
  };
  const out: Contribution[] = [];
  if (wanted(node.q)) out.push([node.q, grad("q")]);
  // dK and dV come from one kernel: the v gradient names the k gradient as its pair.
  const dk = wanted(node.k) ? grad("k") : undefined;
  if (dk) out.push([node.k, dk]);
  if (wanted(node.v)) out.push([node.v, grad("v", dk)]);
  if (node.sinks && wanted(node.sinks)) out.push([node.sinks, grad("sinks")]);
  return out;
}
