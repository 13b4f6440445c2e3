/**
 * Benchmark of the Gated DeltaNet forward (`deltaRule` with a gate) on the GPU, f32, at issue
 * 19's shapes (B, T, H, D) = (1, 8192, 32, 128) and (8, 2048, 16, 64), with the chunked
 * lowering forced (its state pass in lane form or in tile form with 16, 32 and 64 value rows
 * per workgroup) and with the default choice; each timed run is followed by a float64 check
 * of one head. With `--peer`, FLA's Triton chunk_gated_delta_rule is timed on the same shapes
 * (bench/delta_peer.py, f32 and bf16; needs torch and `.peer/fla`) and the ratios printed.
 * `--autotune` adds the autotuner's choices (`chunked_autotuned` for the chunked kernels' forms,
 * `default_autotuned` for the lowering itself, measured into a fresh cache);
 * `--sweep` also times the chunked lowering's knobs one by one (chunk length, lanes and threads
 * of the state pass).
 *
 *     deno run -A bench/delta_bench.ts [--peer] [--sweep] [--autotune]
 *       [--shapes 1x8192x32x128,8x2048x16x64]
 *       [--iterations 20]
 *
 * `deno task bench --only delta` runs the same measurements (without the peer) from
 * bench/main.ts.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { TILED_PASS_ROWS } from "../codegen/delta_pass_tiled.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { deltaRule } from "../dsl/delta.ts";
import { compile } from "../runtime/compile.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";

/** One benchmark shape: batch, steps, heads, head size (dk = dv = d). */
export type DeltaBenchShape = { b: number; t: number; h: number; d: number };

/** The shapes. */
export const DELTA_BENCH_SHAPES: readonly DeltaBenchShape[] = [
  { b: 1, t: 8192, h: 32, d: 128 },
  { b: 8, t: 2048, h: 16, d: 64 },
];

/** Parses "1x8192x32x128,8x2048x16x64". */
export function parseDeltaShapes(text: string): DeltaBenchShape[] {
  return text.split(",").map((s) => {
    const [b, t, h, d] = s.split("x").map(Number);
    if (![b, t, h, d].every((n) => Number.isInteger(n) && n > 0)) {
      throw new Error(`delta bench: bad shape "${s}" (want BxTxHxD)`);
    }
    return { b, t, h, d };
  });
}

/** Deterministic pseudo-random values in [lo, hi). */
function values(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = lo + (hi - lo) * (a / 4294967296);
  }
  return out;
}

/** Inputs as a trained Gated DeltaNet sees them: k L2-normalized, β in (0, 1), log α < 0. */
export function deltaInputs(s: DeltaBenchShape) {
  const rows = s.b * s.t * s.h;
  const k = values(rows * s.d, 2);
  for (let r = 0; r < rows; r++) {
    let n = 0;
    for (let j = 0; j < s.d; j++) n += k[r * s.d + j] ** 2;
    const inv = 1 / Math.sqrt(n);
    for (let j = 0; j < s.d; j++) k[r * s.d + j] *= inv;
  }
  return {
    q: values(rows * s.d, 1),
    k,
    v: values(rows * s.d, 3),
    beta: values(rows, 4, 0.05, 0.95),
    g: values(rows, 5, -0.3, -0.001),
  };
}

/** y of head (0, 0) in float64, straight from the recurrence. */
function referenceHead(s: DeltaBenchShape, x: ReturnType<typeof deltaInputs>): Float64Array {
  const { d, h } = s;
  const S = new Float64Array(d * d);
  const y = new Float64Array(s.t * d);
  const scale = 1 / Math.sqrt(d);
  for (let t = 0; t < s.t; t++) {
    const r = t * h; // b = 0, head 0
    const alpha = Math.exp(x.g[r]), beta = x.beta[r];
    for (let i = 0; i < d; i++) {
      let a = 0;
      for (let j = 0; j < d; j++) a += S[i * d + j] * x.k[r * d + j];
      const u = beta * (x.v[r * d + i] - alpha * a);
      let o = 0;
      for (let j = 0; j < d; j++) {
        const v = alpha * S[i * d + j] + u * x.k[r * d + j];
        S[i * d + j] = v;
        o += v * x.q[r * d + j];
      }
      y[t * d + i] = scale * o;
    }
  }
  return y;
}

/**
 * Times the Gated DeltaNet forward at `shapes` (chunked forced, then the default choice) and
 * returns one row per measurement.
 */
export async function deltaBench(
  shapes: readonly DeltaBenchShape[],
  iterations: number,
  gpu?: GpuContext,
  sweep = false,
  autotune = sweep,
): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const s of shapes) {
    const x = deltaInputs(s);
    const want = referenceHead(s, x);
    const variants: [string, ScanStrategy][] = [["chunked", { mode: "chunked" }], ["default", {}]];
    for (const passRows of TILED_PASS_ROWS) {
      variants.push([`chunked_pass_rows${passRows}`, { mode: "chunked", passRows }]);
    }
    // default_autotuned: the lowering itself tuned (where the model runs the recurrent kernel,
    // its lanes or the chunked kernels); chunked_autotuned: the chunked kernels' three points.
    if (autotune) {
      variants.push(["chunked_autotuned", { mode: "chunked" }], ["default_autotuned", {}]);
    }
    // 32-step chunks (the autotuner's other chunk length where 64 fits): less work in the first
    // and output kernels, twice the state pass's sequential steps. Last: a call's time limit
    // should cut this row before the autotuner's.
    variants.push(["chunked_chunk32", { mode: "chunked", chunks: Math.ceil(s.t / 32) }]);
    if (sweep) variants.push(...sweepVariants(s));
    for (const [label, strategy] of variants) {
      const prog = await compile(
        { q: "b t h dk", k: "b t h dk", v: "b t h dv", beta: "b t h", g: "b t h" },
        (t) =>
          deltaRule({ q: t.q, k: t.k, v: t.v, beta: t.beta, gate: t.g }, {
            time: "t",
            key: "dk",
            value: "dv",
          }).y,
        { b: s.b, t: s.t, h: s.h, dk: s.d, dv: s.d },
        {
          backend: "gpu",
          gpu,
          scan: strategy as ScanStrategy,
          // A fresh cache per run: the row shows what the autotuner picks when it measures.
          autotune: label.endsWith("autotuned") ? { cacheFile: AUTOTUNE_CACHE } : false,
        },
      ).catch((e) => {
        rows.push({ bench: "gated_delta_fwd_f32", shape: s, lowering: label, error: String(e) });
        return undefined;
      });
      if (!prog) continue;
      try {
        const probe = await prog.benchmark(x, { warmup: 1, iterations: 2 });
        const warmup = Math.min(200, Math.max(3, Math.ceil(0.3e9 / Math.max(probe.totalNs, 1))));
        const r = await prog.benchmark(x, { warmup, iterations });
        const y = await prog.run(x);
        let diff = 0, norm = 0;
        for (let t = 0; t < s.t; t++) {
          for (let i = 0; i < s.d; i++) {
            const got = y[(t * s.h) * s.d + i], w = want[t * s.d + i];
            diff += (got - w) ** 2;
            norm += w ** 2;
          }
        }
        rows.push({
          bench: "gated_delta_fwd_f32",
          shape: s,
          lowering: label,
          choices: prog.kernels.flatMap((k) => k.tuning ? [k.tuning.chosen] : []),
          ms: r.totalNs / 1e6,
          kernels: r.kernels.map((k) => ({ name: k.name, ms: k.medianNs / 1e6 })),
          head0RelErr: Math.sqrt(diff / norm),
        });
      } finally {
        prog.destroy();
      }
    }
  }
  return rows;
}

const AUTOTUNE_CACHE = `${Deno.makeTempDirSync()}/autotune.json`;

/**
 * The chunked lowering's knobs to compare (`--sweep`): chunk length 32 or 64, lanes per value
 * row of the state pass, and its threads per workgroup.
 */
function sweepVariants(s: DeltaBenchShape): [string, ScanStrategy][] {
  const out: [string, ScanStrategy][] = [];
  for (const c of [32, 64]) {
    for (const lanes of [2, 4, 8, 16, 32]) {
      for (const workgroup of [64, 128, 256]) {
        if (lanes > workgroup) continue;
        const chunks = Math.ceil(s.t / c);
        out.push([`chunked_c${c}_lanes${lanes}_wg${workgroup}`, {
          mode: "chunked",
          chunks,
          lanes,
          workgroup,
        }]);
      }
    }
  }
  return out;
}

/**
 * The dtypes a peer script reports: "f32" is Triton's default, whose f32 `tl.dot` runs in TF32
 * on tensor cores; "f32_ieee" forces full f32 products (TRITON_F32_DEFAULT=ieee), as ssmkit's.
 */
export const PEER_DTYPES = ["f32", "f32_ieee", "bf16"] as const;

/**
 * Runs a peer script (`bench/<name>_peer.py`, FLA's Triton kernels) twice, with Triton's
 * default f32 dots (TF32) and with `--f32-dot ieee`, and returns its JSON rows.
 */
export async function peerRows(
  script: string,
  shapes: readonly DeltaBenchShape[],
): Promise<Record<string, unknown>[]> {
  const text = shapes.map((s) => `${s.b}x${s.t}x${s.h}x${s.d}`).join(",");
  const rows: Record<string, unknown>[] = [];
  for (const dot of ["tf32", "ieee"]) {
    const out = await new Deno.Command("python3", {
      args: [script, "--shapes", text, "--f32-dot", dot],
      env: { PYTHONPATH: ".peer" },
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`${script} --f32-dot ${dot} failed (see its output)`);
    rows.push(
      ...new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l)),
    );
  }
  return rows;
}

/** The command line of the (B, T, H, D) benchmarks: `--shapes`, `--iterations`, `--peer`. */
export function shapeBenchArgs(
  args: string[],
): {
  shapes: DeltaBenchShape[];
  iterations: number;
  peer: boolean;
  sweep: boolean;
  autotune: boolean;
} {
  const { values } = parseArgs({
    args,
    options: {
      shapes: { type: "string", default: "1x8192x32x128,8x2048x16x64" },
      iterations: { type: "string", default: "20" },
      peer: { type: "boolean", default: false },
      sweep: { type: "boolean", default: false },
      autotune: { type: "boolean", default: false },
    },
    strict: true,
  });
  return {
    shapes: parseDeltaShapes(values.shapes),
    iterations: Number(values.iterations),
    peer: values.peer,
    sweep: values.sweep,
    autotune: values.autotune || values.sweep,
  };
}

if (import.meta.main) {
  const opts = shapeBenchArgs(Deno.args);
  const shapes = opts.shapes;
  const ours = await deltaBench(shapes, opts.iterations, undefined, opts.sweep, opts.autotune);
  for (const r of ours) console.log(JSON.stringify(r));
  if (opts.peer) {
    const peer = await peerRows("bench/delta_peer.py", shapes);
    for (const r of peer) console.log(JSON.stringify(r));
    console.log("\nratio ours (chunked, f32; autotuned when asked) / FLA chunk_gated_delta_rule:");
    for (const s of shapes) {
      const same = (r: Record<string, unknown>) => JSON.stringify(r.shape) === JSON.stringify(s);
      const mine = (ours.find((r) => same(r) && r.lowering === "chunked_autotuned") ??
        ours.find((r) => same(r) && r.lowering === "chunked"))?.ms as number;
      for (const dtype of PEER_DTYPES) {
        const fla = peer.find((r) => same(r) && r.dtype === dtype)?.ms as number | undefined;
        if (fla !== undefined) {
          console.log(`  ${JSON.stringify(s)} vs FLA ${dtype}: ${(mine / fla).toFixed(2)}×`);
        }
      }
    }
  }
}
