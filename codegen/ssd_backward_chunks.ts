/**
 * The reverse cumulative sum of the state-free decay gradient (`ssd_backward.ts`), split at
 * chunk boundaries the way mamba_ssm's chunked backward is. Summing the per-step terms D[k]
 * over the whole sequence would carry every step's rounding error into every earlier step (a
 * gradient summed over the sequence, like dA, then errs by about the length times f32's
 * epsilon). Instead, for a forward scan cut into chunks of Q steps, with Λ the cumulative
 * log-decay inside a chunk (inclusive) and s the first step of the next chunk,
 *
 *   a[t]·∂a[t] = Σ_{k=t}^{chunk end} D[k] + ⟨P[c+1], H[c]⟩_S,
 *
 * where H[c] = h at chunk c's last step and P[c] = a[s_c]·g[s_c] at its first, both from
 * chunk-level scans (l/Q steps, b·(l/Q)·h·p·n floats) over per-chunk sums that are batched
 * matrix products:
 *
 *   H[c] = e^{Λ_end}·H[c−1] + Σ_j e^{Λ_end − Λ_j}·u[j],   H[−1] = init,
 *   P[c] = e^{Λ_end}·P[c+1] + Σ_k e^{Λ_k}·c[k],          P[C] = 0.
 *
 * So an error in D reaches at most Q steps; the boundary terms are computed from states. The
 * length is padded to whole chunks with a = 1 and zero inputs; a reverse scan is handled on
 * flipped views.
 *
 * @module
 */

import { cumsumNode } from "../dsl/assoc_scan.ts";
import { uncheckedBinary } from "../dsl/build.ts";
import { einsum } from "../dsl/einsum.ts";
import {
  constant,
  flipAlong,
  freshAxis,
  inLayout,
  padAlong,
  pickAt,
  shiftAlong,
  sliceAlong,
  sumTo,
} from "../dsl/grad_builders.ts";
import { makeNode, type Node, type ScanNode } from "../dsl/ir.ts";
import { Tensor } from "../dsl/tensor.ts";

/** Default steps per chunk of the boundary form (the SSD kernels' usual chunk). */
export const BOUNDARY_CHUNK = 64;

/** What {@link chunkedDecaySum} needs of a scan pair. */
export interface BoundaryInputs {
  /** The primal scan h (its axis, direction, init and axes). */
  readonly h: ScanNode;
  /** The log-decay e (decay = exp(e)), over the decay's axes. */
  readonly logDecay: Node;
  /** The per-step terms D[k] = Σ_S c·h − Σ_S g·u, over the decay's axes. */
  readonly terms: Node;
  /** h's input as a sum of products (each a list of factors). */
  readonly input: readonly (readonly Node[])[];
  /** h's cotangent (the adjoint's input) as a sum of products. */
  readonly cotangent: readonly (readonly Node[])[];
  /** Steps per chunk (a power of two; default {@link BOUNDARY_CHUNK}). */
  readonly chunk?: number;
}

/** a·∂a over the decay's axes and layout (see the module doc). */
export function chunkedDecaySum(p: BoundaryInputs): Node {
  const { h } = p;
  const l = h.axis;
  const len = h.shape[h.axes.indexOf(l)];
  const q = Math.min(p.chunk ?? BOUNDARY_CHUNK, 2 ** Math.ceil(Math.log2(Math.max(len, 1))));
  const chunks = Math.ceil(len / q);
  const padded = chunks * q;
  const cAxis = freshAxis("chunk"), qAxis = freshAxis("step");
  const decayAxes = p.terms.axes;
  const perChunk = (axes: readonly string[]) => axes.flatMap((a) => a === l ? [cAxis] : [a]);

  /** x (forward-ordered, padded with zeros) with l split into (chunk, step). */
  const chunked = (x: Node): Node => {
    if (!x.axes.includes(l)) return x;
    if (h.reverse) x = flipAlong(x, l);
    const lp = padded > len ? freshAxis(l) : l;
    if (padded > len) x = padAlong(x, l, 0, padded - len, lp);
    const sizes: Record<string, number> = { [cAxis]: chunks, [qAxis]: q };
    x.axes.forEach((a, i) => {
      if (a !== lp) sizes[a] = x.shape[i];
    });
    const axes = x.axes.flatMap((a) => a === lp ? [cAxis, qAxis] : [a]);
    return makeNode({
      kind: "regroup",
      x,
      inGroups: x.axes.map((a) => a === lp ? [cAxis, qAxis] : [a]),
      outGroups: axes.map((a) => [a]),
      sizes,
      axes,
      shape: axes.map((a) => sizes[a]),
      dtype: x.dtype,
    });
  };

  // Λ inside each chunk (inclusive), its last value, and the two weights.
  const lam = cumsumNode(chunked(p.logDecay), qAxis, false);
  const lamEnd = pickAt(lam, qAxis, q - 1);
  const chunkDecay = makeNode({
    kind: "unary",
    op: "exp",
    x: lamEnd,
    axes: lamEnd.axes,
    shape: lamEnd.shape,
    dtype: "f32",
  });
  const exp = (x: Node) =>
    makeNode({ kind: "unary", op: "exp", x, axes: x.axes, shape: x.shape, dtype: "f32" });
  const toEnd = exp(uncheckedBinary("sub", lamEnd, lam));
  const fromStart = exp(lam);

  const stateAxes = perChunk(h.axes);
  const stateShape = stateAxes.map((a) => a === cAxis ? chunks : h.shape[h.axes.indexOf(a)]);
  const sizeOf = (a: string) => stateShape[stateAxes.indexOf(a)];
  /** Σ over each chunk's steps of weight·Π factors, for every product, over the state axes. */
  const chunkSum = (weight: Node, products: readonly (readonly Node[])[]): Node => {
    const parts = products.map((factors) => {
      const operands = [weight, ...factors.map(chunked)];
      const missing = stateAxes.filter((a) => !operands.some((o) => o.axes.includes(a)));
      if (missing.length > 0) {
        operands.push(constant(1, missing.map((a) => ({ axis: a, size: sizeOf(a) }))));
      }
      const spec = `${operands.map((o) => o.axes.join(" ")).join(", ")} -> ${stateAxes.join(" ")}`;
      const einsumAny = einsum as unknown as (spec: string, ...operands: Tensor[]) => Tensor;
      return einsumAny(spec, ...operands.map((o) => new Tensor(o))).node;
    });
    return inLayout(parts.reduce((a, b) => uncheckedBinary("add", a, b)), stateAxes);
  };
  const scanOverChunks = (input: Node, reverse: boolean, init?: Node): Node =>
    makeNode({
      kind: "scan",
      axis: cAxis,
      decay: chunkDecay,
      input,
      ...(init ? { init } : {}),
      reverse,
      axes: stateAxes,
      shape: stateShape,
      dtype: "f32",
    });
  const ends = scanOverChunks(chunkSum(toEnd, p.input), false, h.init);
  const starts = scanOverChunks(chunkSum(fromStart, p.cotangent), true);
  // An elementwise product, not a contraction of the scan: the chunk states are written
  // (b·(l/Q)·h·p·n floats) by a plain scan kernel instead of a recurrent kernel holding p·n
  // states per thread over a few dozen steps.
  const product = uncheckedBinary("mul", shiftAlong(starts, cAxis, -1, 0), ends);
  const boundary = inLayout(sumTo(product, perChunk(decayAxes)), perChunk(decayAxes));

  // Within the chunk: D summed from t to the chunk's end; then the boundary term.
  const local = cumsumNode(chunked(p.terms), qAxis, true);
  const total = uncheckedBinary("add", local, boundary);
  // Back to the scan axis: merge (chunk, step), drop the padding, undo the flip.
  const lp = padded > len ? freshAxis(l) : l;
  const merged = makeNode({
    kind: "regroup",
    x: total,
    inGroups: total.axes.map((a) => [a]),
    outGroups: total.axes.filter((a) => a !== qAxis).map((a) => a === cAxis ? [cAxis, qAxis] : [a]),
    sizes: Object.fromEntries(total.axes.map((a, i) => [a, total.shape[i]])),
    axes: total.axes.filter((a) => a !== qAxis).map((a) => a === cAxis ? lp : a),
    shape: total.axes.filter((a) => a !== qAxis).map((a) =>
      a === cAxis ? padded : total.shape[total.axes.indexOf(a)]
    ),
    dtype: "f32",
  });
  let out = padded > len ? sliceAlong(merged, lp, 0, len, l) : merged;
  if (h.reverse) out = flipAlong(out, l);
  return inLayout(out, decayAxes);
}
