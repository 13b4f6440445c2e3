// Device limits are respected before any GPU call: kernels that need too many storage buffers
// are split; tensors too large to bind and unsplittable kernels are clear errors.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { add, log, mul } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { concat } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { GpuProgram } from "../runtime/program.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { interpret } from "../runtime/interpreter.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

const MANY = 11;
const inputs = Object.fromEntries(Array.from({ length: MANY }, (_, i) => [`x${i}`, "a b"]));
const sumAll = (t: Record<string, Tensor>) =>
  Object.values(t).reduce((acc, x, i) => add(acc, mul(x, i + 1)));

Deno.test("a kernel over the storage-buffer limit is split, and still computes the same", async () => {
  const graph = trace(inputs, sumAll, { a: 3, b: 5 });
  const tight = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 4 };
  const program = generateKernels(graph, tight);
  assert.ok(program.kernels.length > 1, "split into several kernels");
  for (const k of program.kernels) assert.ok(k.reads.length + k.writes.length <= 4, k.name);
  const ctx = await getGpu();
  const gpu = await GpuProgram.create(ctx, program);
  const data = randomInputs(graph, rng(freshSeed()));
  const got = await gpu.run(data);
  assertClose(got.out, interpret(graph, data).out, 1e-5, "split kernels");
  gpu.destroy();
});

Deno.test("a kernel that cannot be split names the limit", () => {
  const graph = trace(
    inputs,
    (t) => concat(Object.values(t), Object.keys(t).map(() => "a"), "c"),
    { a: 2, b: 3 },
  );
  const tight = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 4 };
  assert.throws(
    () => generateKernels(graph, tight),
    /program over the device limits: kernel for node \d+ needs 12 storage buffers; the device allows 4/,
  );
});

Deno.test("a tensor larger than the device can bind is rejected before any GPU call", async () => {
  const ctx = await getGpu();
  const limit = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  const elements = Math.floor(limit / 4) + 1;
  await assert.rejects(
    () => compile({ x: "i" }, ({ x }) => mul(x, 2), { i: elements }, { backend: "gpu" }),
    new RegExp(
      `program over the device limits: input "x" \\[i\\] \\(${elements}\\) needs ` +
        `${elements * 4} bytes; the device binds at most ${limit}`,
    ),
  );
});

Deno.test("inputs of the wrong length, missing or unknown inputs are rejected before upload", async () => {
  const prog = await compile({ x: "a b" }, ({ x }) => mul(x, 2), { a: 2, b: 3 }, {
    backend: "gpu",
  });
  await assert.rejects(
    () => prog.run({ x: new Float32Array(5) }),
    /input "x" \[a b\] needs 6 elements \(shape 2×3\), got 5/,
  );
  await assert.rejects(() => prog.run({}), /missing input "x"/);
  await assert.rejects(
    () => prog.run({ x: new Float32Array(6), y: new Float32Array(1) }),
    /unknown input "y"; the program takes: x/,
  );
  prog.destroy();
});

Deno.test("NaN outputs are an error, not a silent result", async () => {
  const prog = await compile({ x: "a" }, ({ x }) => log(x), { a: 3 }, { backend: "gpu" });
  await assert.rejects(
    () => prog.run({ x: Float32Array.of(1, -1, 2) }),
    /output "out" \[a\] has NaN at index 1/,
  );
  const ok = await prog.run({ x: Float32Array.of(1, -1, 2) }, { checkNaN: false });
  assert.ok(Number.isNaN(ok[1]));
  prog.destroy();
});
