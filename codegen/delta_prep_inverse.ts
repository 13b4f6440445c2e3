/**
 * Kernel 1 of the chunked delta rule in inverse form (delta_prep.ts substitutes per column;
 * delta_chunked.ts has the algebra). Per (batch position, chunk): the cumulative log-decays G,
 * L = strictly-lower(diag(β)·K·Kᵀ ∘ exp(G_r − G_c)) as a tile product, then T = (I + L)⁻¹ by
 * forward substitution over L's rows in place (row a of T from the rows above it, one thread
 * per column; C steps, each between two barriers), and finally
 *
 *   [W | U] = T·[diag(βγ)K | diag(β)V]
 *
 * as one tile product over the chunk's steps. The substitution form runs dk + dv chains per
 * chunk, each re-reading L and its operands step by step; here only C chains run, and the
 * (dk + dv)-wide part is a dense product.
 *
 * @module
 */

import type { KernelArtifact } from "./artifact.ts";
import { type Context, groupKernel, OUT_KT } from "./delta_chunk_parts.ts";
import { prepArrays, prepOpening } from "./delta_prep.ts";
import { indent } from "./kernel_header.ts";
import { clampIndex } from "./delta_shapes.ts";
import {
  accDecl,
  fitTile,
  forEachOutput,
  gemmLoop,
  sharedOperand,
  stagedSizes,
  threadCoords,
  tileThreads,
} from "./ssd_gemm.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** Threads of the kernel (at most). */
const INVERSE_THREADS = 256;
/** Output columns of [W | U] per pass of the final product (at most). */
const COLUMN_BLOCK = 256;

/** The tiles: L = K·Kᵀ (C × C) and one column block of [W | U] (C × Nt). */
function inverseTiles(c: number, width: number, maxThreads: number) {
  const cap = Math.min(INVERSE_THREADS, maxThreads);
  const nt = Math.min(COLUMN_BLOCK, Math.ceil(width / 8) * 8);
  const wu = fitTile(c, nt, OUT_KT, cap, 128);
  const threads = Math.max(c, tileThreads(wu).threads);
  return { threads, l: fitTile(c, c, OUT_KT, threads, 64), wu, blocks: Math.ceil(width / nt) };
}

/** Workgroup bytes of the inverse-form kernel. */
export function inverseWorkgroupBytes(c: number, width: number, maxThreads: number): number {
  const t = inverseTiles(c, width, maxThreads);
  const l = stagedSizes(t.l), w = stagedSizes(t.wu);
  return 4 * (c * c + 3 * c) + 16 * (Math.max(l.a, w.a) + Math.max(l.b, w.b));
}

/** Emits kernel 1 in inverse form (throws when its workgroup arrays do not fit the device). */
export function inversePrepKernel(ctx: Context): KernelArtifact {
  const { layout: { s, c, chunks, wuWidth } } = ctx;
  const width = s.dk + s.dv;
  const maxThreads = ctx.limits.maxComputeInvocationsPerWorkgroup;
  const bytes = inverseWorkgroupBytes(c, width, maxThreads);
  if (bytes > ctx.limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `deltaRule: the inverse-form first kernel needs ${bytes} bytes of workgroup memory at ` +
        `chunk length ${c}; the device has ${ctx.limits.maxComputeWorkgroupStorageSize} ` +
        `(use prep "substitute" or more chunks)`,
    );
  }
  const { threads, l: lTile, wu: wuTile, blocks } = inverseTiles(c, width, maxThreads);
  const { reg, top, loads, row, lines } = prepOpening(ctx, lTile, threads);
  // One element of the right-hand side [diag(βγ)K | diag(β)V] at chunk step `r`, column `col`.
  const rhs = (r: string, col: string, tag: string) => {
    const e = top.fork(tag);
    const step = clampIndex(`base + ${r}`, s.len);
    const kv = loads.key(e, "k", step, clampIndex(col, s.dk));
    const vv = loads.value(e, step, clampIndex(`${col} - ${u(s.dk)}`, s.dv));
    const value = `select(select(0.0, sh_b[${r}] * ${vv}, ${col} < ${u(width)}), ` +
      `sh_b[${r}] * exp(sh_G[${r}]) * ${kv}, ${col} < ${u(s.dk)})`;
    return { lines: e.lines, value };
  };
  const body = [
    ...lines,
    // T = (I + L)⁻¹ in place, row a after row a − 1, element j by thread j:
    // T[a][j] = δ_aj − Σ_{j ≤ m < a} L[a][m]·T[m][j] (rows above a already hold T).
    `for (var a: u32 = 0u; a < ${u(c)}; a++) {`,
    `  var t: f32 = select(0.0, 1.0, a == lid);`,
    `  if (lid < a) {`,
    `    for (var m: u32 = lid; m < a; m++) {`,
    `      t = fma(-sh_L[a * ${u(c)} + m], sh_L[m * ${u(c)} + lid], t);`,
    `    }`,
    `  }`,
    `  workgroupBarrier();`,
    `  if (lid < ${u(c)}) { sh_L[a * ${u(c)} + lid] = t; }`,
    `  workgroupBarrier();`,
    `}`,
    // [W | U] = T·[diag(βγ)K | diag(β)V], one block of columns at a time.
    ...threadCoords(wuTile, "w_", threads),
    `for (var blk: u32 = 0u; blk < ${u(blocks)}; blk++) {`,
    `  let col0 = blk * ${u(wuTile.Nt)};`,
    ...indent(accDecl(wuTile, "w_"), "  ").split("\n"),
    ...indent(
      gemmLoop({
        tile: wuTile,
        threads,
        a: sharedOperand("sh_L", c),
        b: {
          fast: "w",
          load: (k, w4, tag) => {
            const parts = [0, 1, 2, 3].map((i) =>
              rhs(k, `(col0 + ${w4} * 4u + ${u(i)})`, `${tag}${i}`)
            );
            return {
              lines: parts.flatMap((p) => p.lines),
              value: `vec4<f32>(${parts.map((p) => p.value).join(", ")})`,
            };
          },
        },
        kBegin: "0u",
        kEnd: u(c),
        tag: "w_",
        shA: "shA",
        shB: "shB",
      }),
      "  ",
    ).split("\n"),
    `  if (w_act) {`,
    ...indent(
      forEachOutput(wuTile, "w_", (r, col4, acc) =>
        [0, 1, 2, 3].map((e) => {
          const col = `col0 + ${col4} * 4u + ${u(e)}`;
          return `if (${col} < ${u(width)}) { out[${row(r)} * ${u(wuWidth)} + ${col}] = ${acc}.${
            "xyzw"[e]
          }; }`;
        })),
      "    ",
    ).split("\n"),
    `  }`,
    `}`,
  ];
  const total = s.batches * chunks;
  const sl = stagedSizes(lTile), sw = stagedSizes(wuTile);
  const shared = [
    ...prepArrays(c),
    `var<workgroup> shA: array<vec4<f32>, ${Math.max(sl.a, sw.a)}>;`,
    `var<workgroup> shB: array<vec4<f32>, ${Math.max(sl.b, sw.b)}>;`,
  ];
  return groupKernel(ctx, "prep", reg, threads, shared, body, total);
}
