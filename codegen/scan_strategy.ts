/**
 * The fused scan kernel's strategy: the knobs a caller may force (`ScanStrategy`), their
 * defaults (measured on the H100 and H200, bench/RESULTS.md) and their validation, decided
 * from the scan's shapes and the device's limits.
 *
 * @module
 */

import type { ScanNode } from "../dsl/ir.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanSpec } from "./scan_spec.ts";
import type { ScanMath, ScanPrefetch, ScanStateLoads, VectorIndex } from "./scan_loop.ts";

/** Threads per workgroup of the scan kernels unless forced. */
export const DEFAULT_WORKGROUP = 256;

/** Strategy knobs (tests force them; otherwise chosen from the shapes and the device). */
export interface ScanStrategy {
  /** Number of chunks along the scan axis (1 = one sequential pass). */
  chunks?: number;
  /** Lanes per channel sharing the state (a power of two ≤ the subgroup size; 1 = none). */
  lanes?: number;
  /**
   * Steps per loop iteration, emitted straight-line so their loads are issued together. In the
   * tiled kernel: steps per iteration of a tile's step loop, dividing `tileSteps` (default 8
   * where it divides `tileSteps`, else the whole tile, no loop).
   */
  unroll?: number;
  /**
   * Lane-transposed steps (default on when lanes > 1): per block of `lanes` steps, lane j
   * computes the state-independent values (Δ, x, …) of step j once and shuffles them to the
   * others, and the contraction is reduce-scattered so lane j finishes step j's epilogue.
   */
  transpose?: boolean;
  /**
   * How a fused scan runs: `"chunked"`, the SSD matrix algorithm (ssd_kernel.ts; an error when
   * the scan lacks the SSD form; `chunks` then sets the chunk length to the smallest supported
   * power of two giving at most that many chunks), or `"recurrent"`, this file's kernel.
   * Default: chosen by a cost model of the shapes and the device (ssd_plan.ts).
   */
  mode?: "chunked" | "recurrent";
  /**
   * Loads issued one loop iteration ahead into registers: `"none"`, `"own"` (loads without a
   * state index: x, Δ, z…, one register each per step they serve) or `"all"` (also the
   * per-state loads such as B and C).
   */
  prefetch?: ScanPrefetch;
  /**
   * Blocks ahead that the prefetched loads without a state index (x, Δ, z: streamed from
   * memory once per channel) are issued, 1–4 (default 1); per-state loads stay one block
   * ahead. Each extra block costs one register per such load and keeps more bytes in flight.
   * In the tiled kernel: tiles ahead that the items' loads are issued, 1–3 (default 1; 2 and 3
   * measured slower on the H200: 0.613 and 0.645 ms against 0.511, bench/RESULTS.md).
   */
  prefetchDepth?: number;
  /** Threads per workgroup: 32, 64, 128 or 256 (default 256). */
  workgroup?: number;
  /**
   * Where the prefetched per-state loads (B, C…) wait for their block: `"early"` (registers
   * loaded at the top of the loop body), `"late"` (default: registers loaded at its end, after
   * the current block's are used: half the registers) or `"staged"` (workgroup memory,
   * double-buffered: the workgroup loads a block's values once and each lane reads its own;
   * needs prefetch `"all"` and a workgroup whose channels share those values, i.e. the
   * channels per workgroup divide the inner channel sizes those loads depend on).
   */
  stateLoads?: ScanStateLoads;
  /**
   * exp(a·b) with b loop-invariant (the decay exp(Δ·A)) spelled exp2(a·b′) with
   * b′ = b·log2 e computed before the loop: one multiply fewer per state update (default on).
   */
  foldLog2e?: boolean;
  /**
   * How lane-transposed steps get the per-step values (Δ, Δ·x…) that the lane owning the step
   * computed: `"shuffle"` (default: subgroup shuffles) or `"staged"` (workgroup memory, filled
   * one block ahead at the end of the previous iteration, so those values are off the loop's
   * critical path; needs prefetch `"all"`). Kernels that are not lane-transposed ignore it.
   */
  broadcast?: "shuffle" | "staged";
  /**
   * Spelling of softplus / silu / sigmoid inside the step loop: `"prelude"` (the shared
   * spellings, whose softplus branches), `"exact"` (branch-free, IEEE division) or `"fast"`
   * (branch-free, 1/v as inverseSqrt(v)²: a few ulp); `"fast-exp2"` is `"fast"` with every exp
   * spelled exp2(x · log2 e).
   */
  math?: ScanMath;
  /**
   * Vector loads of per-state operands (default on): a lane holds consecutive state elements
   * and reads B, C… 2 or 4 at a time where their layout allows (see scan_loop.ts).
   */
  vector?: boolean;
  /**
   * How a vector load's index is spelled: `"whole"` divides the element offset by the vector
   * width, `(Σ idx·stride) / K`; `"split"` (default) divides each stride instead,
   * `Σ idx·(stride / K) + inner / K` (the same index, since every other stride is a multiple
   * of K), which leaves the step index's term linear so the compiler can fold it into constant
   * offsets.
   */
  vectorIndex?: VectorIndex;
  /**
   * Steps per tile of the workgroup-tiled kernel (scan_tiled.ts), a multiple of `lanes`; 0 for
   * the lane kernel. The tiled kernel stages the per-step values and the per-state loads its
   * channels share in workgroup memory and reduces the contractions there: no subgroup
   * operations. It needs every output contracted and one chunk; its lanes default to
   * min(states, 4) and its workgroup to 64 threads (128 when chosen automatically).
   *
   * Default: 16 (tiled) when the scan is wide and long enough that the lane kernel would run
   * one unchunked pass anyway, or long enough that it beats the lane kernel's chunks — every
   * output contracted, ≥ 4 states, ≥ 8192 channels and ≥ 256 steps or ≥ 3072 channels and
   * ≥ 4096 steps, its workgroup arrays within the device's limit — and no lane-kernel knob
   * (lanes, chunks, unroll, transpose, prefetch, prefetchDepth, stateLoads, broadcast,
   * workgroup) is given; 32 (two 16-step bodies) instead for ≤ 6144 channels and ≥ 4096
   * steps, falling back to 16 where those arrays do not fit; else 0. On the H200 it runs the
   * benchmark scan (b=8, l=4096, d=1536, n=16) in 0.507–0.511 ms against the lane kernel's
   * 0.672, b=4 in 0.336 against 0.566 and b=2 in 0.268–0.298 against 0.495 (2026-12-03,
   * bench/RESULTS.md).
   */
  tileSteps?: number;
  /**
   * How the tiled kernel adds up the lanes' parts of each contraction: `"shuffle"` (after each
   * step body the lanes of a channel exchange their parts with subgroup shuffles, a butterfly
   * leaving each lane unroll / lanes finished sums, which it writes to workgroup memory: the
   * epilogue reads one value per item) or `"workgroup"` (every lane writes its part of every
   * step to workgroup memory and the epilogue adds the lanes' parts: no subgroup operation).
   * Default `"shuffle"` where the device's subgroups hold a channel's lanes and `unroll` is a
   * multiple of the lanes (or one lane: nothing to exchange), else `"workgroup"`. On the H200
   * the benchmark scan took 0.507 ms with shuffles against 0.571 (2026-12-03, bench/RESULTS.md).
   */
  tileReduce?: TileReduce;
  /**
   * The chunked delta rule only: run its state pass as two tile products per chunk over this
   * many value rows per workgroup (16, 32 or 64; delta_pass_tiled.ts) instead of the lane form
   * that holds each value row in the registers of `lanes` threads. Default: the tile form over
   * dk / 4 rows (at least 16) where it fits the workgroup memory, else the lane form; the
   * autotuner times both forms.
   */
  passRows?: number;
}

/** How the tiled kernel sums a contraction's lane parts (`ScanStrategy.tileReduce`). */
export type TileReduce = "shuffle" | "workgroup";

/** Every knob of a scan kernel, decided. */
export interface ChosenScanStrategy {
  lanes: number;
  chunks: number;
  unroll: number;
  transpose: boolean;
  prefetch: ScanPrefetch;
  prefetchDepth: number;
  workgroup: number;
  stateLoads: ScanStateLoads;
  foldLog2e: boolean;
  broadcast: "shuffle" | "staged";
  math: ScanMath;
  vector: boolean;
  vectorIndex: VectorIndex;
  tileSteps: number;
  /** The tiled kernel's lane reduction ("workgroup" for the lane kernel, which ignores it). */
  tileReduce: TileReduce;
  /** The tiled kernel was chosen by default, not asked for (`ScanStrategy.tileSteps`). */
  tiledAuto?: boolean;
}

/**
 * Defaults measured on the H100 and H200 (bench/scan_tune.ts, bench/RESULTS.md). Late state
 * loads, split vector indices and the folded log2 e together: 0.691 ms instead of 0.709 ms
 * for the benchmark scan on the H200 (2026-12-03).
 */
const DEFAULT_LANES = 8;
const DEFAULT_STATE_LOADS: ScanStateLoads = "late";
const DEFAULT_VECTOR_INDEX: VectorIndex = "split";
const DEFAULT_FOLD_LOG2E = true;
const DEFAULT_UNROLL = 1;
const DEFAULT_PREFETCH: ScanPrefetch = "all";
const DEFAULT_MATH: ScanMath = "fast";

/** Steps per iteration of the tiled kernel's step loop, where it divides the tile. */
const TILED_UNROLL = 8;
/** The tiled kernel's automatic choice (see `ScanStrategy.tileSteps`): steps per tile. */
export const AUTO_TILE = 16;
/**
 * Narrow long scans (≤ NARROW_LONG_MAX_CHANNELS channels, ≥ 4096 steps) take 32-step tiles run
 * as two 16-step bodies. On the H200 at l = 4096, d = 1536 (interleaved, two calls,
 * 2026-12-03): b=4 0.336 ms against 0.427–0.433 for 16-step tiles, b=2 0.268–0.298 against
 * 0.361–0.366; but b=8 (12288 channels) 0.646 against 0.507–0.511, so wider scans keep 16.
 */
const NARROW_LONG_TILE = 32;
const NARROW_LONG_UNROLL = 16;
const NARROW_LONG_MAX_CHANNELS = 6144;
/** The tiled kernel's automatic choice: threads per workgroup. */
export const AUTO_TILED_WORKGROUP = 128;
const AUTO_TILED_MIN_CHANNELS = 8192;
const AUTO_TILED_MIN_STEPS = 256;
/**
 * Narrower scans where the tiled kernel also beats the lane kernel's chunks, as far as measured:
 * on the H200 at l = 4096, d = 1536, b = 4 (6144 channels) 0.490 against 0.565 ms and b = 2
 * (3072 channels) 0.436 against 0.499 ms (2026-12-03, bench/RESULTS.md).
 */
const AUTO_TILED_NARROW_MIN_CHANNELS = 3072;
const AUTO_TILED_NARROW_MIN_STEPS = 4096;
const AUTO_TILED_MIN_STATES = 4;
/** Knobs that only the lane kernel has: giving one keeps it. */
const LANE_KERNEL_KNOBS = [
  "lanes",
  "chunks",
  "unroll",
  "transpose",
  "prefetch",
  "prefetchDepth",
  "stateLoads",
  "broadcast",
  "workgroup",
] as const;

/**
 * Whether the tiled kernel is the default for this scan: wide and long (the lane kernel would
 * run one unchunked pass) and every output contracted. Its workgroup arrays are sized when it
 * is emitted: scan_kernel.ts keeps the lane kernel when they exceed the device's limit.
 */
function autoTiled(
  spec: ScanSpec,
  limits: DeviceLimits,
  force: ScanStrategy,
  nc: number,
  ns: number,
  len: number,
): boolean {
  if (LANE_KERNEL_KNOBS.some((k) => force[k] !== undefined)) return false;
  if (force.mode === "chunked" || spec.outputs.some((o) => !o.contract)) return false;
  const wide = nc >= AUTO_TILED_MIN_CHANNELS && len >= AUTO_TILED_MIN_STEPS;
  const narrowLong = nc >= AUTO_TILED_NARROW_MIN_CHANNELS && len >= AUTO_TILED_NARROW_MIN_STEPS;
  if (!wide && !narrowLong) return false;
  return ns >= AUTO_TILED_MIN_STATES &&
    limits.maxComputeInvocationsPerWorkgroup >= AUTO_TILED_WORKGROUP;
}

/** Size of `axis` in the scan's shape. */
export function sizeOf(scan: ScanNode, axis: string): number {
  return scan.shape[scan.axes.indexOf(axis)];
}

/** Product of the sizes of `axes` in the scan's shape. */
export function product(scan: ScanNode, axes: readonly string[]): number {
  return axes.reduce((p, a) => p * sizeOf(scan, a), 1);
}

/** The smallest power of two ≥ n. */
export function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Most states one lane holds by default (more lanes per channel above that). */
const MAX_STATES_PER_LANE = 8;
/** Most lanes per channel chosen by default (the autotuner may pick 32). */
const MAX_AUTO_LANES = 16;
/**
 * Threads below which a launch leaves a large GPU idle: a long scan then splits into chunks, a
 * short one takes more lanes per channel.
 */
const SHORT_SCAN_THREADS = 32768;
/**
 * Scans at least this long may be chunked; shorter ones run one chunk, so lanes are their only
 * parallelism across states.
 */
const SHORT_SCAN_STEPS = 256;

/**
 * Default lanes per channel: a few lanes, each holding several states, so the GPU fills without
 * paying per-channel work (loads, softplus, epilogue) on every state element. At least
 * DEFAULT_LANES and at most MAX_STATES_PER_LANE states a lane; a scan too short to chunk whose
 * launch has fewer than SHORT_SCAN_THREADS threads doubles them while it can (up to
 * MAX_AUTO_LANES, the states, the subgroup and, past one step, the length, which keeps blocks
 * lane-transposed). Measured by the autotuner on an H100 (2026-12-07, bench/RESULTS.md):
 * Mamba-2's decode scan (128 states, 1,536 channels) took 23.1 µs with 16 lanes against 32.4
 * with 8, its 16-step prompt chunk 31.9 against 247.9 and at batch 64 320 against 3,386;
 * Mamba's decode scan (16 states) 6.3 against 6.9 and its 16-step chunk 37.8 against 59.9.
 */
function defaultLanes(ns: number, nc: number, len: number, subgroup: number): number {
  const cap = Math.min(pow2ceil(ns), subgroup, MAX_AUTO_LANES);
  let lanes = Math.min(cap, Math.max(DEFAULT_LANES, pow2ceil(ns) / MAX_STATES_PER_LANE));
  if (len < SHORT_SCAN_STEPS) {
    while (nc * lanes < SHORT_SCAN_THREADS && 2 * lanes <= cap && (len === 1 || 2 * lanes <= len)) {
      lanes *= 2;
    }
  }
  return lanes;
}

/** Chooses lanes per channel and the chunk count. */
export function chooseScanStrategy(
  spec: ScanSpec,
  limits: DeviceLimits,
  force: ScanStrategy = {},
): ChosenScanStrategy {
  const ns = product(spec.scan, spec.stateAxes);
  const nc = product(spec.scan, spec.channelAxes);
  const len = sizeOf(spec.scan, spec.scan.axis);
  const canShuffle = limits.subgroups && limits.subgroupMinSize >= 2;
  if (force.tileSteps === undefined && autoTiled(spec, limits, force, nc, ns, len)) {
    const tiled: ScanStrategy = { ...force, workgroup: AUTO_TILED_WORKGROUP };
    // (`unroll` is a lane-kernel knob: never given here.)
    const narrow = nc <= NARROW_LONG_MAX_CHANNELS && len >= AUTO_TILED_NARROW_MIN_STEPS;
    if (narrow) tiled.unroll = NARROW_LONG_UNROLL;
    const steps = narrow ? NARROW_LONG_TILE : AUTO_TILE;
    return { ...chooseTiled(spec, limits, tiled, steps), tiledAuto: true };
  }
  const tileSteps = force.tileSteps ?? 0;
  if (tileSteps !== 0) return chooseTiled(spec, limits, force, tileSteps);
  if (force.tileReduce !== undefined) {
    throw new Error(
      `scan: tileReduce applies to the tiled kernel only; this scan runs the lane kernel ` +
        `(give tileSteps to tile it)`,
    );
  }
  let lanes = force.lanes ??
    (canShuffle && ns > 1 ? defaultLanes(ns, nc, len, limits.subgroupMinSize) : 1);
  if (lanes > 1 && (!canShuffle || lanes > limits.subgroupMinSize || (lanes & (lanes - 1)))) {
    throw new Error(
      `scan: ${lanes} lanes per channel need subgroups of at least that size (power of two); ` +
        `the device has ${canShuffle ? limits.subgroupMinSize : "no subgroups"}`,
    );
  }
  if (spec.outputs.some((o) => !o.contract)) lanes = 1;
  const threads = nc * lanes;
  const auto = len >= SHORT_SCAN_STEPS && threads < SHORT_SCAN_THREADS
    ? Math.max(1, Math.min(Math.ceil(len / 64), Math.ceil(65536 / threads)))
    : 1;
  const chunks = Math.min(force.chunks ?? auto, len);
  if (!Number.isInteger(chunks) || chunks < 1) throw new Error(`scan: bad chunk count ${chunks}`);
  // A transposed block is `lanes` steps long: shorter chunks (decode steps) would compute
  // mostly dead steps, so they reduce with a butterfly instead.
  const transpose = (force.transpose ?? Math.ceil(len / chunks) >= lanes) && lanes > 1 &&
    spec.outputs.every((o) => o.contract !== undefined);
  const unroll = transpose
    ? lanes
    : Math.max(1, Math.min(force.unroll ?? DEFAULT_UNROLL, Math.ceil(len / chunks)));
  const prefetch = oneOf("prefetch", force.prefetch ?? DEFAULT_PREFETCH, ["none", "own", "all"]);
  const prefetchDepth = force.prefetchDepth ?? 1;
  if (![1, 2, 3, 4].includes(prefetchDepth)) {
    throw new Error(`scan: prefetchDepth must be 1, 2, 3 or 4, got ${prefetchDepth}`);
  }
  const workgroup = force.workgroup ?? DEFAULT_WORKGROUP;
  if (
    ![32, 64, 128, 256].includes(workgroup) || workgroup > limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw new Error(
      `scan: workgroup must be 32, 64, 128 or 256 threads within the device's ` +
        `${limits.maxComputeInvocationsPerWorkgroup}, got ${workgroup}`,
    );
  }
  const stateLoads = oneOf("stateLoads", force.stateLoads ?? DEFAULT_STATE_LOADS, [
    "early",
    "late",
    "staged",
  ]);
  if (stateLoads === "staged") {
    const perGroup = workgroup / lanes;
    if (prefetch !== "all") {
      throw new Error(`scan: stateLoads "staged" needs prefetch "all", got "${prefetch}"`);
    }
    if (nc % perGroup !== 0) {
      throw new Error(
        `scan: stateLoads "staged" needs the ${perGroup} channels of a workgroup ` +
          `(${workgroup} threads / ${lanes} lanes) to divide the ${nc} channels`,
      );
    }
  }
  const broadcast = oneOf("broadcast", force.broadcast ?? "shuffle", ["shuffle", "staged"]);
  if (broadcast === "staged" && prefetch !== "all") {
    throw new Error(`scan: broadcast "staged" needs prefetch "all", got "${prefetch}"`);
  }
  return {
    lanes,
    chunks,
    unroll,
    transpose,
    prefetch,
    prefetchDepth,
    workgroup,
    stateLoads,
    broadcast,
    ...chooseSpelling(force),
    tileSteps: 0,
    tileReduce: "workgroup",
  };
}

/** The knobs both scan kernels share: math spellings, log2 e folding, vector loads. */
function chooseSpelling(
  force: ScanStrategy,
): Pick<ChosenScanStrategy, "math" | "foldLog2e" | "vector" | "vectorIndex"> {
  return {
    math: oneOf("math", force.math ?? DEFAULT_MATH, ["prelude", "exact", "fast", "fast-exp2"]),
    foldLog2e: force.foldLog2e ?? DEFAULT_FOLD_LOG2E,
    vector: force.vector ?? true,
    vectorIndex: oneOf("vectorIndex", force.vectorIndex ?? DEFAULT_VECTOR_INDEX, [
      "whole",
      "split",
    ]),
  };
}

/** The workgroup-tiled kernel's knobs (see `ScanStrategy.tileSteps`). */
function chooseTiled(
  spec: ScanSpec,
  limits: DeviceLimits,
  force: ScanStrategy,
  tileSteps: number,
): ChosenScanStrategy {
  const ns = product(spec.scan, spec.stateAxes);
  const lanes = force.lanes ?? Math.min(pow2ceil(ns), 4);
  const workgroup = force.workgroup ?? 64;
  // Knobs of the lane kernel's loop that the tiled kernel has no use for: refused, not ignored.
  const foreign = (["transpose", "prefetch", "stateLoads", "broadcast"] as const)
    .filter((k) => force[k] !== undefined);
  if (foreign.length > 0) {
    throw new Error(
      `scan: tileSteps: ${foreign.join(", ")} do(es) not apply to the tiled kernel (it stages ` +
        `per-step values and shared per-state loads in workgroup memory by design)`,
    );
  }
  if (!Number.isInteger(lanes) || lanes < 1 || (lanes & (lanes - 1))) {
    throw new Error(`scan: tiled lanes must be a power of two, got ${lanes}`);
  }
  if (!Number.isInteger(tileSteps) || tileSteps < lanes || tileSteps % lanes || tileSteps > 64) {
    throw new Error(
      `scan: tileSteps must be a multiple of the ${lanes} lanes between ${lanes} and 64, ` +
        `got ${tileSteps}`,
    );
  }
  if (
    ![32, 64, 128, 256].includes(workgroup) || workgroup % lanes ||
    workgroup > limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw new Error(
      `scan: tiled workgroup must be 32, 64, 128 or 256 threads, a multiple of the ${lanes} ` +
        `lanes, within the device's ${limits.maxComputeInvocationsPerWorkgroup}; got ${workgroup}`,
    );
  }
  if ((force.chunks ?? 1) !== 1) {
    throw new Error(`scan: tileSteps runs one pass; chunks must be 1, got ${force.chunks}`);
  }
  if (spec.outputs.some((o) => !o.contract)) {
    throw new Error(
      `scan: tileSteps needs every output of the scan contracted over its state axes ` +
        `(${spec.stateAxes.join(", ")}); an output reads the state itself`,
    );
  }
  // Steps per iteration of the tile's step loop; default a loop of 8-step bodies where 8 divides
  // the tile, with the next tile filled after the epilogue (scan_tiled.ts). On the H200, 16-step
  // tiles took 0.571 ms as 8-step bodies, 0.600 as 4-step, 0.598 as 2-step and 0.658
  // straight-line (2026-12-03, bench/RESULTS.md).
  const unroll = force.unroll ??
    (tileSteps > TILED_UNROLL && tileSteps % TILED_UNROLL === 0 ? TILED_UNROLL : tileSteps);
  if (!Number.isInteger(unroll) || unroll < 1 || tileSteps % unroll) {
    throw new Error(
      `scan: tiled unroll (steps per iteration of the tile's loop) must divide tileSteps ` +
        `${tileSteps}, got ${unroll}`,
    );
  }
  // Shuffles need a channel's lanes (consecutive threads) in one subgroup and each step body
  // to split evenly among them; one lane has nothing to exchange.
  const shufflesFit = lanes === 1 ||
    (limits.subgroups && limits.subgroupMinSize >= lanes && unroll % lanes === 0);
  const tileReduce = oneOf(
    "tileReduce",
    force.tileReduce ?? (shufflesFit ? "shuffle" : "workgroup"),
    ["shuffle", "workgroup"],
  );
  if (tileReduce === "shuffle" && !shufflesFit) {
    throw new Error(
      `scan: tileReduce "shuffle" needs subgroups of at least the ${lanes} lanes (the device ` +
        `has ${limits.subgroups ? limits.subgroupMinSize : "no subgroups"}) and an unroll that ` +
        `is a multiple of them (got ${unroll})`,
    );
  }
  // Tiles ahead that the items' loads (x, Δ, z…) are issued; the shared per-state loads (B,
  // C), staged in workgroup memory, stay one tile ahead.
  const prefetchDepth = force.prefetchDepth ?? 1;
  if (![1, 2, 3].includes(prefetchDepth)) {
    throw new Error(`scan: tiled prefetchDepth must be 1, 2 or 3, got ${prefetchDepth}`);
  }
  return {
    lanes,
    chunks: 1,
    unroll,
    transpose: false,
    prefetch: "all",
    prefetchDepth,
    workgroup,
    stateLoads: "staged",
    broadcast: "shuffle",
    ...chooseSpelling(force),
    tileSteps,
    tileReduce,
  };
}

/** `value` when it is one of `allowed`; else an error naming the knob and its choices. */
function oneOf<T extends string>(knob: string, value: T, allowed: readonly T[]): T {
  if (allowed.includes(value)) return value;
  const choices = allowed.map((a) => `"${a}"`);
  const list = `${choices.slice(0, -1).join(", ")} or ${choices[choices.length - 1]}`;
  throw new Error(`scan: ${knob} must be ${list}, got ${JSON.stringify(value)}`);
}
