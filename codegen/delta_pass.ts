/**
 * Kernel 2 of the chunked delta rule (delta_chunked.ts has the algebra): per (batch position,
 * block of value rows), sequentially over chunks, it records each chunk's entering state S₀,
 * writes U' = U − W·S₀ᵀ and passes the state on: S ← γ_C S₀ + Σ_r exp(G_C − G_r)·u'_r k_rᵀ.
 *
 * Each value row is held by G lanes, lane l owning the contiguous keys [l·NK, (l+1)·NK) as
 * vec4 registers (NK a multiple of 4; keys past dk are zero). The W and K rows of a block of
 * steps are staged once per workgroup in workgroup memory, so each thread reads them as vec4s
 * (four multiply-adds per load) and every global element is read once per workgroup. W·S₀ᵀ is
 * summed over the lanes with subgroup shuffles (G = 1 without subgroups).
 *
 * @module
 */

import type { DeltaStateNode } from "../dsl/ir.ts";
import type { DeviceLimits } from "./limits.ts";
import type { KernelArtifact } from "./artifact.ts";
import { type Context, groupKernel, passBindings, tuningKey } from "./delta_chunk_parts.ts";
import { indent } from "./kernel_header.ts";
import { deltaLanes, lanesFor, maxDeltaLanes } from "./delta_recurrent.ts";
import { clampIndex, laneSum } from "./delta_shapes.ts";
import { offsetExpr } from "./expr.ts";
import { emitTuned } from "./tuning.ts";
import { u32Literal as u } from "./wgsl_math.ts";
import { emitTiledPass, TILED_PASS_ROWS, tiledPassWorkgroupBytes } from "./delta_pass_tiled.ts";

/** Threads per workgroup of the state pass (at most). */
const PASS_THREADS = 256;
/** Steps staged in workgroup memory at a time (divides every chunk length ≥ 8). */
const STAGE_STEPS = 8;

/**
 * Keys one lane holds by default in the state pass. Fewer than the recurrent kernel's 16: on an
 * H100 at (1, 8192, 32, 128) the pass took 4.44 ms with 32 lanes of 4 keys against 7.23 ms with
 * 8 lanes of 16 (2026-12-06, bench/RESULTS.md), the pass being short chains per step.
 */
const PASS_KEYS_PER_LANE = 4;

/** The state pass's default lanes per value row: up to the subgroup, 4 keys per lane. */
export function passLanes(dk: number, limits: DeviceLimits): number {
  return lanesFor(dk, limits, PASS_KEYS_PER_LANE);
}

/** Workgroup bytes of the state pass for key size `dk` and `lanes` lanes per row. */
export function passWorkgroupBytes(dk: number, lanes: number): number {
  const nk = Math.ceil(Math.ceil(dk / lanes) / 4) * 4;
  return 4 * (2 * STAGE_STEPS * nk * lanes + STAGE_STEPS);
}

/**
 * Emits the state pass: the lane form (this file) with `forcedLanes` / `forcedThreads`, the tile
 * form (delta_pass_tiled.ts) with `forcedRows` value rows per workgroup, else a tuning point.
 */
export function passKernel(
  ctx: Context,
  state: DeltaStateNode | undefined,
  forcedLanes?: number,
  forcedThreads?: number,
  forcedRows?: number,
): KernelArtifact {
  if (forcedRows !== undefined) return emitTiledPass(ctx, state, forcedRows);
  if (forcedLanes !== undefined || forcedThreads !== undefined) {
    return emitPass(ctx, state, forcedLanes, forcedThreads);
  }
  // A tuning point: lanes per value row × threads per workgroup (occupancy against redundant
  // staging of W and K rows), or the tile form by value rows per workgroup. The default is the
  // tile form where it fits (H100, 2026-12-07: 2.75 ms against 4.35 for the best lane form at
  // (1, 8192, 32, 128), 0.50 against 0.93 at (8, 2048, 16, 64)), over dk / 4 rows (at least 16):
  // fewer row blocks stage the chunk's W and K rows fewer times, more keep more warps busy (H200,
  // 2026-12-07: 2.40 ms for 32 rows against 3.01 for 16 at dk = 128; 0.54 for 16 rows against
  // 0.77 for 32 at dk = 64); else the lanes of passLanes and PASS_THREADS.
  const { s } = ctx.layout;
  const maxThreads = ctx.limits.maxComputeInvocationsPerWorkgroup;
  const candidates = new Map<string, () => KernelArtifact[]>();
  for (let lanes = 1; lanes <= maxDeltaLanes(ctx.limits); lanes *= 2) {
    for (const threads of [64, 128, 256]) {
      if (threads <= maxThreads && lanes <= threads) {
        candidates.set(`lanes${lanes}_wg${threads}`, () => [emitPass(ctx, state, lanes, threads)]);
      }
    }
  }
  for (const rows of TILED_PASS_ROWS) {
    candidates.set(`tiled_rows${rows}`, () => [emitTiledPass(ctx, state, rows)]);
  }
  const maxBytes = ctx.limits.maxComputeWorkgroupStorageSize;
  const fits = (rows: number) =>
    tiledPassWorkgroupBytes(rows, s.dk, ctx.layout.c, maxThreads, maxBytes) <= maxBytes;
  const tiledRows = TILED_PASS_ROWS.filter((rows) =>
    rows === TILED_PASS_ROWS[0] || rows <= s.dk / 4
  ).filter(fits).at(-1);
  const byDefault = tiledRows !== undefined
    ? `tiled_rows${tiledRows}`
    : `lanes${passLanes(s.dk, ctx.limits)}_wg${Math.min(PASS_THREADS, maxThreads)}`;
  return emitTuned(ctx.limits, tuningKey("pass", ctx.layout), candidates, byDefault)[0];
}

/** Emits the state pass with `forcedLanes` lanes per row and `forcedThreads` threads. */
function emitPass(
  ctx: Context,
  state: DeltaStateNode | undefined,
  forcedLanes?: number,
  forcedThreads?: number,
): KernelArtifact {
  const { node, layout: { s, c, chunks, padded, wuWidth } } = ctx;
  const lanes = forcedLanes === undefined
    ? passLanes(s.dk, ctx.limits)
    : deltaLanes(s.dk, ctx.limits, forcedLanes);
  const nk = Math.ceil(Math.ceil(s.dk / lanes) / 4) * 4; // keys per lane
  const nv = nk / 4; // vec4s per lane
  const dkp = nk * lanes; // padded keys
  const rowV4 = dkp / 4; // vec4s per staged row
  const maxThreads = Math.min(
    forcedThreads ?? PASS_THREADS,
    ctx.limits.maxComputeInvocationsPerWorkgroup,
  );
  const rows = Math.max(1, Math.min(Math.floor(maxThreads / lanes), s.dv));
  const threads = rows * lanes;
  const blocks = Math.ceil(s.dv / rows);
  const total = s.batches * blocks;
  const sb = Math.min(STAGE_STEPS, c);
  const { reg, top, wu, bl, env, loads } = passBindings(ctx, state);
  const key = (q: number, e: number) => `lane * ${u(nk)} + ${u(4 * q + e)}`;
  const inKey = (q: number, e: number) => `${key(q, e)} < ${u(s.dk)}`;
  const vecOf = (f: (e: number) => string) => `vec4<f32>(${[0, 1, 2, 3].map(f).join(", ")})`;
  // init, a vec4 of keys per register, zero past dk.
  const initLines: string[] = [];
  for (let q = 0; q < nv; q++) {
    const vals = [0, 1, 2, 3].map((e) =>
      `select(0.0, ${loads.init(top, "vi", clampIndex(`(${key(q, e)})`, s.dk))}, ${inKey(q, e)})`
    );
    initLines.push(`s[${q}] = vec4<f32>(${vals.join(", ")});`);
  }
  // Staging: vec4 slot `slot` of the block's W and K rows (4 keys of one step each).
  const stage = top.fork("qk");
  const kVals = [0, 1, 2, 3].map((e) =>
    loads.key(stage, "k", "ps", clampIndex(`j0 + ${u(e)}`, s.dk))
  );
  const wRow = (p: string) => `(bpos * ${u(padded)} + ${p}) * ${u(wuWidth)}`;
  const stageLines = [
    `for (var slot: u32 = lid; slot < ${u(sb * rowV4)}; slot += ${u(threads)}) {`,
    `  let rr = slot / ${u(rowV4)};`,
    `  let j0 = (slot % ${u(rowV4)}) * 4u;`,
    `  let pp = base + r0 + rr;`,
    `  let ps = ${clampIndex("pp", s.len)};`,
    `  let wr = ${wRow("pp")};`,
    indent(stage.lines),
    `  sh_w[slot] = ${
      vecOf((e) =>
        `select(0.0, ${wu}[wr + ${clampIndex(`j0 + ${u(e)}`, s.dk)}], j0 + ${u(e)} < ${u(s.dk)})`
      )
    };`,
    `  sh_k[slot] = ${vecOf((e) => `select(0.0, ${kVals[e]}, j0 + ${u(e)} < ${u(s.dk)})`)};`,
    `  if (j0 == 0u) { sh_g[rr] = ${wu}[wr + ${u(s.dk + s.dv)}]; }`,
    `}`,
  ];
  const steps = Array.from({ length: sb }, (_, x) => x);
  const own = (x: number, q: number) => `${u(x * rowV4)} + lane * ${u(nv)} + ${u(q)}`;
  const stepLines = [
    ...steps.flatMap((x) => [
      `var a${x}: f32 = 0.0;`,
      ...Array.from({ length: nv }, (_, q) => `a${x} += dot(sh_w[${own(x, q)}], s[${q}]);`),
    ]),
    ...laneSum("a", lanes).flatMap((_, level) => steps.map((x) => laneSum(`a${x}`, lanes)[level])),
    ...steps.flatMap((x) => [
      `{`,
      `  let p = base + r0 + ${u(x)};`,
      `  let uu = ${wu}[${wRow("p")} + ${u(s.dk)} + vi] - a${x};`,
      `  if (lane == 0u && row < ${u(s.dv)}) { out[(bpos * ${u(padded)} + p) * ${
        u(s.dv)
      } + row] = uu; }`,
      `  let w = uu * exp(glast - sh_g[${u(x)}]);`,
      ...Array.from(
        { length: nv },
        (_, q) => `  acc[${q}] = fma(vec4<f32>(w), sh_k[${own(x, q)}], acc[${q}]);`,
      ),
      `}`,
    ]),
  ];
  const guardRow = `row < ${u(s.dv)}`;
  const s0At = (q: number, e: number) =>
    `((bpos * ${u(chunks)} + n) * ${u(s.dv)} + row) * ${u(s.dk)} + ${key(q, e)}`;
  const comp = "xyzw";
  const perKey = (f: (q: number, e: number) => string) =>
    Array.from({ length: nv }, (_, q) => [0, 1, 2, 3].map((e) => f(q, e))).flat();
  const body = [
    `let bpos = wid / ${u(blocks)};`,
    `let row = (wid % ${u(blocks)}) * ${u(rows)} + lid / ${u(lanes)};`,
    `let lane = lid % ${u(lanes)};`,
    `let vi = ${clampIndex("row", s.dv)};`,
    ...bl,
    `var s: array<vec4<f32>, ${nv}>;`,
    `var acc: array<vec4<f32>, ${nv}>;`,
    ...top.lines,
    ...initLines,
    `for (var n: u32 = 0u; n < ${u(chunks)}; n++) {`,
    `  let base = n * ${u(c)};`,
    ...perKey((q, e) =>
      `  if (${guardRow} && ${inKey(q, e)}) { out1[${s0At(q, e)}] = s[${q}].${comp[e]}; }`
    ),
    ...Array.from({ length: nv }, (_, q) => `  acc[${q}] = vec4<f32>(0.0);`),
    `  let glast = ${wu}[${wRow(`base + ${u(c - 1)}`)} + ${u(s.dk + s.dv)}];`,
    `  for (var r0: u32 = 0u; r0 < ${u(c)}; r0 += ${u(sb)}) {`,
    `    workgroupBarrier();`,
    indent(stageLines, "    "),
    `    workgroupBarrier();`,
    indent(stepLines, "    "),
    `  }`,
    `  let gl = exp(glast);`,
    ...Array.from({ length: nv }, (_, q) => `  s[${q}] = fma(vec4<f32>(gl), s[${q}], acc[${q}]);`),
    `}`,
  ];
  if (state) {
    body.push(...perKey((q, e) => {
      const off = offsetExpr(state, {
        ...env,
        [node.valueAxis]: "row",
        [node.keyAxis]: `(${key(q, e)})`,
      });
      return `if (${guardRow} && ${inKey(q, e)}) { out2[${off}] = s[${q}].${comp[e]}; }`;
    }));
  }
  const shared = [
    `var<workgroup> sh_w: array<vec4<f32>, ${sb * rowV4}>;`,
    `var<workgroup> sh_k: array<vec4<f32>, ${sb * rowV4}>;`,
    `var<workgroup> sh_g: array<f32, ${sb}>;`,
  ];
  return groupKernel(ctx, "pass", reg, threads, shared, body, total);
}
