/**
 * WGSL emitter for batched, tiled f32 matrix multiplication driven by hooks:
 * `C[b, m, n] = Σ_k A[b, m, k] · B[b, k, n]`.
 *
 * Every shape is a compile-time constant. Each workgroup computes one `tileM × tileN` output tile
 * of one batch entry; its threads stage `tileK`-deep slices of A and B in workgroup memory (one or
 * two buffers; the next slice is prefetched into registers while the current one is multiplied)
 * and each thread accumulates a `threadM × threadN` block in named scalar registers. All loops
 * over the tile are unrolled here in TypeScript, so every private value has a constant name and
 * every workgroup-array index is `dynamic base + constant`, which keeps naga's bounds checks to one
 * clamp per vec4 read. Bounds tests for partial tiles are emitted only for the dims that need them.
 *
 * @module
 */

import { loadWgsl, wgslArrayType } from "./dtypes.ts";

/** One tiling of the output; every field is a compile-time constant of the emitted kernel. */
export interface MatmulTile {
  /** Output rows per workgroup. */
  tileM: number;
  /** Output columns per workgroup. */
  tileN: number;
  /** Depth of the K slice staged in workgroup memory per step; a multiple of `4 * kSplit`. */
  tileK: number;
  /** Output rows per thread; divides `tileM`. */
  threadM: number;
  /** Output columns per thread; divides `tileN`. */
  threadN: number;
  /** Thread groups that split each K slice and are summed through workgroup memory at the end
   * (for skinny shapes such as M = 1 decode, where the output tile alone has too few threads).
   * Default 1. */
  kSplit?: number;
  /** Workgroup-memory buffers: 2 = one barrier per K slice (the K loop is unrolled by two so each
   * buffer is read at constant offsets), 1 = half the memory, two barriers per slice. Default 2. */
  stages?: 1 | 2;
  /** Tile rows walked together before moving to the next column band (L2 locality). Default 1. */
  groupM?: number;
}

/** The device limits the emitter must respect (pass the values the device was created with). */
export interface MatmulLimits {
  /** Bytes of `var<workgroup>` memory per workgroup. */
  maxComputeWorkgroupStorageSize: number;
  /** Threads per workgroup. */
  maxComputeInvocationsPerWorkgroup: number;
  /** Workgroups per dispatch dimension (usually 65535). */
  maxComputeWorkgroupsPerDimension: number;
  /** Largest `workgroup_size` x; defaults to `maxComputeInvocationsPerWorkgroup`. */
  maxComputeWorkgroupSizeX?: number;
}

/** Fast path for A: a plain storage array `A[b, m, k] = arr[offset + b*batchStride + m*mStride +
 * k*kStride]` (element units). The emitter declares the binding itself (as `array<vec4<f32>>`
 * when vec4 loads are possible, else `array<f32>`), so `declarations` must not declare it. */
export interface MatmulDirectA {
  /** `@binding` of the read-only storage buffer. */
  binding: number;
  /** `@group`; default 0. */
  group?: number;
  offset: number;
  batchStride: number;
  mStride: number;
  kStride: number;
  /** Storage type (default f32): f16 is read as `f16`/`vec4<f16>`, bf16 as u32 words. */
  dtype?: HalfOrF32;
}

/** Fast path for B: `B[b, k, n] = arr[offset + b*batchStride + k*kStride + n*nStride]`; see
 * {@link MatmulDirectA}. */
export interface MatmulDirectB {
  /** `@binding` of the read-only storage buffer. */
  binding: number;
  /** `@group`; default 0. */
  group?: number;
  offset: number;
  batchStride: number;
  kStride: number;
  nStride: number;
  /** Storage type (default f32); see {@link MatmulDirectA}. */
  dtype?: HalfOrF32;
}

/** Storage types a direct operand may have. */
export type HalfOrF32 = "f32" | "f16" | "bf16";

/** What to multiply: sizes, hooks and optional fast paths. */
export interface MatmulKernelSpec {
  /** Entry point name of the emitted shader (a WGSL identifier). */
  name: string;
  batch: number;
  M: number;
  N: number;
  K: number;
  /** WGSL module-scope declarations the hooks use: bindings (`@group(0) @binding(i)`), helpers.
   * Names starting with `mm_` are reserved for the emitter. */
  declarations: string;
  /** Body of `fn load_a(bi: u32, m: u32, k: u32) -> f32`; called only with in-range indices.
   * Required unless `aDirect` is given (then unused). */
  loadA?: string;
  /** Body of `fn load_b(bi: u32, k: u32, n: u32) -> f32`; required unless `bDirect` is given. */
  loadB?: string;
  /** Body of `fn store_c(bi: u32, m: u32, n: u32, acc: f32)`, called once per in-range output
   * with the finished sum (the place for a fused epilogue). */
  storeC: string;
  /** Optional fast path for A (vec4 tile loads when its contiguous dim allows). */
  aDirect?: MatmulDirectA;
  /** Optional fast path for B. */
  bDirect?: MatmulDirectB;
  /** Force a tile config (tuning, tests); otherwise {@link selectMatmulTile} picks one. */
  tile?: MatmulTile;
}

/** The emitted kernel and how to dispatch it. */
export interface MatmulKernel {
  /** Complete WGSL module (declarations, hooks, kernel). */
  wgsl: string;
  /** Entry point (`spec.name`). */
  entryPoint: string;
  /** Arguments for `dispatchWorkgroups`. */
  workgroups: [number, number, number];
  /** Threads per workgroup (the `@workgroup_size` x). */
  workgroupSize: number;
  /** Workgroup memory used, in bytes. */
  workgroupStorageBytes: number;
  /** The tile config used, with defaults filled in. */
  tile: Required<MatmulTile>;
  /** How each operand reaches workgroup memory: `vec4`/`scalar` direct loads or `hook`. */
  loads: { a: "vec4" | "scalar" | "hook"; b: "vec4" | "scalar" | "hook" };
}

/**
 * A shipped tile config with its calibration: the measured time at one shape on an H100 (Deno
 * WebGPU, direct row-major operands, median of 30 timestamp-query passes at 1980 MHz; see
 * bench/RESULTS.md). Torch f32 (TF32 off) ran 4096³ at 49.8 TFLOP/s in the same session.
 */
interface Calibrated {
  tile: Required<MatmulTile>;
  /** [batch, M, N, K] of the calibration run. */
  at: [number, number, number, number];
  /** Measured seconds. */
  seconds: number;
}

const CALIBRATED: Readonly<Record<string, Calibrated>> = {
  // 40.6 TFLOP/s: the best measured at 4096³ (so the large-shape default).
  t64x128k8: { tile: tile(64, 128, 8, 8, 8), at: [1, 4096, 4096, 4096], seconds: 3.387e-3 },
  // 39.4 TFLOP/s at 4096³; best on 2048³ (36.4).
  t128x128k32: {
    tile: tile(128, 128, 32, 8, 8, 1, 1),
    at: [1, 4096, 4096, 4096],
    seconds: 3.492e-3,
  },
  // 37.5 TFLOP/s at 4096³; best on 2048×3072×768 (34.6).
  t128x128k16: {
    tile: tile(128, 128, 16, 8, 8, 1, 1),
    at: [1, 4096, 4096, 4096],
    seconds: 3.665e-3,
  },
  // 30.7 TFLOP/s at 4096³; best on 2048×768×1536 (28.1): 4× the workgroups of 128×128.
  t64x64k16: { tile: tile(64, 64, 16, 4, 4), at: [1, 4096, 4096, 4096], seconds: 4.482e-3 },
  // 23.0 TFLOP/s at 64×4096×4096 (the 64×64 tile: 12.1): K split 4 ways inside the workgroup.
  t32x32k32s4: { tile: tile(32, 32, 32, 4, 4, 4, 1), at: [1, 64, 4096, 4096], seconds: 0.093e-3 },
  // Decode (M ≤ 4): 37 µs at 1×4096×4096, 1.8 TB/s of weights; K split 32 ways.
  skinnyM: { tile: tile(4, 16, 128, 4, 4, 32, 1), at: [1, 1, 4096, 4096], seconds: 0.037e-3 },
  // Mirror of skinnyM for N ≤ 4 (calibration assumed equal to skinnyM's, not measured).
  skinnyN: { tile: tile(16, 4, 128, 4, 4, 32, 1), at: [1, 4096, 1, 4096], seconds: 0.037e-3 },
};

/** Tile configs shipped with the emitter, by name; {@link selectMatmulTile} chooses among them. */
export const MATMUL_TILES: Readonly<Record<string, Required<MatmulTile>>> = Object.fromEntries(
  Object.entries(CALIBRATED).map(([name, c]) => [name, c.tile]),
);

function tile(
  tileM: number,
  tileN: number,
  tileK: number,
  threadM: number,
  threadN: number,
  kSplit = 1,
  stages: 1 | 2 = 2,
  groupM = 1,
): Required<MatmulTile> {
  return { tileM, tileN, tileK, threadM, threadN, kSplit, stages, groupM };
}

/** Integer ceiling of x / y. */
function cdiv(x: number, y: number): number {
  return Math.ceil(x / y);
}

function threadsOf(t: Required<MatmulTile>): number {
  return (t.tileM / t.threadM) * (t.tileN / t.threadN) * t.kSplit;
}

/** Streaming multiprocessors of the calibration GPU (H100 SXM). */
const SMS = 132;
/** Fixed cost per round of workgroups (fill, drain, epilogue), fitted to the measurements. */
const ROUND_SECONDS = 10e-6;

/**
 * Modelled seconds of config `t` (calibrated by `cal`) on a shape: rounds of workgroups over the
 * SMs × (calibrated time per round scaled by the padded K + a fixed cost per round). Rounds are
 * fractional (at least one): several workgroups share an SM, so a last round of 12 workgroups
 * does not cost a whole round. Whole rounds made the model pick 64×64 and K-split 32×32 tiles
 * for weight gradients (768×1536×16384), 1.9–2.9× slower than 64×128 there on an H100; the
 * fractional model agrees with the autotuner on 26 of the 38 shapes of the 130M training steps
 * (23 before) and loses at most 1.47× (bench/RESULTS.md, 2026-12-06).
 */
function modelSeconds(
  t: Required<MatmulTile>,
  cal: Calibrated,
  shape: { batch: number; M: number; N: number; K: number },
): number {
  const rounds = (b: number, m: number, n: number) =>
    Math.max(1, b * cdiv(m, t.tileM) * cdiv(n, t.tileN) / SMS);
  const [cb, cm, cn, ck] = cal.at;
  const perRound = Math.max(cal.seconds / rounds(cb, cm, cn) - ROUND_SECONDS, 1e-7);
  const kScale = cdiv(shape.K, t.tileK) / cdiv(ck, cal.tile.tileK) * t.tileK / cal.tile.tileK;
  return rounds(shape.batch, shape.M, shape.N) * (perRound * kScale + ROUND_SECONDS);
}

/**
 * Picks a tile config for a shape: the shipped config with the lowest modelled time (see
 * {@link MATMUL_TILES}). Each config carries its measured time at one shape; the model scales it
 * by rounds of workgroups over the SMs (so tile padding and too few workgroups count) and by the
 * padded K, plus a fixed cost per round. On 4096³ it returns the measured-best config. Configs
 * are adapted to the limits (one stage instead of two, a smaller K split) and to tiny K (a
 * shorter K slice) before they are compared.
 */
export function selectMatmulTile(
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  limits: MatmulLimits,
): Required<MatmulTile> {
  const name = modelChoice(shape, limits);
  return matmulCandidates(shape, limits).get(name)!;
}

/**
 * The name of the candidate {@link selectMatmulTile} picks (the lowest modelled time), from
 * `modelled` when the caller has {@link modelledSeconds} of the shape already.
 */
export function modelChoice(
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  limits: MatmulLimits,
  modelled: ReadonlyMap<string, number> = modelledSeconds(shape, limits),
): string {
  let best: string | undefined;
  let bestCost = Infinity;
  for (const [name, cost] of modelled) {
    if (cost < bestCost) [best, bestCost] = [name, cost];
  }
  if (!best) throw new Error("matmul: no tile config fits the device limits");
  return best;
}

/** Each fitting candidate's modelled seconds on `shape` (see {@link matmulCandidates}). */
export function modelledSeconds(
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  limits: MatmulLimits,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, t] of matmulCandidates(shape, limits)) {
    out.set(name, modelSeconds(t, CALIBRATED[name], shape));
  }
  return out;
}

/**
 * The shipped tile configs adapted to a shape and the device (a shorter K slice for tiny K, one
 * stage or a smaller K split where memory or threads are short), by name; those that still do
 * not fit are left out. The autotuner times these; the cost model picks among them otherwise.
 */
export function matmulCandidates(
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  limits: MatmulLimits,
): Map<string, Required<MatmulTile>> {
  const out = new Map<string, Required<MatmulTile>>();
  for (const [name, cal] of Object.entries(CALIBRATED)) {
    let t = { ...cal.tile };
    // Tiny K: shorten the K slice (and the K split with it).
    while (t.tileK / 2 >= shape.K && t.tileK / 2 >= 4) {
      t = { ...t, tileK: t.tileK / 2, kSplit: Math.max(1, Math.min(t.kSplit, t.tileK / 8)) };
    }
    if (!fits(t, shape, limits) && t.stages === 2) t = { ...t, stages: 1 };
    while (!fits(t, shape, limits) && t.kSplit > 1) {
      t = { ...t, kSplit: t.kSplit / 2, tileK: t.tileK / 2 };
    }
    if (fits(t, shape, limits)) out.set(name, t);
  }
  return out;
}

function fits(
  t: Required<MatmulTile>,
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  limits: MatmulLimits,
): boolean {
  const threads = threadsOf(t);
  const maxX = limits.maxComputeWorkgroupSizeX ?? limits.maxComputeInvocationsPerWorkgroup;
  return threads <= limits.maxComputeInvocationsPerWorkgroup && threads <= maxX &&
    storageBytes(t, shape) <= limits.maxComputeWorkgroupStorageSize;
}

/** Bytes of workgroup memory a config needs for these operands (their layouts set padding). */
function storageBytes(
  t: Required<MatmulTile>,
  shape: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
): number {
  const a = planOperand("a", shape, t), b = planOperand("b", shape, t);
  return t.stages * (a.stageSize + b.stageSize) * 16 + (t.kSplit - 1) * t.tileM * t.tileN * 4;
}

/** Per-operand plan: A uses outer = m, B uses outer = n. */
interface Operand {
  x: "a" | "b";
  outer: number;
  tileO: number;
  threadO: number;
  /** Threads along the outer dim. */
  tO: number;
  /** WGSL name of this thread's coordinate along the outer dim. */
  coord: string;
  /** Workgroup layout: "ok" = rows of outer, vec4 along k; "ko" = rows of k, vec4 along outer. */
  layout: "ok" | "ko";
  load: "vec4" | "scalar" | "hook";
  /** Direct source in (outer, k) terms. */
  direct?: {
    offset: number;
    batchStride: number;
    oStride: number;
    kStride: number;
    dtype?: HalfOrF32;
  };
  /** vec4 row stride of the "ok" layout (padded odd to spread banks). */
  rowStride: number;
  /** vec4 elements per stage. */
  stageSize: number;
  /** vec4 slots per stage that threads fill. */
  slots: number;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function checkInt(what: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
    throw new Error(`matmul: ${what} must be an integer ≥ ${min}, got ${String(v)}`);
  }
  return v;
}

function checkTile(t: MatmulTile, limits: MatmulLimits): Required<MatmulTile> {
  const r: Required<MatmulTile> = {
    kSplit: 1,
    stages: 2,
    groupM: 1,
    ...t,
  };
  for (const k of ["tileM", "tileN", "tileK", "threadM", "threadN", "kSplit", "groupM"] as const) {
    checkInt(`tile.${k}`, r[k], 1);
  }
  if (r.stages !== 1 && r.stages !== 2) throw new Error(`matmul: tile.stages must be 1 or 2`);
  if (r.tileM % r.threadM || r.tileN % r.threadN) {
    throw new Error(
      `matmul: threadM ${r.threadM} / threadN ${r.threadN} must divide tileM ${r.tileM} / ` +
        `tileN ${r.tileN}`,
    );
  }
  if (r.tileK % (4 * r.kSplit)) {
    throw new Error(`matmul: tileK ${r.tileK} must be a multiple of 4·kSplit = ${4 * r.kSplit}`);
  }
  const threads = threadsOf(r);
  const maxX = limits.maxComputeWorkgroupSizeX ?? limits.maxComputeInvocationsPerWorkgroup;
  if (threads > limits.maxComputeInvocationsPerWorkgroup || threads > maxX) {
    throw new Error(
      `matmul: tile needs ${threads} threads per workgroup, the limit is ` +
        `${Math.min(limits.maxComputeInvocationsPerWorkgroup, maxX)}`,
    );
  }
  return r;
}

/** Whether a direct operand can be read as aligned vec4s along `dim` (its stride must be 1). */
function vec4Ok(
  d: { offset: number; batchStride: number; oStride: number; kStride: number },
  dim: "o" | "k",
  batch: number,
  outer: number,
  K: number,
): boolean {
  const other = dim === "k" ? d.oStride : d.kStride;
  const otherSize = dim === "k" ? outer : K;
  const size = dim === "k" ? K : outer;
  return d.offset % 4 === 0 && (batch === 1 || d.batchStride % 4 === 0) &&
    (otherSize === 1 || other % 4 === 0) && size % 4 === 0;
}

function planOperand(
  x: "a" | "b",
  spec: Pick<MatmulKernelSpec, "batch" | "M" | "N" | "K" | "aDirect" | "bDirect">,
  t: Required<MatmulTile>,
): Operand {
  const isA = x === "a";
  const outer = isA ? spec.M : spec.N;
  const tileO = isA ? t.tileM : t.tileN;
  const threadO = isA ? t.threadM : t.threadN;
  const da = spec.aDirect, db = spec.bDirect;
  const direct = isA
    ? da && {
      offset: da.offset,
      batchStride: da.batchStride,
      oStride: da.mStride,
      kStride: da.kStride,
      dtype: da.dtype,
    }
    : db && {
      offset: db.offset,
      batchStride: db.batchStride,
      oStride: db.nStride,
      kStride: db.kStride,
      dtype: db.dtype,
    };
  const koPossible = threadO % 4 === 0 && tileO % 4 === 0;
  let layout: "ok" | "ko";
  let load: Operand["load"];
  if (direct) {
    if (direct.kStride === 1 && spec.K > 1) {
      layout = "ok";
      load = vec4Ok(direct, "k", spec.batch, outer, spec.K) ? "vec4" : "scalar";
    } else if (direct.oStride === 1 && koPossible) {
      layout = "ko";
      load = vec4Ok(direct, "o", spec.batch, outer, spec.K) ? "vec4" : "scalar";
    } else {
      layout = "ok";
      load = "scalar";
    }
  } else {
    // Hooks: assume the usual row-major sources (A[m, k], B[k, n]) for coalescing.
    layout = isA || !koPossible ? "ok" : "ko";
    load = "hook";
  }
  const k4 = t.tileK / 4;
  const rowStride = k4 > 1 && k4 % 2 === 0 ? k4 + 1 : k4;
  const stageSize = layout === "ok" ? tileO * rowStride : t.tileK * (tileO / 4);
  const slots = layout === "ok" ? tileO * k4 : t.tileK * (tileO / 4);
  return {
    x,
    outer,
    tileO,
    threadO,
    tO: tileO / threadO,
    coord: isA ? "mm_ty" : "mm_tx",
    layout,
    load,
    direct,
    rowStride,
    stageSize,
    slots,
  };
}

/** Constant part of the i-th outer index a thread owns (the dynamic part is {@link outerDyn}). */
function outerConst(op: Operand, i: number): number {
  return op.layout === "ko" ? (i >> 2) * op.tO * 4 + (i & 3) : i * op.tO;
}

/** Dynamic part (per thread) of the outer indices a thread owns, as WGSL. */
function outerDyn(op: Operand): string {
  return op.layout === "ko" ? `(${op.coord} * 4u)` : op.coord;
}

const COMP = ["x", "y", "z", "w"];

/**
 * Emits the WGSL for a batched matmul from hooks (see {@link MatmulKernelSpec}). The
 * `batch × tiles` workgroups are laid out along x, folded into y and z past the per-dimension limit
 * (surplus workgroups of the fold compute but store nothing).
 * Throws with a message naming the problem on invalid sizes, strides, hooks or tiles, when the
 * tile does not fit the limits, or when the grid exceeds `maxComputeWorkgroupsPerDimension³`.
 */
export function emitMatmul(spec: MatmulKernelSpec, limits: MatmulLimits): MatmulKernel {
  if (!IDENT.test(spec.name) || spec.name.startsWith("__")) {
    throw new Error(`matmul: name ${JSON.stringify(spec.name)} is not a WGSL identifier`);
  }
  const batch = checkInt("batch", spec.batch, 1);
  const M = checkInt("M", spec.M, 1);
  const N = checkInt("N", spec.N, 1);
  const K = checkInt("K", spec.K, 1);
  if (!spec.aDirect && typeof spec.loadA !== "string") {
    throw new Error("matmul: loadA is required when aDirect is not given");
  }
  if (!spec.bDirect && typeof spec.loadB !== "string") {
    throw new Error("matmul: loadB is required when bDirect is not given");
  }
  if (typeof spec.storeC !== "string") throw new Error("matmul: storeC is required");
  checkDirect("aDirect", spec.aDirect, ["offset", "batchStride", "mStride", "kStride"]);
  checkDirect("bDirect", spec.bDirect, ["offset", "batchStride", "kStride", "nStride"]);
  if (spec.aDirect && spec.bDirect) {
    if (
      spec.aDirect.binding === spec.bDirect.binding &&
      (spec.aDirect.group ?? 0) === (spec.bDirect.group ?? 0)
    ) {
      throw new Error("matmul: aDirect and bDirect need distinct bindings (bind the buffer twice)");
    }
  }
  for (const d of [spec.aDirect, spec.bDirect]) {
    if (!d) continue;
    const re = new RegExp(
      `@group\\(\\s*${d.group ?? 0}\\s*\\)\\s*@binding\\(\\s*${d.binding}\\s*\\)`,
    );
    if (re.test(spec.declarations)) {
      throw new Error(
        `matmul: declarations already declare @group(${d.group ?? 0}) @binding(${d.binding}), ` +
          "which a direct operand uses",
      );
    }
  }
  const t = spec.tile ? checkTile(spec.tile, limits) : selectMatmulTile(spec, limits);
  const A = planOperand("a", spec, t);
  const B = planOperand("b", spec, t);
  const bytes = storageBytes(t, spec);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `matmul: tile needs ${bytes} bytes of workgroup memory, the limit is ` +
        `${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  const threads = threadsOf(t);
  const tilesM = cdiv(M, t.tileM), tilesN = cdiv(N, t.tileN);
  const perBatch = tilesM * tilesN;
  const total = batch * perBatch;
  const maxDim = checkInt(
    "limits.maxComputeWorkgroupsPerDimension",
    limits.maxComputeWorkgroupsPerDimension,
    1,
  );
  const gx = Math.min(total, maxDim);
  const gy = Math.min(cdiv(total, gx), maxDim);
  const gz = cdiv(total, gx * gy);
  if (gz > maxDim) {
    throw new Error(`matmul: ${total} workgroups exceed the grid limit ${maxDim}³`);
  }
  const body = new Emitter();
  emitKernel(body, spec, t, A, B, { threads, tilesM, tilesN, perBatch, total, gx, gy, gz });
  const wgsl = [
    "// ssmkit batched matmul: " +
    `batch ${batch}, M ${M}, N ${N}, K ${K}, tile ${JSON.stringify(t)}`,
    spec.declarations,
    declareOperand(A, spec),
    declareOperand(B, spec),
    `fn store_c(bi: u32, m: u32, n: u32, acc: f32) {\n${spec.storeC}\n}`,
    body.text(),
  ].filter((s) => s.length > 0).join("\n\n");
  return {
    wgsl,
    entryPoint: spec.name,
    workgroups: [gx, gy, gz],
    workgroupSize: threads,
    workgroupStorageBytes: bytes,
    tile: t,
    loads: { a: A.load, b: B.load },
  };
}

function checkDirect<T extends object>(what: string, d: T | undefined, keys: (keyof T)[]): void {
  if (!d) return;
  const r = d as Record<string, unknown>;
  checkInt(`${what}.binding`, r.binding, 0);
  if (r.group !== undefined) checkInt(`${what}.group`, r.group, 0);
  for (const k of keys) checkInt(`${what}.${String(k)}`, r[k as string], 0);
}

function declareOperand(op: Operand, spec: MatmulKernelSpec): string {
  const lines: string[] = [];
  if (op.load === "hook") {
    const sig = op.x === "a"
      ? "fn load_a(bi: u32, m: u32, k: u32) -> f32"
      : "fn load_b(bi: u32, k: u32, n: u32) -> f32";
    lines.push(`${sig} {\n${op.x === "a" ? spec.loadA : spec.loadB}\n}`);
  } else {
    const d = op.x === "a" ? spec.aDirect! : spec.bDirect!;
    const dtype = d.dtype ?? "f32";
    const ty = op.load === "vec4"
      ? { f32: "vec4<f32>", f16: "vec4<f16>", bf16: "vec2<u32>" }[dtype]
      : wgslArrayType(dtype);
    lines.push(
      `@group(${d.group ?? 0}) @binding(${d.binding}) ` +
        `var<storage, read> mm_${op.x}_src: array<${ty}>;`,
    );
    if (op.load === "vec4" && dtype === "bf16") {
      // Four bf16 words (element 4i in the low half of the first u32) widened to f32.
      lines.push(`fn mm_${op.x}_bf16x4(w: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u),
                   bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));
}`);
    }
  }
  return lines.join("\n");
}

/** Line collector with indentation. */
class Emitter {
  private lines: string[] = [];
  private depth = 0;
  line(s: string): void {
    this.lines.push("  ".repeat(this.depth) + s);
  }
  open(s: string): void {
    this.line(s);
    this.depth++;
  }
  close(s = "}"): void {
    this.depth--;
    this.line(s);
  }
  text(): string {
    return this.lines.join("\n");
  }
}

interface Grid {
  threads: number;
  tilesM: number;
  tilesN: number;
  perBatch: number;
  total: number;
  gx: number;
  gy: number;
  gz: number;
}

function u(n: number): string {
  return `${n}u`;
}

function emitKernel(
  e: Emitter,
  spec: MatmulKernelSpec,
  t: Required<MatmulTile>,
  A: Operand,
  B: Operand,
  g: Grid,
): void {
  const { K } = spec;
  const tx = t.tileN / t.threadN, ty = t.tileM / t.threadM;
  const kTiles = cdiv(K, t.tileK);
  for (const op of [A, B]) {
    e.line(`var<workgroup> mm_${op.x}s: array<vec4<f32>, ${op.stageSize * t.stages}>;`);
  }
  if (t.kSplit > 1) {
    e.line(`var<workgroup> mm_red: array<f32, ${(t.kSplit - 1) * t.tileM * t.tileN}>;`);
  }
  e.line("");
  e.line(`@compute @workgroup_size(${g.threads})`);
  e.open(
    `fn ${spec.name}(@builtin(workgroup_id) mm_wid: vec3<u32>, ` +
      `@builtin(local_invocation_index) mm_lid: u32) {`,
  );
  // Workgroup → (batch, tile row, tile column). Surplus workgroups of a folded grid redo the last
  // tile without storing, so every barrier stays in uniform control flow.
  e.line(`let mm_raw = mm_wid.x + mm_wid.y * ${u(g.gx)} + mm_wid.z * ${u(g.gx * g.gy)};`);
  const guarded = g.gx * g.gy * g.gz > g.total;
  e.line(guarded ? `let mm_lin = min(mm_raw, ${u(g.total - 1)});` : "let mm_lin = mm_raw;");
  e.line(`let bi = mm_lin / ${u(g.perBatch)};`);
  e.line(`let mm_r = mm_lin % ${u(g.perBatch)};`);
  if (t.groupM > 1 && g.tilesM > t.groupM) {
    const width = t.groupM * g.tilesN;
    e.line(`let mm_first = (mm_r / ${u(width)}) * ${u(t.groupM)};`);
    e.line(`let mm_gs = min(${u(g.tilesM)} - mm_first, ${u(t.groupM)});`);
    e.line(`let mm_tm = mm_first + (mm_r % ${u(width)}) % mm_gs;`);
    e.line(`let mm_tn = (mm_r % ${u(width)}) / mm_gs;`);
  } else {
    e.line(`let mm_tm = mm_r / ${u(g.tilesN)};`);
    e.line(`let mm_tn = mm_r % ${u(g.tilesN)};`);
  }
  e.line(`let mm_m0 = mm_tm * ${u(t.tileM)};`);
  e.line(`let mm_n0 = mm_tn * ${u(t.tileN)};`);
  e.line(`let mm_tx = mm_lid % ${u(tx)};`);
  e.line(`let mm_ty = (mm_lid / ${u(tx)}) % ${u(ty)};`);
  e.line(t.kSplit > 1 ? `let mm_g = mm_lid / ${u(tx * ty)};` : "let mm_g = 0u;");

  for (const op of [A, B]) emitSlotSetup(e, t, op, g.threads);
  for (const op of [A, B]) emitReadOffset(e, t, op);

  for (let i = 0; i < t.threadM; i++) {
    for (let j = 0; j < t.threadN; j++) e.line(`var c_${i}_${j} = 0.0;`);
  }

  // Prologue: slice 0 into registers.
  for (const op of [A, B]) emitGlobalLoad(e, spec, t, op, "0u");
  const store = (stage: number) => {
    for (const op of [A, B]) emitSharedStore(e, t, op, u(stage * op.stageSize));
  };
  const load = (kt: string, cond: boolean) => {
    if (cond) e.open(`if (${kt} < ${u(kTiles)}) {`);
    for (const op of [A, B]) emitGlobalLoad(e, spec, t, op, kt);
    if (cond) e.close();
  };
  if (t.stages === 2) {
    // Unrolled by two so each half reads its stage at constant offsets: the driver can then
    // fold them into the shared loads and prove naga's index clamps redundant.
    store(0);
    e.line("workgroupBarrier();");
    const pairs = Math.floor(kTiles / 2);
    if (pairs > 0) {
      e.open(`for (var mm_t = 0u; mm_t < ${u(2 * pairs)}; mm_t = mm_t + 2u) {`);
      load("(mm_t + 1u)", false);
      emitCompute(e, t, A, B, 0);
      store(1);
      e.line("workgroupBarrier();");
      // The slice after the pair exists except on the last pair of an even count.
      const more = kTiles % 2 === 1;
      if (kTiles > 2) load("(mm_t + 2u)", !more);
      emitCompute(e, t, A, B, 1);
      if (kTiles > 2) {
        if (!more) e.open(`if (mm_t + 2u < ${u(kTiles)}) {`);
        store(0);
        if (!more) e.close();
      }
      e.line("workgroupBarrier();");
      e.close();
    }
    if (kTiles % 2 === 1) emitCompute(e, t, A, B, 0);
  } else {
    e.open(`for (var mm_t = 0u; mm_t < ${u(kTiles)}; mm_t = mm_t + 1u) {`);
    store(0);
    e.line("workgroupBarrier();");
    if (kTiles > 1) load("(mm_t + 1u)", true);
    emitCompute(e, t, A, B, 0);
    e.line("workgroupBarrier();");
    e.close();
  }

  emitEpilogue(e, spec, t, A, B, guarded, g.total);
  e.close();
}

/** Per-thread constants of the global→register loads: slot coordinates, validity, base index. */
function emitSlotSetup(
  e: Emitter,
  t: Required<MatmulTile>,
  op: Operand,
  threads: number,
): void {
  const x = op.x;
  const per = cdiv(op.slots, threads);
  const o0 = x === "a" ? "mm_m0" : "mm_n0";
  const k4 = t.tileK / 4, o4 = op.tileO / 4;
  for (let p = 0; p < per; p++) {
    e.line(`let ${x}_s${p} = mm_lid + ${u(p * threads)};`);
    if (op.layout === "ok") {
      e.line(`let ${x}_o${p} = ${o0} + ${x}_s${p} / ${u(k4)};`);
      e.line(`let ${x}_k${p} = (${x}_s${p} % ${u(k4)}) * 4u;`);
      e.line(
        `let ${x}_w${p} = (${x}_s${p} / ${u(k4)}) * ${u(op.rowStride)} + ${x}_s${p} % ${u(k4)};`,
      );
    } else {
      e.line(`let ${x}_o${p} = ${o0} + (${x}_s${p} % ${u(o4)}) * 4u;`);
      e.line(`let ${x}_k${p} = ${x}_s${p} / ${u(o4)};`);
      e.line(`let ${x}_w${p} = ${x}_s${p};`);
    }
    // A slot past the tile (when slots do not divide evenly) and rows past the matrix load zero.
    const conds: string[] = [];
    if ((p + 1) * threads > op.slots) conds.push(`${x}_s${p} < ${u(op.slots)}`);
    if (op.outer % op.tileO !== 0) {
      if (op.layout === "ko" && op.load !== "vec4") {
        // Scalar loads along outer check each element below.
      } else conds.push(`${x}_o${p} < ${u(op.outer)}`);
    }
    e.line(`let ${x}_v${p} = ${conds.length ? conds.join(" && ") : "true"};`);
    if (op.direct) {
      const d = op.direct;
      const base = `${u(d.offset)} + bi * ${u(d.batchStride)} + ${x}_o${p} * ${u(d.oStride)} + ` +
        `${x}_k${p} * ${u(d.kStride)}`;
      // vec4 sources are indexed in vec4 units; every term is a multiple of 4 by construction.
      e.line(`let ${x}_g${p} = ${op.load === "vec4" ? `(${base}) / 4u` : base};`);
    }
    e.line(`var ${x}_p${p} = vec4<f32>(0.0);`);
  }
}

/** Per-thread offset of the shared-memory reads: thread coordinate and K-split group. */
function emitReadOffset(e: Emitter, t: Required<MatmulTile>, op: Operand): void {
  const kg = t.tileK / t.kSplit;
  const expr = op.layout === "ok"
    ? `${op.coord} * ${u(op.rowStride)} + mm_g * ${u(kg / 4)}`
    : `${op.coord} + mm_g * ${u(kg * (op.tileO / 4))}`;
  e.line(`let mm_${op.x}off = ${expr};`);
}

/** Loads this thread's slots of K slice `kt` (a WGSL u32 expression) into `x_p*` registers. */
function emitGlobalLoad(
  e: Emitter,
  spec: MatmulKernelSpec,
  t: Required<MatmulTile>,
  op: Operand,
  kt: string,
): void {
  const x = op.x;
  const per = cdiv(op.slots, threadsOf(t));
  const needK = spec.K % t.tileK !== 0;
  const kTiles = cdiv(spec.K, t.tileK);
  for (let p = 0; p < per; p++) {
    const kExpr = `${kt} * ${u(t.tileK)} + ${x}_k${p}`;
    const lines: string[] = [];
    const conds: string[] = [`${x}_v${p}`];
    if (op.load === "vec4") {
      const d = op.direct!;
      const step = op.layout === "ok" ? t.tileK / 4 : (t.tileK * d.kStride) / 4;
      if (needK) conds.push(`${kExpr} < ${u(spec.K)}`);
      // With a single K slice `kt` is 0 (and the step may not be a whole number of vec4s).
      const at = kTiles > 1 ? ` + ${kt} * ${u(step)}` : "";
      const raw = `mm_${x}_src[${x}_g${p}${at}]`;
      const dtype = d.dtype ?? "f32";
      const value = dtype === "f16"
        ? `vec4<f32>(${raw})`
        : dtype === "bf16"
        ? `mm_${x}_bf16x4(${raw})`
        : raw;
      lines.push(`${x}_p${p} = ${value};`);
    } else {
      for (let c = 0; c < 4; c++) {
        // Element c of the vec4: along k for "ok", along outer for "ko".
        const oE = op.layout === "ok" ? `${x}_o${p}` : `(${x}_o${p} + ${u(c)})`;
        const kE = op.layout === "ok" ? `(${kExpr} + ${u(c)})` : `(${kExpr})`;
        const cc: string[] = [];
        if (op.layout === "ok" && (needK || spec.K % 4 !== 0)) cc.push(`${kE} < ${u(spec.K)}`);
        if (op.layout === "ko") {
          if (needK) cc.push(`${kE} < ${u(spec.K)}`);
          if (op.outer % op.tileO !== 0) cc.push(`${oE} < ${u(op.outer)}`);
        }
        let val: string;
        if (op.load === "hook") {
          val = x === "a" ? `load_a(bi, ${oE}, ${kE})` : `load_b(bi, ${kE}, ${oE})`;
        } else {
          const d = op.direct!;
          const stepC = op.layout === "ok" ? d.kStride : d.oStride;
          const stepT = t.tileK * d.kStride;
          const index = `${x}_g${p} + ${kt} * ${u(stepT)} + ${u(c * stepC)}`;
          val = loadWgsl(`mm_${x}_src`, index, d.dtype ?? "f32");
        }
        const assign = `${x}_p${p}.${COMP[c]} = ${val};`;
        lines.push(cc.length ? `if (${cc.join(" && ")}) { ${assign} }` : assign);
      }
    }
    e.line(`${x}_p${p} = vec4<f32>(0.0);`);
    e.open(`if (${conds.join(" && ")}) {`);
    for (const l of lines) e.line(l);
    e.close();
  }
}

/** Stores the prefetched registers at stage offset `base` (a WGSL u32 expression). Rows past the
 * matrix store the zeros their registers hold; only slots past the stage are skipped. */
function emitSharedStore(e: Emitter, t: Required<MatmulTile>, op: Operand, base: string): void {
  const threads = threadsOf(t);
  const per = cdiv(op.slots, threads);
  for (let p = 0; p < per; p++) {
    const st = `mm_${op.x}s[${base} + ${op.x}_w${p}] = ${op.x}_p${p};`;
    e.line((p + 1) * threads > op.slots ? `if (${op.x}_s${p} < ${u(op.slots)}) { ${st} }` : st);
  }
}

/** The unrolled multiply of one staged K slice (this thread's K-split share of it). */
function emitCompute(
  e: Emitter,
  t: Required<MatmulTile>,
  A: Operand,
  B: Operand,
  stage: number,
): void {
  const kg = t.tileK / t.kSplit;
  const aBase = stage * A.stageSize, bBase = stage * B.stageSize;
  for (let q = 0; q < kg / 4; q++) {
    e.open("{");
    // All of B for these 4 k steps stays live; A is streamed a row (or 4 rows) at a time.
    let bAt: (j: number, kk: number) => string;
    if (B.layout === "ok") {
      for (let j = 0; j < t.threadN; j++) {
        const idx = bBase + outerConst(B, j) * B.rowStride + q;
        e.line(`let b_r${j} = mm_bs[mm_boff + ${u(idx)}];`);
      }
      bAt = (j, kk) => `b_r${j}.${COMP[kk]}`;
    } else {
      for (let kk = 0; kk < 4; kk++) {
        for (let c = 0; c < t.threadN / 4; c++) {
          const idx = bBase + (q * 4 + kk) * (B.tileO / 4) + c * B.tO;
          e.line(`let b_k${kk}_${c} = mm_bs[mm_boff + ${u(idx)}];`);
        }
      }
      bAt = (j, kk) => `b_k${kk}_${j >> 2}.${COMP[j & 3]}`;
    }
    const fmaRow = (i: number, kk: number, a: string) => {
      for (let j = 0; j < t.threadN; j++) {
        e.line(`c_${i}_${j} = fma(${a}, ${bAt(j, kk)}, c_${i}_${j});`);
      }
    };
    if (A.layout === "ok") {
      for (let i = 0; i < t.threadM; i++) {
        const idx = aBase + outerConst(A, i) * A.rowStride + q;
        e.line(`let a_r${i} = mm_as[mm_aoff + ${u(idx)}];`);
        for (let kk = 0; kk < 4; kk++) fmaRow(i, kk, `a_r${i}.${COMP[kk]}`);
      }
    } else {
      for (let c = 0; c < t.threadM / 4; c++) {
        for (let kk = 0; kk < 4; kk++) {
          const idx = aBase + (q * 4 + kk) * (A.tileO / 4) + c * A.tO;
          e.line(`let a_k${kk}_${c} = mm_as[mm_aoff + ${u(idx)}];`);
          for (let ii = 0; ii < 4; ii++) fmaRow(c * 4 + ii, kk, `a_k${kk}_${c}.${COMP[ii]}`);
        }
      }
    }
    e.close();
  }
}

/** K-split reduction through workgroup memory, then `store_c` for every in-range output. */
function emitEpilogue(
  e: Emitter,
  spec: MatmulKernelSpec,
  t: Required<MatmulTile>,
  A: Operand,
  B: Operand,
  guarded: boolean,
  total: number,
): void {
  const tmn = t.tileM * t.tileN;
  const dyn = `${outerDyn(A)} * ${u(t.tileN)} + ${outerDyn(B)}`;
  const each = (f: (i: number, j: number, off: number) => void) => {
    for (let i = 0; i < t.threadM; i++) {
      for (let j = 0; j < t.threadN; j++) f(i, j, outerConst(A, i) * t.tileN + outerConst(B, j));
    }
  };
  const conds: string[] = [];
  if (guarded) conds.push(`mm_raw < ${u(total)}`);
  if (t.kSplit > 1) {
    e.open("if (mm_g > 0u) {");
    e.line(`let mm_ro = (mm_g - 1u) * ${u(tmn)} + ${dyn};`);
    each((i, j, off) => e.line(`mm_red[mm_ro + ${u(off)}] = c_${i}_${j};`));
    e.close();
    e.line("workgroupBarrier();");
    e.open("if (mm_g == 0u) {");
    e.line(`let mm_ro = ${dyn};`);
    for (let gg = 1; gg < t.kSplit; gg++) {
      each((i, j, off) => e.line(`c_${i}_${j} += mm_red[mm_ro + ${u((gg - 1) * tmn + off)}];`));
    }
    e.close();
    conds.push("mm_g == 0u");
  }
  e.open(`if (${conds.length ? conds.join(" && ") : "true"}) {`);
  e.line(`let mm_rm = mm_m0 + ${outerDyn(A)};`);
  e.line(`let mm_rn = mm_n0 + ${outerDyn(B)};`);
  const needM = spec.M % t.tileM !== 0, needN = spec.N % t.tileN !== 0;
  each((i, j) => {
    const m = `mm_rm + ${u(outerConst(A, i))}`, n = `mm_rn + ${u(outerConst(B, j))}`;
    const cc: string[] = [];
    if (needM) cc.push(`${m} < ${u(spec.M)}`);
    if (needN) cc.push(`${n} < ${u(spec.N)}`);
    const st = `store_c(bi, ${m}, ${n}, c_${i}_${j});`;
    e.line(cc.length ? `if (${cc.join(" && ")}) { ${st} }` : st);
  });
  e.close();
}
