/**
 * Kernel 1 of the chunked delta rule (delta_chunked.ts has the algebra): per (batch position,
 * chunk), the cumulative log-decays G, L = strictly-lower(diag(β)·K·Kᵀ ∘ exp(G_r − G_c)) as a
 * tile product in workgroup memory, then W = (I + L)⁻¹·diag(βγ)K and U = (I + L)⁻¹·diag(β)V by
 * forward substitution, one column per thread, in blocks of 16 rows held in registers. Writes W,
 * U and G to the `wu` scratch.
 *
 * @module
 */

import { BindingRegistry, type KernelArtifact } from "./artifact.ts";
import { type Context, groupKernel, keyRows, OUT_KT } from "./delta_chunk_parts.ts";
import { indent } from "./kernel_header.ts";
import { batchEnv, clampIndex, DeltaLoads } from "./delta_shapes.ts";
import { ExprEmitter } from "./expr.ts";
import {
  accDecl,
  fitTile,
  forEachOutput,
  gemmLoop,
  stagedSizes,
  threadCoords,
  type TileShape,
} from "./ssd_gemm.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** Threads of kernel 1 (at most). */
const PREP_THREADS = 256;
/** Rows of a column's substitution held in registers at once. */
const SOLVE_BLOCK = 16;

/**
 * The tile of L = K·Kᵀ and the thread count of kernel 1. The tile takes as many of the
 * kernel's threads as its blocks allow (at 64-step chunks 256 with 4 × 4 blocks; it took 64
 * with 8 × 8 until 2026-12-07, idling three quarters of the workgroup through the product).
 */
export function prepTile(c: number, maxThreads: number) {
  const threads = Math.max(c, Math.min(PREP_THREADS, maxThreads));
  return { threads, tile: fitTile(c, c, OUT_KT, threads, threads) };
}

/** Workgroup bytes of kernel 1. */
export function prepWorkgroupBytes(c: number, maxThreads: number): number {
  const st = stagedSizes(prepTile(c, maxThreads).tile);
  return 4 * (c * c + 3 * c) + 16 * (st.a + st.b);
}

/**
 * Kernel 1's workgroup arrays for g, β, G and L (C × C, row-major in vec4s of four columns:
 * the substitution reads four of a row's entries per load).
 */
function prepArrays(c: number): string[] {
  return [
    `var<workgroup> sh_g: array<f32, ${c}>;`,
    `var<workgroup> sh_b: array<f32, ${c}>;`,
    `var<workgroup> sh_G: array<f32, ${c}>;`,
    `var<workgroup> sh_L4: array<vec4<f32>, ${c * c / 4}>;`,
  ];
}

/**
 * Kernel 1's opening: the bindings (`wu` written), the `wu` row of a chunk step,
 * and the opening lines per (batch position, chunk): g and β in workgroup memory, their
 * cumulative sums G (also written to `wu`), then L = strictly-lower(diag(β)·K·Kᵀ ∘ exp(G_r −
 * G_c)) as the tile product `tile` on `threads` threads into `sh_L`.
 */
function prepOpening(ctx: Context, tile: TileShape, threads: number): {
  reg: BindingRegistry;
  top: ExprEmitter;
  loads: DeltaLoads;
  row: (p: string) => string;
  lines: string[];
} {
  const { node, layout: { s, c, chunks, padded, wuWidth } } = ctx;
  const reg = new BindingRegistry(ctx.materialized, [ctx.bufs.wu], ctx.aliases);
  const top = new ExprEmitter(reg.lookup, "pp");
  const { lines: bl, env } = batchEnv(s, "bpos");
  const loads = new DeltaLoads(node, env);
  const own = top.fork("po");
  const g = loads.logAlpha(own, "pr");
  const beta = loads.beta(own, "pr");
  const dkPad = Math.ceil(s.dk / OUT_KT) * OUT_KT;
  const row = (p: string) => `(bpos * ${u(padded)} + base + ${p})`;
  const lines = [
    `let bpos = wid / ${u(chunks)};`,
    `let base = (wid % ${u(chunks)}) * ${u(c)};`,
    ...bl,
    ...top.lines,
    `if (lid < ${u(c)}) {`,
    `  let valid = base + lid < ${u(s.len)};`,
    `  let pr = ${clampIndex("base + lid", s.len)};`,
    indent(own.lines),
    `  sh_g[lid] = select(0.0, ${g}, valid);`,
    `  sh_b[lid] = select(0.0, ${beta}, valid);`,
    `}`,
    `workgroupBarrier();`,
    `if (lid < ${u(c)}) {`,
    `  var gsum: f32 = 0.0;`,
    `  for (var a: u32 = 0u; a <= lid; a++) { gsum += sh_g[a]; }`,
    `  sh_G[lid] = gsum;`,
    `  out[${row("lid")} * ${u(wuWidth)} + ${u(s.dk + s.dv)}] = gsum;`,
    `}`,
    `workgroupBarrier();`,
    ...threadCoords(tile, "l_", threads),
    ...accDecl(tile, "l_"),
    ...gemmLoop({
      tile,
      threads,
      a: { fast: "k", load: keyRows(top, loads, s, "k") },
      b: { fast: "k", load: keyRows(top, loads, s, "k") },
      kBegin: "0u",
      kEnd: u(dkPad),
      tag: "l_",
      shA: "shA",
      shB: "shB",
    }),
    `if (l_act) {`,
    ...forEachOutput(tile, "l_", (r, col4, acc) => [
      `{`,
      `  let r = ${r};`,
      `  let lc = ${col4} * 4u;`,
      `  let below = vec4<u32>(lc, lc + 1u, lc + 2u, lc + 3u) < vec4<u32>(r);`,
      `  let gc = vec4<f32>(sh_G[lc], sh_G[lc + 1u], sh_G[lc + 2u], sh_G[lc + 3u]);`,
      `  sh_L4[r * ${u(c / 4)} + ${col4}] = ` +
      `select(vec4<f32>(0.0), sh_b[r] * exp(sh_G[r] - gc) * ${acc}, below);`,
      `}`,
    ]).map((l) => `  ${l}`),
    `}`,
    `workgroupBarrier();`,
  ];
  return { reg, top, loads, row, lines };
}

/** Emits kernel 1. */
export function prepKernel(ctx: Context): KernelArtifact {
  const { layout: { s, c, chunks, wuWidth } } = ctx;
  const { threads, tile } = prepTile(c, ctx.limits.maxComputeInvocationsPerWorkgroup);
  const { reg, top, loads, row, lines } = prepOpening(ctx, tile, threads);
  // Forward substitution per column, x_a = rhs_a − Σ_{m<a} L[a][m]·x_m, in blocks of `bs` rows
  // held in registers: the block's right-hand sides are loaded at once, the earlier blocks'
  // x are read back from the thread's own column of `wu`, and the block's own triangle is
  // unrolled. (A loop over a per-thread array of the chunk's x keeps it in local memory, which
  // 256 threads × C floats per workgroup overflow from L1.) L is read four entries of a row
  // per workgroup-memory load (one load per four multiply-adds, was one per multiply-add),
  // each x still summed in ascending m.
  const bs = Math.min(SOLVE_BLOCK, c);
  const c4 = c / 4;
  const xs = Array.from({ length: bs }, (_, e) => `x${e}`);
  const rhs = (what: "W" | "U") => {
    const e = top.fork(what === "W" ? "pw" : "pu");
    const x = what === "W" ? loads.key(e, "k", "pa", "col") : loads.value(e, "pa", "vcol");
    const value = what === "W" ? `sh_b[a] * exp(sh_G[a]) * ${x}` : `sh_b[a] * ${x}`;
    return xs.flatMap((name, i) => [
      `{`,
      `  let a = b0 + ${u(i)};`,
      `  let pa = ${clampIndex("base + a", s.len)};`,
      indent(e.lines),
      `  ${name} = ${value};`,
      `}`,
    ]);
  };
  const XYZW = ["x", "y", "z", "w"];
  const earlier = [
    `for (var m: u32 = 0u; m < b0; m += 4u) {`,
    ...XYZW.map((_, e) => `  let xm${e} = out[${row(`m + ${u(e)}`)} * ${u(wuWidth)} + col];`),
    ...xs.flatMap((name, i) => [
      `  {`,
      `    let l4 = sh_L4[(b0 + ${u(i)}) * ${u(c4)} + m / 4u];`,
      ...XYZW.map((comp, e) => `    ${name} = fma(-l4.${comp}, xm${e}, ${name});`),
      `  }`,
    ]),
    `}`,
  ];
  // Row i of the block's triangle needs L[b0 + i][b0 + j] for j < i: ⌈i / 4⌉ loads.
  const triangle = xs.flatMap((name, i) => [
    ...Array.from(
      { length: Math.ceil(i / 4) },
      (_, q) => `let t${i}_${q} = sh_L4[(b0 + ${u(i)}) * ${u(c4)} + b0 / 4u + ${u(q)}];`,
    ),
    ...xs.slice(0, i).map((prev, j) =>
      `${name} = fma(-t${i}_${j >> 2}.${XYZW[j & 3]}, ${prev}, ${name});`
    ),
    `out[${row(`b0 + ${u(i)}`)} * ${u(wuWidth)} + col] = ${name};`,
  ]);
  const body = [
    ...lines,
    `for (var col: u32 = lid; col < ${u(s.dk + s.dv)}; col += ${u(threads)}) {`,
    `  for (var b0: u32 = 0u; b0 < ${u(c)}; b0 += ${u(bs)}) {`,
    ...xs.map((name) => `    var ${name}: f32;`),
    `    if (col < ${u(s.dk)}) {`,
    indent(rhs("W"), "      "),
    `    } else {`,
    `      let vcol = col - ${u(s.dk)};`,
    indent(rhs("U"), "      "),
    `    }`,
    indent(earlier, "    "),
    indent(triangle, "    "),
    `  }`,
    `}`,
  ];
  const total = s.batches * chunks;
  const st = stagedSizes(tile);
  const shared = [
    ...prepArrays(c),
    `var<workgroup> shA: array<vec4<f32>, ${st.a}>;`,
    `var<workgroup> shB: array<vec4<f32>, ${st.b}>;`,
  ];
  return groupKernel(ctx, "prep", reg, threads, shared, body, total);
}
