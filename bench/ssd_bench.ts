/**
 * Benchmark of the chunked SSD lowering (Mamba-2's scan) on the GPU, f32: the Mamba-2 2.7B layer
 * shape b=4, h=80, p=64, n=128, g=1 at l=2048 and l=8192, the forward
 * y = Σ_n C·h + D·x with h[t] = exp(Δ·A)·h[t−1] + Δ·x·Bᵀ, Δ = softplus(dt + dt_bias).
 * Times are medians of timestamp-query passes (one pass per kernel, summed). Also: a sweep of
 * chunk lengths and tiles (`--sweep`), a float64 check of sampled heads at full size, and the
 * recurrent kernel on shapes both lowerings can run (for the cost model).
 *
 *     deno run -A bench/ssd_bench.ts [--sweep] [--json FILE] [--lengths 2048,8192]
 *       [--batch 4] [--heads 80] [--dtype f16|bf16]
 *
 * `--dtype` makes the per-step inputs (x, dt, B, C) program inputs of that 16-bit type: stored
 * in 16 bits and widened in the kernels (the scan still runs in f32); the data and the float64
 * check use the rounded values.
 *
 * @module
 */

import type { KernelArtifact } from "../codegen/artifact.ts";
import { planFusion } from "../codegen/fusion.ts";
import { emitSsdKernels } from "../codegen/ssd_kernel.ts";
import type { SsdTiling } from "../codegen/ssd_parts.ts";
import { analyzeSsd } from "../codegen/ssd_plan.ts";
import type { TileShape } from "../codegen/ssd_gemm.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, softplus } from "../dsl/elementwise.ts";
import { scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile, deviceLimits } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { roundToBf16, roundToF16 } from "../runtime/half.ts";
import type { FloatDType } from "../dsl/ir.ts";
import { GpuProgram } from "../runtime/program.ts";

const args = Deno.args;
const flag = (name: string) => args.includes(name);
const option = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const lengths = (option("--lengths") ?? "2048,8192").split(",").map(Number);
// Smaller batch / head counts for a smoke test on a software adapter.
const batch = Number(option("--batch") ?? 4);
const heads = Number(option("--heads") ?? 80);
const jsonPath = option("--json");

const dtype = (option("--dtype") ?? "f32") as FloatDType;
if (!["f32", "f16", "bf16"].includes(dtype)) throw new Error(`--dtype: f32, f16 or bf16`);
const INPUTS = {
  x: { axes: "b l g r p", dtype },
  dt: { axes: "b l g r", dtype },
  A: "g r",
  B: { axes: "b l g n", dtype },
  C: { axes: "b l g n", dtype },
  D: "g r",
  dt_bias: "g r",
} as const;

/** The per-step inputs as the program holds them (rounded to `--dtype`). */
function rounded(a: Float32Array): Float32Array {
  if (dtype === "f32") return a;
  const round = dtype === "f16" ? roundToF16 : roundToBf16;
  for (let i = 0; i < a.length; i++) a[i] = round(a[i]);
  return a;
}

type Shape = { b: number; l: number; g: number; r: number; p: number; n: number };

/** The SSD forward as Triton's mamba_chunk_scan_combined computes it (D skip, dt softplus). */
function ssd(t: Record<keyof typeof INPUTS, Tensor>): Tensor {
  const delta = softplus(add(t.dt, t.dt_bias));
  const h = scan(
    "l",
    exp(mul(delta, t.A)),
    einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, t.x, t.B),
  );
  return add(einsum("b l g r p n, b l g n -> b l g r p", h, t.C), mul(t.D, t.x));
}

/** Fast deterministic uniform fill (the values only need to be realistic in range). */
function fill(n: number, seed: number, lo: number, hi: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + (hi - lo) * (s / 4294967296);
  }
  return out;
}

function inputsFor(s: Shape): Record<keyof typeof INPUTS, Float32Array> {
  const h = s.g * s.r;
  return {
    x: rounded(fill(s.b * s.l * h * s.p, 1, -1, 1)),
    dt: rounded(fill(s.b * s.l * h, 2, -4, 0)),
    A: fill(h, 3, -8, -1),
    B: rounded(fill(s.b * s.l * s.g * s.n, 4, -1, 1)),
    C: rounded(fill(s.b * s.l * s.g * s.n, 5, -1, 1)),
    D: fill(h, 6, 0.5, 1.5),
    dt_bias: fill(h, 7, -1, 0),
  };
}

const ctx = await getGpu();
const limits = deviceLimits(ctx);
const device = `${ctx.adapterInfo.description || ctx.adapterInfo.vendor}`;
console.log(`device: ${device}; binding limit ${limits.maxStorageBufferBindingSize}`);

interface Variant {
  chunk?: number;
  tiles?: Partial<SsdTiling>;
}

/** Builds the chunked program for a shape with an explicit chunk length and tiles. */
async function chunkedProgram(shape: Shape, v: Variant) {
  const graph = trace(INPUTS, ssd, shape);
  const plan = planFusion(graph);
  const group = plan.kernels[0];
  if (plan.kernels.length !== 1 || group.kind !== "scan") {
    throw new Error("expected one scan group");
  }
  const spec = {
    scan: group.use.scan,
    stateAxes: group.use.stateAxes,
    channelAxes: group.use.channelAxes,
    outputs: group.outputs,
    finals: group.finals,
  };
  const form = analyzeSsd(spec, plan.materialized);
  if (!form) throw new Error("no SSD form");
  const kernels: KernelArtifact[] = emitSsdKernels(
    spec,
    form,
    plan.materialized,
    limits,
    "k0_scan",
    new Map(),
    v,
  );
  const program = await GpuProgram.create(ctx, { graph, plan, kernels });
  return { program, form, kernels };
}

/** FLOPs the kernels execute (padding and the causal block structure included). */
function executedFlops(shape: Shape, q: number, rowTile: number, cbTile: number): number {
  const H = shape.b * shape.g * shape.r, P = shape.p, N = shape.n;
  const nc = Math.ceil(shape.l / q);
  const rt = q / rowTile, nb = q / cbTile;
  const states = 2 * H * nc * q * N * P;
  const cb = 2 * shape.b * shape.g * nc * (nb * (nb + 1) / 2) * cbTile * cbTile * N;
  const inter = 2 * H * (nc - 1) * q * N * P;
  const intra = 2 * H * nc * P * rowTile * rowTile * (rt * (rt + 1) / 2);
  return states + cb + inter + intra;
}

/** The SSD's own FLOPs (independent of tiling): states, outputs, half the q×q blocks. */
function modelFlops(shape: Shape, q: number): number {
  const H = shape.b * shape.g * shape.r, L = shape.l, P = shape.p, N = shape.n;
  return 4 * H * L * N * P + H * L * q * P + shape.b * shape.g * L * q * N;
}

/** float64 reference of one head (batch bi, head hi) by the plain recurrence. */
function referenceHead(shape: Shape, data: ReturnType<typeof inputsFor>, bi: number, hi: number) {
  const { l, p, n } = shape;
  const H = shape.g * shape.r;
  const g = Math.floor(hi / shape.r);
  const st = new Float64Array(p * n);
  const y = new Float64Array(l * p);
  const softplus = (v: number) => v > 20 ? v : Math.log1p(Math.exp(v));
  for (let t = 0; t < l; t++) {
    const dlt = softplus(data.dt[(bi * l + t) * H + hi] + data.dt_bias[hi]);
    const a = Math.exp(dlt * data.A[hi]);
    const bo = ((bi * l + t) * shape.g + g) * n;
    const xo = ((bi * l + t) * H + hi) * p;
    for (let i = 0; i < p; i++) {
      const xv = dlt * data.x[xo + i];
      let acc = 0;
      for (let k = 0; k < n; k++) {
        const v = a * st[i * n + k] + xv * data.B[bo + k];
        st[i * n + k] = v;
        acc += v * data.C[bo + k];
      }
      y[t * p + i] = acc + data.D[hi] * data.x[xo + i];
    }
  }
  return y;
}

function relErr(
  got: Float32Array,
  gotOffset: (t: number, i: number) => number,
  want: Float64Array,
  l: number,
  p: number,
) {
  let d = 0, w = 0;
  for (let t = 0; t < l; t++) {
    for (let i = 0; i < p; i++) {
      const g = got[gotOffset(t, i)], r = want[t * p + i];
      d += (g - r) ** 2;
      w += r * r;
    }
  }
  return Math.sqrt(d / w);
}

const results: Record<string, unknown> = {
  device,
  dtype,
  date: new Date().toISOString(),
  runs: [],
};
const runs = results.runs as Record<string, unknown>[];

interface Prepared {
  label: string;
  shape: Shape;
  program: GpuProgram;
  q: number;
  out: TileShape;
  cb: TileShape;
  tiles: unknown;
  rounds: { totalNs: number; kernels: { name: string; medianNs: number; minNs: number }[] }[];
}

async function prepare(shape: Shape, v: Variant, label: string): Promise<Prepared> {
  const { program, kernels } = await chunkedProgram(shape, v);
  const tiles = JSON.parse(/tiles (\{.*\})/.exec(kernels[0].wgsl)![1]);
  return {
    label,
    shape,
    program,
    q: Number(/q = (\d+)/.exec(kernels[0].wgsl)![1]),
    out: JSON.parse(/tile (\{.*\})/.exec(kernels[2].wgsl)![1]) as TileShape,
    cb: tiles.cb as TileShape,
    tiles,
    rounds: [],
  };
}

/** Interleaved rounds (clock and neighbour noise hit every config alike); best round wins. */
async function measureRounds(
  list: Prepared[],
  data: ReturnType<typeof inputsFor>,
  rounds: number,
) {
  // Warm the clocks up first (~1 s of work).
  await list[0].program.benchmark(data, { warmup: 50, iterations: 200 });
  for (let r = 0; r < rounds; r++) {
    for (const p of list) {
      const b = await p.program.benchmark(data, { warmup: 10, iterations: 20 });
      p.rounds.push(b);
    }
  }
  for (const p of list) {
    const best = p.rounds.reduce((a, b) => a.totalNs <= b.totalNs ? a : b);
    const seconds = best.totalNs * 1e-9;
    const flops = executedFlops(p.shape, p.q, p.out.Mt, p.cb.Mt);
    const run: Record<string, unknown> = {
      label: p.label,
      shape: p.shape,
      q: p.q,
      tiles: p.tiles,
      outTile: p.out,
      ms: seconds * 1e3,
      roundsMs: p.rounds.map((x) => x.totalNs * 1e-6),
      kernelsMs: best.kernels.map((k) => [k.name, k.medianNs * 1e-6, k.minNs * 1e-6]),
      executedTflops: flops / seconds * 1e-12,
      modelTflops: modelFlops(p.shape, p.q) / seconds * 1e-12,
    };
    runs.push(run);
    console.log(
      `${p.label.padEnd(24)} l=${p.shape.l} q=${p.q} out ${p.out.Mt}x${p.out.Nt}/${p.out.tm}x` +
        `${p.out.tn} k${p.out.kt}: ${(seconds * 1e3).toFixed(3)} ms (rounds ` +
        `${p.rounds.map((x) => (x.totalNs * 1e-6).toFixed(3)).join(", ")}), ` +
        `${(run.executedTflops as number).toFixed(1)} TFLOP/s executed; kernels ` +
        best.kernels.map((k) => (k.medianNs * 1e-6).toFixed(3)).join(" + "),
    );
  }
}

/** Max relative error of 3 sampled heads against the float64 recurrence. */
async function check(p: Prepared, data: ReturnType<typeof inputsFor>): Promise<number> {
  const shape = p.shape;
  const out = (await p.program.run(data)).out as Float32Array;
  const H = shape.g * shape.r;
  const errs: number[] = [];
  for (const [bi, hi] of [[0, 0], [shape.b - 1, H - 1], [1 % shape.b, 37 % H]]) {
    const want = referenceHead(shape, data, bi, hi);
    errs.push(
      relErr(out, (t, i) => ((bi * shape.l + t) * H + hi) * shape.p + i, want, shape.l, shape.p),
    );
  }
  const err = Math.max(...errs);
  console.log(`${p.label} l=${shape.l}: max rel err of 3 heads vs float64 ${err.toExponential(2)}`);
  return err;
}

const tile = (Mt: number, Nt: number, kt: number, tm: number, tn: number): TileShape => ({
  Mt,
  Nt,
  kt,
  tm,
  tn,
});

const VARIANTS: [string, Variant][] = [
  ["default", {}],
  ["q256", { chunk: 256 }],
  ["q64", { chunk: 64 }],
  ["q128 out k8", { chunk: 128, tiles: { out: tile(64, 64, 8, 8, 4) } }],
  ["q128 out32x64/4x4", { chunk: 128, tiles: { out: tile(32, 64, 16, 4, 4) } }],
  ["q128 state64x64/8x4", { chunk: 128, tiles: { state: tile(64, 64, 16, 8, 4) } }],
  ["q256 out128x64/8x8", { chunk: 256, tiles: { out: tile(128, 64, 16, 8, 8) } }],
  ["q64 out64x64/8x8", { chunk: 64, tiles: { out: tile(64, 64, 16, 8, 8) } }],
];

for (const l of lengths) {
  const shape: Shape = { b: batch, l, g: 1, r: heads, p: 64, n: 128 };
  const data = inputsFor(shape);
  const list: Prepared[] = [];
  const chosen = flag("--sweep") && l === lengths[0] ? VARIANTS : VARIANTS.slice(0, 2);
  for (const [label, v] of chosen) {
    try {
      list.push(await prepare(shape, v, label));
    } catch (e) {
      console.log(`${label} l=${l} failed: ${(e as Error).message.slice(0, 300)}`);
      runs.push({ label, shape, error: String(e).slice(0, 500) });
    }
  }
  if (list.length === 0) continue;
  await measureRounds(list, data, flag("--sweep") && l === lengths[0] ? 3 : 2);
  for (const p of list.slice(0, 2)) {
    const run = runs.find((r) => r.label === p.label && (r.shape as Shape).l === l);
    if (run) run.maxRelErrVsF64 = await check(p, data);
  }
  for (const p of list) p.program.destroy();
}

// The recurrent kernel against the chunked one where both run (the cost model's calibration).
if (flag("--sweep")) {
  const calib: Record<string, unknown>[] = [];
  for (
    const shape of [
      { b: 1, l: 2048, g: 1, r: 80, p: 64, n: 128 },
      { b: 4, l: 256, g: 1, r: 24, p: 64, n: 128 },
      { b: 1, l: 512, g: 1, r: 8, p: 64, n: 64 },
      { b: 2, l: 1024, g: 1, r: 8, p: 16, n: 16 },
      { b: 1, l: 128, g: 1, r: 8, p: 64, n: 128 },
    ]
  ) {
    const data = inputsFor(shape);
    const row: Record<string, unknown> = { shape };
    const progs: [string, Awaited<ReturnType<typeof compile>>][] = [];
    for (const mode of ["recurrent", "chunked"] as const) {
      try {
        progs.push([mode, await compile(INPUTS, ssd, shape, { backend: "gpu", scan: { mode } })]);
      } catch (e) {
        row[mode] = String(e).slice(0, 200);
      }
    }
    for (let r = 0; r < 2; r++) {
      for (const [mode, prog] of progs) {
        const b = await prog.benchmark(data, { warmup: 10, iterations: 20 });
        const ms = b.totalNs * 1e-6;
        row[mode] = Math.min((row[mode] as number) ?? Infinity, ms);
      }
    }
    for (const [, prog] of progs) prog.destroy();
    const auto = await compile(INPUTS, ssd, shape, { backend: "gpu" });
    row.auto = auto.kernels.some((k) => k.name.includes("_ssd_")) ? "chunked" : "recurrent";
    auto.destroy();
    calib.push(row);
    console.log(`calibration ${JSON.stringify(row)}`);
  }
  results.calibration = calib;
}

if (jsonPath) await Deno.writeTextFile(jsonPath, JSON.stringify(results, null, 1));
