// The oracle comparison catches broken kernels: deliberately corrupted WGSL (a wrong function,
// an off-by-one index, a dropped term) must fail the same check the property tests use.
import assert from "node:assert/strict";
import { generateKernels, type KernelProgram } from "../codegen/compile_graph.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, silu } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import { trace } from "../dsl/trace.ts";
import { deviceLimits } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { interpret } from "../runtime/interpreter.ts";
import { GpuProgram } from "../runtime/program.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { freshSeed, randomInputs, relativeError, rng } from "./util.ts";

async function errorOf(
  graph: ReturnType<typeof trace>,
  mutate: (wgsl: string) => string,
): Promise<number> {
  const ctx = await getGpu();
  const program = generateKernels(graph, deviceLimits(ctx));
  const broken: KernelProgram = {
    ...program,
    kernels: program.kernels.map((k) => ({ ...k, wgsl: mutate(k.wgsl) })),
  };
  assert.ok(
    broken.kernels.some((k, i) => k.wgsl !== program.kernels[i].wgsl),
    "the mutation must change the WGSL",
  );
  const gpu = await GpuProgram.create(ctx, broken);
  const inputs = randomInputs(graph, rng(freshSeed()));
  const got = await gpu.run(inputs, { checkNaN: false });
  gpu.destroy();
  const want = interpret(graph, inputs);
  return Math.max(...Object.keys(want).map((k) => relativeError(got[k], want[k])));
}

Deno.test("mutation: a wrong function in an elementwise kernel is caught", async () => {
  const g = trace({ x: "a b", y: "b" }, ({ x, y }) => silu(add(x, y)), { a: 7, b: 13 });
  assert.ok((await errorOf(g, (w) => w.replace("1.0 + exp(-", "1.0 + exp2(-"))) > 1e-4);
});

Deno.test("mutation: an off-by-one in a matmul store is caught", async () => {
  const g = trace(
    { x: "m k", w: "k n" },
    ({ x, w }) => exp(einsum("m k, k n -> m n", x, w)),
    { m: 9, k: 129, n: 5 },
  );
  assert.ok((await errorOf(g, (w) => w.replace(/\(acc\)/g, "(acc * 1.001)"))) > 1e-4);
});

Deno.test("mutation: a dropped term in the fused selective scan is caught", async () => {
  const g = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, { b: 2, l: 9, d: 3, n: 16 });
  // Break the state update h = a·h + u into h = a·h.
  assert.ok((await errorOf(g, (w) => w.replace(/(h\d+ = .+? \* h\d+) \+ [^;]+;/g, "$1;"))) > 1e-4);
});

Deno.test("mutation: a reduction that skips its last element is caught", async () => {
  const g = trace({ x: "a b" }, ({ x }) => mul(sum(x, "b"), 2), { a: 5, b: 77 });
  assert.ok((await errorOf(g, (w) => w.replace(/r < 77u/g, "r < 76u"))) > 1e-4);
});
