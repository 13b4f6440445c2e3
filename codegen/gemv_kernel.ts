/**
 * Matrix-vector products for decode (M ≤ 4 rows against a weight matrix stored [N, K] with K
 * contiguous): the tiled matmul wastes most of its tile there. Here T threads share one
 * output column n: they stream the weight row with coalesced vec4 loads, multiply by the
 * activation rows (computed through the `load_a` hook, so prologues stay fused), and reduce
 * with subgroup shuffles (where the device has them) and workgroup memory; one thread runs the
 * `store_c` epilogue hook.
 *
 * A decode step is a chain of small products, each too short to hide memory latency by
 * occupancy alone, so: T grows (32, 64, 128) while the product has few columns, giving more
 * workgroups; and several loads are in flight per thread (all of a short row's, issued before
 * the staging barrier; a long row's UNROLL at a time), with clamped in-bounds indices and
 * out-of-range loads replaced by zero: no branches.
 *
 * When the activation rows fit in workgroup memory they are staged there first: each
 * workgroup evaluates `load_a` once per (row, k) instead of once per (row, k, column), so a
 * prologue such as RMSNorm or the decode conv costs 1/8 as much, and the inner loop issues one
 * shared-memory load per weight vector instead of four global ones.
 *
 * @module
 */

import { u32Literal } from "./wgsl_math.ts";
import { loadWgsl, wgslArrayType } from "./dtypes.ts";

/** Eight 16-bit weights (a vec4<u32>, element 0 in the low half of x) widened: 0–3 and 4–7. */
const WIDEN8 = {
  f16: `
fn gemv_lo(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
fn gemv_hi(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
}`,
  bf16: `
fn gemv_lo(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u),
                   bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));
}
fn gemv_hi(w: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(w.z << 16u), bitcast<f32>(w.z & 0xffff0000u),
                   bitcast<f32>(w.w << 16u), bitcast<f32>(w.w & 0xffff0000u));
}`,
};

/** Four bf16 words (two u32s, element 4i in the low half of the first) widened to f32. */
const BF16X4 = `
fn gemv_bf16x4(w: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u),
                   bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));
}`;

/** What a GEMV kernel computes: C[m, n] = Σ_k A[m, k] · B[n, k] for m < M. */
export interface GemvSpec {
  M: number;
  N: number;
  K: number;
  /** Module-scope declarations the hooks use (not the weight binding). */
  declarations: string;
  /** Body of `fn load_a(bi: u32, m: u32, k: u32) -> f32`. */
  loadA: string;
  /** Body of `fn store_c(bi: u32, m: u32, n: u32, acc: f32)`. */
  storeC: string;
  /**
   * The weight, B[n, k] = array[n · rowStride + k]: either a binding this kernel declares (as
   * vec4 when the row stride allows), or the name of a scalar array the declarations hold.
   */
  weight: { binding: number; rowStride: number } | { array: string; rowStride: number };
  /**
   * The weight's storage type (default f32): `f16` is read as f16 (vec4s of them on the vector
   * path), `bf16` as u32 words holding two each (vec2s of them); both widen to f32 exactly.
   */
  weightDtype?: "f32" | "f16" | "bf16";
  /**
   * Reductions over k the kernel computes itself, one value per row, before anything reads
   * them: `body` is the body of `fn(m: u32, k: u32) -> f32` (the reduced expression); the hooks
   * read reduction j of row m as `gemv_red{j}[m]`.
   */
  reductions?: { init: string; combine: (a: string, b: string) => string; body: string }[];
}

/** Largest M handled (rows of the activation). */
export const GEMV_MAX_ROWS = 4;

/** Threads per workgroup. */
const THREADS = 256;
/** Weight loads each thread issues back to back. */
const UNROLL = 4;
/** Workgroups worth having before widening columns stops paying (about 2 per SM). */
const TARGET_GROUPS = 256;
/** Rows up to this many loads per thread are unrolled completely. */
const MAX_UNROLLED = 16;

/** Device facts the GEMV kernel adapts to. */
export interface GemvDevice {
  maxWorkgroupsPerDimension: number;
  /** Bytes of workgroup memory. */
  maxWorkgroupStorage: number;
  /** Smallest subgroup size when subgroup operations may be used, else 0. */
  subgroupMinSize: number;
}

/**
 * Workgroups of the GEMV kernel of an N × K weight, assuming vec4 loads whenever K allows
 * (a weight with an unaligned row stride takes scalar loads and may get fewer).
 */
export function gemvWorkgroups(N: number, K: number): number {
  const T = gemvThreadsPerColumn(N, K % 4 === 0 ? K / 4 : K);
  return Math.ceil(N / (THREADS / T));
}

/**
 * Threads per column for a row of `steps` loads: doubled from 32 (up to 128) while the kernel
 * has fewer than TARGET_GROUPS workgroups and each thread would still load at least two
 * weight vectors per row after the doubling (steps ≥ 2 · 2t).
 */
export function gemvThreadsPerColumn(N: number, steps: number): number {
  let t = 32;
  while (t < 128 && Math.ceil(N / (THREADS / t)) < TARGET_GROUPS && steps >= 4 * t) t *= 2;
  return t;
}

/** Threads per column the autotuner tries (the default is one of them). */
export const GEMV_THREADS_PER_COLUMN: readonly number[] = [32, 64, 128];

/** Forced choices of {@link emitGemv}. */
export interface GemvOptions {
  /**
   * Stage the activation rows in workgroup memory, or not (default: when they fit in
   * `maxWorkgroupStorage` bytes beside the reduction buffer).
   */
  stage?: boolean;
  /**
   * Threads sharing one output column: a power of two from 1 to 256 (default
   * {@link gemvThreadsPerColumn}; the autotuner tries {@link GEMV_THREADS_PER_COLUMN}).
   */
  threadsPerColumn?: number;
}

/**
 * How `spec`'s weight rows are read: vec4 loads (`vec`), eight 16-bit weights per load
 * (`wide`), `per` weights per load and `steps` loads per row.
 */
function rowLoads(spec: GemvSpec) {
  const own = "binding" in spec.weight;
  const vec = own && spec.K % 4 === 0 && spec.weight.rowStride % 4 === 0;
  const wdt = spec.weightDtype ?? "f32";
  // 16-bit weights stream eight per load (a vec4<u32>), as many bytes per load as f32's vec4.
  const wide = vec && wdt !== "f32" && spec.K % 8 === 0 && spec.weight.rowStride % 8 === 0;
  const per = wide ? 8 : vec ? 4 : 1;
  return { own, vec, wide, per, steps: spec.K / per };
}

/** The threads per column {@link emitGemv} takes for `spec` unless told otherwise. */
export function gemvDefaultThreadsPerColumn(spec: GemvSpec): number {
  return gemvThreadsPerColumn(spec.N, rowLoads(spec).steps);
}

/** Emits the GEMV kernel (entry point `main`) and its workgroup count. */
export function emitGemv(
  spec: GemvSpec,
  device: GemvDevice,
  options: GemvOptions = {},
): { wgsl: string; workgroups: [number, number, number] } {
  const stage = options.stage;
  const { M, N, K } = spec;
  if (M < 1 || M > GEMV_MAX_ROWS) throw new Error(`gemv: M = ${M} is outside 1..${GEMV_MAX_ROWS}`);
  const { own, vec, wide, per, steps } = rowLoads(spec);
  const wdt = spec.weightDtype ?? "f32";
  const array = "array" in spec.weight ? spec.weight.array : "gemv_w";
  const stride = spec.weight.rowStride / per;
  const T = options.threadsPerColumn ?? gemvThreadsPerColumn(N, steps);
  if (!Number.isInteger(Math.log2(T)) || T > THREADS) {
    throw new Error(`gemv: ${T} threads per column is not a power of two up to ${THREADS}`);
  }
  const columns = THREADS / T;
  const groups = Math.ceil(N / columns);
  const maxDim = device.maxWorkgroupsPerDimension;
  const x = Math.min(groups, maxDim);
  const y = Math.ceil(groups / x);
  if (y > maxDim) throw new Error(`gemv: ${groups} workgroups do not fit`);
  // Shuffles reduce within aligned blocks of `shuffle` lanes (never across columns, since T is
  // a multiple of it); workgroup memory then sums the T / shuffle block results.
  const shuffle = device.subgroupMinSize >= 2 ? Math.min(device.subgroupMinSize, T) : 1;
  const partials = T / shuffle;
  const rows = Array.from({ length: M }, (_, m) => m);
  const binding = "binding" in spec.weight ? spec.weight.binding : -1;
  const element = wide
    ? "vec4<u32>"
    : vec
    ? { f32: "vec4<f32>", f16: "vec4<f16>", bf16: "vec2<u32>" }[wdt]
    : wgslArrayType(wdt);
  const decl = !own
    ? ""
    : `@group(0) @binding(${binding}) var<storage, read> gemv_w: array<${element}>;` +
      (wide ? WIDEN8[wdt as "f16" | "bf16"] : vec && wdt === "bf16" ? BF16X4 : "");
  // One weight element (a vec4 on the vector path, eight 16-bit words when wide) at `idx`,
  // widened to f32 (the wide path widens in `useW`, once for all rows).
  const weightAt = (idx: string) =>
    !vec
      ? loadWgsl(array, idx, wdt)
      : wide
      ? `${array}[${idx}]`
      : wdt === "f16"
      ? `vec4<f32>(${array}[${idx}])`
      : wdt === "bf16"
      ? `gemv_bf16x4(${array}[${idx}])`
      : `${array}[${idx}]`;
  // Workgroup memory with staging: the activation rows beside the reduction buffer.
  const reductions = spec.reductions ?? [];
  const partBytes = 4 * columns * partials * M +
    (reductions.length > 0 ? 4 * (THREADS + M * reductions.length) : 0);
  const stageBytes = 4 * M * K + partBytes;
  const staged = stage ?? stageBytes <= device.maxWorkgroupStorage;
  if (staged && stageBytes > device.maxWorkgroupStorage) {
    throw new Error(
      `gemv: staging ${M}×${K} activations needs ${stageBytes} bytes of workgroup ` +
        `memory; the device allows ${device.maxWorkgroupStorage}`,
    );
  }
  // Staged rows: M rows of K floats (as K / 4 vec4s on the vector path).
  const stageDecl = !staged
    ? ""
    : vec
    ? `var<workgroup> gemv_a: array<vec4<f32>, ${M * K / 4}>;`
    : `var<workgroup> gemv_a: array<f32, ${M * K}>;`;
  const stageFill = !staged
    ? ""
    : vec
    ? `for (var q: u32 = lid; q < ${u32Literal(M * K / 4)}; q += ${THREADS}u) {
    let sm = q / ${u32Literal(K / 4)};
    let sk = (q % ${u32Literal(K / 4)}) * 4u;
    gemv_a[q] = vec4<f32>(load_a(0u, sm, sk), load_a(0u, sm, sk + 1u), load_a(0u, sm, sk + 2u), load_a(0u, sm, sk + 3u));
  }
  workgroupBarrier();`
    : `for (var q: u32 = lid; q < ${u32Literal(M * K)}; q += ${THREADS}u) {
    gemv_a[q] = load_a(0u, q / ${u32Literal(K)}, q % ${u32Literal(K)});
  }
  workgroupBarrier();`;
  // Weight loads: each thread reads the row at lane, lane + T, lane + 2T, … A short row is
  // unrolled completely, with every load issued before the staging barrier, so the weights
  // stream in while the activations are staged; a long one loops, UNROLL loads at a time.
  // Loads past the row's end read a clamped index and are replaced by zero.
  const perThread = Math.ceil(steps / T);
  const unrolled = perThread <= MAX_UNROLLED;
  const zero = wide ? "vec4<u32>(0u)" : vec ? "vec4<f32>(0.0)" : "0.0";
  const loadW = (u: number, base: string, mayOverrun: boolean) => {
    const idx = `${base} + ${u * T}u`;
    if (!mayOverrun) return `let w${u} = ${weightAt(`n * ${u32Literal(stride)} + ${idx}`)};`;
    const clamped = `n * ${u32Literal(stride)} + min(${idx}, ${u32Literal(steps - 1)})`;
    return `let w${u} = select(${zero}, ${weightAt(clamped)}, ${idx} < ${u32Literal(steps)});`;
  };
  const loadA4 = (m: number, k: string) =>
    `vec4<f32>(load_a(0u, ${m}u, ${k}), load_a(0u, ${m}u, ${k} + 1u), ` +
    `load_a(0u, ${m}u, ${k} + 2u), load_a(0u, ${m}u, ${k} + 3u))`;
  const useW = (u: number, base: string) => {
    const lines = [`let i${u} = min(${base} + ${u * T}u, ${u32Literal(steps - 1)});`];
    if (!staged) lines.push(`let k${u} = i${u}${vec ? ` * ${per}u` : ""};`);
    if (wide) {
      // Elements 0–3 and 4–7 of the eight weights, against two vec4s of each row.
      lines.push(`let w${u}l = gemv_lo(w${u});`, `let w${u}h = gemv_hi(w${u});`);
      for (const m of rows) {
        const [a0, a1] = staged
          ? [
            `gemv_a[${u32Literal(m * (K / 4))} + 2u * i${u}]`,
            `gemv_a[${u32Literal(m * (K / 4))} + 2u * i${u} + 1u]`,
          ]
          : [loadA4(m, `k${u}`), loadA4(m, `k${u} + 4u`)];
        lines.push(`acc${m} += dot(${a0}, w${u}l) + dot(${a1}, w${u}h);`);
      }
      return lines.join("\n  ");
    }
    for (const m of rows) {
      const a = staged
        ? `gemv_a[${u32Literal(m * steps)} + i${u}]`
        : vec
        ? `vec4<f32>(load_a(0u, ${m}u, k${u}), load_a(0u, ${m}u, k${u} + 1u), ` +
          `load_a(0u, ${m}u, k${u} + 2u), load_a(0u, ${m}u, k${u} + 3u))`
        : `load_a(0u, ${m}u, k${u})`;
      lines.push(vec ? `acc${m} += dot(${a}, w${u});` : `acc${m} += ${a} * w${u};`);
    }
    return lines.join("\n  ");
  };
  const slots = (count: number) => Array.from({ length: count }, (_, u) => u);
  const products = unrolled
    ? `${slots(perThread).map((u) => useW(u, "lane")).join("\n  ")}`
    : `for (var i: u32 = lane; i < ${u32Literal(steps)}; i += ${T * UNROLL}u) {
    ${slots(UNROLL).map((u) => loadW(u, "i", true)).join("\n    ")}
    ${slots(UNROLL).map((u) => useW(u, "i").replaceAll("\n  ", "\n    ")).join("\n    ")}
  }`;
  const earlyLoads = unrolled
    ? slots(perThread).map((u) => loadW(u, "lane", (u + 1) * T > steps)).join("\n  ")
    : "";
  const shuffles: string[] = [];
  for (let off = shuffle / 2; off >= 1; off /= 2) {
    for (const m of rows) shuffles.push(`acc${m} += subgroupShuffleXor(acc${m}, ${off}u);`);
  }
  // Absorbed reductions: each thread folds a strided share of k, then a tree in workgroup
  // memory; every row's result lands in gemv_red{j}[m] before staging reads it.
  const reductionDecls = reductions.map((r, j) =>
    `fn gemv_red_x${j}(m: u32, k: u32) -> f32 {
  ${r.body}
}
var<workgroup> gemv_red${j}: array<f32, ${M}>;`
  ).join("\n") +
    (reductions.length > 0 ? `\nvar<workgroup> gemv_rpart: array<f32, ${THREADS}>;` : "");
  // With subgroups: shuffles within each aligned block of `redShuffle` threads, then one thread
  // folds the blocks' results (two barriers instead of a tree's log2(256) + 1).
  const redShuffle = device.subgroupMinSize >= 2 ? Math.min(device.subgroupMinSize, THREADS) : 1;
  const reductionCode = reductions.flatMap((r, j) =>
    rows.map((m) => {
      // Each thread folds a strided share of k; then the threads' values are combined.
      const fold = `var r = ${r.init};
    for (var q: u32 = lid; q < ${u32Literal(K)}; q += ${THREADS}u) {
      r = ${r.combine("r", `gemv_red_x${j}(${m}u, q)`)};
    }`;
      const across = redShuffle > 1
        ? `${
          Array.from({ length: Math.log2(redShuffle) }, (_, i) => redShuffle >> (i + 1)).map((
            off,
          ) => `r = ${r.combine("r", `subgroupShuffleXor(r, ${off}u)`)};`).join("\n    ")
        }
    if (lid % ${redShuffle}u == 0u) { gemv_rpart[lid / ${redShuffle}u] = r; }
    workgroupBarrier();
    if (lid == 0u) {
      var t = gemv_rpart[0];
      for (var b: u32 = 1u; b < ${THREADS / redShuffle}u; b++) { t = ${
          r.combine("t", "gemv_rpart[b]")
        }; }
      gemv_red${j}[${m}u] = t;
    }`
        : `gemv_rpart[lid] = r;
    workgroupBarrier();
    for (var s: u32 = ${THREADS / 2}u; s > 0u; s = s >> 1u) {
      if (lid < s) { gemv_rpart[lid] = ${r.combine("gemv_rpart[lid]", "gemv_rpart[lid + s]")}; }
      workgroupBarrier();
    }
    if (lid == 0u) { gemv_red${j}[${m}u] = gemv_rpart[0]; }`;
      return `{
    ${fold}
    ${across}
    workgroupBarrier();
  }`;
    })
  ).join("\n  ");
  // Staging that does not read the reductions (their factors moved to the epilogue) goes first:
  // the reductions' barriers then also publish the staged rows.
  const stageFirst = staged && reductions.length > 0 && !spec.loadA.includes("gemv_red");
  const part = (m: number, index: string) => `gemv_part[${m * columns * partials}u + ${index}]`;
  const wgsl = `${spec.declarations}
${decl}
${reductionDecls}
fn load_a(bi: u32, m: u32, k: u32) -> f32 {
  ${spec.loadA}
}
fn store_c(bi: u32, m: u32, n: u32, acc: f32) {
  ${spec.storeC}
}
var<workgroup> gemv_part: array<f32, ${columns * partials * M}>;
${stageDecl}
@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ${T}u;
  let col = lid / ${T}u;
  let n_raw = (wid.x + wid.y * ${u32Literal(x)}) * ${columns}u + col;
  let n = min(n_raw, ${u32Literal(N - 1)});
  ${earlyLoads}
  ${stageFirst ? stageFill.replace(/\n\s*workgroupBarrier\(\);$/, "") : reductionCode}
  ${stageFirst ? reductionCode : stageFill}
  ${rows.map((m) => `var acc${m}: f32 = 0.0;`).join("\n  ")}
  ${products}
  ${shuffles.join("\n  ")}
  if (lane % ${shuffle}u == 0u) {
    ${
    rows.map((m) => `${part(m, `col * ${partials}u + lane / ${shuffle}u`)} = acc${m};`).join(
      "\n    ",
    )
  }
  }
  workgroupBarrier();
  if (lane == 0u && n_raw < ${u32Literal(N)}) {
    ${
    rows.map((m) =>
      `var sum${m} = 0.0;
    for (var p: u32 = 0u; p < ${partials}u; p++) { sum${m} += ${
        part(m, `col * ${partials}u + p`)
      }; }
    store_c(0u, ${m}u, n, sum${m});`
    ).join("\n    ")
  }
  }
}
`;
  return { wgsl, workgroups: [x, y, 1] };
}
