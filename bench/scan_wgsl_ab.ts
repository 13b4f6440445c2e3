/**
 * A/B of textual edits to the compiled tiled scan kernel: each edit moves one detail of the
 * generated WGSL toward the hand-written STK kernel (bench/scan_hand.ts), so the timings show
 * which detail the driver's compiler cares about. Every edited kernel runs on the same buffers
 * and is checked against the unedited one; times are medians of interleaved rounds.
 *
 *   deno run -A bench/scan_wgsl_ab.ts [--b 8 --l 4096 --d 1536] [--unroll 4] [--rounds 3]
 *     [--only "edit;edit"] [--dump "edit"] [--strategy JSON] [--hand kernel.wgsl]
 *     [--raw "a.wgsl;b.wgsl"]
 *
 * `--hand` adds a hand-written kernel (scan_hand.ts `--dump NAME --dump-to FILE`: bindings in
 * the order x, dt, z, B, C, A, D, dtBias, y) run and timed exactly like the compiled one: its
 * bindings are renumbered to the compiled kernel's buffer order.
 *
 * The edits are regular expressions over the generated text (a measuring tool only: nothing
 * here is used by the compiler). An edit that finds nothing to change is reported, not timed.
 * Edits named "timing only" break the result on purpose (their check reports the mismatch): they
 * remove one cost (the decays' exponentials, the item loads' misses, the lane sums' stores…) to
 * show what it costs. The edits of the lane sums (partial stores, one lane's sum) apply to
 * `--strategy '{"tileReduce":"workgroup"}'`, the form before the shuffles. The check compares
 * with the first kernel's output (before 2026-12-03 evening it read a missing output name and
 * compared nothing).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { generateKernels } from "../codegen/compile_graph.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { trace } from "../dsl/trace.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { deviceLimits } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { GpuProgram } from "../runtime/program.ts";
import { copyElements, copyKernelBenchmark } from "./copy_kernel.ts";
import { PHASE_EDITS } from "./scan_ab_phases.ts";
import { SCAN_SHAPE_OPTIONS, scanBenchBytes, scanBenchInputs } from "./scan_inputs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ...SCAN_SHAPE_OPTIONS,
    unroll: { type: "string", default: "4" },
    rounds: { type: "string", default: "3" },
    iterations: { type: "string", default: "20" },
    dump: { type: "string", default: "" },
    only: { type: "string", default: "" },
    strategy: { type: "string", default: "" },
    hand: { type: "string", default: "" },
    raw: { type: "string", default: "" },
  },
  strict: true,
});
const s = { b: Number(values.b), l: Number(values.l), d: Number(values.d), n: 16 };
const bytes = scanBenchBytes(s);
// The tiled kernel with `--unroll`, or any strategy as JSON (`--strategy '{"tileSteps":0}'`).
const strategy: ScanStrategy = values.strategy
  ? JSON.parse(values.strategy)
  : { tileSteps: 16, workgroup: 128, unroll: Number(values.unroll) };

/** One vec2 read of (Δ, Δ·x) per step, its component 0 taken from it. */
function vec2Reads(w: string): string {
  return w.replace(
    /let (v\d+): f32 = sk_sd\[([^\]]+)\]\[cl\]\[0\];/g,
    (_, v, row) => `let ${v}_sd = sk_sd[${row}][cl];\n      let ${v}: f32 = ${v}_sd[0];`,
  );
}

/** As vec2Reads, and component 1 taken from the same vector. */
function vec2ReadsShared(w: string): string {
  const lines = vec2Reads(w).split("\n");
  const lastOfRow = new Map<string, string>();
  return lines.map((line) => {
    const first = line.match(/let (v\d+)_sd = sk_sd\[([^\]]+)\]\[cl\];/);
    if (first) lastOfRow.set(first[2], `${first[1]}_sd`);
    return line.replace(
      /let (v\d+): f32 = sk_sd\[([^\]]+)\]\[cl\]\[1\];/,
      (m, v, row) => (lastOfRow.has(row) ? `let ${v}: f32 = ${lastOfRow.get(row)}[1];` : m),
    );
  }).join("\n");
}

/** The epilogue's `if (ivalid) { … }` guards dropped (valid when the workgroups divide). */
function noGuards(w: string): string {
  return w.replace(/if \(ivalid\) \{\n([\s\S]*?)\n {4}\}/g, "{\n$1\n    }");
}

/** The tile loop as `for (sgu = 0; sgu < T; sgu += U)` like the hand kernel's. */
function stepLoop(w: string): string {
  return w.replace(
    /for \(var sg: u32 = 0u; sg < (\d+)u; sg\+\+\) \{\n(\s*)let sgu = sg \* (\d+)u;/,
    (_, n, ind, u) =>
      `for (var sgu: u32 = 0u; sgu < ${Number(n) * Number(u)}u; sgu += ${u}u) {\n${ind}`,
  );
}

/** The four scalar states declared as one vec4 `hv`, with the four A·log2 e as `qv`. */
function vec4StateDeclared(w: string): string {
  return w.replace(
    /var h0: f32 = 0\.0;\n\s*var h1: f32 = 0\.0;\n\s*var h2: f32 = 0\.0;\n\s*var h3: f32 = 0\.0;/,
    "var hv = vec4<f32>(0.0);\n  let qv = vec4<f32>(q0_log2e, q1_log2e, q2_log2e, q3_log2e);",
  );
}

/** The four scalar states as one vec4 updated with vector exp2 (the hand kernel's form). */
function vec4State(w: string): string {
  let out = vec4StateDeclared(w);
  // A step: four `h_i = e_i * h_i + b_i;` lines then the contraction over them.
  out = out.replace(
    /h0 = (v\d+) \* h0 \+ (v\d+);\n\s*h1 = (v\d+) \* h1 \+ (v\d+);\n\s*h2 = (v\d+) \* h2 \+ (v\d+);\n\s*h3 = (v\d+) \* h3 \+ (v\d+);\n(\s*)(sk_yp\[[^\]]+\]\[lid\]) = (v\d+) \* h0 \+ (v\d+) \* h1 \+ (v\d+) \* h2 \+ (v\d+) \* h3;/g,
    (_m, _e0, b0, _e1, b1, _e2, b2, _e3, b3, ind, yp, c0, c1, c2, c3) =>
      `hv = exp2(${_e0}_x * qv) * hv + vec4<f32>(${b0}, ${b1}, ${b2}, ${b3});\n${ind}${yp} = ` +
      `dot(vec4<f32>(${c0}, ${c1}, ${c2}, ${c3}), hv);`,
  );
  // exp2 of each state's decay becomes one vector exp2 of Δ·(A·log2 e): keep Δ, drop the four.
  out = out.replace(
    /let (v\d+): f32 = exp2\((v\d+) \* q0_log2e\);/g,
    (_m, v, dl) => `let ${v}_x: f32 = ${dl};`,
  );
  return out.replace(/let v\d+: f32 = exp2\(v\d+ \* q[123]_log2e\);\n\s*/g, "");
}

/**
 * The tile's steps replaced by the hand kernel's text: one vec2 read of (Δ, Δ·x), a vec4
 * state updated with one vector exp2 and one vector multiply-add by B's row, a dot with C's.
 */
function handSteps(w: string): string {
  const declared = vec4StateDeclared(w);
  const loop = declared.match(
    /for \(var sg: u32 = 0u; sg < (\d+)u; sg\+\+\) \{\n\s*let sgu = sg \* (\d+)u;/,
  );
  const steps = (u: number, row: (i: number) => string) =>
    Array.from(
      { length: u },
      (_, i) =>
        `{ let dv = sk_sd[${row(i)}][cl]; hv = exp2(dv.x * qv) * hv + dv.y * ` +
        `sk_stage0[${row(i)}][j]; sk_yp[${row(i)}][lid] = dot(sk_stage1[${row(i)}][j], hv); }`,
    ).join("\n      ");
  // The step section: from the barrier after the stage to the barrier before the epilogue.
  return declared.replace(
    /(workgroupBarrier\(\);\n)([\s\S]*?)(\n\s*workgroupBarrier\(\);)/,
    (_m, a, _b, c) => {
      const body = loop
        ? `    for (var sgu: u32 = 0u; sgu < ${Number(loop[1]) * Number(loop[2])}u; sgu += ${
          loop[2]
        }u) {\n      ${steps(Number(loop[2]), (i) => `sgu + ${i}u`)}\n    }`
        : `    ${steps(16, (i) => `${i}u`)}`;
      return `${a}${body}${c}`;
    },
  );
}

/**
 * The hand kernel's tile order: tile k + 1 is staged at the end of iteration k (after the
 * epilogue, from the registers just rotated) instead of at the top of iteration k + 1, and
 * tile 0 before the loop; the values the epilogue needs stay defined at the top.
 */
function stageAtEnd(w: string): string {
  const lines = w.split("\n");
  const loopAt = lines.findIndex((l) => /^ {2}for \(var k: u32/.test(l));
  const barrier = lines.findIndex((l, i) => i > loopAt && /workgroupBarrier\(\);/.test(l));
  const lastHead = lines.findLastIndex((l, i) => i < barrier && /^ {4}let ta\d+ = /.test(l));
  const end = lines.findIndex((l, i) => i > loopAt && /^ {2}\}$/.test(l));
  if (loopAt < 0 || lastHead < 0 || barrier < 0 || end < 0) return w;
  const stage = lines.slice(lastHead + 1, barrier);
  const isStore = (l: string) => /^\s*(sk_sd|sk_stage\d+)\[/.test(l) || /^\s*(if|\})/.test(l);
  const renamed = (prefix: string) =>
    stage.map((l) => l.replace(/\ba(\d+)_(\d+)\b/g, `${prefix}a$1_$2`));
  return [
    ...lines.slice(0, loopAt),
    ...renamed("p0_"),
    "  workgroupBarrier();",
    ...lines.slice(loopAt, lastHead + 1),
    ...stage.filter((l) => !isStore(l)),
    ...lines.slice(barrier + 1, end),
    ...renamed("nx_"),
    "    workgroupBarrier();",
    ...lines.slice(end),
  ].join("\n");
}

/** The per-item global index `ich_b·S + t·D + ich_d` as `ixb + t·D` with `ixb` computed once. */
function hoistedIndex(w: string): string {
  let stride = "";
  const out = w.replace(/ich_b \* (\d+)u \+ (\w+) \* (\d+)u \+ ich_d/g, (_m, s, t, d) => {
    stride = s;
    return `ixb + ${t} * ${d}u`;
  });
  if (!stride) return w;
  return out.replace(
    /(let ich_d: u32 = [^\n]*\n)/,
    `$1  let ixb: u32 = ich_b * ${stride}u + ich_d;\n`,
  );
}

/**
 * The inverse of hoistedIndex on the compiled kernel, which hoists: each load's offset spelled
 * as before the hoist (`ich_b·S + t·D + ich_d`, the step's term between the base's two).
 */
function inlinedIndex(w: string): string {
  const bases = new Map<string, string[]>();
  for (const m of w.matchAll(/let (ib\d+): u32 = ([^;]+);\n/g)) bases.set(m[1], m[2].split(" + "));
  if (bases.size === 0) return w;
  return w.replace(/let ib\d+: u32 = [^;]+;\n\s*/g, "")
    .replace(/\b(ib\d+) \+ ([^\]]+)\]/g, (_m, b, step) => {
      const [first, ...rest] = bases.get(b)!;
      return `${[first, step, ...rest].join(" + ")}]`;
    });
}

/**
 * The hand-written kernel (STK) in the compiled kernel's tile order: the loop loads tile k + 1
 * into registers, fills tile k from the registers loaded an iteration before, waits, runs the
 * steps, waits, writes the epilogue (STK fills tile k + 1 after the epilogue instead).
 */
function handCompiledOrder(w: string): string {
  const lines = w.split("\n");
  const isFill = (l: string, pre: string) =>
    new RegExp(`^\\s*\\{ let dl = sp\\(${pre}dt\\d+ \\+ bs\\);`).test(l) ||
    new RegExp(`^\\s*if \\(.*= ${pre}B\\d+;`).test(l);
  const fill = lines.filter((l) => isFill(l, "c")).map((l) => l.trim());
  const loop = lines.findIndex((l) => /for \(var k: u32/.test(l));
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (isFill(l, "c") || isFill(l, "n")) continue;
    // The barrier that followed the prologue's fill, and the one that followed the loop's.
    if (/workgroupBarrier/.test(l) && (i === loop - 1 || isFill(lines[i - 1], "n"))) continue;
    out.push(l);
    if (/^\s*let nC\d+ = /.test(l) && !/^\s*let nC\d+ = /.test(lines[i + 1])) {
      out.push(...fill.map((f) => `    ${f}`), "    workgroupBarrier();");
    }
    if (/^\s*cx\d+ = nx\d+; cz\d+ = nz\d+;/.test(l)) {
      const i0 = l.match(/cx(\d+)/)![1];
      out.push(`    cdt${i0} = ndt${i0};`);
    }
  }
  const bc = [...w.matchAll(/var c([BC]\d+) = /g)].map((m) => `c${m[1]} = n${m[1]};`);
  const last = out.findLastIndex((l) => /^\s*cdt\d+ = ndt\d+;/.test(l));
  out.splice(last + 1, 0, `    ${bc.join(" ")}`);
  return out.join("\n");
}

/** The hand-written kernel's y stores guarded by a (runtime, always true) validity test. */
function handGuards(w: string): string {
  return w.replace(
    "let bs = bias[d0 + cs];",
    "let bs = bias[d0 + cs];\n  let iv = xb < arrayLength(&Y);",
  )
    .replace(/^(\s*)(Y\[.*;)$/gm, "$1if (iv) { $2 }");
}

/** The hand-written kernel's workgroup index folded over x and y, as the compiled kernel's. */
function handFoldedId(w: string): string {
  return w.replace(/let c0 = wid\.x \* (\d+)u;/, "let c0 = (wid.x + wid.y * 65535u) * $1u;");
}

/** The decay exponentials' arguments clamped at -126 (no denormal results to fix up). */
function clampedExp(w: string): string {
  return w.replace(/exp2\((v\d+ \* q\d+_log2e)\)/g, "exp2(max($1, -126.0))");
}

/**
 * 2^x on the FMA pipe instead of the special-function unit: x = n + f with n an integer
 * (rounded by adding 1.5·2^23) and f in [-0.5, 0.5], 2^f by a degree-5 minimax polynomial
 * (relative error 7.5e-8), n added to the exponent bits. For x <= 127 (decays: x <= 0).
 * `(x + M) - M` is folded to x by drivers that reassociate (lavapipe does): the sum's bits
 * pass through an xor with a zero the compiler cannot see (set at the kernel's top from the
 * output's length; `length & 2^31` was seen through on the H200, wrong results).
 */
const POLY_EXP2 = `var<private> sk_opaque_zero: u32;
fn sk_exp2p(x: f32) -> f32 {
  let xc = max(x, -125.0);
  let t = xc + 12582912.0;
  let f = xc - (bitcast<f32>(bitcast<u32>(t) ^ sk_opaque_zero) - 12582912.0);
  let p = fma(fma(fma(fma(fma(0.0013276465, f, 0.009675542), f, 0.055507135), f, 0.2402212),
    f, 0.69314694), f, 1.0000001);
  return bitcast<f32>(bitcast<u32>(p) + (bitcast<u32>(t) << 23u));
}
`;

/** As POLY_EXP2 with floor (the conversion unit, shared with the exponential on NVIDIA). */
const POLY_EXP2_FLOOR = `
fn sk_exp2p(x: f32) -> f32 {
  let xc = max(x, -125.0);
  let fl = floor(xc);
  let f = xc - fl;
  let p = fma(fma(fma(fma(fma(0.0018775761, f, 0.0089893425), f, 0.055826314), f, 0.24015363),
    f, 0.6931531), f, 0.99999994);
  return bitcast<f32>(bitcast<u32>(p) + (bitcast<u32>(fl + 12582912.0) << 23u));
}
`;

/** The decay exponentials of the first `k` of each thread's four states as sk_exp2p. */
function polyExp(k: number, prelude = POLY_EXP2): (w: string) => string {
  return (w) =>
    w.replace(
      /exp2\((v\d+ \* q(\d+)_log2e)\)/g,
      (m, arg, q) => Number(q) < k ? `sk_exp2p(${arg})` : m,
    ).replace("@compute", `${prelude}\n@compute`).replace(
      /(fn main\([\s\S]*?\) \{\n)/,
      prelude === POLY_EXP2
        ? "$1  sk_opaque_zero = select(0u, 1u, arrayLength(&out) == 0u);\n"
        : "$1",
    );
}

/** Timing only (wrong results): the decays' exp2 replaced by a multiply-add. */
function noDecayExp(w: string): string {
  return w.replace(/exp2\((v\d+ \* q\d+_log2e)\)/g, "($1 + 1.0)");
}

/** Timing only (wrong results): softplus and SiLU's exponentials replaced by identities. */
function noItemExp(w: string): string {
  return w.replace(/(?<!fn )sk_softplus_fast\(([^)]+)\)/g, "($1)")
    .replace(/sk_recip_pos\(1\.0 \+ exp\(-[^)]+\)\)/g, "1.0");
}

/** Timing only (wrong results): the items' loads all read their channel's step 0 (cached). */
function cachedLoads(w: string): string {
  return w.replace(/(= b\d+\[ib\d+ \+ \w+) \* \d+u\]/g, "$1 * 0u]")
    .replace(/(= b\d+\[\w+) \* (\d+)u \+ ich_d\]/g, "$1 * 0u + ich_d]");
}

/** Timing only (wrong results): each step's partial sum added to a register, not stored. */
function noPartialStores(w: string): string {
  return w.replace(/sk_yp\[[^\]]+\]\[lid\] = /g, "sk_acc += ")
    .replace(
      /(\n\s*)workgroupBarrier\(\);(\n\s*let y0_0)/,
      "$1sk_yp[ts0][lid] = sk_acc;$1workgroupBarrier();$2",
    )
    .replace(/(var h0: f32 = 0\.0;)/, "$1\n  var sk_acc: f32 = 0.0;");
}

/** Timing only (wrong results): every lane reads lane 0's B and C (one broadcast address). */
function broadcastStateLoads(w: string): string {
  return w.replace(/(= sk_stage\d+\[[^\]]+\])\[j\]/g, "$1[0]");
}

/** Timing only (wrong results): every thread reads channel 0's (Δ, Δ·x). */
function broadcastItemValues(w: string): string {
  return w.replace(/(= sk_sd\[[^\]]+\])\[cl\]/g, "$1[0]");
}

/** Timing only (wrong results): the epilogue reads one lane's partial sum, not all four. */
function oneLaneSum(w: string): string {
  return w.replace(
    /(= sk_yp\[[^\]]+\]\[cs \* \d+u \+ 0u\])( \+ sk_yp\[[^\]]+\]\[cs \* \d+u \+ \du\])+;/g,
    "$1;",
  );
}

/**
 * The current tile's Δ and Δ·x at the loop's top removed where nothing reads them (in the
 * fill-after-epilogue order only the stage at the end uses Δ; the driver may or may not drop
 * them).
 */
function noDeadSoftplus(w: string): string {
  // Until nothing changes: removing a let can leave the lets it read unread.
  let out = w, before = "";
  while (out !== before) {
    before = out;
    for (const m of before.matchAll(/^\s*let (a\d+_\d+): f32 = [^;]+;\n/gm)) {
      const uses = out.match(new RegExp(`\\b${m[1]}\\b`, "g"))?.length ?? 0;
      if (uses === 1) out = out.replace(m[0], "");
    }
  }
  return out;
}

/**
 * softplus with two special-function operations instead of three: log1p(e) as a degree-7
 * series for e <= 1/8 (truncation below 6e-8 relative) and as log(1 + e) above (rounding of
 * 1 + e below 5e-7 relative), no division.
 */
function softplusTwoMufu(w: string): string {
  return w.replace(
    /fn sk_softplus_fast\(x: f32\) -> f32 \{[\s\S]*?\n\}/,
    `fn sk_softplus_fast(x: f32) -> f32 {
  let e = exp(x);
  let s = e * (1.0 - e * (0.5 - e * (0.33333334 - e * (0.25 - e * (0.2 - e * (0.16666667 - e * 0.14285715))))));
  return select(select(s, log(1.0 + e), e > 0.125), x, x > 20.0);
}`,
  );
}

const edits: Record<string, (w: string) => string> = {
  "compiled (no edit)": (w) => w, // first: the reference of the agreement check
  "hoisted item index": hoistedIndex,
  "item index base inlined": inlinedIndex,
  "hoisted item index, hand step text": (w) => handSteps(hoistedIndex(w)),
  "stage at the end": stageAtEnd,
  "stage at the end, hand step text": (w) => stageAtEnd(handSteps(w)),
  "hand step text": handSteps,
  "vec2 read, both components": vec2ReadsShared,
  "no epilogue guards": noGuards,
  "stage at the end, no epilogue guards": (w) => noGuards(stageAtEnd(w)),
  "hand-style step loop": stepLoop,
  "vec4 state": vec4State,
  "clamped exp": clampedExp,
  "no dead softplus": noDeadSoftplus,
  "softplus, two MUFU": softplusTwoMufu,
  "no dead softplus, softplus two MUFU": (w) => softplusTwoMufu(noDeadSoftplus(w)),
  "poly exp 1 of 4": polyExp(1),
  "poly exp 2 of 4": polyExp(2),
  "poly exp 3 of 4": polyExp(3),
  "poly exp 4 of 4": polyExp(4),
  "poly exp 2 of 4, floor": polyExp(2, POLY_EXP2_FLOOR),
  "timing only: no decay exp": noDecayExp,
  "timing only: no item exp": noItemExp,
  "timing only: cached item loads": cachedLoads,
  "timing only: no partial stores": noPartialStores,
  "timing only: broadcast B, C": broadcastStateLoads,
  "timing only: broadcast Δ, Δx": broadcastItemValues,
  "timing only: one lane's sum": oneLaneSum,
  "timing only: no decay exp, cached loads": (w) => noDecayExp(cachedLoads(w)),
  "timing only: broadcast B C, no partial stores": (w) => broadcastStateLoads(noPartialStores(w)),
  "all four": (w) => vec4State(stepLoop(noGuards(vec2ReadsShared(w)))),
  ...PHASE_EDITS, // the workgroup arrays' shapes and the tile phases' order
};

const ctx = await getGpu();
// The anchor: a vec4 copy, as in bench/scan_tune.ts.
const copy = await copyKernelBenchmark(ctx, copyElements(ctx), 20);
console.log(JSON.stringify({ bench: "copy", ms: copy.ms, GBps: copy.GBps }));
const graph = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s);
const program = generateKernels(graph, deviceLimits(ctx), { scan: strategy });
if (program.kernels.length !== 1) {
  throw new Error(`expected one kernel, got ${program.kernels.length}`);
}
const inputs = scanBenchInputs(s);
const base = program.kernels[0].wgsl;
if (values.hand) {
  const order = ["x", "dt", "z", "B", "C", "A", "D", "dtBias"];
  const reads = program.kernels[0].reads.map((r) => ("name" in r ? r.name : ""));
  const hand = Deno.readTextFileSync(values.hand).replace(
    /@binding\((\d+)\)/g,
    (_, k) =>
      `@binding(${Number(k) < order.length ? reads.indexOf(order[Number(k)]) : reads.length})`,
  );
  edits["hand-written kernel (--hand)"] = () => hand;
  edits["hand, compiled tile order"] = () => handCompiledOrder(hand);
  edits["hand, epilogue guards"] = () => handGuards(hand);
  edits["hand, folded workgroup id"] = () => handFoldedId(hand);
  edits["hand, all three"] = () => handFoldedId(handGuards(handCompiledOrder(hand)));
}
// `--raw "a.wgsl;b.wgsl"`: whole kernels written against the compiled kernel's bindings (an
// edited dump), each timed under its file name.
for (const file of values.raw ? values.raw.split(";") : []) {
  const text = Deno.readTextFileSync(file);
  edits[`raw ${file}`] = () => text;
}
const programs: [string, GpuProgram][] = [];
let reference: Float32Array | undefined;
const only = values.only ? values.only.split(";") : undefined;
for (const [name, edit] of Object.entries(edits)) {
  if (only && name !== "compiled (no edit)" && !name.startsWith("raw ") && !only.includes(name)) {
    continue;
  }
  const wgsl = edit(base);
  if (name !== "compiled (no edit)" && wgsl === base) {
    console.log(JSON.stringify({ bench: "wgsl_ab", name, error: "the edit changed nothing" }));
    continue;
  }
  if (values.dump === name) console.error(wgsl);
  const p = await GpuProgram.create(ctx, {
    ...program,
    kernels: [{ ...program.kernels[0], name: `ab_${programs.length}`, wgsl }],
  });
  // The program's one output (named by the graph, not "y"); checkNaN off so that the
  // timing-only edits, whose values are meaningless, still run.
  const outputs = await p.run(inputs, { checkNaN: false });
  const y = Object.values(outputs)[0] as Float32Array;
  let maxRel = 0;
  if (reference) {
    for (let i = 0; i < y.length; i += 7) {
      maxRel = Math.max(maxRel, Math.abs(y[i] - reference[i]) / (Math.abs(reference[i]) + 1e-3));
    }
  } else reference = y;
  console.log(JSON.stringify({ bench: "wgsl_ab_check", name, maxRel }));
  programs.push([name, p]);
}
const times = new Map<string, number[]>();
for (let r = 0; r < Number(values.rounds); r++) {
  for (const [name, p] of programs) {
    const t = await p.benchmark(inputs, { warmup: 150, iterations: Number(values.iterations) });
    times.set(name, [...(times.get(name) ?? []), t.totalNs / 1e6]);
  }
}
for (const [name, ms] of times) {
  const best = Math.min(...ms);
  console.log(JSON.stringify({
    bench: "wgsl_ab",
    name,
    ms: best,
    msPerRound: ms.map((m) => Math.round(m * 1000) / 1000),
    fractionOfCopy: bytes / best / 1e6 / copy.GBps,
  }));
}
