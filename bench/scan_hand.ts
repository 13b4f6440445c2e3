/**
 * SCRATCH: hand-written WGSL variants of the selective scan for one shape (n = 16), timed and
 * checked against the compiled kernel's output. Used to find what limits the fused kernel.
 *
 *   deno run -A bench/scan_hand.ts [--b 8 --l 4096 --d 1536] [--only name,...] [--warm 20]
 *     [--dump name [--dump-to file.wgsl]]
 *
 * Families (names start with): `LT` lane-transposed like the compiled default (`LTT`: B/C staged
 * in workgroup memory a tile of blocks at a time; `LTP`: the same with B and C of a step and
 * lane packed in one vec4); `ST`/`STX` workgroup-staged tiles (Δ, Δ·x, B, C in workgroup
 * memory, partial sums reduced there; compiled as `tileSteps`, codegen/scan_tiled.ts); `L1` one
 * thread per channel; `STD` STK with double-buffered workgroup arrays (one barrier per tile);
 * `DIAG_` ablations that give wrong results on purpose, to show what one
 * part of a kernel costs. Results: bench/RESULTS.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile, deviceLimits } from "../runtime/compile.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { trace } from "../dsl/trace.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import { timeDispatches } from "../runtime/gpu_submit.ts";
import { readBuffers, STORAGE_USAGE, uploadArray } from "../runtime/gpu_buffers.ts";
import { SCAN_SHAPE_OPTIONS, scanBenchBytes, scanBenchInputs } from "./scan_inputs.ts";
import { copyElements, copyKernelBenchmark } from "./copy_kernel.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ...SCAN_SHAPE_OPTIONS,
    only: { type: "string", default: "" },
    iterations: { type: "string", default: "10" },
    dump: { type: "string", default: "" },
    "dump-to": { type: "string", default: "" },
    warm: { type: "string", default: "5" },
    sets: { type: "string", default: "1" },
  },
  strict: true,
});
const NB = Number(values.b), NL = Number(values.l), ND = Number(values.d), NN = 16;
const LOG2E = "1.44269504";

interface Opts {
  /** Division in softplus and silu: `a / b`, `a * (1.0 / b)`, or via inverseSqrt(b)² (b > 0). */
  div?: "ieee" | "rcp" | "rsq";
  /** exp2 with log2(e) folded into A (true) or exp (false). */
  exp2?: boolean;
  /** Diagnostic: replace the state decay exp by 1 + x (wrong results; shows the MUFU cost). */
  fakeExp?: boolean;
  /**
   * Diagnostics of the lane-transposed design (wrong results; each shows what one part costs):
   * "noshuffle" uses the lane's own Δ, Δ·x instead of shuffled ones, "nors" sums a lane's
   * partial y locally instead of the reduce-scatter, "nobc" replaces the B/C loads by A.
   */
  diag?: "noshuffle" | "nors" | "nobc";
  /**
   * ST only: workgroup arrays two-dimensional ([step][slot]) and the step loop fully unrolled, so
   * every hot access has a constant outer index and one loop-invariant inner index (naga clamps
   * each dynamic workgroup index; this makes the clamp the same expression everywhere).
   */
  k2d?: boolean;
  /**
   * ST with k2d and 4 lanes only: steps in groups of 4, each group's workgroup reads first, then
   * its decay exponentials, then the recurrences, then one vec4 store of the 4 partial sums.
   */
  grouped?: boolean;
  /**
   * ST with k2d, not grouped: the steps toward the compiled tiled kernel's layout, to find what
   * separates them: `splitD` keeps Δ and Δ·x in two scalar arrays instead of one vec2;
   * `bcOne` keeps B and C in one array (B in rows 0…T-1, C in rows T…2T-1).
   */
  splitD?: boolean;
  bcOne?: boolean;
  /** The decay exponential's argument clamped at -126 (no denormal results, whose range fix-up costs instructions). */
  clampExp?: boolean;
  /** The WGSL type of the clamped argument (default f32). */
  clampType?: string;
}

function math(o: Opts): string {
  const div = (a: string, b: string) =>
    o.div === "rcp"
      ? `${a} * (1.0 / (${b}))`
      : o.div === "rsq"
      ? `${a} * sq(inverseSqrt(${b}))`
      : `${a} / (${b})`;
  return `
fn sq(v: f32) -> f32 { return v * v; }
fn sp(v: f32) -> f32 {
  let e = exp(v);
  let w = 1.0 + e;
  let r = log(w) * ${div("e", "w - 1.0")};
  return select(select(r, e, w == 1.0), v, v > 20.0);
}
fn silu(v: f32) -> f32 { return ${div("v", "1.0 + exp(-v)")}; }
`;
}

function vt(k: number) {
  return k === 1 ? "f32" : `vec${k}<f32>`;
}

function decls(k = 4): string {
  return `
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read> DT: array<f32>;
@group(0) @binding(2) var<storage, read> Z: array<f32>;
@group(0) @binding(3) var<storage, read> B4: array<${vt(k)}>;
@group(0) @binding(4) var<storage, read> C4: array<${vt(k)}>;
@group(0) @binding(5) var<storage, read> A4: array<${vt(k)}>;
@group(0) @binding(6) var<storage, read> Dv: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> Y: array<f32>;
`;
}

const rep = (n: number, f: (i: number) => string, sep = "\n  ") =>
  Array.from({ length: n }, (_, i) => f(i)).join(sep);

function expOf(o: Opts, arg: string) {
  if (o.fakeExp) return `(1.0 + ${arg})`;
  if (o.clampExp) {
    const lo = `${o.clampType ?? "f32"}(${o.exp2 ? "-126.0" : "-87.0"})`;
    return `${o.exp2 ? "exp2" : "exp"}(max(${arg}, ${lo}))`;
  }
  return o.exp2 ? `exp2(${arg})` : `exp(${arg})`;
}

/**
 * L1: one thread per channel with all 16 states; T-step blocks unrolled; x/dt/z of the next
 * block prefetched into registers (pf) or loaded at the top of each block; B/C staged in
 * workgroup memory (bc = "smem") or read from global memory as vec4 (bc = "glob").
 */
function l1(
  p: { W: number; T: number; pf: boolean; bc: "smem" | "glob" } & Opts,
): { wgsl: string; groups: number } {
  const { W, T } = p;
  if (ND % W || NL % T) throw new Error("bad tile");
  const NT = NL / T;
  const a = (q: number) => `a${q}`;
  const bcSlots = Math.ceil((4 * T) / W);
  const loadBC = (tile: string, pre: string) =>
    rep(
      bcSlots,
      (s) =>
        `let ${pre}B${s} = B4[bb + ${tile} * ${4 * T}u + min(lid + ${s * W}u, ${4 * T - 1}u)];
  let ${pre}C${s} = C4[bb + ${tile} * ${4 * T}u + min(lid + ${s * W}u, ${4 * T - 1}u)];`,
    );
  const storeBC = (pre: string) =>
    rep(
      bcSlots,
      (s) =>
        `if (lid + ${s * W}u < ${4 * T}u) { sB[lid + ${s * W}u] = ${pre}B${s}; sC[lid + ${
          s * W
        }u] = ${pre}C${s}; }`,
    );
  const loadX = (tile: string, pre: string, decl: string) =>
    rep(T, (u) =>
      `${decl}${pre}x${u} = X[xb + (${tile} * ${T}u + ${u}u) * ${ND}u];
  ${decl}${pre}dt${u} = DT[xb + (${tile} * ${T}u + ${u}u) * ${ND}u];
  ${decl}${pre}z${u} = Z[xb + (${tile} * ${T}u + ${u}u) * ${ND}u];`);
  const step = (u: number) => {
    const bv = (q: number) =>
      p.bc === "smem" ? `sB[${u * 4 + q}u]` : `B4[bb + (k * ${T}u + ${u}u) * 4u + ${q}u]`;
    const cv = (q: number) =>
      p.bc === "smem" ? `sC[${u * 4 + q}u]` : `C4[bb + (k * ${T}u + ${u}u) * 4u + ${q}u]`;
    return `{
      let dl = sp(cdt${u} + bi);
      let dx = dl * cx${u};
      ${rep(4, (q) => `h${q} = ${expOf(p, `dl * ${a(q)}`)} * h${q} + dx * ${bv(q)};`, "\n      ")}
      let y = ${rep(4, (q) => `dot(${cv(q)}, h${q})`, " + ")};
      Y[xb + (k * ${T}u + ${u}u) * ${ND}u] = (y + dd * cx${u}) * silu(cz${u});
    }`;
  };
  const wgsl = `${decls()}
${
    p.bc === "smem"
      ? `var<workgroup> sB: array<vec4<f32>, ${4 * T}>;
var<workgroup> sC: array<vec4<f32>, ${4 * T}>;`
      : ""
  }
${math(p)}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * ${W}u + lid;
  let b = c / ${ND}u;
  let d = c % ${ND}u;
  let xb = b * ${NL * ND}u + d;
  let bb = b * ${NL * 4}u;
  ${rep(4, (q) => `let ${a(q)} = A4[d * 4u + ${q}u]${p.exp2 ? ` * ${LOG2E}` : ""};`)}
  let dd = Dv[d];
  let bi = bias[d];
  ${rep(4, (q) => `var h${q} = vec4<f32>(0.0);`)}
  ${
    p.pf
      ? loadX("0u", "c", "var ")
      : rep(T, (u) => `var cx${u}: f32; var cdt${u}: f32; var cz${u}: f32;`)
  }
  ${p.bc === "smem" ? `${loadBC("0u", "f")}\n  ${storeBC("f")}\n  workgroupBarrier();` : ""}
  for (var k: u32 = 0u; k < ${NT}u; k++) {
    let kn = min(k + 1u, ${NT - 1}u);
    ${p.pf ? loadX("kn", "n", "let ") : loadX("k", "c", "")}
    ${p.bc === "smem" ? loadBC("kn", "n") : ""}
    ${rep(T, step, "\n    ")}
    ${p.bc === "smem" ? `workgroupBarrier();\n    ${storeBC("n")}\n    workgroupBarrier();` : ""}
    ${p.pf ? rep(T, (u) => `cx${u} = nx${u}; cdt${u} = ndt${u}; cz${u} = nz${u};`, "\n    ") : ""}
  }
}
`;
  return { wgsl, groups: (NB * ND) / W };
}

/**
 * LT: L lanes per channel (lane j: states [jR, jR + R)), blocks of L·m steps; lane j computes
 * softplus etc. for steps j + L·k' of the block and shuffles them; reduce-scatter of y. The next
 * block's loads are prefetched into registers.
 */
function lt(
  p: {
    L: number;
    m: number;
    WG: number;
    pf?: boolean;
    bc?: "smem";
    depth?: number;
    /** With bc "smem": blocks per staged tile (double-buffered; one barrier per tile). */
    tb?: number;
    /** Blocks ahead that B and C are loaded into registers (1 or 2; not with bc "smem"). */
    bcDepth?: number;
    /** With tb > 1 and 2 states per lane: B and C of a (step, lane) packed in one vec4. */
    pack?: boolean;
  } & Opts,
): { wgsl: string; groups: number } {
  const { L, m, WG } = p;
  const tb = p.tb ?? 1;
  const pf = p.pf ?? true;
  const R = NN / L, K = Math.min(R, 4), Q = R / K, S = L * m, VT = vt(K);
  if (NL % S) throw new Error("bad LT");
  // bc = "smem": the block's B and C (the same for every channel of the workgroup, which lies
  // in one batch) are loaded cooperatively, one vector per thread, into double-buffered
  // workgroup memory; a lane reads its states' values from there.
  const smem = p.bc === "smem";
  const nvec = (S * 16) / K;
  const bcSlots = Math.ceil((2 * nvec) / WG);
  const pack = p.pack ?? false;
  if (pack && (K !== 2 || Q !== 1 || tb < 2 || m !== 1)) throw new Error("bad LT pack");
  const blockVecs = pack ? S * L : 2 * nvec;
  const TILE = tb * blockVecs;
  const SVT = pack ? "vec4<f32>" : VT;
  const tSlots = Math.ceil(TILE / WG);
  if (tb > 1 && (!smem || (NL / S) % tb)) throw new Error("bad LT tile");
  /** Loads of a whole tile of B/C vectors into tS registers. */
  const loadTile = (tile: string) =>
    rep(tSlots, (sl) => {
      const e = `min(lid + ${sl * WG}u, ${TILE - 1}u)`;
      if (pack) {
        const w = `(${e}) % ${S * L}u`;
        const t = `((${tile} * ${tb}u + (${e}) / ${S * L}u) * ${S}u + ${w} / ${L}u)`;
        const idx = `bb + ${t} * 8u + ${w} % ${L}u`;
        return `tS${sl} = vec4<f32>(B4[${idx}], C4[${idx}]);`;
      }
      const w = `(${e}) % ${2 * nvec}u`;
      const idx = `bb + (${tile} * ${tb}u + (${e}) / ${2 * nvec}u) * ${nvec}u + ${w} % ${nvec}u`;
      return `tS${sl} = select(B4[${idx}], C4[${idx}], ${w} >= ${nvec}u);`;
    }, "\n    ");
  const storeTile = (buf: string) =>
    rep(
      tSlots,
      (sl) =>
        `if (lid + ${sl * WG}u < ${TILE}u) { sBC[${buf} * ${TILE}u + lid + ${
          sl * WG
        }u] = tS${sl}; }`,
      "\n    ",
    );
  if (smem && (ND % (WG / L) || !pf)) throw new Error("bad LT smem");
  // depth: x, dt, z of `depth` blocks ahead in registers (B, C one block ahead).
  const depth = p.depth ?? 1;
  const bcDepth = p.bcDepth ?? 1;
  if (bcDepth > 1 && (smem || !pf)) throw new Error("bad LT bcDepth");
  const NT = NL / S;
  const threads = NB * ND * L;
  const dotK = (a: string, b: string) => K === 1 ? `${a} * ${b}` : `dot(${a}, ${b})`;
  /** x, dt, z of block `blk` into registers named with prefix `pre`. */
  const loadX = (blk: string, pre: string, decl: string) => {
    const lines: string[] = [];
    for (let k = 0; k < m; k++) {
      const t = `(${blk} * ${S}u + j + ${L * k}u)`;
      lines.push(`${decl}${pre}x${k} = X[xb + ${t} * ${ND}u];`);
      lines.push(`${decl}${pre}dt${k} = DT[xb + ${t} * ${ND}u];`);
      lines.push(`${decl}${pre}z${k} = Z[xb + ${t} * ${ND}u];`);
    }
    return lines.join("\n    ");
  };
  /** B and C of block `blk` (or the thread's staged vectors of them). */
  const loadBC = (blk: string, pre: string, decl: string) => {
    const lines: string[] = [];
    if (tb > 1) return "";
    if (smem) {
      for (let sl = 0; sl < bcSlots; sl++) {
        const e = `min(lid + ${sl * WG}u, ${2 * nvec - 1}u)`;
        const idx = `bb + ${blk} * ${nvec}u + (${e}) % ${nvec}u`;
        lines.push(
          `${decl}${pre}S${sl} = select(B4[${idx}], C4[${idx}], ${e} >= ${nvec}u);`,
        );
      }
      return lines.join("\n    ");
    }
    for (let u = 0; u < S; u++) {
      for (let q = 0; q < Q; q++) {
        const idx = `bb + (${blk} * ${S}u + ${u}u) * ${16 / K}u + j * ${Q}u + ${q}u`;
        lines.push(`${decl}${pre}B${u}_${q} = B4[${idx}];`);
        lines.push(`${decl}${pre}C${u}_${q} = C4[${idx}];`);
      }
    }
    return lines.join("\n    ");
  };
  const load = (blk: string, pre: string, decl: string) =>
    `${loadX(blk, pre, decl)}\n    ${loadBC(blk, pre, decl)}`;
  /** Stores the thread's staged B/C vectors of block `pre` into buffer `buf`. */
  const stage = (pre: string, buf: string) =>
    Array.from(
      { length: bcSlots },
      (_, sl) =>
        `if (lid + ${sl * WG}u < ${2 * nvec}u) { sBC[${buf} * ${2 * nvec}u + lid + ${
          sl * WG
        }u] = ${pre}S${sl}; }`,
    ).join("\n    ");
  const bAt = (u: number, q: number) =>
    p.diag === "nobc"
      ? `a${q}`
      : pack
      ? `pk${u}.xy`
      : smem
      ? `sBC[cur + ${u * (16 / K)}u + j * ${Q}u + ${q}u]`
      : `cB${u}_${q}`;
  const cAt = (u: number, q: number) =>
    p.diag === "nobc"
      ? `(a${q} + 1.0)`
      : pack
      ? `pk${u}.zw`
      : smem
      ? `sBC[cur + ${nvec + u * (16 / K)}u + j * ${Q}u + ${q}u]`
      : `cC${u}_${q}`;
  const body: string[] = [];
  for (let k = 0; k < m; k++) {
    body.push(`let dl${k} = sp(cdt${k} + bi);`, `let dx${k} = dl${k} * cx${k};`);
  }
  for (let u = 0; u < S; u++) {
    const k = Math.floor(u / L), src = u % L;
    if (pack) body.push(`let pk${u} = sBC[cur + ${u * L}u + j];`);
    if (p.diag === "noshuffle") {
      body.push(`let D${u} = dl${k} + ${src}.0;`, `let U${u} = dx${k} + ${src}.0;`);
    } else {
      body.push(`let D${u} = subgroupShuffle(dl${k}, lane0 + ${src}u);`);
      body.push(`let U${u} = subgroupShuffle(dx${k}, lane0 + ${src}u);`);
    }
    for (let q = 0; q < Q; q++) {
      body.push(`h${q} = ${expOf(p, `D${u} * a${q}`)} * h${q} + U${u} * ${bAt(u, q)};`);
    }
    body.push(`let y${u} = ${rep(Q, (q) => dotK(cAt(u, q), `h${q}`), " + ")};`);
  }
  let n = 0;
  for (let k = 0; k < m; k++) {
    let live = Array.from({ length: L }, (_, s) => ({ v: `y${k * L + s}`, s }));
    if (p.diag === "nors") {
      live = [{ v: `(${live.map((e) => e.v).join(" + ")})`, s: 0 }];
    }
    for (let mm = L / 2; mm >= 1 && live.length > 1; mm /= 2) {
      const next: { v: string; s: number }[] = [];
      for (const lo of live.filter((e) => (e.s & mm) === 0)) {
        const hi = live.find((e) => e.s === (lo.s | mm))!;
        const c = `(j & ${mm}u) == 0u`;
        body.push(`let r${n} = select(${hi.v}, ${lo.v}, ${c});`);
        body.push(`let r${n + 1} = select(${lo.v}, ${hi.v}, ${c});`);
        body.push(`let r${n + 2} = r${n} + subgroupShuffleXor(r${n + 1}, ${mm}u);`);
        next.push({ v: `r${n + 2}`, s: lo.s });
        n += 3;
      }
      live = next;
    }
    const t = `(blk * ${S}u + j + ${L * k}u)`;
    body.push(`Y[xb + ${t} * ${ND}u] = (${live[0].v} + dd * cx${k}) * silu(cz${k});`);
  }
  const copies: string[] = [];
  for (let k = 0; k < m; k++) {
    const chain = ["c", ...Array.from({ length: depth - 1 }, (_, e) => `p${e + 1}`), "n"];
    for (let e = 0; e + 1 < chain.length; e++) {
      copies.push(
        `${chain[e]}x${k} = ${chain[e + 1]}x${k}; ${chain[e]}dt${k} = ${chain[e + 1]}dt${k}; ` +
          `${chain[e]}z${k} = ${chain[e + 1]}z${k};`,
      );
    }
  }
  if (tb > 1) {
    copies.push(
      `if (blk % ${tb}u == ${tb - 1}u) { ${
        storeTile(`((blk / ${tb}u) + 1u) % 2u`)
      }\n    workgroupBarrier(); }`,
    );
  } else if (smem) {
    copies.push(stage("n", "(blk + 1u) % 2u"), "workgroupBarrier();");
  } else {
    for (let u = 0; u < S; u++) {
      for (let q = 0; q < Q; q++) {
        if (bcDepth === 2) {
          copies.push(`cB${u}_${q} = qB${u}_${q}; cC${u}_${q} = qC${u}_${q};`);
          copies.push(`qB${u}_${q} = nB${u}_${q}; qC${u}_${q} = nC${u}_${q};`);
        } else copies.push(`cB${u}_${q} = nB${u}_${q}; cC${u}_${q} = nC${u}_${q};`);
      }
    }
  }
  const decl0: string[] = [];
  if (!pf) {
    for (let k = 0; k < m; k++) decl0.push(`var cx${k}: f32; var cdt${k}: f32; var cz${k}: f32;`);
    for (let u = 0; u < S; u++) {
      for (let q = 0; q < Q; q++) decl0.push(`var cB${u}_${q}: ${VT}; var cC${u}_${q}: ${VT};`);
    }
  }
  // Prefetch: B/C (or their staged vectors) one block ahead, x/dt/z `depth` blocks ahead.
  const first: string[] = [];
  const next: string[] = [];
  if (pf) {
    first.push(load("0u", "c", "var "));
    for (let e = 1; e < depth; e++) first.push(loadX(`${Math.min(e, NT - 1)}u`, `p${e}`, "var "));
    next.push(`let kn = min(blk + 1u, ${NT - 1}u);`);
    if (bcDepth === 2) {
      first.push(loadBC(`${Math.min(1, NT - 1)}u`, "q", "var "));
      next.push(`let kq = min(blk + 2u, ${NT - 1}u);`, loadBC("kq", "n", "let "));
      next.push(`let kd = min(blk + ${depth}u, ${NT - 1}u);`, loadX("kd", "n", "let "));
    } else if (depth === 1) next.push(load("kn", "n", "let "));
    else {
      next.push(loadBC("kn", "n", "let "), `let kd = min(blk + ${depth}u, ${NT - 1}u);`);
      next.push(loadX("kd", "n", "let "));
    }
    if (tb > 1) {
      first.push(rep(tSlots, (sl) => `var tS${sl}: ${SVT};`), loadTile("0u"), storeTile("0u"));
      first.push("workgroupBarrier();");
      next.push(
        `if (blk % ${tb}u == 0u) { ${loadTile(`min(blk / ${tb}u + 1u, ${NT / tb - 1}u)`)} }`,
      );
    } else if (smem) first.push(stage("c", "0u"), "workgroupBarrier();");
  }
  const wgsl = `${decls(K)}
${smem ? `var<workgroup> sBC: array<${SVT}, ${2 * TILE}>;` : ""}
${math(p)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sgid: u32) {
  let gid = wid.x * ${WG}u + lid;
  let c = gid / ${L}u;
  let j = gid % ${L}u;
  let lane0 = sgid - j;
  let b = c / ${ND}u;
  let d = c % ${ND}u;
  let xb = b * ${NL * ND}u + d;
  let bb = b * ${NL * (16 / K)}u;
  ${
    rep(Q, (q) =>
      `let a${q} = A4[d * ${16 / K}u + j * ${Q}u + ${q}u]${p.exp2 ? ` * ${LOG2E}` : ""};`)
  }
  let dd = Dv[d];
  let bi = bias[d];
  ${rep(Q, (q) => `var h${q} = ${VT}(0.0);`)}
  ${pf ? first.join("\n  ") : decl0.join("\n  ")}
  for (var blk: u32 = 0u; blk < ${NT}u; blk++) {
    ${pf ? next.join("\n    ") : load("blk", "c", "")}
    ${
    tb > 1
      ? `let cur = ((blk / ${tb}u) % 2u) * ${TILE}u + (blk % ${tb}u) * ${blockVecs}u;`
      : smem
      ? `let cur = (blk % 2u) * ${2 * nvec}u;`
      : ""
  }
    ${body.join("\n    ")}
    ${pf ? copies.join("\n    ") : ""}
  }
}
`;
  return { wgsl, groups: threads / WG };
}

/**
 * The workgroup-tiled kernels' (ST, STD) entry point and per-thread constants: channel block,
 * batch, the thread's channel cl and lane j with its A·(log2 e), its states h, the item column
 * cs and first item step ts0, the items' base offset xb, D and the Δ bias of the item channel.
 */
function tileHead(p: Opts, CH: number, L: number): string {
  const R = NN / L, K = Math.min(R, 4), Q = R / K, PS = 16 / K, VT = vt(K);
  return `@compute @workgroup_size(${CH * L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c0 = wid.x * ${CH}u;
  let b = c0 / ${ND}u;
  let d0 = c0 % ${ND}u;
  let bb = b * ${NL * PS}u;
  let cl = lid / ${L}u;
  let j = lid % ${L}u;
  ${
    rep(Q, (q) =>
      `let a${q} = A4[(d0 + cl) * ${PS}u + j * ${Q}u + ${q}u]${p.exp2 ? ` * ${LOG2E}` : ""};`)
  }
  ${rep(Q, (q) => `var h${q} = ${VT}(0.0);`)}
  let cs = lid % ${CH}u;
  let ts0 = lid / ${CH}u;
  let xb = b * ${NL * ND}u + d0 + cs;
  let ds = Dv[d0 + cs];
  let bs = bias[d0 + cs];`;
}

/**
 * ST: workgroup of CH channels × L lanes (lane j: states [jR, jR + R)); tiles of T steps staged
 * in workgroup memory: Δ and Δ·x per (step, channel) computed once, B and C per step; partial
 * sums per lane written to workgroup memory and reduced by the thread that owns (step,
 * channel), which also writes y. The next tile's loads are prefetched into registers.
 */
function st(
  p: { CH: number; L: number; T: number; U: number } & Opts,
): { wgsl: string; groups: number } {
  const { CH, L, T, U } = p;
  const R = NN / L, K = Math.min(R, 4), Q = R / K, WG = CH * L, E = T / L, VT = vt(K);
  const PS = 16 / K;
  if (R < 2 || ND % CH || NL % T || T % L || T % U) throw new Error("bad ST");
  const NT = NL / T;
  const bcSlots = Math.ceil((PS * T) / WG);
  const load = (tile: string, pre: string, decl: string) => {
    const lines: string[] = [];
    for (let i = 0; i < E; i++) {
      const t = `(${tile} * ${T}u + ts0 + ${i * L}u)`;
      lines.push(`${decl}${pre}x${i} = X[xb + ${t} * ${ND}u];`);
      lines.push(`${decl}${pre}dt${i} = DT[xb + ${t} * ${ND}u];`);
      lines.push(`${decl}${pre}z${i} = Z[xb + ${t} * ${ND}u];`);
    }
    for (let s = 0; s < bcSlots; s++) {
      const idx = `bb + ${tile} * ${PS * T}u + min(lid + ${s * WG}u, ${PS * T - 1}u)`;
      lines.push(`${decl}${pre}B${s} = B4[${idx}];`, `${decl}${pre}C${s} = C4[${idx}];`);
    }
    return lines.join("\n    ");
  };
  const k2d = p.k2d === true;
  // Where the workgroup arrays put (step u, column): flat (ST) or one row per step (k2d).
  // The compiled tiled kernel's layouts, for bisecting (k2d, not grouped): Δ, Δ·x in two arrays; B and
  // C in one (C's rows after B's).
  const plain = k2d && p.grouped !== true;
  const splitD = plain && p.splitD === true, bcOne = plain && p.bcOne === true;
  const bcArray = (a: string, row: string) =>
    bcOne ? `sBC[${a === "sC" ? `${T}u + ` : ""}${row}]` : `${a}[${row}]`;
  const at = {
    d: (u: number | string) =>
      splitD
        ? `vec2<f32>(sDd[${u}][cl], sDx[${u}][cl])`
        : k2d
        ? `sD[${u}][cl]`
        : `sD[(${u}) * ${CH}u + cl]`,
    /** Stores Δ = dl and Δ·x = dl * x of item i. */
    dStore: (i: number, x: string) => {
      if (splitD) return `sDd[ts0 + ${i * L}u][cs] = dl; sDx[ts0 + ${i * L}u][cs] = dl * ${x};`;
      const slot = k2d ? `sD[ts0 + ${i * L}u][cs]` : `sD[lid + ${i * WG}u]`;
      return `${slot} = vec2<f32>(dl, dl * ${x});`;
    },
    bc: (a: string, u: number | string, col: string) =>
      k2d ? `${bcArray(a, `${u}`)}[${col}]` : `${a}[(${u}) * ${PS}u + ${col}]`,
    bcStore: (a: string, e: string) =>
      k2d ? `${bcArray(a, `(${e}) / ${PS}u`)}[(${e}) % ${PS}u]` : `${a}[${e}]`,
    yP: (u: number | string) => (k2d ? `yP[${u}][lid]` : `yP[((${u}) * ${CH}u + cl) * ${L}u + j]`),
  };
  const stage = (pre: string) => {
    const lines: string[] = [];
    for (let i = 0; i < E; i++) {
      lines.push(
        `{ let dl = sp(${pre}dt${i} + bs); ${at.dStore(i, `${pre}x${i}`)} }`,
      );
    }
    for (let s = 0; s < bcSlots; s++) {
      const e = `lid + ${s * WG}u`;
      lines.push(
        `if (${e} < ${PS * T}u) { ${at.bcStore("sB", e)} = ${pre}B${s}; ${
          at.bcStore("sC", e)
        } = ${pre}C${s}; }`,
      );
    }
    return lines.join("\n    ");
  };
  const scanStep = (u: number | string) =>
    `{
        let dv = ${at.d(u)};
        ${
      rep(
        Q,
        (q) =>
          `h${q} = ${expOf(p, `dv.x * a${q}`)} * h${q} + dv.y * ${
            at.bc("sB", u, `j * ${Q}u + ${q}u`)
          };`,
        "\n        ",
      )
    }
        ${at.yP(u)} = ${rep(Q, (q) => `dot(${at.bc("sC", u, `j * ${Q}u + ${q}u`)}, h${q})`, " + ")};
      }`;
  const grouped = p.grouped === true;
  if (grouped && (!k2d || L !== 4 || T % 4)) throw new Error("grouped needs k2d, L 4, T % 4");
  const scanGroup = (g: number) => {
    const steps = [0, 1, 2, 3].map((s) => 4 * g + s);
    const lines: string[] = [];
    for (const u of steps) {
      lines.push(`let dv${u} = sD[${u}][cl];`, `let bv${u} = sB[${u}][j];`);
    }
    for (const u of steps) lines.push(`let cv${u} = sC[${u}][j];`);
    for (const u of steps) lines.push(`let e${u} = ${expOf(p, `dv${u}.x * a0`)};`);
    for (const u of steps) {
      lines.push(`h0 = e${u} * h0 + dv${u}.y * bv${u};`, `let y${u} = dot(cv${u}, h0);`);
    }
    lines.push(`yP[${g}][lid] = vec4<f32>(${steps.map((u) => `y${u}`).join(", ")});`);
    return `{\n        ${lines.join("\n        ")}\n      }`;
  };
  const epi: string[] = [];
  for (let i = 0; i < E; i++) {
    const e = `(lid + ${i * WG}u)`;
    const sum = grouped
      ? rep(
        L,
        (jj) => `yP[(ts0 + ${i * L}u) / 4u][cs * ${L}u + ${jj}u][(ts0 + ${i * L}u) % 4u]`,
        " + ",
      )
      : k2d
      ? rep(L, (jj) => `yP[ts0 + ${i * L}u][cs * ${L}u + ${jj}u]`, " + ")
      : rep(L, (jj) => `yP[${e} * ${L}u + ${jj}u]`, " + ");
    const t = `(k * ${T}u + ts0 + ${i * L}u)`;
    epi.push(`Y[xb + ${t} * ${ND}u] = (${sum} + ds * cx${i}) * silu(cz${i});`);
  }
  const copies: string[] = [];
  for (let i = 0; i < E; i++) copies.push(`cx${i} = nx${i}; cz${i} = nz${i};`);
  const wgsl = `${decls(K)}
${
    k2d
      ? `${
        splitD
          ? `var<workgroup> sDd: array<array<f32, ${CH}>, ${T}>;
var<workgroup> sDx: array<array<f32, ${CH}>, ${T}>;`
          : `var<workgroup> sD: array<array<vec2<f32>, ${CH}>, ${T}>;`
      }
${
        bcOne
          ? `var<workgroup> sBC: array<array<${VT}, ${PS}>, ${2 * T}>;`
          : `var<workgroup> sB: array<array<${VT}, ${PS}>, ${T}>;
var<workgroup> sC: array<array<${VT}, ${PS}>, ${T}>;`
      }
${
        grouped
          ? `var<workgroup> yP: array<array<vec4<f32>, ${CH * L}>, ${T / 4}>;`
          : `var<workgroup> yP: array<array<f32, ${CH * L}>, ${T}>;`
      }`
      : `var<workgroup> sD: array<vec2<f32>, ${T * CH}>;
var<workgroup> sB: array<${VT}, ${PS * T}>;
var<workgroup> sC: array<${VT}, ${PS * T}>;
var<workgroup> yP: array<f32, ${T * CH * L}>;`
  }
${math(p)}
${tileHead(p, CH, L)}
  ${load("0u", "c", "var ")}
  ${stage("c")}
  workgroupBarrier();
  for (var k: u32 = 0u; k < ${NT}u; k++) {
    let kn = min(k + 1u, ${NT - 1}u);
    ${load("kn", "n", "let ")}
    ${
    grouped
      ? rep(T / 4, (g) => scanGroup(g), "\n    ")
      : k2d && U === T
      ? rep(T, (u) => scanStep(u), "\n    ")
      : `for (var u: u32 = 0u; u < ${T}u; u += ${U}u) {
      ${rep(U, (v) => scanStep(`u + ${v}u`), "\n      ")}
    }`
  }
    workgroupBarrier();
    ${epi.join("\n    ")}
    ${stage("n")}
    workgroupBarrier();
    ${copies.join("\n    ")}
  }
}
`;
  return { wgsl, groups: (NB * ND) / CH };
}

/**
 * STD: STK (rows of one step) with every workgroup array double-buffered by tile parity, so a
 * tile needs ONE barrier instead of two: iteration k computes tile k from buffer k % 2, reduces
 * and writes tile k - 1's y from the other buffer and fills tile k + 1 into it, then waits once.
 * The tile loop is unrolled by two so every buffer is named statically. `fillFirst` puts the
 * epilogue and fill before the scan steps instead of after.
 */
function stdb(
  p: { CH: number; L: number; T: number; U: number; fillFirst?: boolean } & Opts,
): { wgsl: string; groups: number } {
  const { CH, L, T, U } = p;
  const R = NN / L, K = Math.min(R, 4), Q = R / K, WG = CH * L, E = T / L, VT = vt(K);
  const PS = 16 / K;
  if (R < 2 || ND % CH || NL % (2 * T) || T % L || T % U) throw new Error("bad STD");
  const NT = NL / T;
  const bcSlots = Math.ceil((PS * T) / WG);
  const load = (tile: string) => {
    const lines: string[] = [];
    for (let i = 0; i < E; i++) {
      const t = `(${tile} * ${T}u + ts0 + ${i * L}u)`;
      lines.push(`let nx${i} = X[xb + ${t} * ${ND}u];`);
      lines.push(`let ndt${i} = DT[xb + ${t} * ${ND}u];`);
      lines.push(`let nz${i} = Z[xb + ${t} * ${ND}u];`);
    }
    for (let s = 0; s < bcSlots; s++) {
      const idx = `bb + ${tile} * ${PS * T}u + min(lid + ${s * WG}u, ${PS * T - 1}u)`;
      lines.push(`let nB${s} = B4[${idx}];`, `let nC${s} = C4[${idx}];`);
    }
    return lines.join("\n    ");
  };
  // Fills buffer `b` from the n* registers and keeps x, z in the c*{b} registers.
  const fill = (b: number) => {
    const lines: string[] = [];
    for (let i = 0; i < E; i++) {
      lines.push(
        `{ let dl = sp(ndt${i} + bs); sD${b}[ts0 + ${i * L}u][cs] = vec2<f32>(dl, dl * nx${i}); }`,
      );
    }
    for (let s = 0; s < bcSlots; s++) {
      const e = `lid + ${s * WG}u`;
      lines.push(
        `if (${e} < ${PS * T}u) { sB${b}[(${e}) / ${PS}u][(${e}) % ${PS}u] = nB${s}; ` +
          `sC${b}[(${e}) / ${PS}u][(${e}) % ${PS}u] = nC${s}; }`,
      );
    }
    for (let i = 0; i < E; i++) lines.push(`cx${b}_${i} = nx${i}; cz${b}_${i} = nz${i};`);
    return lines.join("\n    ");
  };
  const step = (b: number, u: number | string) =>
    `{
        let dv = sD${b}[${u}][cl];
        ${
      rep(
        Q,
        (q) =>
          `h${q} = ${expOf(p, `dv.x * a${q}`)} * h${q} + dv.y * sB${b}[${u}][j * ${Q}u + ${q}u];`,
        "\n        ",
      )
    }
        yP${b}[${u}][lid] = ${rep(Q, (q) => `dot(sC${b}[${u}][j * ${Q}u + ${q}u], h${q})`, " + ")};
      }`;
  const steps = (b: number) =>
    U === T ? rep(T, (u) => step(b, u), "\n    ") : `for (var u: u32 = 0u; u < ${T}u; u += ${U}u) {
      ${rep(U, (v) => step(b, `u + ${v}u`), "\n      ")}
    }`;
  // y of tile `tile` from buffer b (its x, z in c*{b}).
  const epilogue = (b: number, tile: string) =>
    rep(E, (i) => {
      const sum = rep(L, (jj) => `yP${b}[ts0 + ${i * L}u][cs * ${L}u + ${jj}u]`, " + ");
      const t = `(${tile} * ${T}u + ts0 + ${i * L}u)`;
      return `Y[xb + ${t} * ${ND}u] = (${sum} + ds * cx${b}_${i}) * silu(cz${b}_${i});`;
    }, "\n    ");
  // Iteration for tile k in buffer b: load k+1, scan k, finish k-1 and fill k+1 in buffer 1-b.
  const iteration = (b: number, k: string) => {
    const o = 1 - b;
    const side = `${
      b === 0
        ? `if (${k} > 0u) {\n    ${epilogue(o, `(${k} - 1u)`)}\n    }`
        : epilogue(o, `(${k} - 1u)`)
    }
    ${fill(o)}`;
    return `{
    let kn = min(${k} + 1u, ${NT - 1}u);
    ${load("kn")}
    ${p.fillFirst ? side : steps(b)}
    ${p.fillFirst ? steps(b) : side}
    workgroupBarrier();
    }`;
  };
  const arrays = [0, 1].map((b) =>
    `var<workgroup> sD${b}: array<array<vec2<f32>, ${CH}>, ${T}>;
var<workgroup> sB${b}: array<array<${VT}, ${PS}>, ${T}>;
var<workgroup> sC${b}: array<array<${VT}, ${PS}>, ${T}>;
var<workgroup> yP${b}: array<array<f32, ${CH * L}>, ${T}>;`
  ).join("\n");
  const wgsl = `${decls(K)}
${arrays}
${math(p)}
${tileHead(p, CH, L)}
  ${
    rep(E, (i) =>
      `var cx0_${i} = 0.0; var cz0_${i} = 0.0; var cx1_${i} = 0.0; var cz1_${i} = 0.0;`)
  }
  {
    ${load("0u")}
    ${fill(0)}
  }
  workgroupBarrier();
  for (var k: u32 = 0u; k < ${NT}u; k += 2u) {
    ${iteration(0, "k")}
    ${iteration(1, "(k + 1u)")}
  }
  ${epilogue(1, `${NT - 1}u`)}
}
`;
  return { wgsl, groups: (NB * ND) / CH };
}

const ctx = await getGpu();
const s = { b: NB, l: NL, d: ND, n: NN };
const inputs = scanBenchInputs(s);
const iterations = Number(values.iterations);
const bytes = scanBenchBytes(s);

// Warm the clocks, then the copy anchor.
const copyElems = copyElements(ctx);
for (let w = 0; w < Number(values.warm); w++) await copyKernelBenchmark(ctx, copyElems, 1000);
const copy = await copyKernelBenchmark(ctx, copyElems, 20);
const copyGBps = copy.GBps;
console.log(JSON.stringify({ bench: "copy", elems: copyElems, ms: copy.ms, GBps: copyGBps }));

/**
 * Times the default compiled program on buffers of its own (allocated now: with `--sets`, each
 * set's buffers land elsewhere in memory) and returns its output; the buffers stay allocated.
 */
async function timeCompiledDefault(set: number): Promise<Float32Array> {
  const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s);
  const y = await prog.run(inputs);
  const rb = await prog.benchmark(inputs, { warmup: 100, iterations });
  const ms = rb.totalNs / 1e6;
  console.log(JSON.stringify({
    bench: "hand",
    name: "compiled_default",
    set,
    ms,
    GBps: bytes / ms / 1e6,
    fracCopy: bytes / ms / 1e6 / copyGBps,
    head: prog.kernels[0].wgsl.split("\n")[0],
  }));
  return y;
}
const ref = await timeCompiledDefault(0);

/** The hand-written kernels' buffers: inputs, then the output. */
function allocate(): { bufs: GPUBuffer[]; out: GPUBuffer } {
  const bufs = [
    inputs.x,
    inputs.dt,
    inputs.z,
    inputs.B,
    inputs.C,
    inputs.A,
    inputs.D,
    inputs.dtBias,
  ]
    .map((a) => uploadArray(ctx, a));
  const out = ctx.device.createBuffer({ size: NB * NL * ND * 4, usage: STORAGE_USAGE });
  return { bufs, out };
}
let { bufs, out } = allocate();
const cache = new PipelineCache(ctx);

const variants: { name: string; make: () => { wgsl: string; groups: number } }[] = [];
const rsq = { div: "rsq" as const };
const ieee = { div: "ieee" as const };
const add = (name: string, make: () => { wgsl: string; groups: number }) =>
  variants.push({ name, make });
add("LT_L16_m1_WG256_ieee_nopf", () => lt({ L: 16, m: 1, WG: 256, pf: false, ...ieee }));
add("LT_L16_m1_WG256_rsq_nopf", () => lt({ L: 16, m: 1, WG: 256, pf: false, ...rsq }));
add("LT_L16_m1_WG256_rsq_pf", () => lt({ L: 16, m: 1, WG: 256, pf: true, ...rsq }));
add("L1_W32_T8_rsq", () => l1({ W: 32, T: 8, pf: true, bc: "smem", ...rsq }));
add(
  "DIAG_L1_W32_T8_rsq_fakeexp",
  () => l1({ W: 32, T: 8, pf: true, bc: "smem", ...rsq, fakeExp: true }),
);
add("LT_L8_m1_WG256_rsq_pf", () => lt({ L: 8, m: 1, WG: 256, pf: true, ...rsq }));
add("LT_L8_m1_WG256_rsq_nopf", () => lt({ L: 8, m: 1, WG: 256, pf: false, ...rsq }));
add("LT_L4_m2_WG64_rsq_pf", () => lt({ L: 4, m: 2, WG: 64, pf: true, ...rsq }));
add("ST_CH32_L4_T16_U4_rsq", () => st({ CH: 32, L: 4, T: 16, U: 4, ...rsq }));
add("ST_CH32_L2_T16_U4_rsq", () => st({ CH: 32, L: 2, T: 16, U: 4, ...rsq }));
add("L1_W32_T4_rsq", () => l1({ W: 32, T: 4, pf: true, bc: "smem", ...rsq }));
add("LT_L16_m2_WG256_rsq_pf", () => lt({ L: 16, m: 2, WG: 256, pf: true, ...rsq }));
add("LT_L8_m2_WG256_rsq_pf", () => lt({ L: 8, m: 2, WG: 256, pf: true, ...rsq }));
add("ST_CH32_L4_T16_U4_rsq_exp2", () => st({ CH: 32, L: 4, T: 16, U: 4, ...rsq, exp2: true }));
add("ST_CH16_L4_T16_U4_rsq", () => st({ CH: 16, L: 4, T: 16, U: 4, ...rsq }));
add("ST_CH32_L4_T32_U8_rsq", () => st({ CH: 32, L: 4, T: 32, U: 8, ...rsq }));
add("ST_CH64_L4_T16_U4_rsq", () => st({ CH: 64, L: 4, T: 16, U: 4, ...rsq }));
add("L1_W32_T8_rsq_exp2", () => l1({ W: 32, T: 8, pf: true, bc: "smem", ...rsq, exp2: true }));
add("L1_W64_T8_rsq", () => l1({ W: 64, T: 8, pf: true, bc: "smem", ...rsq }));
add("L1_W32_T8_rsq_glob", () => l1({ W: 32, T: 8, pf: true, bc: "glob", ...rsq }));
add("LT_L8_m1_WG256_rsq_pf_exp2", () => lt({ L: 8, m: 1, WG: 256, pf: true, ...rsq, exp2: true }));
add("LT_L4_m2_WG64_rsq_pf_exp2", () => lt({ L: 4, m: 2, WG: 64, pf: true, ...rsq, exp2: true }));
const smem = { bc: "smem" as const };
add("LT_L8_m1_WG256_rsq_pf_d2", () => lt({ L: 8, m: 1, WG: 256, ...rsq, depth: 2 }));
add("LT_L8_m1_WG256_rsq_pf_d3", () => lt({ L: 8, m: 1, WG: 256, ...rsq, depth: 3 }));
add("LT_L8_m1_WG128_rsq_pf", () => lt({ L: 8, m: 1, WG: 128, ...rsq }));
add("LT_L8_m1_WG64_rsq_pf", () => lt({ L: 8, m: 1, WG: 64, ...rsq }));
add("LT_L8_m1_WG256_rsq_smem", () => lt({ L: 8, m: 1, WG: 256, ...rsq, ...smem }));
add("LT_L8_m1_WG128_rsq_smem", () => lt({ L: 8, m: 1, WG: 128, ...rsq, ...smem }));
add("LT_L8_m1_WG256_rsq_smem_d2", () => lt({ L: 8, m: 1, WG: 256, ...rsq, ...smem, depth: 2 }));
add("LT_L8_m1_WG128_rsq_smem_d2", () => lt({ L: 8, m: 1, WG: 128, ...rsq, ...smem, depth: 2 }));
add("LT_L8_m1_WG256_rsq_smem_d3", () => lt({ L: 8, m: 1, WG: 256, ...rsq, ...smem, depth: 3 }));
add(
  "LT_L8_m1_WG256_rsq_smem_d2_exp2",
  () => lt({ L: 8, m: 1, WG: 256, ...rsq, ...smem, depth: 2, exp2: true }),
);
add("LT_L8_m2_WG256_rsq_smem", () => lt({ L: 8, m: 2, WG: 256, ...rsq, ...smem }));
add("LT_L4_m2_WG128_rsq_smem_d2", () => lt({ L: 4, m: 2, WG: 128, ...rsq, ...smem, depth: 2 }));
for (const L of [8, 4]) {
  const m = L === 8 ? 1 : 2, WG = L === 8 ? 256 : 128;
  for (const diag of ["noshuffle", "nors", "nobc"] as const) {
    add(`DIAG_LT_L${L}_m${m}_${diag}`, () => lt({ L, m, WG, ...rsq, diag }));
  }
  add(`DIAG_LT_L${L}_m${m}_fakeexp`, () => lt({ L, m, WG, ...rsq, fakeExp: true }));
}
add(
  "DIAG_ST_CH32_L4_T16_U4_fakeexp",
  () => st({ CH: 32, L: 4, T: 16, U: 4, ...rsq, fakeExp: true }),
);
for (
  const [L, m, WG, tb, depth] of [
    [8, 1, 256, 16, 2],
    [8, 1, 256, 8, 2],
    [8, 1, 128, 16, 2],
    [8, 1, 256, 32, 2],
    [4, 2, 128, 16, 2],
    [4, 1, 128, 32, 2],
  ]
) {
  add(
    `LTT_L${L}_m${m}_WG${WG}_tb${tb}_d${depth}`,
    () => lt({ L, m, WG, ...rsq, ...smem, depth, tb, exp2: true }),
  );
}
for (const [WG, tb] of [[256, 16], [256, 8], [128, 16], [256, 32], [64, 16]]) {
  add(
    `LTP_L8_WG${WG}_tb${tb}_d2`,
    () => lt({ L: 8, m: 1, WG, ...rsq, ...smem, depth: 2, tb, pack: true, exp2: true }),
  );
}
for (const [WG, depth] of [[256, 1], [256, 2], [128, 2], [128, 1], [64, 2]]) {
  add(
    `LTB_L8_WG${WG}_d${depth}_bc2`,
    () => lt({ L: 8, m: 1, WG, ...rsq, depth, bcDepth: 2, exp2: true }),
  );
}
add(
  "LTB_L4_m1_WG128_d2_bc2",
  () => lt({ L: 4, m: 1, WG: 128, ...rsq, depth: 2, bcDepth: 2, exp2: true }),
);
add(
  "LTB_L4_m2_WG128_d2_bc2",
  () => lt({ L: 4, m: 2, WG: 128, ...rsq, depth: 2, bcDepth: 2, exp2: true }),
);
add(
  "LTB_L16_m1_WG256_d2_bc2",
  () => lt({ L: 16, m: 1, WG: 256, ...rsq, depth: 2, bcDepth: 2, exp2: true }),
);
for (const CH of [8, 16]) {
  add(`ST_CH${CH}_L4_T16_U4_exp2`, () => st({ CH, L: 4, T: 16, U: 4, ...rsq, exp2: true }));
}
for (const CH of [8, 16, 32]) {
  add(`ST_CH${CH}_L8_T16_U4_exp2`, () => st({ CH, L: 8, T: 16, U: 4, ...rsq, exp2: true }));
}
for (const [CH, T] of [[16, 32], [8, 32], [16, 64], [32, 32], [16, 16]]) {
  add(`STX_CH${CH}_L4_T${T}_U4_exp2`, () => st({ CH, L: 4, T, U: 4, ...rsq, exp2: true }));
}
for (const CH of [16, 32]) {
  add(
    `STK_CH${CH}_L4_T16_exp2`,
    () => st({ CH, L: 4, T: 16, U: 16, ...rsq, exp2: true, k2d: true }),
  );
}
for (const [CH, T] of [[16, 16], [32, 16], [32, 32], [16, 32]]) {
  add(
    `STG_CH${CH}_L4_T${T}_exp2`,
    () => st({ CH, L: 4, T, U: T, ...rsq, exp2: true, k2d: true, grouped: true }),
  );
}
// From the fastest hand-written shape (STK, 4-step loop) toward the compiled tiled kernel's.
for (
  const [tag, extra] of [["splitD", { splitD: true }], ["bcOne", { bcOne: true }], ["both", {
    splitD: true,
    bcOne: true,
  }]] as const
) {
  add(
    `STK_CH32_L4_T16_U4_exp2_${tag}`,
    () => st({ CH: 32, L: 4, T: 16, U: 4, ...rsq, exp2: true, k2d: true, ...extra }),
  );
}
// Which of ST → STK's two changes costs: rows with the 4-step loop; flat with the full unroll.
add(
  "STK_CH32_L4_T16_U4_exp2",
  () => st({ CH: 32, L: 4, T: 16, U: 4, ...rsq, exp2: true, k2d: true }),
);
add("ST_CH32_L4_T16_U16_exp2", () => st({ CH: 32, L: 4, T: 16, U: 16, ...rsq, exp2: true }));
add("ST_CH32_L4_T16_U8_exp2", () => st({ CH: 32, L: 4, T: 16, U: 8, ...rsq, exp2: true }));
add("STK_CH16_L4_T8_exp2", () => st({ CH: 16, L: 4, T: 8, U: 8, ...rsq, exp2: true, k2d: true }));
add(
  "STK_CH16_L4_T32_exp2",
  () => st({ CH: 16, L: 4, T: 32, U: 32, ...rsq, exp2: true, k2d: true }),
);
add(
  "STK_CH16_L2_T16_exp2",
  () => st({ CH: 16, L: 2, T: 16, U: 16, ...rsq, exp2: true, k2d: true }),
);
add("ST_CH32_L4_T8_U4_exp2", () => st({ CH: 32, L: 4, T: 8, U: 4, ...rsq, exp2: true }));
add("ST_CH32_L4_T16_U2_exp2", () => st({ CH: 32, L: 4, T: 16, U: 2, ...rsq, exp2: true }));
// One barrier per tile: STK with double-buffered workgroup arrays (scan steps first, or fill first).
for (const U of [4, 16]) {
  for (const fillFirst of [false, true]) {
    add(
      `STD_CH32_L4_T16_U${U}_exp2${fillFirst ? "_fillfirst" : ""}`,
      () => stdb({ CH: 32, L: 4, T: 16, U, ...rsq, exp2: true, fillFirst }),
    );
  }
}
add(
  "STD_CH32_L4_T16_U4_exp2_clamp",
  () =>
    stdb({ CH: 32, L: 4, T: 16, U: 4, ...rsq, exp2: true, clampExp: true, clampType: "vec4<f32>" }),
);
add(
  "STK_CH32_L4_T16_U4_exp2_clamp",
  () =>
    st({
      CH: 32,
      L: 4,
      T: 16,
      U: 4,
      ...rsq,
      exp2: true,
      k2d: true,
      clampExp: true,
      clampType: "vec4<f32>",
    }),
);
add("STD_CH16_L4_T16_U4_exp2", () => stdb({ CH: 16, L: 4, T: 16, U: 4, ...rsq, exp2: true }));
add("STD_CH32_L4_T8_U4_exp2", () => stdb({ CH: 32, L: 4, T: 8, U: 4, ...rsq, exp2: true }));
add("STD_CH32_L8_T16_U4_exp2", () => stdb({ CH: 32, L: 8, T: 16, U: 4, ...rsq, exp2: true }));
// The compiled default kernel's exact WGSL, bound to the hand-written kernels' buffers and timed
// like them: separates the kernel text from how the two paths allocate and time.
const HAND_INPUTS = ["x", "dt", "z", "B", "C", "A", "D", "dtBias"];
const handPathKernels = new Map<string, { wgsl: string; bindings: number[]; wg: number[] }>();
for (
  const [name, strategy] of [["C_default_hand_path", undefined], ["C_tiled_U4_hand_path", {
    tileSteps: 16,
    workgroup: 128,
    unroll: 4,
  }]] as const
) {
  add(name, () => {
    const graph = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s);
    const [k, ...rest] = generateKernels(graph, deviceLimits(ctx), { scan: strategy }).kernels;
    if (rest.length) throw new Error("expected one kernel");
    const bindings = k.reads.map((r) => {
      const i = "name" in r ? HAND_INPUTS.indexOf(r.name) : -1;
      if (i < 0) throw new Error("a read that is not an input");
      return i;
    });
    handPathKernels.set(name, { wgsl: k.wgsl, bindings, wg: [...k.workgroups] });
    return { wgsl: k.wgsl, groups: k.workgroups[0] };
  });
}
const compiledVariants: Record<string, ScanStrategy> = {
  "C_L8_transposed": { lanes: 8, transpose: true },
  "C_L16_plain": { lanes: 16, transpose: false },
  // The compiled tiled kernel with STK's 4-step loop: the other end of the STK bisect.
  "C_tiled_CH32_L4_T16_U4": { tileSteps: 16, workgroup: 128, unroll: 4 },
};
const only = values.only ? new Set(values.only.split(",")) : undefined;
// `--sets K`: the same variants on K sets of buffers allocated one after the other (all kept),
// to see whether a kernel's time depends on where its buffers lie.
for (let set = 0; set < Number(values.sets); set++) {
  if (set > 0) {
    await timeCompiledDefault(set);
    ({ bufs, out } = allocate());
  }
  for (const v of variants) {
    if (only && !only.has(v.name)) continue;
    try {
      const { wgsl, groups } = v.make();
      if (values.dump === v.name) {
        if (values["dump-to"]) Deno.writeTextFileSync(values["dump-to"], wgsl);
        else console.error(wgsl);
      }
      const kernel = { name: v.name, wgsl };
      const pipeline = await cache.get(kernel);
      const hp = handPathKernels.get(v.name);
      const wg: [number, number, number] = hp ? [hp.wg[0], hp.wg[1], hp.wg[2]] : [groups, 1, 1];
      ctx.device.queue.writeBuffer(out, 0, new Float32Array(NB * NL * ND));
      const [t] = await timeDispatches(ctx, [{
        kernel,
        pipeline,
        buffers: hp ? [...hp.bindings.map((i) => bufs[i]), out] : [...bufs, out],
        workgroups: wg,
      }], {
        warmup: 100,
        iterations,
      });
      const [raw] = await readBuffers(ctx, [{ buffer: out, byteLength: NB * NL * ND * 4 }]);
      const y = new Float32Array(raw);
      let diff = 0, norm = 0, maxRel = 0;
      for (let i = 0; i < y.length; i += 3) {
        const e = y[i] - ref[i];
        diff += e * e;
        norm += ref[i] * ref[i];
        maxRel = Math.max(maxRel, Math.abs(e) / (Math.abs(ref[i]) + 1e-3));
      }
      const ms = t.medianNs / 1e6;
      console.log(JSON.stringify({
        bench: "hand",
        name: v.name,
        set,
        at: Math.round(performance.now() / 1000),
        ms,
        minMs: t.minNs / 1e6,
        GBps: bytes / ms / 1e6,
        fracCopy: bytes / ms / 1e6 / copyGBps,
        relL2: Math.sqrt(diff / norm),
        maxRel,
      }));
    } catch (e) {
      console.log(JSON.stringify({ bench: "hand", name: v.name, error: String(e).slice(0, 400) }));
    }
  }
}

for (const [name, strategy] of Object.entries(compiledVariants)) {
  if (only && !only.has(name)) continue;
  try {
    const p = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s, {
      scan: strategy,
    });
    const r = await p.benchmark(inputs, { warmup: 100, iterations });
    const ms = r.totalNs / 1e6;
    console.log(JSON.stringify({
      bench: "hand",
      name,
      at: Math.round(performance.now() / 1000),
      ms,
      GBps: bytes / ms / 1e6,
      fracCopy: bytes / ms / 1e6 / copyGBps,
    }));
    p.destroy();
  } catch (e) {
    console.log(JSON.stringify({ bench: "hand", name, error: String(e).slice(0, 400) }));
  }
}
