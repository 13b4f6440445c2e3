/**
 * Tunes the matmul emitter: for f32 4096³ (and a few extra shapes) it emits several tile configs,
 * checks each on sampled outputs against a float64 CPU reference and times it with timestamp
 * queries. Clocks matter: all configs of a problem are compiled and checked first, the GPU is kept
 * busy for WARM_MS, then ROUNDS interleaved rounds of RUNS passes per config follow, each round one
 * submission; the table shows the median over all passes and the best round's median.
 * Run: `deno run -A bench/matmul_tune.ts [--quick]`.
 */
import {
  emitMatmul,
  MATMUL_TILES,
  type MatmulKernel,
  type MatmulKernelSpec,
  type MatmulLimits,
  type MatmulTile,
} from "../codegen/matmul_kernel.ts";
import { preferVulkanOnLinux } from "../runtime/gpu_device.ts";

const { MAP_READ, COPY_SRC, COPY_DST, QUERY_RESOLVE, STORAGE } = GPUBufferUsage;
const quick = Deno.args.includes("--quick");
const RUNS = quick ? 3 : 10, ROUNDS = 3, WARM_MS = quick ? 50 : 600;

preferVulkanOnLinux();
const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no WebGPU adapter");
const al = adapter.limits;
const dev = await adapter.requestDevice({
  requiredFeatures: ["timestamp-query"],
  requiredLimits: {
    maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxBufferSize: al.maxBufferSize,
  },
});
const limits: MatmulLimits = {
  maxComputeWorkgroupStorageSize: dev.limits.maxComputeWorkgroupStorageSize,
  maxComputeInvocationsPerWorkgroup: dev.limits.maxComputeInvocationsPerWorkgroup,
  maxComputeWorkgroupsPerDimension: dev.limits.maxComputeWorkgroupsPerDimension,
  maxComputeWorkgroupSizeX: dev.limits.maxComputeWorkgroupSizeX,
};
console.log(`adapter: ${adapter.info.description} (${adapter.info.vendor})`);
console.log(`limits: ${JSON.stringify(limits)}`);

/** Deterministic uniform(-1, 1) fill (xorshift32), fast enough for 16M values. */
function fill(n: number, seed: number): Float32Array<ArrayBuffer> {
  const x = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    x[i] = (s >>> 0) / 2147483648 - 1;
  }
  return x;
}

function storage(data: Float32Array<ArrayBuffer>): GPUBuffer {
  const buf = dev.createBuffer({ size: data.byteLength, usage: STORAGE | COPY_DST });
  dev.queue.writeBuffer(buf, 0, data);
  return buf;
}

async function readBack(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const read = dev.createBuffer({ size: bytes, usage: MAP_READ | COPY_DST });
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, read, 0, bytes);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const out = read.getMappedRange().slice(0);
  read.unmap();
  read.destroy();
  return out;
}

/** A problem: operands in memory plus how the kernel sees them. */
interface Problem {
  /** e.g. "4096x4096x4096 B^T". */
  label: string;
  batch: number;
  M: number;
  N: number;
  K: number;
  /** B stored as [N, K] (x·Wᵀ, like nn.Linear) instead of [K, N]. */
  bT: boolean;
  a: Float32Array;
  b: Float32Array;
  bufA: GPUBuffer;
  bufB: GPUBuffer;
  bufC: GPUBuffer;
}

function problem(M: number, N: number, K: number, bT: boolean): Problem {
  const a = fill(M * K, 1234 + M), b = fill(K * N, 777 + N);
  return {
    label: `${M}x${N}x${K}${bT ? " B^T" : ""}`,
    batch: 1,
    M,
    N,
    K,
    bT,
    a,
    b,
    bufA: storage(a),
    bufB: storage(b),
    bufC: dev.createBuffer({ size: M * N * 4, usage: STORAGE | COPY_SRC | COPY_DST }),
  };
}

function spec(p: Problem, name: string, tile: MatmulTile | undefined, hooks: boolean) {
  const { M, N, K } = p;
  const s: MatmulKernelSpec = {
    name,
    batch: 1,
    M,
    N,
    K,
    declarations: [
      hooks ? "@group(0) @binding(0) var<storage, read> a_in: array<f32>;" : "",
      hooks ? "@group(0) @binding(1) var<storage, read> b_in: array<f32>;" : "",
      "@group(0) @binding(2) var<storage, read_write> c_out: array<f32>;",
    ].join("\n"),
    loadA: `return a_in[m * ${K}u + k];`,
    loadB: p.bT ? `return b_in[n * ${K}u + k];` : `return b_in[k * ${N}u + n];`,
    storeC: `c_out[m * ${N}u + n] = acc;`,
    tile,
  };
  if (!hooks) {
    s.aDirect = { binding: 0, offset: 0, batchStride: 0, mStride: K, kStride: 1 };
    s.bDirect = p.bT
      ? { binding: 1, offset: 0, batchStride: 0, kStride: 1, nStride: K }
      : { binding: 1, offset: 0, batchStride: 0, kStride: N, nStride: 1 };
  }
  return s;
}

/** Max error on sampled outputs, relative to Σ|a·b| of each dot product. */
async function verify(p: Problem, samples: number): Promise<number> {
  const c = new Float32Array(await readBack(p.bufC, p.M * p.N * 4));
  let worst = 0, seed = 99;
  for (let s = 0; s < samples; s++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const m = seed % p.M;
    seed = (seed * 1103515245 + 12345) >>> 0;
    const n = seed % p.N;
    let sum = 0, mag = 0;
    for (let k = 0; k < p.K; k++) {
      const bv = p.bT ? p.b[n * p.K + k] : p.b[k * p.N + n];
      const v = p.a[m * p.K + k] * bv;
      sum += v;
      mag += Math.abs(v);
    }
    const err = Math.abs(c[m * p.N + n] - sum) / (mag + 1e-30);
    worst = Math.max(worst, Number.isNaN(err) ? Infinity : err);
  }
  return worst;
}

/** A compiled, verified config waiting to be timed. */
interface Entry {
  row: Row;
  kernel: MatmulKernel;
  pipeline: GPUComputePipeline;
  bind: GPUBindGroup;
}

interface Row {
  problem: string;
  config: string;
  tile: string;
  loads: string;
  tflops: number;
  /** Best per-round median (rounds are interleaved across configs). */
  best: number;
  ms: number;
  err: number;
  compileS: number;
  note: string;
}

function encodePass(enc: GPUCommandEncoder, e: Entry, ts?: GPUComputePassTimestampWrites) {
  const p = enc.beginComputePass(ts ? { timestampWrites: ts } : {});
  p.setPipeline(e.pipeline);
  p.setBindGroup(0, e.bind);
  p.dispatchWorkgroups(...e.kernel.workgroups);
  p.end();
}

/** Emits, compiles, runs once and checks a config; undefined (row noted) if it fails. */
async function prepare(
  p: Problem,
  config: string,
  tile: MatmulTile | undefined,
  hooks: boolean,
  rows: Row[],
): Promise<Entry | undefined> {
  const row: Row = {
    problem: p.label,
    config,
    tile: "",
    loads: "",
    tflops: NaN,
    best: NaN,
    ms: NaN,
    err: NaN,
    compileS: NaN,
    note: "",
  };
  rows.push(row);
  try {
    const kernel = emitMatmul(spec(p, "mm_bench", tile, hooks), limits);
    const t = kernel.tile;
    row.tile = `${t.tileM}x${t.tileN}x${t.tileK} ${t.threadM}x${t.threadN} ` +
      `ks${t.kSplit} st${t.stages} g${t.groupM}`;
    row.loads = `${kernel.loads.a}/${kernel.loads.b}`;
    dev.pushErrorScope("validation");
    const t0 = performance.now();
    const module = dev.createShaderModule({ code: kernel.wgsl });
    const pipeline = await dev.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: kernel.entryPoint },
    });
    row.compileS = (performance.now() - t0) / 1e3;
    const bind = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [p.bufA, p.bufB, p.bufC].map((buffer, binding) => ({
        binding,
        resource: { buffer },
      })),
    });
    const entry = { row, kernel, pipeline, bind };
    const enc = dev.createCommandEncoder();
    enc.clearBuffer(p.bufC);
    encodePass(enc, entry);
    dev.queue.submit([enc.finish()]);
    const err = await dev.popErrorScope();
    if (err) throw new Error(err.message);
    row.err = await verify(p, 48);
    if (!(row.err <= 1e-5)) row.note = "WRONG";
    return entry;
  } catch (e) {
    row.note = `error: ${(e as Error).message.split("\n")[0].slice(0, 120)}`;
    return undefined;
  }
}

/** Keeps the GPU busy for `ms` of wall time so its clocks ramp up before timing. */
async function warmUp(e: Entry, ms: number): Promise<void> {
  const t0 = performance.now();
  let n = 8;
  while (performance.now() - t0 < ms) {
    const enc = dev.createCommandEncoder();
    for (let i = 0; i < n; i++) encodePass(enc, e);
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
    n = Math.min(n * 2, 4096);
  }
}

/** SM clock as nvidia-smi reports it (where available), for the log. */
async function smClock(): Promise<string> {
  try {
    const out = await new Deno.Command("nvidia-smi", {
      args: ["--query-gpu=clocks.sm,power.draw,temperature.gpu", "--format=csv,noheader"],
    }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "n/a";
  }
}

/** Times configs round-robin: each round is one submission running every config (2 untimed
 * passes, then RUNS timed ones), so clocks stay up and drift affects all configs alike. */
async function measure(p: Problem, entries: Entry[]): Promise<void> {
  if (entries.length === 0) return;
  await warmUp(entries[0], WARM_MS);
  console.log(`${p.label}: after warm-up: ${await smClock()}`);
  const count = entries.length * RUNS;
  const samples: number[][] = entries.map(() => []);
  const roundMedians: number[][] = entries.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    const qs = dev.createQuerySet({ type: "timestamp", count: 2 * count });
    const resolve = dev.createBuffer({ size: 16 * count, usage: QUERY_RESOLVE | COPY_SRC });
    const enc = dev.createCommandEncoder();
    entries.forEach((e, i) => {
      for (let w = 0; w < 2; w++) encodePass(enc, e);
      for (let j = 0; j < RUNS; j++) {
        const q = 2 * (i * RUNS + j);
        encodePass(enc, e, {
          querySet: qs,
          beginningOfPassWriteIndex: q,
          endOfPassWriteIndex: q + 1,
        });
      }
    });
    enc.resolveQuerySet(qs, 0, 2 * count, resolve, 0);
    dev.queue.submit([enc.finish()]);
    const ts = new BigInt64Array(await readBack(resolve, 16 * count));
    qs.destroy();
    resolve.destroy();
    entries.forEach((_, i) => {
      const d: number[] = [];
      for (let j = 0; j < RUNS; j++) {
        const q = 2 * (i * RUNS + j);
        d.push(Number(ts[q + 1] - ts[q]) * 1e-9);
      }
      samples[i].push(...d);
      roundMedians[i].push(median(d));
    });
  }
  console.log(`${p.label}: after timing: ${await smClock()}`);
  const flops = 2 * p.batch * p.M * p.N * p.K;
  entries.forEach((e, i) => {
    const med = median(samples[i]);
    e.row.ms = med * 1e3;
    e.row.tflops = flops / med / 1e12;
    e.row.best = flops / Math.min(...roundMedians[i]) / 1e12;
    console.log(JSON.stringify(e.row));
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

const T = MATMUL_TILES;
const t = (
  tileM: number,
  tileN: number,
  tileK: number,
  threadM: number,
  threadN: number,
  kSplit = 1,
  stages: 1 | 2 = 2,
  groupM = 1,
): MatmulTile => ({ tileM, tileN, tileK, threadM, threadN, kSplit, stages, groupM });

/** A sweep entry: label, tile (undefined = the emitter's own choice), hooks instead of direct. */
type Item = [string, MatmulTile | undefined, boolean?];

const square: Item[] = [
  ["default", undefined],
  ["128x128k16 8x8 st1", t(128, 128, 16, 8, 8, 1, 1)],
  ["128x128k32 8x8 st1", t(128, 128, 32, 8, 8, 1, 1)],
  ["128x128k32 8x8 st1 g8", t(128, 128, 32, 8, 8, 1, 1, 8)],
  ["128x128k8 8x8 st2", t(128, 128, 8, 8, 8)],
  ["128x128k16 8x8 st2", t(128, 128, 16, 8, 8)],
  ["128x128k16 8x8 st2 g8", t(128, 128, 16, 8, 8, 1, 2, 8)],
  ["64x128k8 8x8 st2 (128 thr)", t(64, 128, 8, 8, 8)],
  ["64x128k16 8x8 st1 (128 thr)", t(64, 128, 16, 8, 8, 1, 1)],
  ["128x128k8 8x16 st2 (128 thr)", t(128, 128, 8, 8, 16)],
  ["128x128k16 8x16 st1 (128 thr)", t(128, 128, 16, 8, 16, 1, 1)],
  ["128x64k16 8x4 st2", t(128, 64, 16, 8, 4)],
  ["64x128k16 4x8 st2", t(64, 128, 16, 4, 8)],
  ["64x64k16 4x4 st2", t(64, 64, 16, 4, 4)],
  ["hooks: default", undefined, true],
  ["hooks: 128x128k16 8x8 st1", t(128, 128, 16, 8, 8, 1, 1), true],
  ["hooks: 128x128k16 8x8 st2", t(128, 128, 16, 8, 8), true],
];
const squareT: Item[] = [
  ["default", undefined],
  ["128x128k16 8x8 st1", t(128, 128, 16, 8, 8, 1, 1)],
  ["128x128k32 8x8 st1", t(128, 128, 32, 8, 8, 1, 1)],
  ["128x128k8 8x8 st2", t(128, 128, 8, 8, 8)],
  ["128x128k16 8x8 st2", t(128, 128, 16, 8, 8)],
  ["hooks: default", undefined, true],
];
const skinny: Item[] = [
  ["default", undefined],
  ["4x64k32 ks8 (128 thr)", t(4, 64, 32, 4, 4, 8, 1)],
  ["4x32k64 ks16 (128 thr)", t(4, 32, 64, 4, 4, 16, 1)],
  ["4x16k128 ks32 (128 thr)", t(4, 16, 128, 4, 4, 32, 1)],
  ["4x32k128 ks32 (256 thr)", t(4, 32, 128, 4, 4, 32, 1)],
  ["4x8k256 ks64 (128 thr)", t(4, 8, 256, 4, 4, 64, 1)],
  ["4x16k256 ks64 (256 thr)", t(4, 16, 256, 4, 4, 64, 1)],
  ["1x16k128 ks32 (128 thr)", t(1, 16, 128, 1, 4, 32, 1)],
];
const mid: Item[] = [
  ["default", undefined],
  ["64x4k32 ks8", T.skinnyN],
  ["64x64k16 4x4 st2", t(64, 64, 16, 4, 4)],
  ["32x64k32 4x4 ks4 (512 thr)", t(32, 64, 32, 4, 4, 4, 1)],
  ["16x64k32 4x4 ks4 (256 thr)", t(16, 64, 32, 4, 4, 4, 1)],
  ["32x32k32 4x4 ks4 (256 thr)", t(32, 32, 32, 4, 4, 4, 1)],
  ["16x32k64 4x4 ks8 (256 thr)", t(16, 32, 64, 4, 4, 8, 1)],
  ["32x64k16 4x4 ks2 st2 (256 thr)", t(32, 64, 16, 4, 4, 2, 2)],
];
// Mamba-1 130M projections at l = 2048 (x·Wᵀ): in_proj 768 → 3072, out_proj 1536 → 768.
const mamba: Item[] = [
  ["default", undefined],
  ["128x128k16 8x8 st1", t(128, 128, 16, 8, 8, 1, 1)],
  ["128x128k32 8x8 st1", t(128, 128, 32, 8, 8, 1, 1)],
  ["128x128k16 8x8 st2", t(128, 128, 16, 8, 8)],
  ["128x64k16 8x4 st2", t(128, 64, 16, 8, 4)],
  ["64x128k8 8x8 st2 (128 thr)", t(64, 128, 8, 8, 8)],
  ["64x64k16 4x4 st2", t(64, 64, 16, 4, 4)],
];

const S = quick ? 512 : 4096;
const rows: Row[] = [];
const sweep = async (p: Problem, list: Item[]) => {
  const entries: Entry[] = [];
  for (const [name, tile, hooks] of list) {
    const e = await prepare(p, name, tile, hooks ?? false, rows);
    if (e) entries.push(e);
  }
  await measure(p, entries);
  for (const buf of [p.bufA, p.bufB, p.bufC]) buf.destroy();
};
await sweep(problem(S, S, S, false), square);
await sweep(problem(S, S, S, true), squareT);
await sweep(problem(1, S, S, false), skinny);
await sweep(problem(1, S, S, true), skinny);
await sweep(problem(64, S, S, false), mid);
const L = quick ? 256 : 2048;
await sweep(problem(L, 3072, 768, true), mamba);
await sweep(problem(L, 768, 1536, true), mamba);
await sweep(problem(L, L, L, false), mamba);

console.log(
  "\nproblem              | config                           | tile                      " +
    "  | loads       | TFLOP/s med (best rnd) | ms      | rel err  | compile s | note",
);
for (const r of rows) {
  console.log(
    [
      r.problem.padEnd(20),
      r.config.padEnd(32),
      r.tile.padEnd(28),
      r.loads.padEnd(11),
      `${r.tflops.toFixed(2).padStart(7)} (${r.best.toFixed(2).padStart(6)})`.padEnd(22),
      r.ms.toFixed(3).padStart(7),
      r.err.toExponential(1).padStart(8),
      r.compileS.toFixed(2).padStart(9),
      r.note,
    ].join(" | "),
  );
}
