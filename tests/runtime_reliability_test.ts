// Reliability of compiled programs: overlapping calls each get their own result, bad inputs are
// refused up front with one line naming the input, a destroyed program says so, and the
// pipeline cache stays bounded.
import assert from "node:assert/strict";
import { add, exp, mul, sigmoid } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import { trace } from "../dsl/trace.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { compile, deviceLimits, type Program } from "../runtime/compile.ts";
import { getGpu, hasGpu } from "../runtime/gpu_device.ts";
import { readBuffers } from "../runtime/gpu_buffers.ts";
import { PIPELINE_CACHE_CAPACITY, PipelineCache } from "../runtime/gpu_pipelines.ts";
import { submitDispatches } from "../runtime/gpu_submit.ts";
import { GpuProgram, pipelineCacheFor } from "../runtime/program.ts";
import { SerialQueue } from "../runtime/serial_queue.ts";
import type { TraceResult } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gather } from "../dsl/views.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const available = await hasGpu();
const gpuOnly = { ignore: !available };

const seed = freshSeed();
console.log(`runtime_reliability_test seed ${seed}`);
const next = rng(seed);

// ---------------------------------------------------------------------------------------------
// The serial queue.

Deno.test("SerialQueue runs tasks one at a time in call order; a failure stays its own", async () => {
  const queue = new SerialQueue();
  const log: string[] = [];
  let running = 0;
  const task = (name: string, fail = false) => async () => {
    running++;
    assert.equal(running, 1, "tasks must not overlap");
    log.push(`start ${name}`);
    await new Promise((r) => setTimeout(r, 1));
    log.push(`end ${name}`);
    running--;
    if (fail) throw new Error(`task ${name} failed`);
    return name;
  };
  const results = await Promise.allSettled([
    queue.run(task("a")),
    queue.run(task("b", true)),
    queue.run(task("c")),
  ]);
  assert.deepEqual(log, ["start a", "end a", "start b", "end b", "start c", "end c"]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.match(String((results[1] as PromiseRejectedResult).reason), /task b failed/);
  assert.equal(queue.busy, false);
  // An idle queue starts a task before run() returns; a busy one waits its turn.
  let started = false;
  const first = queue.run(() => {
    started = true;
    return new Promise((r) => setTimeout(r, 1));
  });
  assert.equal(started, true);
  let second = false;
  const waiting = queue.run(() => second = true);
  assert.equal(second, false);
  assert.equal(queue.pending, 2);
  await Promise.all([first, waiting]);
  assert.equal(second, true);
  // A task that adds a task while it runs does not overlap with it.
  let inner = false;
  await queue.run(() => {
    void queue.run(() => inner = true);
    assert.equal(inner, false);
  });
  await queue.idle();
  assert.equal(inner, true);
  // A task that throws synchronously rejects its own promise.
  await assert.rejects(
    queue.run(() => {
      throw new Error("sync failure");
    }),
    /sync failure/,
  );
  await queue.idle();
  assert.equal(queue.pending, 0);
});

// ---------------------------------------------------------------------------------------------
// Overlapping calls.

Deno.test({
  ...gpuOnly,
  name: "overlapping run() calls each get the result of their own inputs",
  async fn() {
    const prog = await compile({ x: "n" }, ({ x }) => exp(x), { n: 8 }, { backend: "gpu" });
    const inputs = Array.from({ length: 10 }, (_, i) => new Float32Array(8).fill(i / 10));
    const results = await Promise.all(inputs.map((x) => prog.run({ x })));
    results.forEach((got, i) => {
      assertClose(got, prog.interpret({ x: inputs[i] }), 1e-6, `call ${i} of 10 (x = ${i / 10})`);
    });
    prog.destroy();
  },
});

Deno.test({
  ...gpuOnly,
  name: "many overlapping run and benchmark calls with different inputs: every result is its own",
  async fn() {
    const sizes = { a: 3, b: 37 };
    const prog = await compile(
      { x: "a b", y: "b" },
      ({ x, y }) => ({ z: mul(sigmoid(x), y), s: sum(add(x, y), "b") }),
      sizes,
      { backend: "gpu" },
    );
    const ctx = await getGpu();
    const calls = Array.from({ length: 16 }, () => ({
      x: randomArray(sizes.a * sizes.b, next),
      y: randomArray(sizes.b, next),
    }));
    const pending: Promise<unknown>[] = [];
    const checks: Promise<void>[] = [];
    calls.forEach((inputs, i) => {
      const want = prog.interpret(inputs);
      // The caller's arrays are read at the call: changing them afterwards changes nothing.
      const x = Float32Array.from(inputs.x);
      const run = prog.run({ x, y: inputs.y });
      x.fill(1e6);
      checks.push(run.then((got) => {
        assertClose(got.z, want.z, 1e-5, `call ${i}: z`);
        assertClose(got.s, want.s, 1e-5, `call ${i}: s`);
      }));
      // Benchmarks use the same buffers: they are queued with the runs.
      if (i % 5 === 2 && ctx.features.timestampQuery) {
        pending.push(prog.benchmark(inputs, { warmup: 1, iterations: 2 }));
      }
      // A call with bad inputs fails alone.
      if (i % 7 === 3) {
        checks.push(assert.rejects(prog.run({ x: inputs.x, y: [1, 2] }), /input "y"/));
      }
    });
    await Promise.all([...checks, ...pending]);
    prog.destroy();
  },
});

Deno.test({
  ...gpuOnly,
  name: "upload() refuses to write buffers a queued run still uses; works once it finished",
  async fn() {
    const ctx = await getGpu();
    const graph = trace({ x: "n" }, ({ x }) => mul(x, 3), { n: 5 });
    const gpu = await GpuProgram.create(ctx, generateKernels(graph, deviceLimits(ctx)));
    const x = [1, 2, 3, 4, 5];
    const running = gpu.run({ x });
    assert.throws(
      () => gpu.upload({ x: [0, 0, 0, 0, 0] }),
      /upload: a run or benchmark .* await it/,
    );
    assert.deepEqual([...(await running).out], [3, 6, 9, 12, 15]);
    gpu.upload({ x: [5, 4, 3, 2, 1] });
    await submitDispatches(ctx, [...gpu.dispatches]);
    const [raw] = await readBuffers(ctx, [
      { buffer: gpu.bufferOf(graph.outputs.out), byteLength: 20 },
    ]);
    assert.deepEqual([...new Float32Array(raw)], [15, 12, 9, 6, 3]);
    gpu.destroy();
  },
});

// ---------------------------------------------------------------------------------------------
// Input validation.

/** Every way of getting an input wrong, with what the one-line error must say. */
function badInputCases(): [string, Record<string, unknown>, RegExp][] {
  const good = { x: new Float32Array(6), ids: new Int32Array(2) };
  const x = /input "x" \[a b\] \(6 f32 elements, shape 2×3\)/;
  const ids = /input "ids" \[c\] \(2 i32 elements\)/;
  const join = (where: RegExp, what: string) => new RegExp(`${where.source}: ${what}`);
  return [
    [
      "strings",
      { ...good, x: ["1", "2", "3", "4", "5", "6"] },
      join(x, 'element 0 is a string \\("1"\\), not a number'),
    ],
    [
      "a BigInt64Array",
      { ...good, x: new BigInt64Array(6) },
      join(
        x,
        "expected a Float32Array, a Float64Array or an array of numbers, got a BigInt64Array of 6 elements",
      ),
    ],
    ["a number", { ...good, x: 3 }, join(x, "expected .*, got a number \\(3\\)")],
    ["null", { ...good, x: null }, join(x, "expected .*, got null")],
    ["a plain object", { ...good, x: { length: 6 } }, join(x, "expected .*, got an Object")],
    [
      "a short array",
      { ...good, x: new Float32Array(5) },
      /input "x" \[a b\] needs 6 elements \(shape 2×3\), got 5 \(a Float32Array of 5 elements\)/,
    ],
    [
      "a long array",
      { ...good, x: [1, 2, 3, 4, 5, 6, 7] },
      /input "x" \[a b\] needs 6 elements \(shape 2×3\), got 7 \(an Array of 7 elements\)/,
    ],
    [
      "undefined inside",
      { ...good, x: [1, 2, undefined, 4, 5, 6] },
      join(x, "element 2 is undefined, not a number"),
    ],
    ["missing", { ids: good.ids }, new RegExp(`missing ${x.source}`)],
    ["unknown", { ...good, w: [1] }, /unknown input "w"; the program takes: x, ids/],
    [
      "fractional ids",
      { ...good, ids: [0, 1.5] },
      join(ids, "element 1 is 1.5, not an integer in the int32 range"),
    ],
    [
      "huge ids",
      { ...good, ids: new Uint32Array([0, 2 ** 31]) },
      join(ids, "element 1 is 2147483648, not an integer"),
    ],
    [
      "NaN ids",
      { ...good, ids: new Float64Array([NaN, 0]) },
      join(ids, "element 0 is NaN, not an integer"),
    ],
  ];
}

const VALIDATED = { x: "a b", ids: { axes: "c", dtype: "i32" as const } };
/** Rows of x picked by ids, plus one. */
const validatedFn = ({ x, ids }: { x: Tensor; ids: Tensor }) => add(gather(x, ids, "a"), 1);

for (const backend of ["cpu", "gpu"] as const) {
  Deno.test({
    ignore: backend === "gpu" && !available,
    name:
      `${backend}: run() refuses a bad input with one line naming it, its axes, size and what was given`,
    async fn() {
      const prog = await compile(VALIDATED, validatedFn, { a: 2, b: 3, c: 2 }, { backend });
      for (const [what, inputs, message] of badInputCases()) {
        await assert.rejects(
          prog.run(inputs as never),
          (e: Error) => {
            assert.match(e.message, message, `${what}: ${e.message}`);
            assert.ok(!e.message.includes("\n"), `${what}: one line`);
            return true;
          },
        );
        assert.throws(() => prog.interpret(inputs as never), message, `interpret, ${what}`);
      }
      // What was accepted before stays accepted: f32 from any numeric array, i32 from integers.
      const x = [0, 1, 2, 3, 4, 5];
      const want = [4, 5, 6, 1, 2, 3];
      for (const data of [x, Float32Array.from(x), Float64Array.from(x), Int32Array.from(x)]) {
        for (const ids of [[1, 0], Int32Array.from([1, 0]), Float64Array.from([1, 0])]) {
          assertClose(await prog.run({ x: data, ids }), want, 1e-7, "accepted input kinds");
        }
      }
      prog.destroy();
    },
  });
}

Deno.test({
  ...gpuOnly,
  name: "a bad input leaves every buffer as it was (nothing half-written)",
  async fn() {
    const ctx = await getGpu();
    const graph = trace({ x: "n", y: "n" }, ({ x, y }) => add(x, y), { n: 4 });
    const gpu = await GpuProgram.create(ctx, generateKernels(graph, deviceLimits(ctx)));
    gpu.upload({ x: [1, 2, 3, 4], y: [10, 20, 30, 40] });
    // x is good and comes first; y is bad: x's buffer must keep [1, 2, 3, 4].
    assert.throws(() => gpu.upload({ x: [7, 7, 7, 7], y: ["a", 0, 0, 0] as never }), /input "y"/);
    await assert.rejects(gpu.run({ x: [7, 7, 7, 7], y: [0, 0, 0] }), /input "y"/);
    await submitDispatches(ctx, [...gpu.dispatches]);
    const [raw] = await readBuffers(ctx, [{
      buffer: gpu.bufferOf(graph.outputs.out),
      byteLength: 16,
    }]);
    assert.deepEqual([...new Float32Array(raw)], [11, 22, 33, 44]);
    gpu.destroy();
  },
});

// ---------------------------------------------------------------------------------------------
// Destroyed programs.

for (const backend of ["cpu", "gpu"] as const) {
  Deno.test({
    ignore: backend === "gpu" && !available,
    name: `${backend}: every method of a destroyed program says it was destroyed`,
    async fn() {
      const prog: Program<TraceResult> = await compile(
        { x: "n" },
        ({ x }) => exp(x),
        { n: 3 },
        { backend },
      );
      const x = [0, 1, 2];
      // Calls made before destroy() finish with their own results; destroy waits for them.
      const before = [prog.run({ x }), prog.run({ x: [1, 1, 1] })];
      prog.destroy();
      const [a, b] = await Promise.all(before);
      assertClose(a as Float32Array, x.map(Math.exp), 1e-6, "run before destroy");
      assertClose(b as Float32Array, [1, 1, 1].map(Math.exp), 1e-6, "second run before destroy");
      const destroyed = (method: string) =>
        new RegExp(`${method}: this program \\(kernel k0_map_n\\) was destroyed`);
      await assert.rejects(prog.run({ x }), destroyed("run"));
      await assert.rejects(prog.benchmark({ x }), destroyed("benchmark"));
      assert.throws(() => prog.interpret({ x }), destroyed("interpret"));
      prog.destroy(); // a second destroy does nothing
    },
  });
}

Deno.test({
  ...gpuOnly,
  name: "gpu: GpuProgram's own methods say it was destroyed",
  async fn() {
    const ctx = await getGpu();
    const graph = trace({ x: "n" }, ({ x }) => exp(x), { n: 3 });
    const gpu = await GpuProgram.create(ctx, generateKernels(graph, deviceLimits(ctx)));
    gpu.destroy();
    assert.equal(gpu.destroyed, true);
    const destroyed = (method: string) => new RegExp(`${method}: this program .* was destroyed`);
    await assert.rejects(gpu.run({ x: [0, 0, 0] }), destroyed("run"));
    await assert.rejects(gpu.benchmark({ x: [0, 0, 0] }), destroyed("benchmark"));
    assert.throws(() => gpu.upload({ x: [0, 0, 0] }), destroyed("upload"));
    assert.throws(() => gpu.dispatches, destroyed("dispatches"));
    assert.throws(() => gpu.bufferOf(graph.inputs[0]), destroyed("bufferOf"));
  },
});

// ---------------------------------------------------------------------------------------------
// The pipeline cache.

Deno.test({
  ...gpuOnly,
  name: "the pipeline cache keeps at most its capacity, forgetting the least recently used",
  async fn() {
    const ctx = await getGpu();
    assert.equal(new PipelineCache(ctx).capacity, PIPELINE_CACHE_CAPACITY);
    assert.throws(() => new PipelineCache(ctx, 0), /capacity must be a positive integer, got 0/);
    const cache = new PipelineCache(ctx, 3);
    const kernel = (k: number) => ({
      name: `fill_${k}`,
      wgsl: `@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1)
fn main() { y[0] = ${k}.0; }
`,
    });
    const first = await cache.get(kernel(0));
    await cache.get(kernel(1));
    await cache.get(kernel(2));
    assert.equal(await cache.get(kernel(0)), first, "a hit within the capacity");
    await cache.get(kernel(3)); // forgets kernel 1, the least recently requested
    assert.equal(cache.size, 3);
    assert.deepEqual([0, 1, 2, 3].map((k) => cache.has(kernel(k).wgsl)), [true, false, true, true]);
    assert.equal(await cache.get(kernel(0)), first);
    cache.capacity = 1;
    assert.equal(cache.size, 1);
    assert.ok(cache.has(kernel(0).wgsl), "the most recently requested stays");
  },
});

Deno.test({
  ...gpuOnly,
  name: "compiling hundreds of shapes keeps the shared pipeline cache within its capacity",
  async fn() {
    const ctx = await getGpu();
    const cache = pipelineCacheFor(ctx);
    const shapes = PIPELINE_CACHE_CAPACITY + 44;
    const programs = [];
    for (let n = 1; n <= shapes; n++) {
      programs.push(
        await compile({ x: "n" }, ({ x }) => mul(exp(x), 2), { n }, { backend: "gpu" }),
      );
      assert.ok(cache.size <= PIPELINE_CACHE_CAPACITY, `size ${cache.size} after ${n} shapes`);
    }
    assert.equal(cache.capacity, PIPELINE_CACHE_CAPACITY);
    assert.ok(!cache.has(programs[0].kernels[0].wgsl), "the first shape's pipeline was forgotten");
    assert.ok(cache.has(programs[shapes - 1].kernels[0].wgsl));
    // A program whose pipeline the cache forgot still runs: it holds the pipeline itself.
    const x = [0, 1];
    assertClose(await programs[1].run({ x }), x.map((v) => 2 * Math.exp(v)), 1e-6, "shape 2");
    for (const p of programs) p.destroy();
  },
});
