/**
 * The two kernels the chunked SSD lowering adds for a **vector decay**: a decay that varies along
 * the state (GLA's gate over the key dimension, HGRN2's forget gate), so that a head's state
 * S_t = diag(a_t)·S_{t−1} + B_t x_tᵀ decays each key row at its own rate. The other kernels
 * (ssd_kernel.ts) take their decay factors per element from what these compute:
 *
 * 0. `gates` — per (head, chunk, 4 state elements): G_j = Σ_{u ≤ j} log a_u, the cumulative log
 *    decay inside the chunk (positions past the end add 0), and Λ = G_{q−1}, into the scratch.
 *    Chunk states then weigh step j by exp(Λ − G_j), and outputs read C_i·exp(G_i) against the
 *    state entering the chunk: every exponent ≤ 0 for decays ≤ 1.
 * 1. `intra` — per (output, head, chunk): the decayed intra-chunk products
 *    P[j][i] = Σ_s C_i,s·B_j,s·exp(G_i,s − G_j,s) for j ≤ i, which the output kernel multiplies by
 *    x_j. The exponential does not factor into a product of bounded terms over the whole chunk
 *    (exp(−G_j) overflows once a chunk decays by more than e^88), so the chunk is cut into
 *    sub-chunks of 16 steps, as FLA's chunk_gla does: for j in an earlier sub-chunk than i, with
 *    R the first step of i's sub-chunk, exp(G_i − G_j) = exp(G_i − G_R)·exp(G_R − G_j), both
 *    factors ≤ 1, and P is a product of C̃_i = C_i·exp(G_i − G_R) and B̃_j = B_j·exp(G_R − G_j)
 *    (one B̃ per sub-chunk R); within a sub-chunk each term takes its own exponential.
 *
 * @module
 */

import { BindingRegistry, foldWorkgroups, type KernelArtifact } from "./artifact.ts";
import { indent } from "./kernel_header.ts";
import { SsdHooks } from "./ssd_hooks.ts";
import {
  roundUp,
  type SsdContext,
  timeMap,
  vec4Arrays,
  vec4Of,
  workgroupIndex,
} from "./ssd_parts.ts";
import { MATH_PRELUDE, u32Literal as u } from "./wgsl_math.ts";

/** Steps of a sub-chunk (the chunk itself when shorter). */
const SUB_CHUNK = 16;
/** State elements staged per step of the intra kernel's loop. */
const SLICE = 8;

/** Kernel 0: the in-chunk cumulative log decays G and the chunk decays Λ, per state element. */
export function emitGates(ctx: SsdContext, name: string): KernelArtifact {
  const { spec, form, geo, materialized, limits, aliases } = ctx;
  const { sizes, q, chunks } = geo;
  const nN = sizes.state, S4 = geo.state4 / 4;
  const registry = new BindingRegistry(materialized, [geo.scratchBuf], aliases);
  const hooks = new SsdHooks(form, spec, registry);
  const SC = registry.writeName(0);
  const dec = hooks.logDecayAt();
  const total = sizes.heads * chunks * S4;
  const threads = 256;
  const workgroups = foldWorkgroups(
    Math.ceil(total / threads),
    limits.maxComputeWorkgroupsPerDimension,
  );
  const parts = [0, 1, 2, 3].map((e) =>
    `select(0.0, ${dec}(hd, t, min(n4 * 4u + ${u(e)}, ${u(nN - 1)})), ` +
    `ok && n4 * 4u + ${u(e)} < ${u(nN)})`
  );
  registry.checkLimit(spec.outputs[0].root, limits.maxStorageBuffersPerShaderStage);
  const wgsl =
    `// ${name}: chunked SSD with a vector decay, in-chunk cumulative log decays (q = ${q})
${vec4Arrays(registry.declarations(), [SC])}
${MATH_PRELUDE}
${timeMap(spec, sizes.len)}
${hooks.text()}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wid.x + wid.y * ${u(workgroups[0])}) * ${u(threads)} + lid;
  if (e >= ${u(total)}) { return; }
  let n4 = e % ${u(S4)};
  let hc = e / ${u(S4)};
  let hd = hc / ${u(chunks)};
  let c = hc % ${u(chunks)};
  var g = vec4<f32>(0.0);
  for (var j = 0u; j < ${u(q)}; j = j + 1u) {
    let tp = c * ${u(q)} + j;
    let ok = tp < ${u(sizes.len)};
    let t = tmap(tp);
    g = g + ${vec4Of(parts)};
    ${SC}[${u(geo.gOff)} + (hc * ${u(q)} + j) * ${u(S4)} + n4] = g;
  }
  ${SC}[${u(geo.lamOff)} + hc * ${u(S4)} + n4] = g;
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}

/** Kernel 1b: the decayed intra-chunk products P[j][i] (see the module doc). */
export function emitIntra(ctx: SsdContext, name: string): KernelArtifact {
  const { spec, form, geo, materialized, limits, aliases } = ctx;
  const { sizes, q, chunks } = geo;
  const L = sizes.len, nN = sizes.state, S4 = geo.state4 / 4;
  const registry = new BindingRegistry(materialized, [geo.scratchBuf], aliases);
  const hooks = new SsdHooks(form, spec, registry);
  const SC = registry.writeName(0);
  const key = hooks.key(), query = hooks.query(), cbOf = hooks.cbOf();
  const sub = Math.min(SUB_CHUNK, q), subs = q / sub, q4 = q / 4;
  // Micro-blocks: 4 key steps j × 4 query steps i, on or below the diagonal (jb ≤ ib): those
  // inside the diagonal sub-blocks, then those across sub-chunks (s4² per pair of sub-chunks).
  const s4 = Math.min(SUB_CHUNK, q) / 4;
  const subTri = (s4 * (s4 + 1)) / 2;
  const nearBlocks = (q / (4 * s4)) * subTri;
  const blocks = (q4 * (q4 + 1)) / 2;
  const threads = Math.min(256, limits.maxComputeInvocationsPerWorkgroup, roundUp(blocks, 32));
  const per = Math.ceil(blocks / threads);
  // B̃ for the sub-chunk starting at R = sub·r (r ≥ 1) holds rows j < R, from row offset(r).
  const offset = (r: number) => (sub * r * (r - 1)) / 2;
  const refRows = offset(subs);
  const total = sizes.outputs * sizes.heads * chunks;
  const workgroups = foldWorkgroups(total, limits.maxComputeWorkgroupsPerDimension);
  const slices = Math.ceil(nN / SLICE);
  // Staged arrays are step-major: [s'][row / 4] as vec4s of 4 consecutive rows.
  const at = (sp: string, row4: string, rows4 = q4) => `${sp} * ${u(rows4)} + ${row4}`;

  // The slice's k, q and G, loaded into registers one slice ahead (the next slice's global
  // loads are in flight while this one is scaled and multiplied), then staged.
  const stageItems = Math.ceil((SLICE * q4) / threads);
  const itemAt = (i: number) => [
    `let sl${i} = lid + ${u(i * threads)};`,
    `let sp${i} = sl${i} % ${u(SLICE)};`,
    `let r4${i} = sl${i} / ${u(SLICE)};`,
  ];
  const itemGuard = (i: number) =>
    (i + 1) * threads > SLICE * q4 ? `if (sl${i} < ${u(SLICE * q4)}) ` : "";
  const loadSlice = (s0: string): string[] => {
    const lines: string[] = [];
    for (let i = 0; i < stageItems; i++) {
      const kv: string[] = [], qv: string[] = [], gv: string[] = [];
      const body = [
        `let s = ${s0} + sp${i};`,
        `let sc = min(s, ${u(nN - 1)});`,
        `let gi = ${u(geo.gOff)} + (hc * ${u(q)} + r4${i} * 4u) * ${u(S4)} + sc / 4u;`,
        "let gl = sc % 4u;",
      ];
      for (let e = 0; e < 4; e++) {
        body.push(
          `let tp${e} = c * ${u(q)} + r4${i} * 4u + ${u(e)};`,
          `let ok${e} = s < ${u(nN)} && tp${e} < ${u(L)};`,
          `let t${e} = tmap(tp${e});`,
        );
        kv.push(`select(0.0, ${key}(cb, t${e}, sc), ok${e})`);
        qv.push(`select(0.0, ${query}(ko, cb, t${e}, sc), ok${e})`);
        gv.push(`${SC}[gi + ${u(e * S4)}][gl]`);
      }
      body.push(`pk${i} = ${vec4Of(kv)};`, `pq${i} = ${vec4Of(qv)};`, `pg${i} = ${vec4Of(gv)};`);
      lines.push(`${itemGuard(i)}{`, ...body.map((l) => `  ${l}`), "}");
    }
    return lines;
  };
  const prologue: string[] = [];
  for (let i = 0; i < stageItems; i++) {
    prologue.push(
      ...itemAt(i),
      `var pk${i} = vec4<f32>(0.0);`,
      `var pq${i} = vec4<f32>(0.0);`,
      `var pg${i} = vec4<f32>(0.0);`,
    );
  }
  prologue.push(...loadSlice("0u"));
  const stage: string[] = [];
  for (let i = 0; i < stageItems; i++) {
    stage.push(
      `${itemGuard(i)}{`,
      `  sh_k[${at(`sp${i}`, `r4${i}`)}] = pk${i};`,
      `  sh_q[${at(`sp${i}`, `r4${i}`)}] = pq${i};`,
      `  sh_g[${at(`sp${i}`, `r4${i}`)}] = pg${i};`,
      "}",
    );
  }
  stage.push(
    "workgroupBarrier();",
    `if (s0 + ${u(SLICE)} < ${u(slices * SLICE)}) {`,
    ...loadSlice(`(s0 + ${u(SLICE)})`).map((l) => `  ${l}`),
    "}",
    // C̃_i = C_i·exp(G_i − G_R), R the first step of i's sub-chunk.
    `for (var sl = lid; sl < ${u(SLICE * q4)}; sl = sl + ${u(threads)}) {`,
    `  let sp = sl % ${u(SLICE)};`,
    `  let r4 = sl / ${u(SLICE)};`,
    `  let g0 = sh_g[${at("sp", `(r4 / ${u(sub / 4)}) * ${u(sub / 4)}`)}].x;`,
    `  sh_qt[${at("sp", "r4")}] = sh_q[${at("sp", "r4")}] * ` +
      `exp(sh_g[${at("sp", "r4")}] - vec4<f32>(g0));`,
    "}",
  );
  // B̃_j = B_j·exp(G_R − G_j) for each sub-chunk start R = sub·r and j < R.
  for (let r = 1; r < subs; r++) {
    const rows4 = (sub * r) / 4;
    stage.push(
      `for (var sl = lid; sl < ${u(SLICE * rows4)}; sl = sl + ${u(threads)}) {`,
      `  let sp = sl % ${u(SLICE)};`,
      `  let r4 = sl / ${u(SLICE)};`,
      `  let g0 = sh_g[${at("sp", u((sub * r) / 4))}].x;`,
      `  sh_kt[${at("sp", `${u(offset(r) / 4)} + r4`, refRows / 4)}] = ` +
        `sh_k[${at("sp", "r4")}] * exp(vec4<f32>(g0) - sh_g[${at("sp", "r4")}]);`,
      "}",
    );
  }
  stage.push("workgroupBarrier();");

  const acc = (p: number, r: number) => `a${p}_${r}`;
  const lanes = ["x", "y", "z", "w"];
  const decode: string[] = [];
  const accumulate: string[] = [];
  const store: string[] = [];
  for (let p = 0; p < per; p++) {
    // The micro-block of thread index mb: first those inside a diagonal sub-block (an
    // exponential per term), then those across sub-chunks (products), so that a subgroup
    // mostly takes one of the two paths.
    decode.push(
      `let mb${p} = lid + ${u(p * threads)};`,
      `let mv${p} = min(mb${p}, ${u(blocks - 1)});`,
      `let far${p} = mv${p} >= ${u(nearBlocks)};`,
      `let nr${p} = tri_row(mv${p} % ${u(subTri)});`,
      `let nsub${p} = mv${p} / ${u(subTri)};`,
      `let fv${p} = max(mv${p}, ${u(nearBlocks)}) - ${u(nearBlocks)};`,
      `let fr${p} = tri_row(fv${p} / ${u(s4 * s4)});`,
      `let fw${p} = fv${p} % ${u(s4 * s4)};`,
      `let ib${p} = select(nsub${p} * ${u(s4)} + nr${p}, (fr${p} + 1u) * ${u(s4)} + ` +
        `fw${p} / ${u(s4)}, far${p});`,
      `let jb${p} = select(nsub${p} * ${u(s4)} + mv${p} % ${u(subTri)} - ` +
        `nr${p} * (nr${p} + 1u) / 2u, (fv${p} / ${u(s4 * s4)} - fr${p} * (fr${p} + 1u) / 2u) * ` +
        `${u(s4)} + fw${p} % ${u(s4)}, far${p});`,
      `let isub${p} = ib${p} / ${u(s4)};`,
    );
    for (let r = 0; r < 4; r++) decode.push(`var ${acc(p, r)} = vec4<f32>(0.0);`);
    const far: string[] = [], near: string[] = [];
    if (subs > 1) {
      const kRow = `(isub${p} * (isub${p} - 1u) / 2u) * ${u(sub / 4)} + jb${p}`;
      far.push(`let kq${p} = ${kRow};`);
    }
    for (let sp = 0; sp < SLICE; sp++) {
      if (subs > 1) {
        far.push(
          `{`,
          `  let kv = sh_kt[${at(u(sp), `kq${p}`, refRows / 4)}];`,
          `  let qv = sh_qt[${at(u(sp), `ib${p}`)}];`,
          ...[0, 1, 2, 3].map((r) =>
            `  ${acc(p, r)} = fma(vec4<f32>(kv.${lanes[r]}), qv, ${acc(p, r)});`
          ),
          `}`,
        );
      }
      near.push(
        `{`,
        `  let kv = sh_k[${at(u(sp), `jb${p}`)}];`,
        `  let qv = sh_q[${at(u(sp), `ib${p}`)}];`,
        `  let gj = sh_g[${at(u(sp), `jb${p}`)}];`,
        `  let gi = sh_g[${at(u(sp), `ib${p}`)}];`,
        ...[0, 1, 2, 3].map((r) =>
          `  ${acc(p, r)} = fma(kv.${lanes[r]} * qv, exp(gi - vec4<f32>(gj.${lanes[r]})), ` +
          `${acc(p, r)});`
        ),
        `}`,
      );
    }
    accumulate.push(
      `if (mb${p} < ${u(blocks)}) {`,
      ...(subs > 1 ? [`  if (far${p}) {`, ...indent(far, "    ").split("\n"), "  } else {"] : []),
      ...indent(near, subs > 1 ? "    " : "  ").split("\n"),
      ...(subs > 1 ? ["  }"] : []),
      "}",
    );
    for (let r = 0; r < 4; r++) {
      // Terms above the diagonal (j > i) may hold an overflowed exponential: zeroed here.
      store.push(
        `if (live && mb${p} < ${u(blocks)}) {`,
        `  let j = jb${p} * 4u + ${u(r)};`,
        `  let iv = vec4<u32>(ib${p} * 4u) + vec4<u32>(0u, 1u, 2u, 3u);`,
        `  ${SC}[${u(geo.cbOff)} + ((base + j) * ${u(q4)}) + ib${p}] = ` +
          `select(vec4<f32>(0.0), ${acc(p, r)}, iv >= vec4<u32>(j));`,
        "}",
      );
    }
  }

  const shared = [
    `var<workgroup> sh_k: array<vec4<f32>, ${SLICE * q4}>;`,
    `var<workgroup> sh_q: array<vec4<f32>, ${SLICE * q4}>;`,
    `var<workgroup> sh_g: array<vec4<f32>, ${SLICE * q4}>;`,
    `var<workgroup> sh_qt: array<vec4<f32>, ${SLICE * q4}>;`,
    ...(refRows > 0 ? [`var<workgroup> sh_kt: array<vec4<f32>, ${(SLICE * refRows) / 4}>;`] : []),
  ];
  registry.checkLimit(spec.outputs[0].root, limits.maxStorageBuffersPerShaderStage);
  const wgsl =
    `// ${name}: chunked SSD with a vector decay, intra-chunk products (q = ${q}, ${chunks} ` +
    `chunks, ${sizes.heads} heads, state ${nN}, sub-chunks of ${sub})
${vec4Arrays(registry.declarations(), [SC])}
${MATH_PRELUDE}
${shared.join("\n")}
// The row r of index v in a row-major lower triangle: r(r + 1)/2 ≤ v < (r + 1)(r + 2)/2 (the
// float root corrected exactly).
fn tri_row(v: u32) -> u32 {
  let g = u32((sqrt(f32(8u * v + 1u)) - 1.0) * 0.5);
  let h = select(g, g + 1u, (g + 1u) * (g + 2u) / 2u <= v);
  return select(h, h - 1u, h * (h + 1u) / 2u > v);
}
${timeMap(spec, L)}
${hooks.text()}
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${indent(workgroupIndex(total, workgroups[0]))}
  let c = w % ${u(chunks)};
  let hd = (w / ${u(chunks)}) % ${u(sizes.heads)};
  let ko = w / ${u(chunks * sizes.heads)};
  let cb = ${cbOf}(hd);
  let hc = hd * ${u(chunks)} + c;
  let base = ((ko * ${u(sizes.heads)} + hd) * ${u(chunks)} + c) * ${u(q)};
${indent(decode)}
${indent(prologue)}
  for (var s0 = 0u; s0 < ${u(slices * SLICE)}; s0 = s0 + ${u(SLICE)}) {
${indent(stage, "    ")}
${indent(accumulate, "    ")}
    workgroupBarrier();
  }
${indent(store)}
}
`;
  return { name, wgsl, workgroups, reads: registry.reads, writes: registry.writes, kind: "scan" };
}
