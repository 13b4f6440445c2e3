/**
 * Cumulative scans over one long axis (issue 19's benchmark: 64M f32 elements), timed against
 * ssmkit's copy kernel in the same run. Prints one JSON object per line. Each row gives the
 * time of the program in one pass as `run` submits it (and the sum of its kernels timed each in
 * its own pass, `kernelSumMs`), the effective bandwidth (one read and one write of the tensor
 * per scan, as the copy moves, so `fractionOfCopy` compares like with like) and the kernels it
 * ran; results are checked against a float64 loop before timing.
 *
 *   deno run -A bench/cum_bench.ts [--elements N] [--iterations N] [--variants cumsum,cummax]
 *   deno task bench --only cum          (the same rows, from bench/main.ts, at 64M)
 *
 * Torch's times for the same sizes: `python3 bench/cum_torch.py`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { AssocScanStrategy } from "../codegen/assoc_scan_kernel.ts";
import { associativeScan, cummax, cumsum } from "../dsl/assoc_scan.ts";
import { add } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import { scan } from "../dsl/scan.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";
import { copyKernelBenchmark } from "./copy_kernel.ts";
import { randomF32 } from "./scan_inputs.ts";

/** One variant: a scan of `x` over `i`, with forced lowering knobs. */
interface Variant {
  readonly name: string;
  readonly fn: (x: Tensor<"i">) => Tensor;
  readonly fold: (acc: number, v: number) => number;
  readonly strategy?: AssocScanStrategy;
}

const max = (name: string, strategy?: AssocScanStrategy): Variant => ({
  name,
  fn: (x) => cummax(x, "i"),
  fold: Math.max,
  strategy,
});

// The defaults first (the three chunk kernels), then the knobs a GPU run should compare
// (bench/RESULTS.md): tile shapes, the single-pass look-back kernel and its polls.
const SINGLE: AssocScanStrategy = { singlePass: true };
const VARIANTS: Variant[] = [
  { name: "cumsum", fn: (x) => cumsum(x, "i"), fold: (a, v) => a + v },
  // The single pass with 8 and 16 elements per thread (tiles of 2K and 4K): the look-back's
  // window is the whole workgroup since 2026-12-07 (256 predecessors per round trip, was 32).
  ...[8, 16].map((v) => ({
    name: `cumsum_single_pass_v${v}`,
    fn: (x: Tensor<"i">) => cumsum(x, "i"),
    fold: (a: number, v: number) => a + v,
    strategy: { ...SINGLE, perThread: v },
  })),
  // One look-back per chunk of C tiles (2K·C elements): the chunk is read twice, the second
  // time from the L2 cache if it holds the chunks in flight. On an H100 (2026-12-07) 4, 8 and 16
  // tiles read 1.35, 1.28 and 0.42 ms (the three passes: 0.32), with the 32-wide window.
  ...[16, 64].map((c) => ({
    name: `cumsum_single_pass_chunk${c}`,
    fn: (x: Tensor<"i">) => cumsum(x, "i"),
    fold: (a: number, v: number) => a + v,
    strategy: { ...SINGLE, lookbackChunkTiles: c },
  })),
  {
    name: "cumsum_v16",
    fn: (x) => cumsum(x, "i"),
    fold: (a, v) => a + v,
    strategy: { perThread: 16 },
  },
  {
    name: "cumsum_64_tiles_per_chunk",
    fn: (x) => cumsum(x, "i"),
    fold: (a, v) => a + v,
    strategy: { chunkTiles: 64 },
  },
  // The linear scan's chunked kernels, which cumsum no longer uses at this shape.
  { name: "cumsum_linear_scan", fn: (x) => scan("i", 1, x), fold: (a, v) => a + v },
  {
    // A user's sum combine: no commutative shortcut anywhere.
    name: "cumsum_user_combine",
    fn: (x) => associativeScan("i", (a, b) => ({ x: add(a.x, b.x) }), { x }).x,
    fold: (a, v) => a + v,
  },
  max("cummax"),
  max("cummax_v4", { perThread: 4 }),
  max("cummax_v16", { perThread: 16 }),
  max("cummax_wg128_v16", { workgroup: 128, perThread: 16 }),
  max("cummax_wg512_v8", { workgroup: 512, perThread: 8 }),
  max("cummax_64_tiles_per_chunk", { chunkTiles: 64 }),
  max("cummax_4_tiles_per_chunk", { chunkTiles: 4 }),
  max("cummax_unstaged", { stage: false }),
  max("cummax_memory_scan", { tileScan: "workgroup" }),
  max("cummax_ordered_totals", { commutativeTotals: false }),
  // The single-pass look-back kernel and its polls.
  max("cummax_single_pass", SINGLE),
  max("cummax_single_pass_v16", { ...SINGLE, perThread: 16 }),
  max("cummax_single_pass_spins_1024", { ...SINGLE, lookbackSpins: 1024 }),
  ...[8, 16].map((c) => max(`cummax_single_pass_chunk${c}`, { ...SINGLE, lookbackChunkTiles: c })),
];

/** The float64 fold of `x` (the check). */
function foldAll(x: Float32Array, f: (a: number, v: number) => number): Float64Array {
  const out = new Float64Array(x.length);
  let acc = x[0];
  out[0] = acc;
  for (let i = 1; i < x.length; i++) out[i] = acc = f(acc, x[i]);
  return out;
}

/** ‖got − want‖₂ / ‖want‖₂. */
function relativeError(got: Float32Array, want: Float64Array): number {
  let d = 0, n = 0;
  for (let i = 0; i < got.length; i++) {
    d += (got[i] - want[i]) ** 2;
    n += want[i] ** 2;
  }
  return Math.sqrt(d / n);
}

/**
 * Times every variant over `elements` f32 values and the copy anchor of the same size;
 * `report` receives one row per measurement.
 */
export async function cumBenchmark(
  ctx: GpuContext,
  elements: number,
  iterations: number,
  report: (row: Record<string, unknown>) => void,
  only?: readonly string[],
): Promise<void> {
  const unknown = (only ?? []).filter((n) => !VARIANTS.some((v) => v.name === n));
  if (unknown.length) {
    throw new Error(
      `cum bench: unknown variant(s) ${unknown.join(", ")}; known: ` +
        VARIANTS.map((v) => v.name).join(", "),
    );
  }
  // The copy kernel moves vec4s: its size is rounded down to a multiple of 4.
  const copy = await copyKernelBenchmark(ctx, elements - elements % 4, iterations);
  report({ bench: "cum_copy_anchor", elements, ms: copy.ms, GBps: copy.GBps });
  const x = randomF32(elements);
  for (const v of VARIANTS) {
    if (only?.length && !only.includes(v.name)) continue;
    const prog = await compile({ x: "i" }, ({ x }) => v.fn(x), { i: elements }, {
      gpu: ctx,
      backend: "gpu",
      assocScan: v.strategy,
    });
    const got = await prog.run({ x }) as Float32Array;
    const error = relativeError(got, foldAll(x, v.fold));
    // A few warm-up rounds of about 0.3 s keep the clocks up, as bench/main.ts does.
    const probe = await prog.benchmark({ x }, { warmup: 1, iterations: 2 });
    const warmup = Math.min(200, Math.max(3, Math.ceil(0.3e9 / Math.max(probe.totalNs, 1))));
    const r = await prog.benchmark({ x }, { warmup, iterations });
    // Checked again after the timed runs: the look-back's counter and word tags flip every run.
    const again = relativeError(await prog.run({ x }) as Float32Array, foldAll(x, v.fold));
    // The program as `run` submits it (one pass); the per-kernel passes' sum beside it.
    const ms = r.sequenceNs / 1e6;
    const GBps = (2 * elements * 4) / ms / 1e6;
    report({
      bench: `cum_${v.name}`,
      elements,
      ms,
      GBps,
      fractionOfCopy: GBps / copy.GBps,
      kernelSumMs: r.totalNs / 1e6,
      kernelSumFractionOfCopy: (2 * elements * 4) / (r.totalNs / 1e6) / 1e6 / copy.GBps,
      relativeError: error,
      relativeErrorAfterTiming: again,
      kernels: r.kernels.map((k) => `${k.name} ${(k.medianNs / 1e3).toFixed(1)}us`),
      strategy: v.strategy ?? "default",
    });
    prog.destroy();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      elements: { type: "string", default: String(64 * 1024 * 1024) },
      iterations: { type: "string", default: "20" },
      variants: { type: "string", default: "" },
    },
    strict: true,
  });
  const { getGpu } = await import("../runtime/gpu_device.ts");
  const ctx = await getGpu();
  await cumBenchmark(
    ctx,
    Number(values.elements),
    Number(values.iterations),
    (row) => console.log(JSON.stringify(row)),
    values.variants.split(",").filter((n) => n),
  );
}
