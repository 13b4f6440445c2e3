/**
 * SSD analysis: finds fused scans that the chunked state-space-duality algorithm of Mamba-2 can
 * run, read off the graph rather than matched against one program.
 *
 * A scan h[t] = a[t]·h[t−1] + u[t] with state axes S (summed by its consumers y = Σ_S C·h)
 * has the matrix form when
 * - the decay a has no state axis (one scalar per head and step), or it varies along state
 *   axes only where the scan also has value axes (GLA's gate over the key dimension: a
 *   **vector decay**, run by the chunked kernels with per-element decay factors, ssd_vector.ts),
 * - the input u is a product (a tree of `mul`, seen through `permute`) of factors that each
 *   either carry state axes ("key" factors, like B) or not ("value" and "scale" factors, like
 *   x and Δ).
 * The channel axes then split into **head** axes, those that the decay, a key factor or a
 * consumer's other operand C depends on, and **value** axes (the rest, like the head dimension
 * p). Per head index the state is a value × state matrix updated by a rank-1 term, which is
 * what lets chunks be processed with matrix products. Groups (several heads sharing B and C)
 * need no special case: with heads written as (g hg), B and C have g but not hg, so the C·Bᵀ
 * products are computed once per g (the **cb** axes) and shared by the hg heads.
 *
 * @module
 */

import { showAxes } from "../dsl/axes.ts";
import { makeNode, type Node, type ScanNode } from "../dsl/ir.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanSpec } from "./scan_spec.ts";
import { otherOperand } from "./scan_plan.ts";
import { outputsReadEachOther } from "./scan_outputs.ts";

/** How an SSD-eligible scan decomposes. */
export interface SsdForm {
  readonly scan: ScanNode;
  /** Channel axes the decay, a key factor or a C operand depends on (batch included). */
  readonly headAxes: readonly string[];
  /** Channel axes only the value and scale factors carry (the head dimension p). */
  readonly valueAxes: readonly string[];
  /** The state axes (summed by the consumers). */
  readonly stateAxes: readonly string[];
  /** Head axes of the key factors and C operands: C·Bᵀ is computed once per index of these. */
  readonly cbAxes: readonly string[];
  /** log of the decay: `e` when the decay is `exp(e)`, else a new `log(decay)` node. */
  readonly logDecay: Node;
  /** Input factors with state axes (their product is B). */
  readonly keyFactors: readonly Node[];
  /** Input factors with value axes (their product is x). */
  readonly valueFactors: readonly Node[];
  /** Input factors over head and scan axes only (Δ): one scalar per head and step. */
  readonly scaleFactors: readonly Node[];
  /** Whether the decay varies along state axes (a vector per head and step, as in GLA). */
  readonly vectorDecay: boolean;
  /** The other operand (C) of each output's contraction, aligned with `spec.outputs`. */
  readonly queries: readonly Node[];
}

/** The result of {@link explainSsd}: a form, or why there is none. */
export type SsdAnalysis = { form: SsdForm; reason?: undefined } | {
  form?: undefined;
  reason: string;
};

/**
 * Flattens a product tree into its factors, left to right, seeing through permutations (an
 * explicit stack: a product may be thousands of factors deep).
 */
function factorsOf(node: Node, materialized: ReadonlySet<Node>, out: Node[]): void {
  const stack = [node];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (!materialized.has(n) && n.kind === "binary" && n.op === "mul") stack.push(n.b, n.a);
    else if (!materialized.has(n) && n.kind === "permute") stack.push(n.x);
    else out.push(n);
  }
}

/**
 * `e` where `d` is `exp(e)` (seen through permutations and slices), 0 where it is the constant
 * 1, each rebuilt around its view; else undefined.
 */
function exponentOf(d: Node, materialized: ReadonlySet<Node>): Node | undefined {
  if (materialized.has(d)) return undefined;
  if (d.kind === "unary" && d.op === "exp") return d.x;
  if (d.kind === "const" && d.value === 1) return makeNode({ ...d, value: 0 });
  if (d.kind === "permute" || d.kind === "slice") {
    const x = exponentOf(d.x, materialized);
    return x && makeNode({ ...d, x });
  }
  return undefined;
}

/**
 * The log-decay node: `e` for `exp(e)` (exact and cheaper; also through the shift autodiff
 * builds for an adjoint's decay, a concat of a slice of exp(e) and 1, so that a decay below
 * f32's range gives a very negative log rather than log(0) = −∞, whose differences are NaN),
 * else `log(decay)`.
 */
function logDecayOf(decay: Node, materialized: ReadonlySet<Node>): Node {
  let d = decay;
  while (d.kind === "permute" && !materialized.has(d)) d = d.x;
  if (d.kind === "unary" && d.op === "exp" && !materialized.has(d)) return d.x;
  if (d.kind === "concat" && !materialized.has(d)) {
    const parts = d.parts.map((p) => exponentOf(p, materialized));
    if (parts.every((p) => p !== undefined)) return makeNode({ ...d, parts: parts as Node[] });
  }
  return makeNode({
    kind: "unary",
    op: "log",
    x: decay,
    axes: decay.axes,
    shape: decay.shape,
    dtype: "f32",
  });
}

/**
 * Decides whether a fused scan runs as chunked SSD, and if not, why not (for error messages
 * when a user forces the chunked lowering). `materialized` nodes are treated as opaque
 * factors: their buffers are read, their trees are not looked into.
 */
export function explainSsd(
  spec: ScanSpec,
  materialized: ReadonlySet<Node> = new Set(),
): SsdAnalysis {
  const { scan } = spec;
  const state = spec.stateAxes;
  if (state.length === 0) {
    return { reason: "the scan has no state axes (no consumer sums over a state axis)" };
  }
  if (spec.outputs.length === 0) {
    return { reason: "the scan has no per-step outputs (only final states)" };
  }
  if (outputsReadEachOther(spec, materialized)) {
    return { reason: "an output's epilogue reads another output of the scan" };
  }
  const queries: Node[] = [];
  for (const o of spec.outputs) {
    if (!o.contract) return { reason: "an output reads the state itself, not Σ C·h" };
    queries.push(otherOperand(o.contract, scan));
  }
  const decayState = scan.decay.axes.filter((a) => state.includes(a));
  const factors: Node[] = [];
  factorsOf(scan.input, materialized, factors);
  const hasState = (n: Node) => n.axes.some((a) => state.includes(a));
  const keyFactors = factors.filter(hasState);
  const rest = factors.filter((n) => !hasState(n));
  const channel = spec.channelAxes;
  const headSet = new Set<string>();
  for (const n of [scan.decay, ...keyFactors, ...queries]) {
    for (const a of n.axes) if (channel.includes(a)) headSet.add(a);
  }
  const headAxes = channel.filter((a) => headSet.has(a));
  const valueAxes = channel.filter((a) => !headSet.has(a));
  const cbSet = new Set<string>();
  for (const n of [...keyFactors, ...queries]) {
    for (const a of n.axes) if (headSet.has(a)) cbSet.add(a);
  }
  if (decayState.length && valueAxes.length === 0) {
    return {
      reason: `the decay ${showAxes(scan.decay.axes)} varies along the state axes ` +
        `${showAxes(decayState)} and no channel axis is left for values (no matrix state ` +
        `per head)`,
    };
  }
  const hasValue = (n: Node) => n.axes.some((a) => valueAxes.includes(a));
  return {
    form: {
      scan,
      headAxes,
      valueAxes,
      stateAxes: state,
      cbAxes: headAxes.filter((a) => cbSet.has(a)),
      logDecay: logDecayOf(scan.decay, materialized),
      keyFactors,
      valueFactors: rest.filter(hasValue),
      scaleFactors: rest.filter((n) => !hasValue(n)),
      queries,
      vectorDecay: decayState.length > 0,
    },
  };
}

/**
 * The SSD form of a fused scan, or undefined when the chunked algorithm does not apply (the
 * decay varies along a state axis and there are no value axes, or there is no state to
 * contract). See {@link explainSsd}.
 */
export function analyzeSsd(
  spec: ScanSpec,
  materialized: ReadonlySet<Node> = new Set(),
): SsdForm | undefined {
  return explainSsd(spec, materialized).form;
}

/** Sizes the cost model and the kernels work with. */
export interface SsdSizes {
  /** Scan length. */
  len: number;
  /** Heads (product of the head axes, batch included). */
  heads: number;
  /** Distinct C·Bᵀ products per step (product of the cb axes). */
  cb: number;
  /** Value elements per head (head dimension). */
  value: number;
  /** State elements per head. */
  state: number;
  /** Per-step outputs (contractions). */
  outputs: number;
  /** Whether the decay is a vector over the state (see {@link SsdForm.vectorDecay}). */
  vectorDecay: boolean;
}

/** The sizes of a form. */
export function ssdSizes(form: SsdForm): SsdSizes {
  const { scan } = form;
  const size = (axes: readonly string[]) =>
    axes.reduce((p, a) => p * scan.shape[scan.axes.indexOf(a)], 1);
  return {
    len: size([scan.axis]),
    heads: size(form.headAxes),
    cb: size(form.cbAxes),
    value: size(form.valueAxes),
    state: size(form.stateAxes),
    outputs: form.queries.length,
    vectorDecay: form.vectorDecay,
  };
}

/** Power-of-two chunk lengths the chunked kernels support. */
export const SSD_CHUNKS: readonly number[] = [8, 16, 32, 64, 128, 256];

/**
 * Chunk lengths of the vector-decay kernels: the intra-chunk products keep a chunk's q × q
 * block in registers across one workgroup (ssd_vector.ts), so q stops at 64.
 */
export const SSD_VECTOR_CHUNKS: readonly number[] = [8, 16, 32, 64];

/** The chunk lengths a lowering of these sizes supports. */
export function chunkLengths(sizes: SsdSizes): readonly number[] {
  return sizes.vectorDecay ? SSD_VECTOR_CHUNKS : SSD_CHUNKS;
}

/**
 * The default chunk length: the one the cost model ({@link chunkedSeconds}) finds fastest among
 * 16…256, at most the length rounded up to a power of two. It trades the intra-chunk work
 * (∝ chunk · value per step) against the chunk-state traffic (∝ state · value / chunk per step).
 */
export function defaultChunk(sizes: SsdSizes): number {
  let best = 16;
  for (const q of chunkLengths(sizes)) {
    if (q < 16 || (q > 16 && q >= 2 * sizes.len)) continue;
    if (chunkedSeconds(sizes, q) <= chunkedSeconds(sizes, best)) best = q;
  }
  return best;
}

/**
 * Bytes of the chunked lowering's scratch buffer at chunk length q: the chunk states, the C·Bᵀ
 * blocks (with a vector decay: the decayed intra-chunk products, one set per head), the chunk
 * decays Λ (one vec4 each; with a vector decay one per state element, and the in-chunk
 * cumulative log-decays G before them), and their total.
 */
export function ssdScratchBytes(
  sizes: SsdSizes,
  q: number,
): { states: number; cb: number; decays: number; total: number } {
  const chunks = Math.ceil(sizes.len / q);
  const value4 = Math.ceil(sizes.value / 4) * 4;
  const states = sizes.heads * chunks * sizes.state * value4 * 4;
  const cb = sizes.outputs * (sizes.vectorDecay ? sizes.heads : sizes.cb) * chunks * q * q * 4;
  const state4 = Math.ceil(sizes.state / 4) * 4;
  const decays = sizes.vectorDecay
    ? sizes.heads * chunks * (q + 1) * state4 * 4
    : sizes.heads * chunks * 16;
  return { states, cb, decays, total: states + cb + decays };
}

// Cost-model constants, fitted to H100 measurements (bench/ssd_bench.ts, 2026-11-23): the tiled
// kernels' f32 rate, the effective memory bandwidth, a fixed cost per dispatch (short dependent
// phases, barriers), and the recurrent kernel's cost per state element and step, its latency
// per step (the state update is a dependent chain per lane) and its fixed cost.
const RATE_MM = 25e12;
const BANDWIDTH = 1.5e12;
const DISPATCH_SECONDS = 20e-6;
const RECURRENT_SECONDS_PER_STATE_STEP = 1.05e-12;
const RECURRENT_SECONDS_PER_STEP = 0.35e-6;
const RECURRENT_FIXED_SECONDS = 60e-6;
/**
 * A vector decay takes the chunked kernels when the model puts them below this fraction of the
 * recurrent kernel's time. Fitted on GLA (H100): at (1, 8192, 32, 128) chunked 1.91 ms against
 * recurrent 2.85 (modelled 1.71 and 4.57: a ratio of 0.37); at (8, 2048, 16, 64) (modelled 0.62
 * and 1.19: 0.52) the chunked kernels read 0.79 and 0.80 ms in two calls while the recurrent
 * kernel read 0.64 once and 1.58 and 1.67 in two others (2026-12-05 to 12-07), so the bar sits
 * above 0.52: the chunked form's time is the steadier one. The model overrates the recurrent
 * kernel on matrix states and underrates the chunked kernels' exponentials.
 */
const VECTOR_CHUNKED_BAR = 0.55;
/** Below this many state elements per head (state × value) the chunk matrices are too small. */
const MIN_MATRIX = 1024;

/**
 * Modelled seconds of the chunked lowering at chunk length q: kernels 1 and 3 overlap their
 * products with their traffic (inputs, outputs, chunk states); the pass over chunks is pure
 * traffic (the states read and written once more).
 */
export function chunkedSeconds(s: SsdSizes, q: number): number {
  // A vector decay computes the intra-chunk products per head, and its diagonal sub-blocks
  // take one exponential per term (about 8 multiply-adds each, on the special-function units).
  const products = s.vectorDecay ? s.heads * (1 + 8 * Math.min(16, q) / q) : s.cb;
  const flops = s.heads * s.len * s.outputs * (4 * s.state * s.value + q * s.value) +
    2 * products * s.outputs * s.len * q * s.state;
  const states = ssdScratchBytes(s, q).states;
  const io = 2 * states + 3 * 4 * s.heads * s.len * s.value * s.outputs;
  return Math.max(flops / RATE_MM, io / BANDWIDTH) + 2 * states / BANDWIDTH +
    3 * DISPATCH_SECONDS;
}

/** Modelled seconds of the recurrent fused kernel (see scan_kernel.ts). */
export function recurrentSeconds(s: SsdSizes): number {
  const work = s.heads * s.value * s.len * s.state * RECURRENT_SECONDS_PER_STATE_STEP;
  // With few channels the recurrent kernel chunks the sequence; its latency floor is then the
  // chunk length, with 3 dispatches.
  const channels = s.heads * s.value;
  const chunks = s.len >= 256 && channels * 32 < 32768
    ? Math.min(Math.ceil(s.len / 64), Math.ceil(65536 / (channels * 32)))
    : 1;
  return Math.max(work, (s.len / chunks) * RECURRENT_SECONDS_PER_STEP) + RECURRENT_FIXED_SECONDS;
}

/**
 * Chooses how a fused scan runs: the chunked SSD algorithm when the form exists, the chunk
 * matrices are worth it (state and value sizes of at least 4, state × value of at least 1024, a
 * length of at least 64), its scratch fits the device, and its modelled time beats the
 * recurrent kernel's; otherwise the recurrent kernel.
 */
export function chooseScanLowering(
  spec: ScanSpec,
  form: SsdForm | undefined,
  limits: DeviceLimits,
): "chunked" | "recurrent" {
  if (!form || form.scan !== spec.scan) return "recurrent";
  const s = ssdSizes(form);
  if (s.len < 64 || s.state < 4 || s.value < 4 || s.state * s.value < MIN_MATRIX) {
    return "recurrent";
  }
  const q = defaultChunk(s);
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (ssdScratchBytes(s, q).total > limit) return "recurrent";
  const bar = s.vectorDecay ? VECTOR_CHUNKED_BAR : 1;
  return chunkedSeconds(s, q) < bar * recurrentSeconds(s) ? "chunked" : "recurrent";
}
