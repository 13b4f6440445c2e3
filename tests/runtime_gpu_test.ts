// The WebGPU runtime layer on the real adapter (lavapipe in CI): device acquisition, buffers,
// batched readback, pipeline and bind-group caches, submission, profiling and error reporting.
// Without any adapter these tests fail loudly unless SSMKIT_ALLOW_NO_GPU=1.
import assert from "node:assert/strict";
import {
  acquireGpu,
  getGpu,
  type GpuContext,
  hasGpu,
  NoAdapterError,
} from "../runtime/gpu_device.ts";
import { BufferPool, readBuffers, sizeClass, uploadArray } from "../runtime/gpu_buffers.ts";
import {
  BindGroupCache,
  KernelCompileError,
  type KernelSource,
  PipelineCache,
} from "../runtime/gpu_pipelines.ts";
import {
  type Dispatch,
  encodeDispatches,
  submitDispatches,
  submitEncoded,
  timeDispatches,
  timeSequence,
} from "../runtime/gpu_submit.ts";
import { describeGpu } from "../runtime/gpu_info.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

const available = await hasGpu();
const allowNoGpu = Deno.env.get("SSMKIT_ALLOW_NO_GPU") === "1";
const ignore = !available;
const opts = { ignore };

Deno.test({
  name: "gpu: a WebGPU adapter exists (set SSMKIT_ALLOW_NO_GPU=1 to run without one)",
  ignore: available || allowNoGpu,
  fn() {
    throw new NoAdapterError("the runtime GPU tests need an adapter");
  },
});

const seed = freshSeed();
console.log(`runtime_gpu_test seed ${seed}`);
const next = rng(seed);
const randInt = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));

/** y = 2·x + 1 over `n` elements, one thread each. */
function affineKernel(n: number, name = `affine_${n}`): KernelSource {
  return {
    name,
    wgsl: `const N: u32 = ${n}u;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x;
  if (i < N) { y[i] = 2.0 * x[i] + 1.0; }
}
`,
  };
}

/** z = y·y − x: reads the previous kernel's output, so dispatch order matters. */
function chainKernel(n: number): KernelSource {
  return {
    name: `chain_${n}`,
    wgsl: `const N: u32 = ${n}u;
@binding(0) @group(0) var<storage, read> x: array<f32>;
@binding(1) @group(0) var<storage, read> y: array<f32>;
@binding(2) @group(0) var<storage, read_write> z: array<f32>;
@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < N) { z[g.x] = y[g.x] * y[g.x] - x[g.x]; }
}
`,
  };
}

/** c[0] += 1 (one thread): counts how many dispatches really ran. */
const COUNTER: KernelSource = {
  name: "counter",
  wgsl: `@group(0) @binding(0) var<storage, read_write> c: array<u32>;
@compute @workgroup_size(1)
fn main() { c[0] = c[0] + 1u; }
`,
};

function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}

async function setup(): Promise<{ ctx: GpuContext; pipelines: PipelineCache }> {
  const ctx = await getGpu();
  return { ctx, pipelines: new PipelineCache(ctx) };
}

Deno.test({
  ...opts,
  name: "gpu: the device gets the adapter's real limits and reports its features",
  async fn() {
    const ctx = await getGpu();
    assert.equal(await getGpu(), ctx, "getGpu is a cached singleton");
    const adapter = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))!;
    const adapterLimits = adapter.limits as unknown as Record<string, number>;
    let compared = 0;
    for (const key in adapter.limits) {
      if (typeof adapterLimits[key] !== "number") continue;
      assert.equal(ctx.limits[key], adapterLimits[key], `limit ${key}`);
      compared++;
    }
    assert.ok(compared >= 20, `only ${compared} limits compared`);
    // WebGPU's defaults are 8 storage buffers and 256 invocations; every real adapter has more.
    assert.ok(ctx.limits.maxStorageBuffersPerShaderStage > 8);
    assert.equal(ctx.features.shaderF16, adapter.features.has("shader-f16"));
    assert.equal(ctx.features.timestampQuery, adapter.features.has("timestamp-query"));
    if (ctx.features.subgroups) {
      assert.ok(ctx.features.subgroupMinSize >= 4);
      assert.ok(ctx.features.subgroupMaxSize >= ctx.features.subgroupMinSize);
      assert.ok(ctx.device.features.has("subgroups" as GPUFeatureName));
    }
    const info = describeGpu(ctx);
    assert.deepEqual(JSON.parse(JSON.stringify(info)), info, "describeGpu is plain JSON");
    assert.equal(
      info.limits.maxComputeWorkgroupsPerDimension,
      ctx.limits.maxComputeWorkgroupsPerDimension,
    );
    assert.equal(typeof info.adapter.description, "string");
  },
});

Deno.test({
  ...opts,
  name: "gpu: acquireGpu({ subgroups: false }) gives a device without subgroups",
  async fn() {
    const ctx = await acquireGpu({ subgroups: false });
    try {
      assert.equal(ctx.features.subgroups, false);
      assert.equal(ctx.device.features.has("subgroups" as GPUFeatureName), false);
    } finally {
      ctx.device.destroy();
    }
  },
});

Deno.test({
  ...opts,
  name: "gpu: y = 2x + 1 and a dependent second kernel run through the whole path",
  async fn() {
    const { ctx, pipelines } = await setup();
    const pool = new BufferPool(ctx);
    try {
      for (const n of [1001, randInt(1, 3000) | 1]) {
        const x = randomArray(n, next, -100, 100);
        const xb = uploadArray(ctx, x, pool);
        const yb = pool.acquire(n * 4, xb.usage);
        const zb = pool.acquire(n * 4, xb.usage);
        const [affine, chain] = await pipelines.prepareAll([affineKernel(n), chainKernel(n)]);
        const dispatches: Dispatch[] = [
          {
            kernel: affineKernel(n),
            pipeline: affine,
            buffers: [xb, yb],
            workgroups: [ceilDiv(n, 64), 1, 1],
          },
          {
            kernel: chainKernel(n),
            pipeline: chain,
            buffers: [xb, yb, zb],
            workgroups: [ceilDiv(n, 32), 1, 1],
          },
        ];
        assert.equal(await submitDispatches(ctx, dispatches), undefined);
        const [yRaw, zRaw] = await readBuffers(ctx, [
          { buffer: yb, byteLength: n * 4 },
          { buffer: zb, byteLength: n * 4 },
        ]);
        const y = new Float32Array(yRaw), z = new Float32Array(zRaw);
        assert.equal(y.length, n);
        for (let i = 0; i < n; i++) {
          const want = Math.fround(2 * x[i] + 1);
          assert.equal(y[i], want, `y[${i}] (n=${n}, seed ${seed})`);
          const wantZ = Math.fround(want * want - x[i]);
          // y·y − x may be fused into one fma on the GPU: allow one rounding of difference.
          assert.ok(
            Math.abs(z[i] - wantZ) <= Math.abs(wantZ) * 2e-7 + 1e-6,
            `z[${i}] (seed ${seed})`,
          );
        }
        for (const b of [xb, yb, zb]) pool.release(b);
      }
    } finally {
      pool.destroyAll();
    }
  },
});

Deno.test({
  ...opts,
  name: "gpu: readBuffers reads many buffers and ranges with one mapAsync",
  async fn() {
    const ctx = await getGpu();
    const n = randInt(1, 500);
    const f = randomArray(n, next);
    const i32 = Int32Array.from({ length: 1001 }, () => randInt(-1e9, 1e9));
    const u32 = Uint32Array.from({ length: 5 }, () => randInt(0, 4e9));
    const u16 = Uint16Array.from({ length: 7 }, () => randInt(0, 65535)); // 14 bytes: padded
    const buffers = [
      uploadArray(ctx, f),
      uploadArray(ctx, i32),
      uploadArray(ctx, u32),
      uploadArray(ctx, u16),
    ];
    const off = 4 * randInt(0, 900);
    const proto = GPUBuffer.prototype as unknown as {
      mapAsync: (...a: unknown[]) => Promise<void>;
    };
    const original = proto.mapAsync;
    let maps = 0;
    proto.mapAsync = function (this: GPUBuffer, ...a: unknown[]) {
      maps++;
      return original.apply(this, a);
    };
    let out: ArrayBuffer[];
    try {
      out = await readBuffers(ctx, [
        { buffer: buffers[0], byteLength: f.byteLength },
        { buffer: buffers[1], byteLength: i32.byteLength },
        { buffer: buffers[2], byteLength: u32.byteLength },
        { buffer: buffers[3], byteLength: u16.byteLength },
        { buffer: buffers[1], byteOffset: off, byteLength: 400 },
        { buffer: buffers[2], byteLength: 0 },
      ]);
    } finally {
      proto.mapAsync = original;
    }
    assert.equal(maps, 1, "exactly one mapAsync for all parts");
    assert.deepEqual(new Float32Array(out[0]), f);
    assert.deepEqual(new Int32Array(out[1]), i32);
    assert.deepEqual(new Uint32Array(out[2]), u32);
    assert.deepEqual(new Uint16Array(out[3]), u16);
    assert.deepEqual(new Int32Array(out[4]), i32.slice(off / 4, off / 4 + 100));
    assert.equal(out[5].byteLength, 0);
    assert.deepEqual(await readBuffers(ctx, []), []);
    // Concurrent calls use separate staging buffers.
    const [a, b] = await Promise.all([
      readBuffers(ctx, [{ buffer: buffers[0], byteLength: f.byteLength }]),
      readBuffers(ctx, [{ buffer: buffers[1], byteLength: i32.byteLength }]),
    ]);
    assert.deepEqual(new Float32Array(a[0]), f);
    assert.deepEqual(new Int32Array(b[0]), i32);
    await assert.rejects(
      readBuffers(ctx, [{ buffer: buffers[2], byteOffset: 8, byteLength: 28 }]),
      /lie outside the buffer/,
    );
    for (const b of buffers) b.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: readBuffers rejects bad ranges and unreadable buffers before any GPU call",
  async fn() {
    const ctx = await getGpu();
    const b = uploadArray(ctx, new Float32Array(10));
    const storageOnly = ctx.device.createBuffer({ size: 64, usage: GPUBufferUsage.STORAGE });
    await assert.rejects(
      readBuffers(ctx, [{ buffer: b, byteLength: b.size + 4 }]),
      /outside the buffer/,
    );
    await assert.rejects(
      readBuffers(ctx, [{ buffer: b, byteOffset: 2, byteLength: 4 }]),
      /multiple of 4/,
    );
    await assert.rejects(readBuffers(ctx, [{ buffer: storageOnly, byteLength: 4 }]), /COPY_SRC/);
    b.destroy();
    storageOnly.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: BufferPool reuses buffers by size class and usage",
  async fn() {
    const ctx = await getGpu();
    const pool = new BufferPool(ctx);
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC;
    const bytes = randInt(1, 5000);
    const a = pool.acquire(bytes, usage);
    assert.equal(a.size, sizeClass(bytes));
    assert.equal(a.size % 256, 0);
    assert.ok(a.size >= bytes);
    assert.equal(pool.acquire(0, usage).size, 256);
    pool.release(a);
    assert.equal(pool.acquire(a.size - randInt(0, 255), usage), a, "same class reuses the buffer");
    assert.notEqual(pool.acquire(bytes, usage | GPUBufferUsage.COPY_DST), a, "other usage: new");
    pool.release(a);
    assert.throws(() => pool.release(a), /already released/);
    assert.throws(() => pool.release(uploadArray(ctx, new Float32Array(4))), /not acquired/);
    assert.throws(() => pool.acquire(-1, usage), /non-negative integer/);
    assert.throws(() => pool.acquire(ctx.limits.maxBufferSize + 1, usage), /maxBufferSize/);
    pool.destroyAll();
    assert.equal(pool.inUse, 0);
  },
});

Deno.test({
  ...opts,
  name: "gpu: the pipeline cache returns one pipeline per WGSL text, shared by concurrent calls",
  async fn() {
    const { ctx, pipelines } = await setup();
    const n = randInt(1, 10000);
    const [p1, p2] = await Promise.all([
      pipelines.get(affineKernel(n, "first")),
      pipelines.get(affineKernel(n, "second")),
    ]);
    assert.equal(p1, p2);
    assert.equal(await pipelines.get(affineKernel(n)), p1);
    assert.notEqual(await pipelines.get(affineKernel(n + 1)), p1);
    assert.equal(pipelines.size, 2);
    // Texts that differ only in whole-line comments (a layer's kernel name) share the pipeline.
    const body = affineKernel(n).wgsl;
    const named = { name: "k7_layer", wgsl: `// k7_layer: an affine map\n${body}\n  // end` };
    assert.equal(await pipelines.get(named), p1);
    assert.equal(pipelines.size, 2);
    // Bind groups are cached per (pipeline, buffers).
    const groups = new BindGroupCache(ctx);
    const a = uploadArray(ctx, new Float32Array(n)), b = uploadArray(ctx, new Float32Array(n));
    const g = groups.get(p1, [a, b]);
    assert.equal(groups.get(p1, [a, b]), g);
    assert.equal(new BindGroupCache(ctx).get(p1, [a, b]), g, "instances share one store");
    assert.notEqual(groups.get(p1, [b, a]), g);
    groups.evict(p1, [a, b]);
    assert.notEqual(groups.get(p1, [a, b]), g);
    a.destroy();
    b.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: a WGSL error becomes a KernelCompileError naming the kernel and the line",
  async fn() {
    const { pipelines } = await setup();
    const lines = affineKernel(randInt(1, 999)).wgsl.split("\n");
    const bad = randInt(4, 6); // inside main: "let i = g.x;" and the store
    lines.splice(bad - 1, 0, "  let broken = 1.0 +;");
    const kernel = { name: "broken_kernel", wgsl: lines.join("\n") };
    const err = await pipelines.get(kernel).then(
      () => assert.fail("compiling invalid WGSL must fail"),
      (e) => e,
    );
    assert.ok(err instanceof KernelCompileError, String(err));
    assert.equal(err.kernelName, "broken_kernel");
    assert.equal(err.line, bad);
    assert.equal(err.sourceLine, "  let broken = 1.0 +;");
    assert.ok(err.column > 0);
    assert.match(err.message, /broken_kernel/);
    assert.match(err.message, new RegExp(`line ${bad}\\b`));
    assert.match(err.message, /let broken = 1\.0 \+;/);
    assert.ok(err.compilerMessage.length > 0);
    // A type error (not a parse error) is reported the same way; failures are not cached.
    const typed = {
      name: "typed",
      wgsl: kernel.wgsl.replace("  let broken = 1.0 +;", "  let b: f32 = 1u;"),
    };
    const err2 = await pipelines.get(typed).catch((e) => e);
    assert.ok(err2 instanceof KernelCompileError);
    assert.equal(err2.line, bad);
    assert.equal(pipelines.size, 0);
    // A pipeline-level failure (no `main`) names the kernel too.
    const noMain = { name: "no_main", wgsl: affineKernel(3).wgsl.replace("fn main", "fn other") };
    await assert.rejects(pipelines.get(noMain), /kernel "no_main": pipeline creation failed/);
  },
});

Deno.test({
  ...opts,
  name: "gpu: bad dispatches are rejected before any GPU call, naming the kernel",
  async fn() {
    const { ctx, pipelines } = await setup();
    const n = randInt(1, 100);
    const kernel = affineKernel(n, "too_wide");
    const pipeline = await pipelines.get(kernel);
    const x = uploadArray(ctx, new Float32Array(n)), y = uploadArray(ctx, new Float32Array(n));
    const max = ctx.limits.maxComputeWorkgroupsPerDimension;
    const queue = ctx.device.queue as unknown as { submit: (...a: unknown[]) => void };
    const original = queue.submit;
    let submits = 0;
    queue.submit = function (...a: unknown[]) {
      submits++;
      return original.apply(this, a);
    };
    try {
      const over: Dispatch = {
        kernel,
        pipeline,
        buffers: [x, y],
        workgroups: [1, max + randInt(1, 9), 1],
      };
      await assert.rejects(
        submitDispatches(ctx, [over]),
        new RegExp(
          `kernel too_wide.*y = ${
            max + 1
          }|kernel too_wide.*maxComputeWorkgroupsPerDimension = ${max}`,
        ),
      );
      await assert.rejects(
        submitDispatches(ctx, [{ ...over, workgroups: [1.5, 1, 1] }]),
        /non-negative integer/,
      );
      await assert.rejects(
        submitDispatches(ctx, [{ ...over, workgroups: [1, 1, 1], buffers: [x] }]),
        /declares 2 storage binding/,
      );
      await assert.rejects(
        submitDispatches(ctx, [{ ...over, workgroups: [1, 1, 1], buffers: [x, x] }]),
        /kernel too_wide.*same buffer.*read_write/,
      );
      await assert.rejects(
        timeDispatches(ctx, [over], { warmup: 0, iterations: 1 }),
        /maxComputeWorkgroupsPerDimension/,
      );
      assert.equal(submits, 0, "nothing may be submitted for a bad dispatch");
    } finally {
      queue.submit = original;
    }
    x.destroy();
    y.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: a validation error found at submit names the kernel that caused it",
  async fn() {
    const { ctx, pipelines } = await setup();
    const n = randInt(2, 500);
    const good = affineKernel(n, "good");
    const victim = { ...chainKernel(n), name: "victim" };
    const [pg, pv] = await pipelines.prepareAll([good, victim]);
    const x = uploadArray(ctx, randomArray(n, next)), y = uploadArray(ctx, new Float32Array(n));
    const z = uploadArray(ctx, new Float32Array(n));
    const dispatches: Dispatch[] = [
      { kernel: good, pipeline: pg, buffers: [x, y], workgroups: [ceilDiv(n, 64), 1, 1] },
      { kernel: victim, pipeline: pv, buffers: [x, y, z], workgroups: [ceilDiv(n, 32), 1, 1] },
    ];
    await submitDispatches(ctx, dispatches); // warms the bind groups
    z.destroy(); // only the second kernel uses z
    await assert.rejects(submitDispatches(ctx, dispatches), /^Error: kernel victim: .*destroyed/);
    // A fixed-size array needs a large enough buffer: caught when the bind group is made.
    const fixed: KernelSource = {
      name: "fixed_size",
      wgsl: `@group(0) @binding(0) var<storage, read_write> a: array<f32, 1024>;
@compute @workgroup_size(1)
fn main() { a[0] = 1.0; }
`,
    };
    const small = uploadArray(ctx, new Float32Array(8));
    const pf = await pipelines.get(fixed);
    await assert.rejects(
      submitDispatches(ctx, [dispatches[0], {
        kernel: fixed,
        pipeline: pf,
        buffers: [small],
        workgroups: [1, 1, 1],
      }]),
      /kernel fixed_size: /,
    );
    for (const b of [x, y, small]) b.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: profiled submits return per-kernel timings over several query sets",
  async fn() {
    const { ctx, pipelines } = await setup();
    const counter = uploadArray(ctx, new Uint32Array(4));
    const pipeline = await pipelines.get(COUNTER);
    // More than 2048 passes needs a second query set.
    const count = 2048 + randInt(1, 40);
    const dispatches: Dispatch[] = Array.from({ length: count }, () => ({
      kernel: COUNTER,
      pipeline,
      buffers: [counter],
      workgroups: [1, 1, 1],
    }));
    const timings = await submitDispatches(ctx, dispatches, { profile: true });
    const [raw] = await readBuffers(ctx, [{ buffer: counter, byteLength: 4 }]);
    assert.equal(new Uint32Array(raw)[0], count, "every dispatch ran once");
    if (!ctx.features.timestampQuery) {
      assert.equal(timings, undefined);
      return;
    }
    assert.ok(timings);
    assert.equal(timings.length, count);
    for (const t of timings) {
      assert.equal(t.name, "counter");
      assert.ok(Number.isFinite(t.ns) && t.ns >= 0);
    }
    assert.ok(timings.filter((t) => t.ns > 0).length > count / 2, "timestamps advance");
    // A real kernel takes measurable time.
    const n = 4096 + randInt(0, 100);
    const kernel = affineKernel(n);
    const x = uploadArray(ctx, randomArray(n, next)), y = uploadArray(ctx, new Float32Array(n));
    const [t] = (await submitDispatches(ctx, [
      {
        kernel,
        pipeline: await pipelines.get(kernel),
        buffers: [x, y],
        workgroups: [ceilDiv(n, 64), 1, 1],
      },
    ], { profile: true }))!;
    assert.equal(t.name, kernel.name);
    assert.ok(t.ns > 0, `ns = ${t.ns}`);
    for (const b of [counter, x, y]) b.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: timeDispatches repeats every kernel and reports median and min per dispatch",
  async fn() {
    const { ctx, pipelines } = await setup();
    if (!ctx.features.timestampQuery) {
      await assert.rejects(
        timeDispatches(ctx, [], { warmup: 0, iterations: 1 }),
        /timestamp-query/,
      );
      return;
    }
    const n = randInt(100, 2000);
    const [pa, pc] = await pipelines.prepareAll([affineKernel(n), COUNTER]);
    const x = uploadArray(ctx, randomArray(n, next)), y = uploadArray(ctx, new Float32Array(n));
    const counter = uploadArray(ctx, new Uint32Array(1));
    const dispatches: Dispatch[] = [
      {
        kernel: affineKernel(n),
        pipeline: pa,
        buffers: [x, y],
        workgroups: [ceilDiv(n, 64), 1, 1],
      },
      { kernel: COUNTER, pipeline: pc, buffers: [counter], workgroups: [1, 1, 1] },
    ];
    const warmup = randInt(0, 3), iterations = randInt(3, 9);
    const result = await timeDispatches(ctx, dispatches, { warmup, iterations });
    assert.deepEqual(result.map((r) => r.name), [affineKernel(n).name, "counter"]);
    for (const r of result) {
      assert.ok(r.minNs >= 0 && r.medianNs >= r.minNs, JSON.stringify(r));
    }
    assert.ok(result[0].medianNs > 0);
    const [raw] = await readBuffers(ctx, [{ buffer: counter, byteLength: 4 }]);
    assert.equal(new Uint32Array(raw)[0], warmup + iterations);
    await assert.rejects(
      timeDispatches(ctx, dispatches, { warmup: 0, iterations: 0 }),
      /iterations/,
    );
    for (const b of [x, y, counter]) b.destroy();
  },
});

/** A fresh zeroed counter and one dispatch incrementing it. */
async function counterDispatch(
  ctx: GpuContext,
  pipelines: PipelineCache,
): Promise<{ counter: GPUBuffer; one: Dispatch }> {
  const [pipeline] = await pipelines.prepareAll([COUNTER]);
  const counter = uploadArray(ctx, new Uint32Array(1));
  return { counter, one: { kernel: COUNTER, pipeline, buffers: [counter], workgroups: [1, 1, 1] } };
}

Deno.test({
  ...opts,
  name: "gpu: timeSequence runs the whole list warmup + iterations times, in one pass each",
  async fn() {
    const { ctx, pipelines } = await setup();
    if (!ctx.features.timestampQuery) {
      await assert.rejects(timeSequence(ctx, [], { warmup: 0, iterations: 1 }), /timestamp-query/);
      return;
    }
    const { counter, one } = await counterDispatch(ctx, pipelines);
    const length = randInt(1, 5), warmup = randInt(0, 3), iterations = randInt(1, 7);
    const r = await timeSequence(ctx, Array(length).fill(one), { warmup, iterations });
    assert.ok(r.minNs >= 0 && r.medianNs >= r.minNs, JSON.stringify(r));
    const [raw] = await readBuffers(ctx, [{ buffer: counter, byteLength: 4 }]);
    assert.equal(new Uint32Array(raw)[0], length * (warmup + iterations));
    await assert.rejects(
      timeSequence(ctx, [one], { warmup: 0, iterations: 5000 }),
      /iterations must be an integer in 1\.\.2048, got 5000/,
    );
    counter.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: dispatches encoded ahead run when submitted, once; a bad list is named before",
  async fn() {
    const { ctx, pipelines } = await setup();
    const { counter, one } = await counterDispatch(ctx, pipelines);
    const count = randInt(1, 6);
    const encoded = await encodeDispatches(ctx, Array(count).fill(one), "test");
    // Nothing has run yet: encoding alone does not execute.
    const [before] = await readBuffers(ctx, [{ buffer: counter, byteLength: 4 }]);
    assert.equal(new Uint32Array(before)[0], 0);
    await submitEncoded(ctx, encoded);
    const [after] = await readBuffers(ctx, [{ buffer: counter, byteLength: 4 }]);
    assert.equal(new Uint32Array(after)[0], count);
    await assert.rejects(
      encodeDispatches(ctx, [{ ...one, buffers: [] }]),
      /kernel counter \(dispatch 0\): the WGSL declares 1 storage binding/,
    );
    counter.destroy();
  },
});

Deno.test({
  ...opts,
  name: "gpu: a lost device is reported instead of submitting to it",
  async fn() {
    const ctx = await acquireGpu();
    const pipelines = new PipelineCache(ctx);
    const pipeline = await pipelines.get(COUNTER);
    const counter = uploadArray(ctx, new Uint32Array(1));
    ctx.device.destroy();
    await ctx.device.lost;
    await assert.rejects(
      submitDispatches(ctx, [{
        kernel: COUNTER,
        pipeline,
        buffers: [counter],
        workgroups: [1, 1, 1],
      }]),
      /device was lost/,
    );
  },
});
