/**
 * Contractions with too few output tiles for the GPU and a long sum split over one of their
 * summed axes, as a graph rewrite run before fusion (split-K in matmul terms).
 *
 * A weight gradient sums over batch and sequence into a matrix that may be small next to that
 * sum: the induction model's tied embedding, 17×64 outputs over b·l = 2,048 rows, is one or two
 * output tiles, so one or two workgroups walk the whole sum while the rest of the GPU idles (0.5
 * ms each on an H100, 2026-12-06); the Mamba-2 130M out_proj gradient, 768×1536 over 16,384
 * rows, is 144 tiles of 128 threads, about one per multiprocessor, and ran at 10 TFLOP/s. Keeping
 * one summed axis as a batch axis gives a workgroup per tile and index of that axis; a reduction
 * over it (fixed order, no atomics) then adds the partial products. Only existing axes are split
 * (no regrouping), so a contraction summing one long axis alone stays as it is.
 *
 * The cost: the partial products are written and read once more (8 bytes per output and part),
 * against 2·K flops per output for the product; parts keep at least {@link MIN_PART} (small
 * outputs) or {@link MIN_PART_LARGE} steps of the sum so that stays small.
 *
 * @module
 */

import { sizeOf, sumTo } from "../dsl/grad_builders.ts";
import { collectNodes, type ContractNode, type Graph, makeNode, type Node } from "../dsl/ir.ts";
import { isInlineContraction } from "./fusion.ts";
import { substitute } from "./graph_substitute.ts";
import { oneHotContraction } from "./scatter_kernel.ts";
import { hasThinShape, readsState } from "./thin_contractions.ts";

/** Outputs counted as one workgroup's tile (64×128, the matmul lowering's large tile). */
const OUTPUTS_PER_TILE = 8192;
/**
 * Workgroups a contraction should give the GPU: about four per multiprocessor on a large GPU
 * (132 on an H100; WebGPU does not tell the count). Fewer output tiles than this are split.
 */
export const SPLIT_CONTRACTION_TARGET_WORKGROUPS = 512;
/** Shortest summed extent split: shorter sums are cheap on few workgroups. */
export const SPLIT_CONTRACTION_MIN_SUM = 2048;
/** Outputs up to which a part may be as short as {@link MIN_PART}. */
const SMALL_OUTPUT = 32768;
/** Sum length each part keeps at least, for small outputs. */
const MIN_PART = 64;
/** Sum length each part keeps at least otherwise (the partials' traffic stays below 1/32 of
 * the product's flops per byte). */
const MIN_PART_LARGE = 256;

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
 * The summed axis to keep as a batch axis, or none: `n` has fewer output tiles than
 * {@link SPLIT_CONTRACTION_TARGET_WORKGROUPS} and a long sum, and one of its summed axes (in
 * both operands) has at least 4 indices and leaves each part long enough ({@link MIN_PART} or
 * {@link MIN_PART_LARGE}); the one whose parts bring the workgroups closest to the target.
 */
export function splitAxis(n: ContractNode): string | undefined {
  if (n.summed.length < 2 || isInlineContraction(n) || oneHotContraction(n)) return undefined;
  if (readsState(n.a) || readsState(n.b)) return undefined;
  if (n.a.dtype !== "f32" || n.b.dtype !== "f32") return undefined;
  const outputs = n.shape.reduce((p, x) => p * x, 1);
  const tiles = Math.max(1, Math.ceil(outputs / OUTPUTS_PER_TILE));
  if (tiles >= SPLIT_CONTRACTION_TARGET_WORKGROUPS) return undefined;
  // A thin contraction is a reduction already (thin_contractions.ts).
  if (hasThinShape(n)) return undefined;
  const total = n.summed.reduce((p, a) => p * sizeOf(n.a, a), 1);
  if (total < SPLIT_CONTRACTION_MIN_SUM) return undefined;
  const minPart = outputs <= SMALL_OUTPUT ? MIN_PART : MIN_PART_LARGE;
  const want = Math.max(4, Math.ceil(SPLIT_CONTRACTION_TARGET_WORKGROUPS / tiles));
  let best: string | undefined;
  for (const a of n.summed) {
    if (!n.a.axes.includes(a) || !n.b.axes.includes(a)) continue;
    const size = sizeOf(n.a, a);
    if (size < 4 || total / size < minPart) continue;
    if (
      best === undefined ||
      Math.abs(Math.log(size / want)) < Math.abs(Math.log(sizeOf(n.a, best) / want))
    ) {
      best = a;
    }
  }
  return best;
}
