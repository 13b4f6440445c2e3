/**
 * Scan strategy sweep on the selective-scan benchmark shape: lanes per channel, prefetching and
 * the spelling of the per-channel math. Every variant is checked against the first one, then
 * all are timed in interleaved rounds (the GPU's clock drifts while it warms up: a variant
 * timed alone can look several times slower than it is), after a long warm-up. Prints one JSON
 * line per variant with its best round, and the copy kernel of the same run as the anchor.
 *
 *   deno run -A bench/scan_tune.ts [--b 8 --l 4096 --d 1536 --n 16] [--rounds 3] [--only "A;B"]
 *
 * Knobs a variant leaves out take the current defaults (codegen/scan_strategy.ts); the variant
 * "before 2026-12-03" spells out the defaults that held until then.
 *
 * `--only` keeps the variants whose names contain one of the given `;`-separated strings. The
 * variant `autotuned` is the autotuner's choice (measured into a fresh cache when compiled).
 * `--batches 1,2,…` also times the kept variants at each of those batch sizes (same l, d, n):
 * the time per batch shows when the launch stops fitting on the GPU at once.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile, type Program } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { copyElements, copyKernelBenchmark } from "./copy_kernel.ts";
import { randomF32, SCAN_SHAPE_OPTIONS, scanBenchBytes, scanBenchInputs } from "./scan_inputs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ...SCAN_SHAPE_OPTIONS,
    n: { type: "string", default: "16" },
    iterations: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    warmup: { type: "string", default: "150" },
    only: { type: "string", default: "" },
    batches: { type: "string", default: "" },
  },
  strict: true,
});
const s = { b: Number(values.b), l: Number(values.l), d: Number(values.d), n: Number(values.n) };
const inputs = scanBenchInputs(s);
const iterations = Number(values.iterations);
const bytes = scanBenchBytes(s);

/**
 * The variants worth comparing (the first is the reference for the agreement check): the
 * defaults, the defaults they replaced, and one step away from the default along each knob.
 * The longer lists of earlier sweeps are in git history (bench/scan_tune.ts at 0239a98).
 */
/** The variant compiled with the autotuner (a fresh cache) instead of a strategy. */
const AUTOTUNED = "autotuned";
const variants: Record<string, ScanStrategy> = {
  "L16 prelude math, no prefetch, scalar (old default)": {
    lanes: 16,
    prefetch: "none",
    math: "prelude",
    vector: false,
  },
  "L8 vec2, fast, prefetch all, early loads, whole index, exp (default before 2026-12-03)": {
    lanes: 8,
    stateLoads: "early",
    vectorIndex: "whole",
    foldLog2e: false,
  },
  "lane kernel (tileSteps 0: the default before the tiled one)": { tileSteps: 0 },
  "L4 vec4, fast, prefetch all": { lanes: 4, prefetch: "all", math: "fast" },
  "L16 fast-exp2, prefetch own": { lanes: 16, prefetch: "own", math: "fast-exp2" },
  "L8 vec2, fast, prefetch all, depth 2": { lanes: 8, prefetchDepth: 2 },
  "L8 vec2, fast, prefetch all, workgroup 128": { lanes: 8, workgroup: 128 },
  "L8 vec2, fast, prefetch all, state loads staged, depth 2": {
    lanes: 8,
    stateLoads: "staged",
    prefetchDepth: 2,
  },
  "L8 vec2, fast, prefetch all, broadcast staged": { lanes: 8, broadcast: "staged" },
  "L8 vec2, fast, prefetch all, 2 chunks": { lanes: 8, prefetch: "all", math: "fast", chunks: 2 },
  "tiled 16 steps, 16 channels x 4 lanes": { tileSteps: 16 },
  "tiled 16 steps, 32 channels x 4 lanes": { tileSteps: 16, workgroup: 128 }, // 8-step loop
  "tiled 32 steps, 32 channels x 4 lanes": { tileSteps: 32, workgroup: 128 }, // 8-step loop
  "tiled 16 steps, 32 channels x 4 lanes, straight-line": {
    tileSteps: 16,
    workgroup: 128,
    unroll: 16,
  },
  "tiled, 32x4, 8-step loop, sums in workgroup memory": {
    tileSteps: 16,
    workgroup: 128,
    tileReduce: "workgroup",
  },
  "tiled, 32x4, 8-step loop, shuffles, items 2 tiles ahead": {
    tileSteps: 16,
    workgroup: 128,
    prefetchDepth: 2,
  },
  "tiled, 32x8, 8-step loop, sums by shuffles": { tileSteps: 16, lanes: 8, workgroup: 256 },
  "default": {},
  // The autotuner's pick among the recurrent scan's candidates (codegen/scan_tuning.ts),
  // measured into a fresh cache when compiled.
  [AUTOTUNED]: {},
};
/** Variants also timed in step mode (l = 1, state updated in place). */
const stepVariants = [
  "L16 prelude math, no prefetch, scalar (old default)",
  "L4 vec4, fast, prefetch all",
  "L8 vec2, fast, prefetch all, state loads staged, depth 2",
  "default",
];

const only = values.only.split(";").filter((v) => v.length > 0);
for (const name of Object.keys(variants)) {
  if (only.length > 0 && !only.some((o) => name.includes(o))) delete variants[name];
}

const ctx = await getGpu();
const programs: { name: string; prog: Program; best: number[] }[] = [];
let reference: Float32Array | undefined;
for (const [name, strategy] of Object.entries(variants)) {
  try {
    const prog = await compile(
      SELECTIVE_SCAN_INPUTS,
      (t) => selectiveScan(t).y,
      s,
      name === AUTOTUNED
        ? { autotune: { cacheFile: `${Deno.makeTempDirSync()}/autotune.json` } }
        : { scan: strategy },
    );
    const y = await prog.run(inputs);
    reference ??= y;
    let diff = 0, norm = 0;
    for (let i = 0; i < y.length; i += 97) {
      diff += (y[i] - reference[i]) ** 2;
      norm += reference[i] ** 2;
    }
    console.log(JSON.stringify({
      bench: "scan_variant_check",
      name,
      head: prog.kernels[0].wgsl.split("\n")[0],
      relDiffVsFirst: Math.sqrt(diff / norm),
    }));
    programs.push({ name, prog, best: [] });
  } catch (e) {
    console.log(JSON.stringify({ bench: "scan_variant", name, error: String(e).slice(0, 300) }));
  }
}

// The SM clock drops within half a second of idling and every benchmark call starts after an
// upload: each timed run is preceded, in the same submission, by `warmup` untimed dispatches.
const warmup = Number(values.warmup);
const copyElems = copyElements(ctx);
const copyMs: number[] = [];
for (let round = 0; round < Number(values.rounds); round++) {
  copyMs.push((await copyKernelBenchmark(ctx, copyElems, 20)).ms);
  for (const p of programs) {
    const r = await p.prog.benchmark(inputs, { warmup, iterations });
    p.best.push(r.totalNs / 1e6);
  }
}
const copyGBps = (2 * copyElems * 4) / Math.min(...copyMs) / 1e6;
console.log(JSON.stringify({ bench: "copy", GBps: copyGBps, msPerRound: copyMs }));
const fastest = programs.reduce<typeof programs[number] | undefined>(
  (best, p) => (best && Math.min(...best.best) <= Math.min(...p.best) ? best : p),
  undefined,
);
if (fastest) {
  const ms = Math.min(...fastest.best);
  console.log(JSON.stringify({
    bench: "scan_fastest",
    name: fastest.name,
    strategy: variants[fastest.name],
    ms,
    fractionOfCopy: bytes / ms / 1e6 / copyGBps,
  }));
}
for (const p of programs) {
  const ms = Math.min(...p.best);
  const GBps = bytes / ms / 1e6;
  console.log(JSON.stringify({
    bench: "scan_variant",
    name: p.name,
    ms,
    msPerRound: p.best.map((x) => Math.round(x * 1000) / 1000),
    GBps,
    fractionOfCopy: GBps / copyGBps,
  }));
  p.prog.destroy();
}

for (const name of stepVariants.filter((n) => n in variants)) {
  for (const b of [1, 64]) {
    const sz = { ...s, b, l: 1 };
    try {
      const prog = await compile(
        { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" },
        (t) => selectiveScan(t, { init: t.h0 }),
        sz,
        { inPlace: { state: "h0" }, scan: variants[name] },
      );
      const data = { ...scanBenchInputs(sz), h0: randomF32(b * s.d * s.n) };
      const r = await prog.benchmark(data, { warmup: 2000, iterations: 50 });
      console.log(JSON.stringify({
        bench: "scan_step",
        name,
        batch: b,
        us: r.totalNs / 1e3,
        head: prog.kernels[0].wgsl.split("\n")[0].slice(0, 140),
      }));
      prog.destroy();
    } catch (e) {
      console.log(JSON.stringify({ bench: "scan_step", name, error: String(e).slice(0, 200) }));
    }
  }
}

const batches = values.batches.split(",").filter((v) => v.length > 0).map(Number);
for (const { name } of programs) {
  const strategy = variants[name];
  for (const b of batches) {
    const sz = { ...s, b };
    const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, sz, {
      scan: strategy,
    });
    const data = scanBenchInputs(sz);
    const runs: number[] = [];
    for (let round = 0; round < 2; round++) {
      runs.push((await prog.benchmark(data, { warmup, iterations })).totalNs / 1e6);
    }
    const ms = Math.min(...runs);
    const GBps = scanBenchBytes(sz) / ms / 1e6;
    console.log(JSON.stringify({ bench: "scan_batch", name, b, ms, msPerBatch: ms / b, GBps }));
    prog.destroy();
  }
}
