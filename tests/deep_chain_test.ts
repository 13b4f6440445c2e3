// Deep graphs: every pass of the compile path and the interpreter walks the graph without
// JavaScript recursion, so chains of thousands of ops compile (to one fused kernel), run, and
// agree with the float64 interpreter. Before, a 3,000-op chain overflowed the stack in fusion.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS, type DeviceLimits } from "../codegen/limits.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { einsum } from "../dsl/einsum.ts";
import {
  abs,
  add,
  exp,
  gt,
  mul,
  neg,
  relu,
  silu,
  softplus,
  tanh,
  where,
} from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { flip } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { hasGpu } from "../runtime/gpu_device.ts";
import { interpret } from "../runtime/interpreter.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const available = await hasGpu();
const seed = freshSeed();
console.log(`deep_chain_test seed ${seed}`);
const next = rng(seed);

/** `depth` ops applied in turn, cycling through `ops`. */
function chain(x: Tensor, depth: number, ops: readonly ((t: Tensor) => Tensor)[]): Tensor {
  let y = x;
  for (let i = 0; i < depth; i++) y = ops[i % ops.length](y);
  return y;
}

/** A contracting cycle whose result still depends on x (sign and size): f32 stays close. */
const TANH_CYCLE = [neg, tanh, neg, neg, abs, neg, neg];
/**
 * One tanh in 25 ops: each tanh adds a few ulps of relative error that the next ones carry on
 * (their slope is near 1 at small values), so 428 of them (a 3,000-op TANH_CYCLE) reached the 1e-4
 * tolerance on some seeds; 120 stay well inside it.
 */
const SPARSE_TANH_CYCLE = [...TANH_CYCLE, ...Array(18).fill(neg)];
/** Exact ops only: the GPU must give the interpreter's values bit for bit. */
const EXACT_CYCLE = [neg, neg, abs, neg, relu, neg, neg, neg];

/** The shapes the scan kernels fuse on lavapipe-like devices (subgroups of 8, 32 bindings). */
const SCAN_LIMITS: DeviceLimits = {
  ...DEFAULT_LIMITS,
  maxStorageBuffersPerShaderStage: 32,
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 1024,
  subgroups: true,
  subgroupMinSize: 8,
};

for (const depth of [3000, 20000]) {
  Deno.test(`a chain of ${depth} unary ops compiles to one kernel and interprets`, () => {
    const graph = trace({ x: "a b" }, ({ x }) => chain(x, depth, TANH_CYCLE), { a: 3, b: 5 });
    const program = generateKernels(graph, DEFAULT_LIMITS);
    assert.equal(program.kernels.length, 1);
    const lets = program.kernels[0].wgsl.match(/let v0_\d+: f32 = /g)?.length ?? 0;
    assert.ok(lets >= depth, `one let per op: ${lets} lets for ${depth} ops`);
    const out = interpret(graph, { x: randomArray(15, next) }).out;
    assert.ok(out.every(Number.isFinite));
  });

  Deno.test(`a chain of ${depth} adds compiles to one kernel and interprets`, () => {
    const graph = trace(
      { x: "a", w: "a" },
      ({ x, w }) => chain(x, depth, [(y) => add(y, w), (y) => add(w, y)]),
      { a: 4 },
    );
    assert.equal(generateKernels(graph, DEFAULT_LIMITS).kernels.length, 1);
    const out = interpret(graph, { x: [1, 2, 3, 4], w: [1, -1, 0, 2] }).out;
    assert.deepEqual([...out], [1 + depth, 2 - depth, 3, 4 + 2 * depth]);
  });
}

Deno.test({
  ignore: !available,
  name: "gpu: a 3,000-op chain of unary ops agrees with the interpreter",
  async fn() {
    const prog = await compile(
      { x: "a b" },
      ({ x }) => chain(x, 3000, SPARSE_TANH_CYCLE),
      { a: 3, b: 13 },
      { backend: "gpu" },
    );
    const x = randomArray(39, next);
    assertClose(await prog.run({ x }), prog.interpret({ x }), 1e-4, `seed ${seed}`);
    prog.destroy();
  },
});

Deno.test({
  ignore: !available,
  name: "gpu: a 20,000-op chain of exact unary ops gives the interpreter's values exactly",
  async fn() {
    const prog = await compile(
      { x: "a" },
      ({ x }) => chain(x, 20000, EXACT_CYCLE),
      { a: 29 },
      { backend: "gpu" },
    );
    const x = randomArray(29, next);
    const want = prog.interpret({ x });
    assert.deepEqual([...await prog.run({ x })], [...want].map(Math.fround), `seed ${seed}`);
    prog.destroy();
  },
});

Deno.test({
  ignore: !available,
  name: "gpu: a chain of 20,000 adds gives the interpreter's values exactly (integers)",
  async fn() {
    const prog = await compile(
      { x: "a", w: "a" },
      ({ x, w }) => chain(x, 20000, [(y) => add(y, w), (y) => add(w, y)]),
      { a: 6 },
      { backend: "gpu" },
    );
    const x = [1, 2, 3, 4, 5, 6], w = [1, -1, 0, 2, -3, 7];
    const want = prog.interpret({ x, w });
    assert.deepEqual([...await prog.run({ x, w })], [...want]);
    prog.destroy();
  },
});

Deno.test("views and selects thousands deep compile and interpret", () => {
  const graph = trace(
    { x: "a b" },
    ({ x }) =>
      chain(x, 3000, [(y) => flip(neg(y), "a"), (y) => mul(y, 1), (y) => where(gt(y, 0), y, y)]),
    { a: 3, b: 4 },
  );
  assert.equal(generateKernels(graph, DEFAULT_LIMITS).kernels.length, 1);
  const x = randomArray(12, next);
  // 1,000 flips and 1,000 negations: the identity.
  assert.deepEqual([...interpret(graph, { x }).out], [...x]);
});

/** A selective scan whose decay and input are 3,000-op chains (the scan loop's intercepts). */
function deepScan(t: { x: Tensor; A: Tensor; B: Tensor; C: Tensor }) {
  const delta = chain(t.x, 3000, [softplus, neg, silu, neg]);
  const h = scan(
    "l",
    exp(einsum("b l d, d n -> b l d n", delta, t.A)),
    einsum("b l d, b l n -> b l d n", chain(t.x, 3000, TANH_CYCLE), t.B),
  );
  return { y: einsum("b l d n, b l n -> b l d", h, t.C), state: finalState(h) };
}

Deno.test("a scan whose decay and input are 3,000-op chains compiles with every strategy", () => {
  const sizes = { b: 1, l: 9, d: 8, n: 4 };
  const graph = trace({ x: "b l d", A: "d n", B: "b l n", C: "b l n" }, deepScan, sizes);
  const strategies: (ScanStrategy | undefined)[] = [
    undefined,
    { lanes: 4, math: "fast-exp2", foldLog2e: true },
    { lanes: 1, math: "exact", prefetch: "all" },
    { tileSteps: 8, math: "fast", foldLog2e: true },
  ];
  for (const scanStrategy of strategies) {
    const program = generateKernels(graph, SCAN_LIMITS, { scan: scanStrategy });
    assert.equal(program.kernels.length, 1, JSON.stringify(scanStrategy));
  }
  const out = interpret(graph, {
    x: randomArray(72, next),
    A: randomArray(32, next, -2, -0.2),
    B: randomArray(36, next),
    C: randomArray(36, next),
  });
  assert.ok(out.y.every(Number.isFinite) && out.state.every(Number.isFinite));
});
