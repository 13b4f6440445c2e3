/**
 * Kernel 2 of the chunked delta rule as two tile products per chunk (delta_pass.ts is the
 * lane form; delta_chunked.ts has the algebra). Per (batch position, block of BV value rows),
 * sequentially over chunks, the block's state S (BV × dk) stays in the registers of the
 * second product's accumulator tile. Each chunk:
 *
 *   S₀ → s0 scratch and workgroup memory
 *   X = S₀·Wᵀ                      (BV × C, summed over the keys)
 *   U' = U − Xᵀ → up scratch; workgroup memory gets U'ᵀ·diag(exp(G_C − G))
 *   S ← γ_C·S + (U'ᵀ·diag(exp(G_C − G)))·K   (BV × dk, summed over the chunk's steps)
 *
 * The lane form spends a dependent chain of subgroup sums on every step; here a chunk's steps
 * are independent columns of X, so the sequential part is two small matrix products per chunk.
 * Workgroup memory holds S₀ (BV × dk), the scaled U' (C × BV) and the products' staged slices.
 *
 * @module
 */

import type { DeltaStateNode } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import { type Context, groupKernel, passBindings } from "./delta_chunk_parts.ts";
import { indent } from "./kernel_header.ts";
import { clampIndex } from "./delta_shapes.ts";
import { offsetExpr } from "./expr.ts";
import {
  accDecl,
  fitTile,
  forEachOutput,
  gemmLoop,
  type GemmLoopOptions,
  hoistedB,
  kGroupScratch,
  kGroupSum,
  sharedOperand,
  type Stage,
  stagedSizes,
  threadCoords,
  type TileShape,
  tileThreads,
} from "./ssd_gemm.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** K slices the products try, longest first. */
const SLICES: readonly number[] = [32, 16, 8];
/** Threads per workgroup (at most). */
const TILED_THREADS = 256;
/** Value rows per workgroup the autotuner tries. */
export const TILED_PASS_ROWS: readonly number[] = [16, 32, 64];

/** Keys padded to whole K slices of the shortest length. */
const paddedKeys = (dk: number) => Math.ceil(dk / 8) * 8;

/** The longest slice of at most `cap` that divides `n` (a multiple of 8). */
const sliceOf = (n: number, cap: number) => SLICES.find((k) => k <= cap && n % k === 0) ?? 8;

/** Workgroup bytes of two tiles: S₀, the scaled U' and the staged slices. */
function tileBytes(
  t: { update: TileShape; project: TileShape },
  rows: number,
  dkp: number,
  c: number,
) {
  const a = stagedSizes(t.update), b = stagedSizes(t.project);
  return 4 * (rows * dkp + c * rows) + 16 * (Math.max(a.a, b.a) + Math.max(a.b, b.b));
}

/**
 * The two products' tiles for `rows` value rows, keys padded to `dkp`, chunk length `c`. The
 * pass has few workgroups (batch positions × row blocks), so the state tile takes as many
 * threads as the cap allows (smaller blocks per thread) to keep more warps in flight. Its chunk
 * steps are a chain of short products, each slice a global load the few warps cannot hide:
 * slices are as long as the workgroup memory allows (32 steps or keys, else 16, else 8).
 */
function passTiles(rows: number, dkp: number, c: number, maxThreads: number, maxBytes: number) {
  const cap = Math.min(TILED_THREADS, maxThreads);
  let best;
  for (const kmax of SLICES) {
    const update = fitTile(rows, dkp, sliceOf(c, kmax), cap, cap);
    // The workgroup has the larger product's threads (a small key size gives the state tile
    // fewer threads than the chunk's projection needs); the other product idles the rest.
    // The projection takes as many threads as it can too: it is half the pass's arithmetic,
    // and with 64 threads (8 × 4 blocks) at 32 value rows and 64-step chunks three quarters
    // of a 256-thread workgroup idled through it, on one workgroup per SM.
    const project = fitTile(rows, c, sliceOf(dkp, kmax), cap, cap);
    // Threads the projection's tile leaves idle split its K slices in groups (summed after).
    const kGroups = projectGroups(
      project,
      cap,
      Math.max(stagedSizes(update).b, stagedSizes(project).b),
    );
    const threads = Math.max(tileThreads(update).threads, tileThreads(project).threads * kGroups);
    best = {
      update,
      project,
      kGroups,
      threads,
      bytes: tileBytes({ update, project }, rows, dkp, c),
    };
    if (best.bytes <= maxBytes) break;
  }
  return best!;
}

/**
 * Groups splitting the projection's K slices: 2 where twice its threads fit the cap, its
 * slice divides in two and group 1's accumulators fit the staged B array (`shBVec4s`).
 */
function projectGroups(project: TileShape, cap: number, shBVec4s: number): number {
  const ok = 2 * tileThreads(project).threads <= cap && project.kt % 2 === 0 &&
    kGroupScratch(project, 2) <= shBVec4s;
  return ok ? 2 : 1;
}

/** Workgroup bytes of the tiled pass with `rows` value rows per workgroup. */
export function tiledPassWorkgroupBytes(
  rows: number,
  dk: number,
  c: number,
  maxThreads: number,
  maxBytes: number,
): number {
  return passTiles(rows, paddedKeys(dk), c, maxThreads, maxBytes).bytes;
}

/** Emits the tiled state pass with `rows` value rows per workgroup (throws if it cannot fit). */
export function emitTiledPass(
  ctx: Context,
  state: DeltaStateNode | undefined,
  rows: number,
): KernelArtifact {
  const { node, layout: { s, c, chunks, padded, wuWidth } } = ctx;
  const maxThreads = ctx.limits.maxComputeInvocationsPerWorkgroup;
  const dkp = paddedKeys(s.dk);
  const maxBytes = ctx.limits.maxComputeWorkgroupStorageSize;
  const { update, project, kGroups, threads, bytes } = passTiles(
    rows,
    dkp,
    c,
    maxThreads,
    maxBytes,
  );
  if (bytes > maxBytes) {
    throw new Error(
      `deltaRule: the tile-form state pass with ${rows} value rows needs ${bytes} bytes of ` +
        `workgroup memory at key size ${s.dk}; the device has ` +
        `${maxBytes} (use fewer passRows)`,
    );
  }
  const blocks = Math.ceil(s.dv / rows);
  const total = s.batches * blocks;
  const { reg, top, wu, bl, env, loads } = passBindings(ctx, state);
  const wRow = (p: string) => `(bpos * ${u(padded)} + ${p}) * ${u(wuWidth)}`;
  const comp = "xyzw";
  // The state tile's element e of (row, col4): value row v0 + row, key col4·4 + e.
  const eachState = (
    visit: (v: string, key: string, cell: string, row: string) => string[],
  ) =>
    forEachOutput(
      update,
      "s_",
      (row, col4, acc) =>
        [0, 1, 2, 3].flatMap((e) =>
          visit(`(v0 + ${row})`, `(${col4} * 4u + ${u(e)})`, `${acc}.${comp[e]}`, row)
        ),
    );
  const inState = (v: string, key: string) => `${v} < ${u(s.dv)} && ${key} < ${u(s.dk)}`;
  const initLines = eachState((v, key, cell) => {
    const e = top.fork("qi");
    const value = loads.init(e, clampIndex(v, s.dv), clampIndex(key, s.dk));
    return [
      `{`,
      ...e.lines.map((l) => `  ${l}`),
      `  ${cell} = select(0.0, ${value}, ${inState(v, key)});`,
      `}`,
    ];
  });
  const s0At = (v: string, key: string) =>
    `((bpos * ${u(chunks)} + n) * ${u(s.dv)} + ${v}) * ${u(s.dk)} + ${key}`;
  // K (the update's B) and W (the projection's B) of the chunk starting at step `at`.
  const keyStage = (at: string): Stage => ({
    fast: "w",
    load: (k, w4, tag) => {
      const e = top.fork(tag);
      const vs = [0, 1, 2, 3].map((i) =>
        loads.key(
          e,
          "k",
          clampIndex(`${at} + ${k}`, s.len),
          clampIndex(`${w4} * 4u + ${u(i)}`, s.dk),
        )
      );
      const mask = [0, 1, 2, 3].map((i) => `${w4} * 4u + ${u(i)} < ${u(s.dk)}`);
      return {
        lines: e.lines,
        value: `vec4<f32>(${vs.map((v, i) => `select(0.0, ${v}, ${mask[i]})`).join(", ")})`,
      };
    },
  });
  const wStage = (at: string): Stage => ({
    fast: "k",
    load: (k, w4) => ({
      lines: [],
      value: `vec4<f32>(${
        [0, 1, 2, 3].map((i) =>
          `select(0.0, ${wu}[${wRow(`${at} + ${w4} * 4u + ${u(i)}`)} + ${
            clampIndex(k, s.dk)
          }], ${k} < ${u(s.dk)})`
        ).join(", ")
      })`,
    }),
  });
  // Both products take B from global memory, so each one's first slice is loaded ahead (its
  // registers hoisted out of the chunk loop): the projection's for chunk n + 1 during the
  // update's last slice, the update's during the projection's last. The pass runs about one
  // workgroup per SM, so these loads had nothing to hide behind. U and G, read when U' is
  // formed, are loaded at the chunk's start for the same reason.
  const projectOpts: GemmLoopOptions = {
    tile: project,
    threads,
    a: sharedOperand("sh_S", dkp),
    b: wStage("base"),
    kBegin: "0u",
    kEnd: u(dkp),
    tag: "x_",
    shA: "shA",
    shB: "shB",
    kGroups,
    hoistB: true,
  };
  const updateOpts: GemmLoopOptions = {
    tile: update,
    threads,
    a: sharedOperand("sh_U", rows, true),
    b: keyStage("base"),
    kBegin: "0u",
    kEnd: u(c),
    tag: "s_",
    shA: "shA",
    shB: "shB",
    hoistB: true,
  };
  const projectB = hoistedB(projectOpts), updateB = hoistedB(updateOpts);
  // U' inputs of the thread's projection outputs: U[r][v] per output, G[r] per step (column).
  const uName = (r: number, c4: number, e: number) => `pu_${r}_${c4}_${e}`;
  const gName = (c4: number, e: number) => `pg_${c4}_${e}`;
  const stepOf = (col4: string, e: number) => `(${col4} * 4u + ${u(e)})`;
  const uPrefetch = forEachOutput(
    project,
    "x_",
    (row, col4, _acc, r, c4) =>
      [0, 1, 2, 3].flatMap((e) => {
        const at = wRow(`base + ${stepOf(col4, e)}`);
        const g = `let ${gName(c4, e)} = ${wu}[${at} + ${u(s.dk + s.dv)}];`;
        return [
          ...(r === 0 ? [g] : []),
          `let ${uName(r, c4, e)} = ${wu}[${at} + ${u(s.dk)} + ${
            clampIndex(`v0 + ${row}`, s.dv)
          }];`,
        ];
      }),
  );
  const body = [
    `let bpos = wid / ${u(blocks)};`,
    `let v0 = (wid % ${u(blocks)}) * ${u(rows)};`,
    ...bl,
    ...top.lines,
    ...threadCoords(update, "s_", threads),
    ...threadCoords(project, "x_", threads, kGroups),
    ...accDecl(update, "s_"),
    `if (s_act) {`,
    ...initLines.map((l) => `  ${l}`),
    `}`,
    ...projectB.declarations,
    ...updateB.declarations,
    ...projectB.loads("0u", wStage("0u")),
    `for (var n: u32 = 0u; n < ${u(chunks)}; n++) {`,
    `  let base = n * ${u(c)};`,
    `  let glast = ${wu}[${wRow(`base + ${u(c - 1)}`)} + ${u(s.dk + s.dv)}];`,
    ...uPrefetch.map((l) => `  ${l}`),
    // S₀ to the scratch and to workgroup memory.
    `  if (s_act) {`,
    ...indent(
      eachState((v, key, cell, row) => [
        `if (${inState(v, key)}) { out1[${s0At(v, key)}] = ${cell}; }`,
        `sh_S[${row} * ${u(dkp)} + ${key}] = ${cell};`,
      ]),
      "    ",
    ).split("\n"),
    `  }`,
    `  workgroupBarrier();`,
    // X = S₀·Wᵀ.
    ...indent(accDecl(project, "x_"), "  ").split("\n"),
    ...indent(gemmLoop({ ...projectOpts, thenLoads: updateB.loads("0u") }), "  ").split("\n"),
    ...indent(kGroupSum(project, "x_", kGroups, "shB"), "  ").split("\n"),
    // U' = U − Xᵀ to the scratch; its decayed transpose to workgroup memory.
    `  if (x_act) {`,
    ...indent(
      forEachOutput(project, "x_", (row, col4, acc, r, c4) =>
        [0, 1, 2, 3].flatMap((e) => [
          `{`,
          `  let v = v0 + ${row};`,
          `  let uu = select(0.0, ${uName(r, c4, e)} - ${acc}.${comp[e]}, v < ${u(s.dv)});`,
          `  if (v < ${u(s.dv)}) { out[(bpos * ${u(padded)} + base + ${stepOf(col4, e)}) * ${
            u(s.dv)
          } + v] = uu; }`,
          `  sh_U[${stepOf(col4, e)} * ${u(rows)} + ${row}] = uu * exp(glast - ${gName(c4, e)});`,
          `}`,
        ])),
      "    ",
    ).split("\n"),
    `  }`,
    `  workgroupBarrier();`,
    // S ← γ_C·S + (decayed U'ᵀ)·K.
    `  let gl = exp(glast);`,
    ...forEachOutput(update, "s_", (_r, _c, acc) => [`  ${acc} = ${acc} * gl;`]),
    ...indent(
      gemmLoop({
        ...updateOpts,
        thenLoads: [
          `if (n + 1u < ${u(chunks)}) {`,
          ...projectB.loads("0u", wStage(`base + ${u(c)}`)).map((l) => `  ${l}`),
          `}`,
        ],
      }),
      "  ",
    ).split("\n"),
    `}`,
  ];
  if (state) {
    body.push(
      `if (s_act) {`,
      ...indent(
        eachState((v, key, cell) => {
          const off = offsetExpr(state, {
            ...env,
            [node.valueAxis]: clampIndex(v, s.dv),
            [node.keyAxis]: clampIndex(key, s.dk),
          });
          return [`if (${inState(v, key)}) { out2[${off}] = ${cell}; }`];
        }),
      ).split("\n"),
      `}`,
    );
  }
  const su = stagedSizes(update), sp = stagedSizes(project);
  const shared = [
    `var<workgroup> sh_S: array<f32, ${rows * dkp}>;`,
    `var<workgroup> sh_U: array<f32, ${c * rows}>;`,
    `var<workgroup> shA: array<vec4<f32>, ${Math.max(su.a, sp.a)}>;`,
    `var<workgroup> shB: array<vec4<f32>, ${Math.max(su.b, sp.b)}>;`,
  ];
  return groupKernel(ctx, "pass", reg, threads, shared, body, total);
}
