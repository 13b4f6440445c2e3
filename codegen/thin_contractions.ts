/**
 * Contractions with no reuse lowered as reductions, as a graph rewrite run before fusion.
 *
 * A contraction whose output axes are (almost) all shared by both operands (M·N ≤ 4 in matmul
 * terms: a per-channel dot product such as a bias or a decay gradient, Σ over batch and
 * sequence) reads every operand element once or a few times. The tiled matmul kernel then has
 * nothing to tile: it runs one workgroup per output, and with few outputs (24 heads' ∂A over
 * b·l·p = 1M elements) a handful of cores do all the work (11.8 ms on an H100 for what a split
 * reduction does in well under 1 ms). As `Σ_summed a·b` it becomes a reduction of an
 * elementwise product, and the reduction kernels split long reductions to few outputs over many
 * workgroups and read a kept innermost axis with neighbouring threads.
 *
 * Contractions of a scan's states stay: they are a scan kernel's outputs (`scan_outputs.ts`),
 * not separate kernels. Short contractions computed inline where they are used stay too.
 *
 * @module
 */

import { uncheckedBinary } from "../dsl/build.ts";
import { inLayout, sumTo } from "../dsl/grad_builders.ts";
import {
  collectNodes,
  type ContractNode,
  type Graph,
  type Node,
  type ReduceNode,
} from "../dsl/ir.ts";
import { isInlineContraction, sideExtent } from "./fusion.ts";
import { substitute } from "./graph_substitute.ts";

/** Largest M·N (output elements per batch index) lowered as a reduction. */
export const THIN_CONTRACTION_MAX_REUSE = 4;

/** The graph with every thin contraction replaced by a reduction (see the module doc). */
export function reduceThinContractions(graph: Graph): Graph {
  const replaced = new Map<Node, Node>();
  for (const n of collectNodes(Object.values(graph.outputs))) {
    if (n.kind !== "contract" || !isThin(n)) continue;
    replaced.set(n, inLayout(asReduction(n), n.axes));
  }
  return replaced.size === 0 ? graph : substitute(graph, replaced).graph;
}

/** `n` as Σ_summed a·b: a reduction of the operands' product, over the kept axes. */
export function asReduction(n: ContractNode): ReduceNode {
  return sumTo(uncheckedBinary("mul", n.a, n.b), n.axes) as ReduceNode;
}

function isThin(n: ContractNode): boolean {
  if (isInlineContraction(n)) return false;
  if (readsState(n.a) || readsState(n.b)) return false;
  return hasThinShape(n);
}

/**
 * Whether `n` sums something and its output has at most {@link THIN_CONTRACTION_MAX_REUSE}
 * elements per batch index (f32 or f16 operands). The pass above rewrites such contractions
 * before fusion; a short one kept inline there but given a kernel of its own by fusion (read by
 * several kernels) is emitted as a reduction too (`compile_graph.ts`).
 */
export function hasThinShape(n: ContractNode): boolean {
  if (n.summed.length === 0) return false;
  if (n.a.dtype !== "f32" && n.a.dtype !== "f16" || n.b.dtype !== "f32" && n.b.dtype !== "f16") {
    return false;
  }
  return sideExtent(n, n.a, n.b) * sideExtent(n, n.b, n.a) <= THIN_CONTRACTION_MAX_REUSE;
}

/** Whether `x` is a recurrence's state, seen through views (its contractions stay there). */
export function readsState(x: Node): boolean {
  for (;;) {
    if (
      x.kind === "scan" || x.kind === "delta" || x.kind === "delta_state" ||
      x.kind === "assocScan" || x.kind === "pick" || x.kind === "attention"
    ) {
      return true;
    }
    if (x.kind === "permute" || x.kind === "regroup" || x.kind === "slice" || x.kind === "flip") {
      x = x.x;
      continue;
    }
    return false;
  }
}
