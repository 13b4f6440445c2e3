/**
 * Benchmark of the GLA and simple GLA (RetNet-style scalar gate) forwards of models/layers/ on
 * the GPU, f32, at issue 20's shapes (B, T, H, D) = (1, 8192, 32, 128) and (8, 2048, 16, 64),
 * no initial state, scale 1/√D; each timed run is followed by a float64 check of head (0, 0).
 * The `gla_chunked` rows force GLA onto the chunked lowering with a vector decay.
 * With `--peer`, FLA's Triton chunk_gla and chunk_simple_gla are timed on the same shapes
 * (bench/gla_peer.py, f32 and bf16; needs torch and `.peer/fla`) and the ratios printed.
 *
 *     deno run -A bench/gla_bench.ts [--peer] [--autotune] [--iterations 20]
 *       [--shapes 1x8192x32x128,8x2048x16x64]
 *
 * `--autotune` compiles with the autotuner (a fresh cache per run) instead of the defaults.
 *
 * `deno task bench --only gla` runs the same measurements (without the peer) from bench/main.ts.
 *
 * @module
 */

import { gla } from "../models/layers/gla.ts";
import { simpleGla } from "../models/layers/retnet.ts";
import { compile } from "../runtime/compile.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";
import { type DeltaBenchShape, PEER_DTYPES, peerRows, shapeBenchArgs } from "./delta_bench.ts";

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

/** o of head (0, 0) in float64: S = diag(exp(g))·S + k vᵀ, o = S q / √D. */
function referenceHead(
  s: DeltaBenchShape,
  x: Record<string, Float32Array>,
  gate: (r: number, j: number) => number,
): Float64Array {
  const { d, h } = s;
  const S = new Float64Array(d * d), o = new Float64Array(s.t * d), scale = 1 / Math.sqrt(d);
  for (let t = 0; t < s.t; t++) {
    const r = t * h; // b = 0, head 0
    for (let j = 0; j < d; j++) {
      const a = Math.exp(gate(r, j));
      for (let i = 0; i < d; i++) S[j * d + i] = a * S[j * d + i] + x.k[r * d + j] * x.v[r * d + i];
    }
    for (let i = 0; i < d; i++) {
      let acc = 0;
      for (let j = 0; j < d; j++) acc += S[j * d + i] * x.q[r * d + j];
      o[t * d + i] = scale * acc;
    }
  }
  return o;
}

/** Times GLA and simple GLA at `shapes`; one row per measurement. */
export async function glaBench(
  shapes: readonly DeltaBenchShape[],
  iterations: number,
  gpu?: GpuContext,
  autotune = false,
): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  const tuning = autotune
    ? { autotune: { cacheFile: `${Deno.makeTempDirSync()}/autotune.json`, iterations: 5 } }
    : {};
  for (const s of shapes) {
    const n = s.b * s.t * s.h;
    const x = {
      q: values(n * s.d, 1),
      k: values(n * s.d, 2),
      v: values(n * s.d, 3),
      g: values(n, 4, -0.3, -0.001),
      gk: values(n * s.d, 5, -0.1, -0.001),
    };
    const sizes = { b: s.b, t: s.t, h: s.h, k: s.d, v: s.d };
    // gla_chunked: GLA forced onto the chunked lowering with its vector decay (ssd_vector.ts).
    for (const layer of ["gla", "gla_chunked", "simple_gla"] as const) {
      const isGla = layer !== "simple_gla";
      const inputs: Record<string, Float32Array> = isGla
        ? { q: x.q, k: x.k, v: x.v, gk: x.gk }
        : { q: x.q, k: x.k, v: x.v, g: x.g };
      const prog = isGla
        ? await compile(
          { q: "b t h k", k: "b t h k", v: "b t h v", gk: "b t h k" },
          (t) => gla(t.q, t.k, t.v, t.gk).o,
          sizes,
          {
            backend: "gpu",
            gpu,
            ...(layer === "gla_chunked" ? { scan: { mode: "chunked" as const } } : tuning),
          },
        )
        : await compile(
          { q: "b t h k", k: "b t h k", v: "b t h v", g: "b t h" },
          (t) => simpleGla(t.q, t.k, t.v, t.g).o,
          sizes,
          { backend: "gpu", gpu, ...tuning },
        );
      try {
        const probe = await prog.benchmark(inputs, { warmup: 1, iterations: 2 });
        const warmup = Math.min(200, Math.max(3, Math.ceil(0.3e9 / Math.max(probe.totalNs, 1))));
        const r = await prog.benchmark(inputs, { warmup, iterations });
        const o = await prog.run(inputs) as Float32Array;
        const want = referenceHead(
          s,
          x,
          isGla ? (row, j) => x.gk[row * s.d + j] : (row) => x.g[row],
        );
        let diff = 0, norm = 0;
        for (let t = 0; t < s.t; t++) {
          for (let i = 0; i < s.d; i++) {
            diff += (o[t * s.h * s.d + i] - want[t * s.d + i]) ** 2;
            norm += want[t * s.d + i] ** 2;
          }
        }
        rows.push({
          bench: `${layer}_fwd_f32`,
          shape: s,
          autotune: autotune && layer !== "gla_chunked",
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

if (import.meta.main) {
  const opts = shapeBenchArgs(Deno.args);
  const shapes = opts.shapes;
  const ours = await glaBench(shapes, opts.iterations, undefined, opts.autotune);
  for (const r of ours) console.log(JSON.stringify(r));
  if (opts.peer) {
    const peer = await peerRows("bench/gla_peer.py", shapes);
    for (const r of peer) console.log(JSON.stringify(r));
    console.log("\nratio ours (f32) / FLA chunk kernel:");
    for (const s of shapes) {
      const same = (r: Record<string, unknown>) => JSON.stringify(r.shape) === JSON.stringify(s);
      for (const layer of ["gla", "gla_chunked", "simple_gla"]) {
        const mine = ours.find((r) => same(r) && r.bench === `${layer}_fwd_f32`)?.ms as number;
        const flaLayer = layer === "gla_chunked" ? "gla" : layer;
        for (const dtype of PEER_DTYPES) {
          const fla = peer.find((r) => same(r) && r.layer === flaLayer && r.dtype === dtype)?.ms as
            | number
            | undefined;
          if (fla !== undefined) {
            console.log(
              `  ${layer} ${JSON.stringify(s)} vs FLA ${dtype}: ${(mine / fla).toFixed(2)}×`,
            );
          }
        }
      }
    }
  }
}
