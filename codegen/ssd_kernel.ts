/**
 * The chunked SSD lowering (Mamba-2's state-space duality) of a fused scan, in 3 dispatches.
 * Time is cut into chunks of q steps (in scan order: a reverse scan reads position L − 1 − t);
 * cs is the cumulative log-decay inside a chunk, so every exponential is of a difference
 * cs_i − cs_j (j ≤ i) or cs_last − cs_j, never positive for decays ≤ 1: stable at any length.
 *
 * 1. `states` — two kinds of workgroups:
 *    - per (head, chunk, state tile, value tile): S_c = Σ_j exp(cs_last − cs_j)·w_j·B_j x_jᵀ
 *      (a state × q by q × value product), and the chunk's total log-decay Λ_c;
 *    - per (output, cb index, chunk, lower-triangular block): the C·Bᵀ products, shared by all
 *      heads of a group (cb axes).
 * 2. `pass` — per (head, state, 4 values): the short recurrence over chunks
 *    S'_{c+1} = exp(Λ_c)·S'_c + S_c from the init state, written in place of S_c (the state
 *    entering each chunk), and the final state.
 * 3. `out` — per (head, chunk, row tile, value tile): one accumulation of two products,
 *    y_i = exp(cs_i)·C_i S'_c + Σ_{j≤i} (C_i·B_j)·exp(cs_i − cs_j)·w_j·x_j, then each output's
 *    fused epilogue (D skip, gating…) and store.
 *
 * Scratch: one buffer of vec4s (one binding per kernel, so the kernels fit WebGPU's default of 8
 * storage buffers): chunk states (heads × chunks × state × value rounded up to 4), then the C·Bᵀ
 * blocks (outputs × cb × chunks × q × q, only blocks on or below the diagonal written), then Λ
 * (heads × chunks, one per vec4).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { BindingRegistry, foldWorkgroups, type KernelArtifact, scratch } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";
import type { ScanSpec } from "./scan_spec.ts";
import {
  accDecl,
  fitTile,
  forEachOutput,
  gemmLoop,
  scaleRows,
  type Stage,
  stagedSizes,
  threadCoords,
  type TileShape,
  tileThreads,
} from "./ssd_gemm.ts";
import { indent } from "./kernel_header.ts";
import { pow2ceil } from "./scan_strategy.ts";
import { SsdHooks } from "./ssd_hooks.ts";
import { emitGates, emitIntra } from "./ssd_vector.ts";
import {
  type Geometry,
  roundUp,
  type SsdContext,
  type SsdTiling,
  timeMap,
  vec4Arrays,
  vec4Of,
  workgroupIndex,
} from "./ssd_parts.ts";
import {
  chunkLengths,
  defaultChunk,
  type SsdForm,
  ssdScratchBytes,
  type SsdSizes,
  ssdSizes,
} from "./ssd_plan.ts";
import { MATH_PRELUDE, u32Literal as u } from "./wgsl_math.ts";

/** Options of {@link emitSsdKernels}. */
export interface SsdOptions {
  /** Chunk length q: a power of two in [8, 256] (default: from the shapes, see defaultChunk). */
  chunk?: number;
  /** Override tile shapes (benchmarks). */
  tiles?: Partial<SsdTiling>;
}

/** Picks the chunk length: forced (checked) or the default, grown until the scratch fits. */
/** The chunk length `emitSsdKernels` uses when none is forced. */
export function defaultSsdChunk(form: SsdForm, limits: DeviceLimits): number {
  return pickChunk(ssdSizes(form), limits);
}

function pickChunk(sizes: SsdSizes, limits: DeviceLimits, forced?: number): number {
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const fits = (q: number) => ssdScratchBytes(sizes, q).total <= limit;
  const describe = (q: number) => {
    const b = ssdScratchBytes(sizes, q);
    return `${b.total} bytes of scratch at chunk length ${q} (chunk states ${b.states}, ` +
      `C·Bᵀ blocks ${b.cb}); the device binds at most ${limit}`;
  };
  const lengths = chunkLengths(sizes);
  if (forced !== undefined) {
    if (!lengths.includes(forced)) {
      throw new Error(
        `chunked scan: chunk length ${forced} is not supported${
          sizes.vectorDecay ? " with a decay that varies along the state" : ""
        }; use one of ${lengths.join(", ")}`,
      );
    }
    if (!fits(forced)) throw new Error(`chunked scan: ${describe(forced)}`);
    return forced;
  }
  let q = defaultChunk(sizes);
  while (!fits(q) && q < lengths[lengths.length - 1]) q *= 2;
  if (!fits(q)) throw new Error(`chunked scan: ${describe(q)}; use the recurrent lowering`);
  return q;
}

/** Default tiles: 64-step row tiles, value tiles up to 64, K slices of 16. */
function defaultTiling(sizes: SsdSizes, q: number, limits: DeviceLimits): SsdTiling {
  const maxThreads = Math.min(256, limits.maxComputeInvocationsPerWorkgroup);
  const cols = Math.min(64, pow2ceil(roundUp(sizes.value, 4)));
  const rows = Math.min(q, 64);
  let kt = Math.min(16, rows);
  const make = (): SsdTiling => ({
    state: fitTile(Math.min(128, pow2ceil(roundUp(sizes.state, 4))), cols, kt, maxThreads),
    cb: fitTile(rows, rows, kt, maxThreads),
    out: fitTile(rows, cols, kt, maxThreads),
  });
  let t = make();
  while (kt > 4 && sharedBytes(t, q) > limits.maxComputeWorkgroupStorageSize) {
    kt /= 2;
    t = make();
  }
  return t;
}

/** Workgroup memory of the larger of kernels 1 and 3. */
function sharedBytes(t: SsdTiling, q: number): number {
  const s = stagedSizes(t.state), c = stagedSizes(t.cb), o = stagedSizes(t.out);
  const k1 = (Math.max(s.a, c.a) + Math.max(s.b, c.b)) * 16;
  return Math.max(k1, (o.a + o.b) * 16) + 8 * q;
}

function checkTiling(t: SsdTiling, q: number, limits: DeviceLimits): void {
  const bad = (why: string) => {
    throw new Error(`chunked scan: tile ${JSON.stringify(t)}: ${why}`);
  };
  for (const [name, tile] of Object.entries(t) as [string, TileShape][]) {
    if (tile.tm % 4 || tile.tn % 4 || tile.Mt % tile.tm || tile.Nt % tile.tn) {
      bad(`${name}: tm and tn must be multiples of 4 dividing Mt and Nt`);
    }
    if (tileThreads(tile).threads > limits.maxComputeInvocationsPerWorkgroup) {
      bad(`${name}: more threads than the device allows`);
    }
  }
  if (q % t.out.Mt || t.out.Mt % t.out.kt) bad("out.Mt must divide q and be a multiple of kt");
  if (q % t.cb.Mt || t.cb.Mt !== t.cb.Nt) bad("cb blocks must be square and divide q");
  if (q % t.state.kt) bad("state.kt must divide q");
  if (sharedBytes(t, q) > limits.maxComputeWorkgroupStorageSize) {
    bad(`needs ${sharedBytes(t, q)} bytes of workgroup memory`);
  }
}

/**
 * Emits the 3 kernels of the chunked SSD lowering of `spec` (whose SSD form is `form`): chunk
 * states and C·Bᵀ blocks, the pass over chunks (init and final states), and the outputs with
 * their fused epilogues. Throws a clear error for unsupported chunk lengths or scratch buffers
 * over the device's limits.
 */
export function emitSsdKernels(
  spec: ScanSpec,
  form: SsdForm,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  options: SsdOptions = {},
): KernelArtifact[] {
  const sizes = ssdSizes(form);
  const q = pickChunk(sizes, limits, options.chunk);
  const tiling = { ...defaultTiling(sizes, q, limits), ...options.tiles };
  checkTiling(tiling, q, limits);
  const chunks = Math.ceil(sizes.len / q);
  const value4 = roundUp(sizes.value, 4);
  const state4 = roundUp(sizes.state, 4);
  const bytes = ssdScratchBytes(sizes, q);
  const gOff = (bytes.states + bytes.cb) / 16;
  const vector = form.vectorDecay;
  const geo: Geometry = {
    sizes,
    q,
    chunks,
    value4,
    tiling,
    scratchBuf: scratch(`${name}_ssd_scratch`, bytes.total / 4),
    cbOff: bytes.states / 16,
    lamOff: vector ? gOff + (sizes.heads * chunks * q * state4) / 4 : gOff,
    vector,
    state4,
    gOff,
  };
  const ctx: SsdContext = { spec, form, geo, materialized, limits, aliases };
  return [
    ...(vector ? [emitGates(ctx, `${name}_ssd_gates`)] : []),
    emitStates(ctx, `${name}_ssd_states`),
    ...(vector ? [emitIntra(ctx, `${name}_ssd_intra`)] : []),
    emitPass(ctx, `${name}_ssd_pass`),
    emitOutputs(ctx, `${name}_ssd_out`),
  ];
}

/**
 * Loads the chunk's log-decays and scales into `sh_cs` / `sh_w` (zero past the end) and turns
 * `sh_cs` into its inclusive prefix sum (Hillis–Steele, all barriers uniform).
 */
function chunkCumsum(geo: Geometry, threads: number, hooks: SsdHooks): string[] {
  const { q } = geo;
  const dec = hooks.logDecay(), scale = hooks.scale();
  const lines = [
    `for (var j = lid; j < ${u(q)}; j = j + ${u(threads)}) {`,
    `  let tp = c * ${u(q)} + j;`,
    `  let ok = tp < ${u(geo.sizes.len)};`,
    `  let t = tmap(tp);`,
    `  sh_cs[j] = select(0.0, ${dec}(hd, t), ok);`,
    `  sh_w[j] = select(0.0, ${scale}(hd, t), ok);`,
    "}",
    "workgroupBarrier();",
  ];
  const per = Math.ceil(q / threads);
  lines.push(`for (var off = 1u; off < ${u(q)}; off = off * 2u) {`);
  for (let r = 0; r < per; r++) {
    lines.push(
      `  let cj${r} = lid + ${u(r * threads)};`,
      `  var cv${r} = 0.0;`,
      `  if (cj${r} < ${u(q)} && cj${r} >= off) { cv${r} = sh_cs[cj${r} - off]; }`,
    );
  }
  lines.push("  workgroupBarrier();");
  for (let r = 0; r < per; r++) {
    lines.push(`  if (cj${r} < ${u(q)}) { sh_cs[cj${r}] = sh_cs[cj${r}] + cv${r}; }`);
  }
  lines.push("  workgroupBarrier();", "}");
  return lines;
}

/** Loads the chunk's scales into `sh_w` (zero past the end), for a vector decay's kernels. */
function chunkScales(geo: Geometry, threads: number, hooks: SsdHooks): string[] {
  const scale = hooks.scale();
  return [
    `for (var j = lid; j < ${u(geo.q)}; j = j + ${u(threads)}) {`,
    `  let tp = c * ${u(geo.q)} + j;`,
    `  sh_w[j] = select(0.0, ${scale}(hd, tmap(tp)), tp < ${u(geo.sizes.len)});`,
    "}",
  ];
}

function sharedDecls(geo: Geometry, a: number, b: number): string {
  return [
    `var<workgroup> sh_cs: array<f32, ${geo.q}>;`,
    `var<workgroup> sh_w: array<f32, ${geo.q}>;`,
    `var<workgroup> sh_a: array<vec4<f32>, ${a}>;`,
    `var<workgroup> sh_b: array<vec4<f32>, ${b}>;`,
  ].join("\n");
}

/** Kernel 1: chunk states (+ Λ) and the C·Bᵀ blocks. */
function emitStates(ctx: SsdContext, name: string): KernelArtifact {
  const { spec, form, geo, materialized, limits, aliases } = ctx;
  const { sizes, q, chunks, value4, tiling } = geo;
  const L = sizes.len;
  const registry = new BindingRegistry(
    materialized,
    [geo.scratchBuf],
    aliases,
  );
  const hooks = new SsdHooks(form, spec, registry);
  const SC = registry.writeName(0);
  const st = tiling.state, cbt = tiling.cb;
  const threads = Math.max(tileThreads(st).threads, tileThreads(cbt).threads);
  const stateTiles = Math.ceil(sizes.state / st.Mt), valueTiles = Math.ceil(value4 / st.Nt);
  const nStateWg = sizes.heads * chunks * stateTiles * valueTiles;
  const nb = q / cbt.Mt;
  const tri = (nb * (nb + 1)) / 2;
  // A vector decay's intra-chunk products are kernel emitIntra's (ssd_vector.ts).
  const nCbWg = geo.vector ? 0 : sizes.outputs * sizes.cb * chunks * tri;
  const total = nStateWg + nCbWg;
  const workgroups = foldWorkgroups(total, limits.maxComputeWorkgroupsPerDimension);
  const key = hooks.key(), val = hooks.value(), cbOf = hooks.cbOf();
  // Only the C·Bᵀ workgroups read the C operands (registered here, where the bindings' order
  // has always put them).
  const query = nCbWg > 0 ? hooks.query() : undefined;
  const nN = sizes.state, nP = sizes.value;

  // Chunk-state workgroups: rows = state s, columns = value pv, K = step j of the chunk.
  const stA: Stage = {
    fast: "w",
    load: (k, w4, tag) => {
      const lines = [`let ${tag}tp = c * ${u(q)} + ${k};`, `let ${tag}t = tmap(${tag}tp);`];
      const parts: string[] = [];
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}s${e} = n0 + ${w4} * 4u + ${u(e)};`);
        parts.push(
          `select(0.0, ${key}(cb, ${tag}t, min(${tag}s${e}, ${u(nN - 1)})), ` +
            `${tag}tp < ${u(L)} && ${tag}s${e} < ${u(nN)})`,
        );
      }
      if (!geo.vector) return { lines, value: vec4Of(parts) };
      // Vector decay: step j's weight in the chunk's end state, exp(Λ_s − G_j,s) (exponent ≤ 0).
      const s4 = `min(n0 / 4u + ${w4}, ${u(geo.state4 / 4 - 1)})`;
      lines.push(
        `let ${tag}g = ${SC}[${u(geo.gOff)} + ((hd * ${u(chunks)} + c) * ${u(q)} + ${k}) * ` +
          `${u(geo.state4 / 4)} + ${s4}];`,
        `let ${tag}lam = ${SC}[${u(geo.lamOff)} + (hd * ${u(chunks)} + c) * ` +
          `${u(geo.state4 / 4)} + ${s4}];`,
      );
      return { lines, value: `${vec4Of(parts)} * exp(${tag}lam - ${tag}g)` };
    },
  };
  const stB: Stage = {
    fast: "w",
    load: (k, w4, tag) => {
      const lines = [
        `let ${tag}tp = c * ${u(q)} + ${k};`,
        `let ${tag}t = tmap(${tag}tp);`,
        `let ${tag}cf = sh_w[${k}];`,
      ];
      const parts: string[] = [];
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}p${e} = p0 + ${w4} * 4u + ${u(e)};`);
        parts.push(
          `select(0.0, ${tag}cf * ${val}(hd, ${tag}t, min(${tag}p${e}, ${u(nP - 1)})), ` +
            `${tag}tp < ${u(L)} && ${tag}p${e} < ${u(nP)})`,
        );
      }
      return { lines, value: vec4Of(parts) };
    },
  };
  const stateBody = [
    `let pt = w % ${u(valueTiles)};`,
    `let nt = (w / ${u(valueTiles)}) % ${u(stateTiles)};`,
    `let hd = (w / ${u(valueTiles * stateTiles)}) % ${u(sizes.heads)};`,
    `let c = w / ${u(valueTiles * stateTiles * sizes.heads)};`,
    `let cb = ${cbOf}(hd);`,
    `let n0 = nt * ${u(st.Mt)};`,
    `let p0 = pt * ${u(st.Nt)};`,
    ...(geo.vector ? chunkScales(geo, threads, hooks) : [
      ...chunkCumsum(geo, threads, hooks),
      // Weight of step j in the chunk's end state: exp(cs_last − cs_j)·w_j (exponent ≤ 0).
      `for (var j = lid; j < ${u(q)}; j = j + ${u(threads)}) {`,
      `  sh_w[j] = exp(sh_cs[${u(q - 1)}] - sh_cs[j]) * sh_w[j];`,
      "}",
      `if (live && lid == 0u && nt == 0u && pt == 0u) { ` +
      `${SC}[${u(geo.lamOff)} + hd * ${u(chunks)} + c] = vec4<f32>(sh_cs[${u(q - 1)}]); }`,
    ]),
    "workgroupBarrier();",
    ...threadCoords(st, "s_", threads),
    ...accDecl(st, "s_"),
    ...gemmLoop({
      tile: st,
      threads,
      a: stA,
      b: stB,
      kBegin: "0u",
      kEnd: u(q),
      tag: "s_",
      shA: "sh_a",
      shB: "sh_b",
    }),
    ...forEachOutput(st, "s_", (row, col4, acc) => [
      `if (live && s_act && n0 + ${row} < ${u(nN)} && p0 / 4u + ${col4} < ${u(value4 / 4)}) {`,
      `  ${SC}[((hd * ${u(chunks)} + c) * ${u(nN)} + n0 + ${row}) * ${u(value4 / 4)} + ` +
      `p0 / 4u + ${col4}] = ${acc};`,
      "}",
    ]),
  ];

  // C·Bᵀ workgroups: rows = key step j, columns = query step i, K = state s.
  const cbLoad = (fn: (t: string, s: string) => string, base: string): Stage => ({
    fast: "k",
    load: (k, w4, tag) => {
      const lines: string[] = [];
      const parts: string[] = [];
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}tp${e} = c * ${u(q)} + ${base} + ${w4} * 4u + ${u(e)};`);
        parts.push(
          `select(0.0, ${fn(`tmap(${tag}tp${e})`, `min(${k}, ${u(nN - 1)})`)}, ` +
            `${tag}tp${e} < ${u(L)} && ${k} < ${u(nN)})`,
        );
      }
      return { lines, value: vec4Of(parts) };
    },
  });
  const cbBody = (query: string) => [
    `let v = w - ${u(nStateWg)};`,
    `let blk = v % ${u(tri)};`,
    `let c = (v / ${u(tri)}) % ${u(chunks)};`,
    `let cb = (v / ${u(tri * chunks)}) % ${u(sizes.cb)};`,
    `let ko = v / ${u(tri * chunks * sizes.cb)};`,
    // Lower-triangular block (it ≥ jt) from its index; the float root is corrected exactly.
    `let ig = u32((sqrt(f32(8u * blk + 1u)) - 1.0) * 0.5);`,
    `let ih = select(ig, ig + 1u, (ig + 1u) * (ig + 2u) / 2u <= blk);`,
    `let it = select(ih, ih - 1u, ih * (ih + 1u) / 2u > blk);`,
    `let jt = blk - it * (it + 1u) / 2u;`,
    `let j0 = jt * ${u(cbt.Mt)};`,
    `let i0 = it * ${u(cbt.Mt)};`,
    ...threadCoords(cbt, "c_", threads),
    ...accDecl(cbt, "c_"),
    ...gemmLoop({
      tile: cbt,
      threads,
      a: cbLoad((t, s) => `${key}(cb, ${t}, ${s})`, "j0"),
      b: cbLoad((t, s) => `${query}(ko, cb, ${t}, ${s})`, "i0"),
      kBegin: "0u",
      kEnd: u(roundUp(nN, cbt.kt)),
      tag: "c_",
      shA: "sh_a",
      shB: "sh_b",
    }),
    ...forEachOutput(cbt, "c_", (row, col4, acc) => [
      `if (live && c_act) {`,
      `  ${SC}[${u(geo.cbOff)} + (((ko * ${u(sizes.cb)} + cb) * ${u(chunks)} + c) * ${u(q)} + ` +
      `j0 + ${row}) * ` +
      `${u(q / 4)} + i0 / 4u + ${col4}] = ${acc};`,
      "}",
    ]),
  ];
  registry.checkLimit(spec.outputs[0].root, limits.maxStorageBuffersPerShaderStage);
  const sa = stagedSizes(st), sc = stagedSizes(cbt);
  const wgsl =
    `// ${name}: chunked SSD, chunk states and C·Bᵀ blocks (q = ${q}, ${chunks} chunks, ` +
    `${sizes.heads} heads, ${sizes.cb} cb, value ${nP}, state ${nN}); tiles ${
      JSON.stringify({ state: st, cb: cbt })
    }
${vec4Arrays(registry.declarations(), [SC])}
${MATH_PRELUDE}
${sharedDecls(geo, Math.max(sa.a, sc.a), Math.max(sa.b, sc.b))}
${timeMap(spec, L)}
${hooks.text()}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${indent(workgroupIndex(total, workgroups[0]))}
${
      query === undefined ? indent(stateBody) : `  if (w < ${u(nStateWg)}) {
${indent(stateBody, "    ")}
  } else {
${indent(cbBody(query), "    ")}
  }`
    }
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** Chunks the pass loads together before updating: loads in flight per thread. */
const PASS_BLOCK = 8;

/**
 * The pass over chunks in blocks: each block loads its chunk states and decays first (so their
 * loads are in flight together; a store may alias a later load, so nothing is reordered across
 * blocks), then stores the running state and updates it.
 */
function passBlocks(
  S: string,
  chunks: number,
  stride: number,
  logDecay: (chunk: string) => string,
): string[] {
  const block = (c0: string, n: number) => {
    const lines: string[] = [];
    for (let k = 0; k < n; k++) {
      lines.push(
        `let i${k} = base + (${c0} + ${u(k)}) * ${u(stride)};`,
        `let x${k} = ${S}[i${k}];`,
        `let a${k} = exp(${logDecay(`${c0} + ${u(k)}`)});`,
      );
    }
    for (let k = 0; k < n; k++) lines.push(`${S}[i${k}] = st;`, `st = a${k} * st + x${k};`);
    return lines;
  };
  const full = Math.floor(chunks / PASS_BLOCK), rest = chunks % PASS_BLOCK;
  const lines: string[] = [];
  if (full > 0) {
    lines.push(
      `for (var cb = 0u; cb < ${u(full * PASS_BLOCK)}; cb = cb + ${u(PASS_BLOCK)}) {`,
      ...block("cb", PASS_BLOCK).map((l) => `  ${l}`),
      "}",
    );
  }
  if (rest > 0) lines.push("{", ...block(u(full * PASS_BLOCK), rest).map((l) => `  ${l}`), "}");
  return lines;
}

/** Kernel 2: the recurrence over chunk states, from the init state; writes the final states. */
function emitPass(ctx: SsdContext, name: string): KernelArtifact {
  const { spec, form, geo, materialized, limits, aliases } = ctx;
  const { sizes, chunks, value4 } = geo;
  const registry = new BindingRegistry(materialized, [geo.scratchBuf, ...spec.finals], aliases);
  const hooks = new SsdHooks(form, spec, registry);
  const S = registry.writeName(0);
  const v4 = value4 / 4;
  const total = sizes.heads * sizes.state * v4;
  const threads = 256;
  const workgroups = foldWorkgroups(
    Math.ceil(total / threads),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const nP = sizes.value;
  const pv = (e: number) => `p4 * 4u + ${u(e)}`;
  const init: string[] = [];
  for (let e = 0; e < 4; e++) {
    init.push(
      spec.scan.init
        ? `select(0.0, ${hooks.init()}(hd, s, min(${pv(e)}, ${u(nP - 1)})), ${pv(e)} < ${u(nP)})`
        : "0.0",
    );
  }
  const finals: string[] = [];
  spec.finals.forEach((_, k) => {
    const fn = hooks.storeFinal(k, registry.writeName(1 + k));
    for (let e = 0; e < 4; e++) {
      finals.push(`if (${pv(e)} < ${u(nP)}) { ${fn}(hd, s, ${pv(e)}, st.${"xyzw"[e]}); }`);
    }
  });
  registry.checkLimit(spec.outputs[0].root, limits.maxStorageBuffersPerShaderStage);
  const stride = sizes.state * v4;
  // Λ of chunk c: one per head and chunk, or (vector decay) per head, chunk and state element.
  const S4 = geo.state4 / 4;
  const passDecay = geo.vector
    ? [`let lam = ${u(geo.lamOff)} + hd * ${u(chunks * S4)} + s / 4u;`, "let lane = s % 4u;"]
    : [`let lam = ${u(geo.lamOff)} + hd * ${u(chunks)};`];
  const logDecay = geo.vector
    ? (c: string) => `${S}[lam + (${c}) * ${u(S4)}][lane]`
    : (c: string) => `${S}[lam + ${c}].x`;
  const wgsl = `// ${name}: chunked SSD, state passing over ${chunks} chunks (in place)
${vec4Arrays(registry.declarations(), [S])}
${MATH_PRELUDE}
${hooks.text()}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * ${u(workgroups[0])}) * ${u(threads)} + lid;
  if (e >= ${u(total)}) { return; }
  let p4 = e % ${u(v4)};
  let s = (e / ${u(v4)}) % ${u(sizes.state)};
  let hd = e / ${u(stride)};
  var st = ${vec4Of(init)};
  let base = hd * ${u(chunks * stride)} + s * ${u(v4)} + p4;
${indent(passDecay)}
${indent(passBlocks(S, chunks, stride, logDecay))}
${indent(finals)}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** Kernel 3: outputs = inter-chunk (C·S') + intra-chunk (masked C·Bᵀ · x), then epilogues. */
function emitOutputs(ctx: SsdContext, name: string): KernelArtifact {
  const { spec, form, geo, materialized, limits, aliases } = ctx;
  const { sizes, q, chunks, value4, tiling } = geo;
  const L = sizes.len, nN = sizes.state, nP = sizes.value;
  const registry = new BindingRegistry(
    materialized,
    spec.outputs.map((o) => o.root),
    aliases,
  );
  const hooks = new SsdHooks(form, spec, registry);
  const SC = registry.read(geo.scratchBuf);
  const t = tiling.out;
  const { threads } = tileThreads(t);
  const rowTiles = q / t.Mt, valueTiles = Math.ceil(value4 / t.Nt);
  const total = sizes.heads * chunks * rowTiles * valueTiles;
  const workgroups = foldWorkgroups(total, limits.maxComputeWorkgroupsPerDimension);
  const cbOf = hooks.cbOf(), val = hooks.value();
  const v4 = value4 / 4;

  const body: string[] = [
    `let pt = w % ${u(valueTiles)};`,
    `let rt = (w / ${u(valueTiles)}) % ${u(rowTiles)};`,
    `let hd = (w / ${u(valueTiles * rowTiles)}) % ${u(sizes.heads)};`,
    `let c = w / ${u(valueTiles * rowTiles * sizes.heads)};`,
    `let cb = ${cbOf}(hd);`,
    `let i0 = rt * ${u(t.Mt)};`,
    `let p0 = pt * ${u(t.Nt)};`,
    ...(geo.vector ? chunkScales(geo, threads, hooks) : chunkCumsum(geo, threads, hooks)),
    ...(geo.vector ? ["workgroupBarrier();"] : []),
    ...threadCoords(t, "o_", threads),
    ...accDecl(t, "o_"),
  ];
  // Part 1 operands: A[i][s] = C_i[s] (read along s), B[s][pv] = S'_c; rows are then scaled
  // by exp(cs_i) (one exponential per row, not per staged element).
  const interA = (k: number): Stage => ({
    fast: "k",
    load: (s, w4, tag) => {
      const lines: string[] = [];
      const parts: string[] = [];
      if (geo.vector) lines.push(`let ${tag}sc = min(${s}, ${u(nN - 1)});`);
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}i${e} = i0 + ${w4} * 4u + ${u(e)};`);
        lines.push(`let ${tag}tp${e} = c * ${u(q)} + ${tag}i${e};`);
        // Vector decay: C_i scaled by exp(G_i,s), the decay from the chunk's start (≤ 0).
        const decayed = geo.vector
          ? ` * exp(${SC}[${u(geo.gOff)} + ((hd * ${u(chunks)} + c) * ${u(q)} + ` +
            `min(${tag}i${e}, ${u(q - 1)})) * ${u(geo.state4 / 4)} + ${tag}sc / 4u]` +
            `[${tag}sc % 4u])`
          : "";
        parts.push(
          `select(0.0, ` +
            `${hooks.query()}(${u(k)}, cb, tmap(${tag}tp${e}), min(${s}, ${u(nN - 1)}))` +
            `${decayed}, ${tag}tp${e} < ${u(L)} && ${s} < ${u(nN)})`,
        );
      }
      return { lines, value: vec4Of(parts) };
    },
  });
  const interB: Stage = {
    fast: "w",
    load: (s, w4, tag) => ({
      lines: [
        `let ${tag}ok = ${s} < ${u(nN)} && p0 / 4u + ${w4} < ${u(v4)};`,
        `let ${tag}ix = ((hd * ${u(chunks)} + c) * ${u(nN)} + min(${s}, ${u(nN - 1)})) * ` +
        `${u(v4)} + min(p0 / 4u + ${w4}, ${u(v4 - 1)});`,
      ],
      value: `select(vec4<f32>(0.0), ${SC}[${tag}ix], ${tag}ok)`,
    }),
  };
  // Part 2 operands: A[i][j] = (C_i·B_j)·exp(cs_i − cs_j)·w_j for j ≤ i, B[j][pv] = x_j.
  const intraA = (k: number): Stage => ({
    fast: "w",
    load: (j, w4, tag) => {
      const lines = [
        geo.vector
          ? `let ${tag}cbv = ${SC}[${u(geo.cbOff)} + (((${u(k)} * ${u(sizes.heads)} + hd) * ` +
            `${u(chunks)} + c) * ${u(q)} + ${j}) * ${u(q / 4)} + i0 / 4u + ${w4}];`
          : `let ${tag}cbv = ${SC}[${u(geo.cbOff)} + (((${u(k)} * ${u(sizes.cb)} + cb) * ` +
            `${u(chunks)} + c) * ${u(q)} + ${j}) * ${u(q / 4)} + i0 / 4u + ${w4}];`,
        ...(geo.vector ? [] : [`let ${tag}csj = sh_cs[${j}];`]),
        `let ${tag}wj = sh_w[${j}];`,
      ];
      const parts: string[] = [];
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}i${e} = i0 + ${w4} * 4u + ${u(e)};`);
        // Masked with select, not a product: blocks above the diagonal were never written. A
        // vector decay's blocks hold the decay already.
        const decay = geo.vector ? "" : ` * exp(sh_cs[${tag}i${e}] - ${tag}csj)`;
        parts.push(
          `select(0.0, ${tag}cbv.${"xyzw"[e]}${decay} * ${tag}wj, ${j} <= ${tag}i${e})`,
        );
      }
      return { lines, value: vec4Of(parts) };
    },
  });
  const intraB: Stage = {
    fast: "w",
    load: (j, w4, tag) => {
      const lines = [`let ${tag}tp = c * ${u(q)} + ${j};`, `let ${tag}t = tmap(${tag}tp);`];
      const parts: string[] = [];
      for (let e = 0; e < 4; e++) {
        lines.push(`let ${tag}p${e} = p0 + ${w4} * 4u + ${u(e)};`);
        parts.push(
          `select(0.0, ${val}(hd, ${tag}t, min(${tag}p${e}, ${u(nP - 1)})), ` +
            `${tag}tp < ${u(L)} && ${tag}p${e} < ${u(nP)})`,
        );
      }
      return { lines, value: vec4Of(parts) };
    },
  };
  // Without init, the state entering chunk 0 is zero: skip its inter-chunk product.
  const interNeeded = chunks > 1 || spec.scan.init !== undefined;
  const interCond = spec.scan.init !== undefined ? "true" : "c > 0u";
  spec.outputs.forEach((_, k) => {
    if (k > 0) body.push(...accDecl(t, "o_", true));
    if (interNeeded) {
      body.push(
        `if (${interCond}) {`,
        ...gemmLoop({
          tile: t,
          threads,
          a: interA(k),
          b: interB,
          kBegin: "0u",
          kEnd: u(roundUp(nN, t.kt)),
          tag: "o_",
          shA: "sh_a",
          shB: "sh_b",
        }).map((l) => `  ${l}`),
        ...(geo.vector
          ? []
          : scaleRows(t, "o_", (row) => `exp(sh_cs[min(i0 + ${row}, ${u(q - 1)})])`))
          .map((l) => `  ${l}`),
        "}",
      );
    }
    body.push(
      ...gemmLoop({
        tile: t,
        threads,
        a: intraA(k),
        b: intraB,
        kBegin: "0u",
        kEnd: `i0 + ${u(t.Mt)}`,
        tag: "o_",
        shA: "sh_a",
        shB: "sh_b",
      }),
    );
    const store = hooks.storeOutput(k, registry.writeName(k));
    body.push(...forEachOutput(t, "o_", (row, col4, acc) => {
      const lines = [
        "{",
        `  let tp = c * ${u(q)} + i0 + ${row};`,
        `  if (live && o_act && tp < ${u(L)}) {`,
        `    let t = tmap(tp);`,
      ];
      for (let e = 0; e < 4; e++) {
        const p = `p0 + ${col4} * 4u + ${u(e)}`;
        lines.push(`    if (${p} < ${u(nP)}) { ${store}(hd, t, ${p}, ${acc}.${"xyzw"[e]}); }`);
      }
      lines.push("  }", "}");
      return lines;
    }));
  });
  registry.checkLimit(spec.outputs[0].root, limits.maxStorageBuffersPerShaderStage);
  const sz = stagedSizes(t);
  const wgsl =
    `// ${name}: chunked SSD outputs (q = ${q}, ${chunks} chunks, ${sizes.heads} heads, ` +
    `value ${nP}, state ${nN}, ${spec.outputs.length} output(s)); tile ${JSON.stringify(t)}
${vec4Arrays(registry.declarations(), [SC])}
${MATH_PRELUDE}
${sharedDecls(geo, sz.a, sz.b)}
${timeMap(spec, L)}
${hooks.text()}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${indent(workgroupIndex(total, workgroups[0]))}
${indent(body)}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}
