/**
 * The chunked delta rule (the WY/UT form of the DeltaNet and Gated DeltaNet papers) for long
 * sequences. Within a chunk of C steps, with G_r the cumulative log-decay from the chunk's
 * start (γ_r = exp(G_r)) and S₀ the entering state, the corrected values
 * u'_r = β_r(v_r − α_r S_{r−1} k_r) satisfy (I + L)·U' = diag(β)V − diag(βγ)K·S₀ᵀ, where
 * L[r][c] = β_r exp(G_r − G_c)(k_r·k_c) for c < r. So with T = (I + L)⁻¹ (a triangular solve):
 *
 *   W = T·diag(βγ)K,  U = T·diag(β)V          (kernel 1, per chunk: forward substitution)
 *   U' = U − W·S₀ᵀ,  S_next = γ_C S₀ + U'ᵀ·diag(exp(G_C − G))·K
 *                                             (kernel 2, sequential over chunks: state passing)
 *   y_r = scale·(γ_r S₀ q_r + Σ_{c≤r} exp(G_r − G_c)(q_r·k_c) u'_c)
 *                                             (kernel 3, per chunk: outputs)
 *
 * Every exponential is of a difference of cumulative log-decays within one chunk, so nothing
 * overflows at any length. Steps past the end (the last chunk's padding) have β = 0 and
 * log α = 0, so they change nothing. Kernel 2 holds S in registers like the recurrent kernel
 * (G lanes per value row, lane sums by subgroup shuffles) and reads init / writes the final
 * state from the same thread, so decode may update the state in place.
 *
 * Scratch: `wu` [batch, padded steps, dk + dv + 1] (W, U and G), `up` [batch, padded steps, dv]
 * (U') and `s0` [batch, chunks, dv, dk] (each chunk's entering state).
 *
 * @module
 */

import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import { BindingRegistry, type KernelArtifact, scratch } from "./artifact.ts";
import {
  type Context,
  groupKernel,
  keyRows,
  type Layout,
  OUT_KT,
  tuningKey,
} from "./delta_chunk_parts.ts";
import { passKernel } from "./delta_pass.ts";
import { prepKernel } from "./delta_prep.ts";
import { emitTuned } from "./tuning.ts";
import { deltaChunk, outputTiles, outputWorkgroupBytes } from "./delta_plan.ts";
import { batchEnv, DeltaLoads, deltaShapes } from "./delta_shapes.ts";
import { ExprEmitter, offsetExpr } from "./expr.ts";
import {
  accDecl,
  forEachOutput,
  gemmLoop,
  scaleRows,
  sharedOperand,
  stagedSizes,
  threadCoords,
} from "./ssd_gemm.ts";
import type { DeviceLimits } from "./limits.ts";
import { f32Literal, u32Literal } from "./wgsl_math.ts";

/**
 * Kernel 3: per (batch position, chunk, block of value columns), y as tile products in
 * workgroup memory: P = (Q·Kᵀ ∘ exp(G_r − G_c))[c ≤ r], then
 * y = scale·(diag(γ)·Q·S₀ᵀ + P·U').
 */
function outputKernel(ctx: Context, minThreads?: number, columns?: number): KernelArtifact {
  const { node, bufs, layout: { s, c, chunks, padded, wuWidth } } = ctx;
  const tiles = outputTiles(
    c,
    s.dv,
    ctx.limits.maxComputeInvocationsPerWorkgroup,
    minThreads,
    columns,
  );
  const { threads } = tiles;
  const reg = new BindingRegistry(ctx.materialized, [node], ctx.aliases);
  const top = new ExprEmitter(reg.lookup, "rp");
  const wu = reg.read(bufs.wu), up = reg.read(bufs.up), s0 = reg.read(bufs.s0);
  const { lines: bl, env } = batchEnv(s, "bpos");
  const loads = new DeltaLoads(node, env);
  const dkPad = Math.ceil(s.dk / OUT_KT) * OUT_KT;
  const keyRowsOf = (which: "q" | "k") => keyRows(top, loads, s, which);
  const col = (w4: string, i: number) => `col0 + ${w4} * 4u + ${u32Literal(i)}`;
  const inCols = (w4: string, i: number) => `${col(w4, i)} < ${u32Literal(s.dv)}`;
  const colValue = (w4: string, f: (i: number) => string) =>
    `vec4<f32>(${[0, 1, 2, 3].map((i) => `select(0.0, ${f(i)}, ${inCols(w4, i)})`).join(", ")})`;
  const gAt = (p: string) =>
    `${wu}[(bpos * ${u32Literal(padded)} + ${p}) * ${u32Literal(wuWidth)} + ${
      u32Literal(s.dk + s.dv)
    }]`;
  const s0base = `(bpos * ${u32Literal(chunks)} + n) * ${u32Literal(s.dv * s.dk)}`;
  const yAt = (p: string, i: string) =>
    offsetExpr(node, { ...env, [node.axis]: p, [node.valueAxis]: i });
  const body = [
    `let bpos = wid / ${u32Literal(chunks * tiles.columnTiles)};`,
    `let n = (wid / ${u32Literal(tiles.columnTiles)}) % ${u32Literal(chunks)};`,
    `let col0 = (wid % ${u32Literal(tiles.columnTiles)}) * ${u32Literal(tiles.y.Nt)};`,
    `let base = n * ${u32Literal(c)};`,
    ...bl,
    ...top.lines,
    // P = Q·Kᵀ, decayed and masked, into workgroup memory.
    ...threadCoords(tiles.p, "p_", threads),
    ...accDecl(tiles.p, "p_"),
    ...gemmLoop({
      tile: tiles.p,
      threads,
      a: { fast: "k", load: keyRowsOf("q") },
      b: { fast: "k", load: keyRowsOf("k") },
      kBegin: "0u",
      kEnd: u32Literal(dkPad),
      tag: "p_",
      shA: "shA",
      shB: "shB",
    }),
    `if (p_act) {`,
    ...forEachOutput(tiles.p, "p_", (row, col4, acc) => [
      `{`,
      `  let r = ${row};`,
      `  let gr = ${gAt("base + r")};`,
      ...[0, 1, 2, 3].map((e) => {
        const cc = `${col4} * 4u + ${u32Literal(e)}`;
        return `  sh_P[r * ${u32Literal(c)} + ${cc}] = select(0.0, ${acc}.${"xyzw"[e]} * ` +
          `exp(gr - ${gAt(`base + ${cc}`)}), ${cc} <= r);`;
      }),
      `}`,
    ]).map((l) => `  ${l}`),
    `}`,
    `workgroupBarrier();`,
    // y = diag(γ)·Q·S₀ᵀ + P·U'.
    ...threadCoords(tiles.y, "y_", threads),
    ...accDecl(tiles.y, "y_"),
    ...gemmLoop({
      tile: tiles.y,
      threads,
      a: { fast: "k", load: keyRowsOf("q") },
      b: {
        fast: "k",
        load: (k, w4) => ({
          lines: [],
          value: colValue(
            w4,
            (i) =>
              `${s0}[${s0base} + min(${col(w4, i)}, ${u32Literal(s.dv - 1)}) * ${
                u32Literal(s.dk)
              } + min(${k}, ${u32Literal(s.dk - 1)})] * select(0.0, 1.0, ${k} < ${
                u32Literal(s.dk)
              })`,
          ),
        }),
      },
      kBegin: "0u",
      kEnd: u32Literal(dkPad),
      tag: "y_",
      shA: "shA",
      shB: "shB",
    }),
    `if (y_act) {`,
    ...scaleRows(tiles.y, "y_", (row) => `exp(${gAt(`base + ${row}`)})`).map((l) => `  ${l}`),
    `}`,
    ...gemmLoop({
      tile: tiles.y,
      threads,
      a: sharedOperand("sh_P", c),
      b: {
        fast: "w",
        load: (k, w4) => ({
          lines: [],
          value: colValue(
            w4,
            (i) =>
              `${up}[(bpos * ${u32Literal(padded)} + base + ${k}) * ${u32Literal(s.dv)} + min(${
                col(w4, i)
              }, ${u32Literal(s.dv - 1)})]`,
          ),
        }),
      },
      kBegin: "0u",
      kEnd: u32Literal(c),
      tag: "y_",
      shA: "shA",
      shB: "shB",
    }),
    `if (y_act) {`,
    ...forEachOutput(tiles.y, "y_", (row, col4, acc) => [
      `{`,
      `  let r = ${row};`,
      `  let p = base + r;`,
      ...[0, 1, 2, 3].map((e) => {
        const i = `col0 + ${col4} * 4u + ${u32Literal(e)}`;
        return `  if (p < ${u32Literal(s.len)} && ${i} < ${u32Literal(s.dv)}) { out[${
          yAt("p", `(${i})`)
        }] = ${f32Literal(node.scale)} * ${acc}.${"xyzw"[e]}; }`;
      }),
      `}`,
    ]).map((l) => `  ${l}`),
    `}`,
  ];
  const total = s.batches * chunks * tiles.columnTiles;
  const sp = stagedSizes(tiles.p), sy = stagedSizes(tiles.y);
  const shared = [
    `var<workgroup> sh_P: array<f32, ${c * c}>;`,
    `var<workgroup> shA: array<vec4<f32>, ${Math.max(sp.a, sy.a)}>;`,
    `var<workgroup> shB: array<vec4<f32>, ${Math.max(sp.b, sy.b)}>;`,
  ];
  return groupKernel(ctx, "out", reg, threads, shared, body, total);
}

/**
 * Kernel 3 as a tuning point: blocks of 8 × 8 outputs per thread on 64 threads, up to 256
 * threads with smaller blocks, or 128 threads with 8 × 8 blocks of y over 128 value columns
 * (16 multiply-adds per workgroup-memory read, against 10.7 for 8 × 4 blocks), over 64 or 128
 * value columns per workgroup (128: P = Q·Kᵀ computed once for dv = 128). The default is 256
 * threads over 128 columns where its workgroup arrays fit: on the H100 (2026-12-07) 0.90 ms
 * against 2.96 for 8 × 8 blocks (then on 256-thread workgroups, a quarter of them computing) at
 * (1, 8192, 32, 128), and 0.44 against 0.91 at (8, 2048, 16, 64).
 */
function tunedOutput(ctx: Context): KernelArtifact {
  const candidates = new Map<string, () => KernelArtifact[]>([
    ["min64", () => [outputKernel(ctx, 64)]],
    ["min256", () => [outputKernel(ctx, 256)]],
    ["min256_cols128", () => [outputKernel(ctx, 256, 128)]],
    ["min128_cols128", () => [outputKernel(ctx, 128, 128)]],
  ]);
  const { c, s } = ctx.layout;
  const limits = ctx.limits;
  const fits = (minThreads: number, columns?: number) =>
    outputWorkgroupBytes(c, s.dv, limits.maxComputeInvocationsPerWorkgroup, minThreads, columns) <=
      limits.maxComputeWorkgroupStorageSize;
  const byDefault = fits(256, 128) ? "min256_cols128" : fits(256) ? "min256" : "min64";
  return emitTuned(limits, tuningKey("out", ctx.layout), candidates, byDefault)[0];
}

/**
 * The chunked lowering's three kernels. `maxChunks` (the scan strategy's `chunks`) forces the
 * chunk length: the shortest supported one giving at most that many chunks; `forcedLanes` the
 * state pass's lanes per value row and `passThreads` its threads per workgroup (the strategy's
 * `workgroup`); `passRows` forces the state pass's tile form with that many value rows per
 * workgroup (the strategy's `passRows`). What is not forced is a tuning point (the state pass,
 * kernel 3).
 */
export function emitDeltaChunked(
  node: DeltaNode,
  state: DeltaStateNode | undefined,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  maxChunks?: number,
  forcedLanes?: number,
  passThreads?: number,
  passRows?: number,
): KernelArtifact[] {
  const s = deltaShapes(node);
  const c = deltaChunk(s, limits, maxChunks);
  const chunks = Math.ceil(s.len / c);
  const layout: Layout = { s, c, chunks, padded: chunks * c, wuWidth: s.dk + s.dv + 1 };
  const bufs = {
    wu: scratch(`${name}_wu`, s.batches * layout.padded * layout.wuWidth),
    up: scratch(`${name}_up`, s.batches * layout.padded * s.dv),
    s0: scratch(`${name}_s0`, s.batches * chunks * s.dv * s.dk),
  };
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  for (const b of Object.values(bufs)) {
    if (b.elements * 4 > limit) {
      throw new Error(
        `deltaRule: the chunked lowering needs a scratch buffer (${b.label}) of ` +
          `${b.elements * 4} bytes; the device binds at most ${limit} (use the recurrent mode)`,
      );
    }
  }
  const ctx: Context = { node, layout, bufs, materialized, limits, name, aliases };
  return [
    prepKernel(ctx),
    passKernel(ctx, state, forcedLanes, passThreads, passRows),
    tunedOutput(ctx),
  ];
}
