/**
 * Contractions with few outputs and a long sum split over one of their summed axes, as a graph
 * rewrite run before fusion (split-K in matmul terms).
 *
 * A weight gradient of a small model sums over batch and sequence into a small matrix: the
 * induction model's tied embedding, 17×64 outputs over b·l = 2,048 rows, is one or two output
 * tiles, so one or two workgroups walk the whole sum while the rest of the GPU idles (0.5 ms
 * each on an H100, 2026-12-06). Keeping one summed axis as a batch axis gives a workgroup per
 * tile and index of that axis; a reduction over it (fixed order, no atomics) then adds the
 * partial products. Only existing axes are split (no regrouping), so a contraction summing one
 * long axis alone stays as it is.
 *
 * @module
 */

import { sizeOf, sumTo } from "../dsl/grad_builders.ts";
import { collectNodes, type ContractNode, type Graph, makeNode, type Node } from "../dsl/ir.ts";
import { isInlineContraction } from "./fusion.ts";
import { substitute } from "./graph_substitute.ts";
import { oneHotContraction } from "./scatter_kernel.ts";
import { hasThinShape, readsState } from "./thin_contractions.ts";

/** Largest output (elements) split: about eight 64×64 tiles, too few for a large GPU. */
export const SPLIT_CONTRACTION_MAX_OUTPUT = 32768;
/** Shortest summed extent split: shorter sums are cheap on few workgroups. */
export const SPLIT_CONTRACTION_MIN_SUM = 2048;
/** Workgroups the split aims for (one per tile and index of the kept axis). */
const TARGET_WORKGROUPS = 64;
/** Sum length each split part keeps at least. */
const MIN_PART = 64;

/** The graph with every such contraction split (see the module doc). */
export function splitLongContractions(graph: Graph): Graph {
  const replaced = new Map<Node, Node>();
  for (const n of collectNodes(Object.values(graph.outputs))) {
    if (n.kind !== "contract") continue;
    const axis = splitAxis(n);
    if (axis === undefined) continue;
    const size = sizeOf(n.a, axis);
    const parts = makeNode({
      kind: "contract",
      a: n.a,
      b: n.b,
      summed: n.summed.filter((a) => a !== axis),
      axes: [axis, ...n.axes],
      shape: [size, ...n.shape],
      dtype: n.dtype,
    });
    replaced.set(n, sumTo(parts, n.axes));
  }
  return replaced.size === 0 ? graph : substitute(graph, replaced).graph;
}

/**
 * The summed axis to keep as a batch axis, or none: `n` has few outputs and a long sum, and one
 * of its summed axes (in both operands) has at least 4 indices and leaves each part at least
 * {@link MIN_PART} long; the one giving closest to {@link TARGET_WORKGROUPS} workgroups.
 */
export function splitAxis(n: ContractNode): string | undefined {
  if (n.summed.length < 2 || isInlineContraction(n) || oneHotContraction(n)) return undefined;
  if (readsState(n.a) || readsState(n.b)) return undefined;
  if (n.a.dtype !== "f32" || n.b.dtype !== "f32") return undefined;
  const outputs = n.shape.reduce((p, x) => p * x, 1);
  if (outputs > SPLIT_CONTRACTION_MAX_OUTPUT) return undefined;
  // A thin contraction is a reduction already (thin_contractions.ts).
  if (hasThinShape(n)) return undefined;
  const total = n.summed.reduce((p, a) => p * sizeOf(n.a, a), 1);
  if (total < SPLIT_CONTRACTION_MIN_SUM) return undefined;
  const tiles = Math.max(1, Math.ceil(outputs / 4096));
  const want = Math.max(4, Math.ceil(TARGET_WORKGROUPS / tiles));
  let best: string | undefined;
  for (const a of n.summed) {
    if (!n.a.axes.includes(a) || !n.b.axes.includes(a)) continue;
    const size = sizeOf(n.a, a);
    if (size < 4 || total / size < MIN_PART) continue;
    if (
      best === undefined ||
      Math.abs(Math.log(size / want)) < Math.abs(Math.log(sizeOf(n.a, best) / want))
    ) {
      best = a;
    }
  }
  return best;
}
