/**
 * Matrix-vector products for decode (M ≤ 4 rows against a weight matrix stored [N, K] with K
 * contiguous): the tiled matmul wastes most of its tile there. Here 32 threads share one
 * output column n: they stream the weight row with coalesced vec4 loads, multiply by the
 * activation rows (computed through the `load_a` hook, so prologues stay fused), and reduce
 * through workgroup memory; one thread runs the `store_c` epilogue hook.
 *
 * When the activation rows fit in workgroup memory they are staged there first: each
 * workgroup evaluates `load_a` once per (row, k) instead of once per (row, k, column), so a
 * prologue such as RMSNorm or the decode conv costs 1/8 as much, and the inner loop issues one
 * shared-memory load per weight vector instead of four global ones.
 *
 * @module
 */

import { u32Literal } from "./wgsl_math.ts";

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
}

/** Largest M handled (rows of the activation). */
export const GEMV_MAX_ROWS = 4;

const THREADS_PER_COLUMN = 32;
const COLUMNS_PER_GROUP = 8;

/**
 * Emits the GEMV kernel (entry point `main`) and its workgroup count. `stage` forces staging of
 * the activation rows in workgroup memory on or off (default: on when they fit in
 * `maxWorkgroupStorage` bytes beside the reduction buffer).
 */
export function emitGemv(
  spec: GemvSpec,
  maxWorkgroupsPerDimension: number,
  maxWorkgroupStorage = 16384,
  stage?: boolean,
): { wgsl: string; workgroups: [number, number, number] } {
  const { M, N, K } = spec;
  if (M < 1 || M > GEMV_MAX_ROWS) throw new Error(`gemv: M = ${M} is outside 1..${GEMV_MAX_ROWS}`);
  const own = "binding" in spec.weight;
  const vec = own && K % 4 === 0 && spec.weight.rowStride % 4 === 0;
  const array = "array" in spec.weight ? spec.weight.array : "gemv_w";
  const groups = Math.ceil(N / COLUMNS_PER_GROUP);
  const x = Math.min(groups, maxWorkgroupsPerDimension);
  const y = Math.ceil(groups / x);
  if (y > maxWorkgroupsPerDimension) throw new Error(`gemv: ${groups} workgroups do not fit`);
  const rows = Array.from({ length: M }, (_, m) => m);
  const binding = "binding" in spec.weight ? spec.weight.binding : -1;
  const decl = !own
    ? ""
    : vec
    ? `@group(0) @binding(${binding}) var<storage, read> gemv_w: array<vec4<f32>>;`
    : `@group(0) @binding(${binding}) var<storage, read> gemv_w: array<f32>;`;
  const stride = vec ? spec.weight.rowStride / 4 : spec.weight.rowStride;
  const steps = vec ? K / 4 : K;
  const threads = COLUMNS_PER_GROUP * THREADS_PER_COLUMN;
  // Workgroup memory with staging: the activation rows beside the reduction buffer.
  const stageBytes = 4 * M * K + 4 * threads * M;
  const staged = stage ?? stageBytes <= maxWorkgroupStorage;
  if (staged && stageBytes > maxWorkgroupStorage) {
    throw new Error(
      `gemv: staging ${M}×${K} activations needs ${stageBytes} bytes of workgroup ` +
        `memory; the device allows ${maxWorkgroupStorage}`,
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
    ? `for (var q: u32 = lid; q < ${u32Literal(M * K / 4)}; q += ${threads}u) {
    let sm = q / ${u32Literal(K / 4)};
    let sk = (q % ${u32Literal(K / 4)}) * 4u;
    gemv_a[q] = vec4<f32>(load_a(0u, sm, sk), load_a(0u, sm, sk + 1u), load_a(0u, sm, sk + 2u), load_a(0u, sm, sk + 3u));
  }
  workgroupBarrier();`
    : `for (var q: u32 = lid; q < ${u32Literal(M * K)}; q += ${threads}u) {
    gemv_a[q] = load_a(0u, q / ${u32Literal(K)}, q % ${u32Literal(K)});
  }
  workgroupBarrier();`;
  const body = staged
    ? rows.map((m) =>
      vec
        ? `acc${m} += dot(gemv_a[${m * K / 4}u + i], w);`
        : `acc${m} += gemv_a[${m * K}u + i] * w;`
    )
    : vec
    ? rows.map((m) =>
      `acc${m} += dot(vec4<f32>(load_a(0u, ${m}u, k0), load_a(0u, ${m}u, k0 + 1u), ` +
      `load_a(0u, ${m}u, k0 + 2u), load_a(0u, ${m}u, k0 + 3u)), w);`
    )
    : rows.map((m) => `acc${m} += load_a(0u, ${m}u, k0) * w;`);
  const wgsl = `${spec.declarations}
${decl}
fn load_a(bi: u32, m: u32, k: u32) -> f32 {
  ${spec.loadA}
}
fn store_c(bi: u32, m: u32, n: u32, acc: f32) {
  ${spec.storeC}
}
var<workgroup> gemv_part: array<f32, ${COLUMNS_PER_GROUP * THREADS_PER_COLUMN * M}>;
${stageDecl}
@compute @workgroup_size(${COLUMNS_PER_GROUP * THREADS_PER_COLUMN})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ${THREADS_PER_COLUMN}u;
  let col = lid / ${THREADS_PER_COLUMN}u;
  let n_raw = (wid.x + wid.y * ${u32Literal(x)}) * ${COLUMNS_PER_GROUP}u + col;
  let n = min(n_raw, ${u32Literal(N - 1)});
  ${stageFill}
  ${rows.map((m) => `var acc${m}: f32 = 0.0;`).join("\n  ")}
  for (var i: u32 = lane; i < ${u32Literal(steps)}; i += ${THREADS_PER_COLUMN}u) {
    let w = ${array}[n * ${u32Literal(stride)} + i];
    ${staged ? "" : `let k0 = i${vec ? " * 4u" : ""};`}
    ${body.join("\n    ")}
  }
  ${
    rows.map((m) => `gemv_part[${m * COLUMNS_PER_GROUP * THREADS_PER_COLUMN}u + lid] = acc${m};`)
      .join("\n  ")
  }
  workgroupBarrier();
  for (var s: u32 = ${THREADS_PER_COLUMN / 2}u; s > 0u; s = s >> 1u) {
    if (lane < s) {
      ${
    rows.map((m) => {
      const base = m * COLUMNS_PER_GROUP * THREADS_PER_COLUMN;
      return `gemv_part[${base}u + lid] += gemv_part[${base}u + lid + s];`;
    }).join("\n      ")
  }
    }
    workgroupBarrier();
  }
  if (lane == 0u && n_raw < ${u32Literal(N)}) {
    ${
    rows.map((m) =>
      `store_c(0u, ${m}u, n, gemv_part[${m * COLUMNS_PER_GROUP * THREADS_PER_COLUMN}u + lid]);`
    ).join("\n    ")
  }
  }
}
`;
  return { wgsl, workgroups: [x, y, 1] };
}
