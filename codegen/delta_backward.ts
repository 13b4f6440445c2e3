/**
 * The delta rule's gradient kernel (`delta_grad` nodes; dsl/vjp_delta.ts has the equations):
 * one workgroup per batch position holds every value row of the state, `lanes` threads a row
 * (lane l owns keys l, l + lanes, …), so the sums over a row's keys are subgroup shuffles and
 * the sums over rows (dq, dk, dβ) are workgroup-memory reductions.
 *
 * Phase 1 runs the forward recurrence and stores the state every {@link CHECKPOINT} steps.
 * Phase 2 walks the steps backwards with the adjoint state G in registers; before each step it
 * recomputes the state the step started from out of the chunk's checkpoint (up to
 * CHECKPOINT − 1 forward steps, about CHECKPOINT / 2 on average), so no state is stored per
 * step. One kernel writes the gradients of every operand asked for with the same cotangents
 * (the nodes are siblings: the same forward, `ct` and `ctState`), over one walk.
 *
 * This is the first, general form: correct at any size that fits a workgroup (dv rows), not
 * yet fast (one workgroup per batch position, a forward recomputation per step, a workgroup
 * reduction per step). A chunked backward, as for the forward, is the way to speed.
 *
 * @module
 */

import type { DeltaGradNode, Node } from "../dsl/ir.ts";
import { BindingRegistry, foldWorkgroups, type KernelArtifact, scratch } from "./artifact.ts";
import { batchEnv, clampIndex, DeltaLoads, deltaShapes, laneSums } from "./delta_shapes.ts";
import { maxDeltaLanes } from "./delta_recurrent.ts";
import { ExprEmitter, offsetExpr } from "./expr.ts";
import { header, indent } from "./kernel_header.ts";
import type { DeviceLimits } from "./limits.ts";
import { f32Literal, u32Literal as u } from "./wgsl_math.ts";

/** Steps between stored states (the recomputation before a step is at most this minus one). */
const CHECKPOINT = 16;
/** Keys one lane holds, at most, while more lanes fit the workgroup. */
const KEYS_PER_LANE = 16;
/** Workgroup memory for the row reductions, at most (bytes). */
const REDUCE_BYTES = 16384;

/**
 * Emits the kernel computing `nodes`: gradients of one delta rule's operands with the same
 * cotangents (siblings, each `wrt` at most once).
 */
export function emitDeltaGrad(
  nodes: readonly DeltaGradNode[],
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
): KernelArtifact {
  const node = nodes[0];
  const f = node.of;
  const s = deltaShapes(f);
  const maxThreads = limits.maxComputeInvocationsPerWorkgroup;
  if (s.dv > maxThreads) {
    throw new Error(
      `deltaRule gradient: value size ${s.dv} is more than the ${maxThreads} threads of a ` +
        `workgroup, which holds every value row`,
    );
  }
  let lanes = 1;
  while (
    lanes < maxDeltaLanes(limits) && Math.ceil(s.dk / lanes) > KEYS_PER_LANE &&
    s.dv * lanes * 2 <= maxThreads
  ) lanes *= 2;
  const perLane = Math.ceil(s.dk / lanes);
  const threads = s.dv * lanes;
  const chunks = Math.ceil(s.len / CHECKPOINT);
  const ck = scratch(`${name}_checkpoints`, s.batches * chunks * s.dv * s.dk);
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (ck.elements * 4 > limit) {
    throw new Error(
      `deltaRule gradient: its checkpoints need ${ck.elements * 4} bytes; the device binds at ` +
        `most ${limit}`,
    );
  }
  const reg = new BindingRegistry(materialized, [...nodes, ck], aliases);
  const ckName = reg.writeName(nodes.length);
  const top = new ExprEmitter(reg.lookup, "pe");
  const { lines: batchLines, env } = batchEnv(s, "bpos");
  const loads = new DeltaLoads(f, env);
  const keyOf = (m: number) => lanes === 1 ? u(m) : m === 0 ? "lane" : `(lane + ${u(lanes * m)})`;
  const inKeys = (m: number) => (m + 1) * lanes <= s.dk ? "" : `${keyOf(m)} < ${u(s.dk)}`;
  const masked = (m: number, v: string) => inKeys(m) ? `select(0.0, ${v}, ${inKeys(m)})` : v;
  const keys = Array.from({ length: perLane }, (_, m) => m);
  let forks = 0;
  // A block of lines loading step t's α, β, v (this row), the lane's keys (and queries, dy).
  const stepValues = (t: string, backward: boolean) => {
    const e = top.fork(`s${forks++}`);
    const values: [string, string][] = [
      ["al", loads.alpha(e, t)],
      ["be", loads.beta(e, t)],
      ["vv", loads.value(e, t, "vi")],
      ...keys.map((m): [string, string] => [
        `k${m}`,
        masked(m, loads.key(e, "k", t, clampIndex(keyOf(m), s.dk))),
      ]),
    ];
    if (backward) {
      values.push(
        ["dy", node.ct ? e.emit(node.ct, { ...env, [f.axis]: t, [f.valueAxis]: "vi" }) : "0.0"],
        ...keys.map((m): [string, string] => [
          `q${m}`,
          masked(m, loads.key(e, "q", t, clampIndex(keyOf(m), s.dk))),
        ]),
      );
    }
    return [...e.lines, ...values.map(([n, v]) => `let ${n}: f32 = ${v};`)];
  };
  // S_t[i] = α(S_{t−1}[i] − β a k) + β v k, a = S_{t−1}[i]·k (the forward's step on `s`).
  const forwardStep = (t: string) => [
    "{",
    ...stepValues(t, false).map((l) => `  ${l}`),
    `  var a: f32 = ${keys.map((m) => `s[${m}] * k${m}`).join(" + ")};`,
    ...laneSums(["a"], lanes).map((l) => `  ${l}`),
    "  let uu: f32 = be * (vv - al * a);",
    ...keys.map((m) => `  s[${m}] = fma(al, s[${m}], uu * k${m});`),
    "}",
  ];
  const ckAt = (chunk: string, m: number) =>
    `((bpos * ${u(chunks)} + ${chunk}) * ${u(s.dv)} + row) * ${u(s.dk)} + ${keyOf(m)}`;
  const storeCk = (chunk: string) =>
    keys.map((m) => {
      const st = `${ckName}[${ckAt(chunk, m)}] = s[${m}];`;
      return inKeys(m) ? `if (${inKeys(m)}) { ${st} }` : st;
    });
  const loadCk = (chunk: string) =>
    keys.map((m) =>
      `s[${m}] = ${
        inKeys(m)
          ? `select(0.0, ${ckName}[${ckAt(chunk, m)}], ${inKeys(m)})`
          : `${ckName}[${ckAt(chunk, m)}]`
      };`
    );

  // Each gradient's array and offsets.
  const outOf = (wrt: DeltaGradNode["wrt"]) => {
    const i = nodes.findIndex((n) => n.wrt === wrt);
    const at = (extra: Record<string, string>) => offsetExpr(nodes[i], { ...env, ...extra });
    return { name: reg.writeName(i), at };
  };
  // The row reductions: each thread's per-key values (vector) or its row's value (scalar).
  const budget = Math.floor(Math.min(REDUCE_BYTES, limits.maxComputeWorkgroupStorageSize) / 4);
  const perRound = Math.max(1, Math.min(perLane, Math.floor(budget / threads)));
  const redSize = threads * perRound;
  const reduceKeys = (wrt: "k" | "q", value: (m: number) => string, t: string): string[] => {
    const out = outOf(wrt);
    const lines: string[] = [];
    for (let r0 = 0; r0 < perLane; r0 += perRound) {
      const round = Math.min(perRound, perLane - r0);
      for (let mm = 0; mm < round; mm++) {
        lines.push(`red[${u(mm * threads)} + lid] = ${value(r0 + mm)};`);
      }
      lines.push(
        "workgroupBarrier();",
        `for (var x: u32 = lid; x < ${u(lanes * round)}; x += ${u(threads)}) {`,
        `  let ln = x % ${u(lanes)};`,
        `  let mm = x / ${u(lanes)};`,
        `  let key = ln + (${u(r0)} + mm) * ${u(lanes)};`,
        `  if (key < ${u(s.dk)}) {`,
        "    var acc: f32 = 0.0;",
        `    for (var r: u32 = 0u; r < ${u(s.dv)}; r++) { acc += red[mm * ${u(threads)} + r * ${
          u(lanes)
        } + ln]; }`,
        `    ${out.name}[${out.at({ [f.axis]: t, [f.keyAxis]: "key" })}] = acc;`,
        "  }",
        "}",
        "workgroupBarrier();",
      );
    }
    return lines;
  };
  const scale = f32Literal(f.scale);
  // Step t of the walk back: G already holds ∂L/∂S_t from later steps; s is S_{t−1}.
  const wrtLines: Record<DeltaGradNode["wrt"], () => string[]> = {
    v: () => {
      const out = outOf("v");
      return [
        `if (lane == 0u) { ${out.name}[${
          out.at({ [f.axis]: "t", [f.valueAxis]: "row" })
        }] = be * b; }`,
      ];
    },
    beta: () => [
      `red[lid] = select(0.0, b * (vv - al * a), lane == 0u);`,
      "workgroupBarrier();",
      "if (lid == 0u) {",
      "  var acc: f32 = 0.0;",
      `  for (var r: u32 = 0u; r < ${u(s.dv)}; r++) { acc += red[r * ${u(lanes)}]; }`,
      `  ${outOf("beta").name}[${outOf("beta").at({ [f.axis]: "t" })}] = acc;`,
      "}",
      "workgroupBarrier();",
    ],
    k: () => reduceKeys("k", (m) => `uu * g[${m}] - al * be * b * s[${m}]`, "t"),
    q: () => reduceKeys("q", (m) => `${scale} * dy * fma(al, s[${m}], uu * k${m})`, "t"),
    init: () => [],
  };
  const backwardStep = [
    ...stepValues("t", true),
    ...keys.map((m) => `g[${m}] = fma(${scale} * dy, q${m}, g[${m}]);`),
    `var a: f32 = ${keys.map((m) => `s[${m}] * k${m}`).join(" + ")};`,
    `var b: f32 = ${keys.map((m) => `g[${m}] * k${m}`).join(" + ")};`,
    ...laneSums(["a", "b"], lanes),
    "let uu: f32 = be * (vv - al * a);",
    ...nodes.flatMap((n) => wrtLines[n.wrt]()),
    ...keys.map((m) => `g[${m}] = al * (g[${m}] - be * b * k${m});`),
  ];
  const initState = keys.map((m) =>
    `s[${m}] = ${masked(m, loads.init(top, "vi", clampIndex(keyOf(m), s.dk)))};`
  );
  const initAdjoint = keys.map((m) => {
    const v = node.ctState
      ? top.emit(node.ctState, {
        ...env,
        [f.valueAxis]: "vi",
        [f.keyAxis]: clampIndex(keyOf(m), s.dk),
      })
      : "0.0";
    return `g[${m}] = ${masked(m, v)};`;
  });
  const finalLines = !nodes.some((n) => n.wrt === "init") ? [] : keys.map((m) => {
    const out = outOf("init");
    const st = `${out.name}[${out.at({ [f.valueAxis]: "row", [f.keyAxis]: keyOf(m) })}] = g[${m}];`;
    return inKeys(m) ? `if (${inKeys(m)}) { ${st} }` : st;
  });
  const body = [
    ...initState,
    `for (var t: u32 = 0u; t < ${u(s.len)}; t++) {`,
    `  if (t % ${u(CHECKPOINT)} == 0u) {`,
    indent(storeCk(`t / ${u(CHECKPOINT)}`), "    "),
    "  }",
    indent(forwardStep("t"), "  "),
    "}",
    ...initAdjoint,
    `for (var cj: u32 = 0u; cj < ${u(chunks)}; cj++) {`,
    `  let chunk = ${u(chunks - 1)} - cj;`,
    `  let t0 = chunk * ${u(CHECKPOINT)};`,
    `  for (var tt: u32 = min(t0 + ${u(CHECKPOINT)}, ${u(s.len)}); tt > t0; tt--) {`,
    "    let t = tt - 1u;",
    indent(loadCk("chunk"), "    "),
    "    for (var r: u32 = t0; r < t; r++) {",
    indent(forwardStep("r"), "      "),
    "    }",
    indent(backwardStep, "    "),
    "  }",
    "}",
    ...finalLines,
  ];
  reg.checkLimit(node, limits.maxStorageBuffersPerShaderStage);
  const shared = nodes.every((n) => n.wrt === "v" || n.wrt === "init")
    ? []
    : [`var<workgroup> red: array<f32, ${Math.max(redSize, threads)}>;`];
  const wgsl = `${header(reg, threads, shared)}
  if (wid >= ${u(s.batches)}) { return; }
  let bpos = wid;
  let row = lid / ${u(lanes)};
  let lane = lid % ${u(lanes)};
  let vi = row;
${indent(batchLines, "  ")}
${indent(top.lines, "  ")}
  var s: array<f32, ${perLane}>;
  var g: array<f32, ${perLane}>;
${indent(body, "  ")}
}
`;
  return {
    name,
    wgsl,
    workgroups: foldWorkgroups(s.batches, limits.maxComputeWorkgroupsPerDimension),
    reads: reg.reads,
    writes: reg.writes,
    kind: "scan",
  };
}
