// arange, causal masks, tril/triu, pad, shift, literal tensors and rename: the interpreter
// against independent loops, GPU kernels against the interpreter, and the point of these ops:
// they fuse into their consumer (one kernel, no buffer but the real inputs).
import assert from "node:assert/strict";
import { arange, causalMask, tensor, tril, triu } from "../dsl/index_ops.ts";
import { pad, rename, shift } from "../dsl/axis_ops.ts";
import { cos } from "../dsl/math.ts";
import { add, exp, mul, sub, where } from "../dsl/elementwise.ts";
import { einsum } from "../dsl/einsum.ts";
import { softmax, sum } from "../dsl/reduce.ts";
import { scan } from "../dsl/scan.ts";
import { trace } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { TraceResult } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { compile, type Program } from "../runtime/compile.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { assertClose, freshSeed, randomArray, randomInputs, rng } from "./util.ts";

/** Evaluates a function of no inputs on the interpreter. */
function constant(fn: () => Tensor): Float64Array {
  return interpret(trace({}, fn, {}), {}).out;
}

/** Asserts the program is one kernel that binds nothing but program inputs. */
function assertOneKernelReadingInputs(prog: Program): void {
  assert.equal(prog.kernels.length, 1, "one kernel");
  assert.ok(
    prog.kernels[0].reads.every((r) => r.kind === "input"),
    `reads only inputs, got ${prog.kernels[0].reads.map((r) => r.kind)}`,
  );
}

/** Compiles on the GPU, runs on random inputs, compares with the interpreter. */
async function checkGpu<R extends TraceResult>(
  prog: Program<R>,
  tol: number,
  context: string,
): Promise<void> {
  const seed = freshSeed();
  const inputs = randomInputs(prog.graph, rng(seed));
  const got = await prog.run(inputs) as unknown as Record<string, Float32Array> | Float32Array;
  const want = prog.interpret(inputs) as unknown as Record<string, Float64Array> | Float64Array;
  if (got instanceof Float32Array) {
    assertClose(got, want as Float64Array, tol, `${context}, seed ${seed}`);
  } else {
    for (const k of Object.keys(got)) {
      assertClose(got[k], (want as Record<string, Float64Array>)[k], tol, `${context} ${k}`);
    }
  }
  prog.destroy();
}

Deno.test("interpreter: arange, causalMask (offset, window), tril, triu against loops", () => {
  assert.deepEqual(Array.from(constant(() => arange("l", 6))), [0, 1, 2, 3, 4, 5]);
  const [I, J] = [5, 7];
  const cases: [string, () => Tensor, (i: number, j: number) => number][] = [
    ["causal", () => causalMask("i", "j", { i: I, j: J }), (i, j) => +(j <= i)],
    [
      "offset 2",
      () => causalMask("i", "j", { i: I, j: J }, { offset: 2 }),
      (i, j) => +(j <= i + 2),
    ],
    [
      "window 3, offset -1",
      () => causalMask("i", "j", { i: I, j: J }, { window: 3, offset: -1 }),
      (i, j) => +(j <= i - 1 && j > i - 4),
    ],
  ];
  for (const [name, fn, ref] of cases) {
    const want = Array.from({ length: I * J }, (_, f) => ref(Math.floor(f / J), f % J));
    assert.deepEqual(Array.from(constant(fn)), want, name);
  }
  // tril / triu keep x's axis order (here the column axis first).
  const x = Float64Array.from({ length: 4 * 3 }, (_, f) => f + 1);
  const g = trace(
    { x: "j i" },
    ({ x }) => ({ lo: tril(x, "i", "j"), up: triu(x, "i", "j", 1) }),
    { j: 4, i: 3 },
  );
  assert.deepEqual(g.outputs.lo.axes, ["j", "i"]);
  const out = interpret(g, { x });
  const at = (f: number) => ({ j: Math.floor(f / 3), i: f % 3 });
  assert.deepEqual(Array.from(out.lo), Array.from(x, (v, f) => (at(f).j <= at(f).i ? v : 0)));
  assert.deepEqual(Array.from(out.up), Array.from(x, (v, f) => (at(f).j >= at(f).i + 1 ? v : 0)));
});

Deno.test("interpreter: pad, shift, tensor, rename against loops", () => {
  const [B, L, D] = [2, 5, 3];
  const x = Float64Array.from({ length: B * L * D }, (_, f) => f + 1);
  const get = (b: number, t: number, d: number, fill: number) =>
    t >= 0 && t < L ? x[(b * L + t) * D + d] : fill;
  const expect = (len: number, src: (t: number) => number, fill: number) => {
    const out: number[] = [];
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < len; t++) for (let d = 0; d < D; d++) out.push(get(b, src(t), d, fill));
    }
    return out;
  };
  const run = (fn: (x: Tensor<"b l d">) => Tensor) =>
    Array.from(interpret(trace({ x: "b l d" }, ({ x }) => fn(x), { b: B, l: L, d: D }), { x }).out);
  assert.deepEqual(run((x) => pad(x, "l", 2, 3, "m", -1.5)), expect(L + 5, (t) => t - 2, -1.5));
  assert.deepEqual(run((x) => pad(x, "l", 0, 1, "m")), expect(L + 1, (t) => t, 0));
  assert.deepEqual(run((x) => shift(x, "l", 1)), expect(L, (t) => t - 1, 0));
  assert.deepEqual(run((x) => shift(x, "l", -2, 7)), expect(L, (t) => t + 2, 7));
  assert.deepEqual(run((x) => shift(x, "l", L + 4, 9)), expect(L, () => -1, 9));
  assert.deepEqual(run((x) => rename(x, "l", "s")), Array.from(x));
  assert.deepEqual(
    Array.from(constant(() => tensor([[1, -2, 3], [4.5, 5, -Infinity]], "i j"))),
    [1, -2, 3, 4.5, 5, -Infinity],
  );
  assert.deepEqual(Array.from(constant(() => tensor([-1, 1], "t"))), [-1, 1]);
});

Deno.test("arange on the GPU: exact positions; a position term fuses into one kernel", async () => {
  const n = 100003;
  const direct = await compile({}, () => arange("l", n), {}, { backend: "gpu" });
  const got = await direct.run({});
  assert.ok(got.every((v, i) => v === i), "arange values");
  direct.destroy();
  const prog = await compile(
    { x: "b l d" },
    ({ x }) => add(x, mul(arange("l", 13), 0.25)),
    { b: 3, l: 13, d: 7 },
    { backend: "gpu" },
  );
  assertOneKernelReadingInputs(prog);
  await checkGpu(prog, 1e-6, "x + 0.25·l");
});

Deno.test("causal mask fuses: sum(x · mask, j) is one kernel reading only x", async () => {
  const [B, I, J] = [3, 37, 41];
  const prog = await compile(
    { x: "b i j" },
    ({ x }) => sum(mul(x, causalMask("i", "j", { i: I, j: J })), "j"),
    { b: B, i: I, j: J },
    { backend: "gpu" },
  );
  assertOneKernelReadingInputs(prog);
  const x = randomArray(B * I * J, rng(freshSeed()));
  const got = await prog.run({ x });
  // Against a plain loop, not the interpreter: Σ_{j ≤ i} x[b, i, j].
  const want = new Float64Array(B * I);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < I; i++) {
      for (let j = 0; j <= Math.min(i, J - 1); j++) want[b * I + i] += x[(b * I + i) * J + j];
    }
  }
  assertClose(got, want, 1e-6, "causal row sums");
  prog.destroy();
});

Deno.test("sliding-window attention scores: where(mask, s, -inf) then softmax", async () => {
  const prog = await compile(
    { q: "b i d", k: "b j d" },
    ({ q, k }) => {
      const s = einsum("b i d, b j d -> b i j", q, k);
      return softmax(where(causalMask("i", "j", 29, { window: 5 }), s, -Infinity), "j");
    },
    { b: 2, i: 29, j: 29, d: 6 },
    { backend: "gpu" },
  );
  await checkGpu(prog, 1e-5, "windowed softmax");
});

Deno.test("tril and triu on the GPU keep x's axis order and fuse into one kernel each", async () => {
  const prog = await compile(
    { x: "j b i" },
    ({ x }) => ({ lo: tril(x, "i", "j", 1), up: triu(x, "i", "j", -2) }),
    { j: 13, b: 2, i: 11 },
    { backend: "gpu" },
  );
  assert.equal(prog.kernels.length, 2);
  assert.deepEqual(prog.graph.outputs.up.axes, ["j", "b", "i"]);
  assert.ok(prog.kernels.every((k) => k.reads.every((r) => r.kind === "input")));
  await checkGpu(prog, 0, "tril/triu");
});

Deno.test("pad and shift on the GPU fuse: x − shift(x) is one kernel, shift ahead and pad too", async () => {
  const sizes = { b: 2, l: 17, d: 5 };
  const delta = await compile(
    { x: "b l d" },
    ({ x }) => sub(x, shift(x, "l", 1)),
    sizes,
    { backend: "gpu" },
  );
  assertOneKernelReadingInputs(delta);
  await checkGpu(delta, 1e-6, "x − x_{t−1}");
  const ahead = await compile(
    { x: "b l d" },
    ({ x }) => ({ ahead: shift(mul(x, 3), "l", -3, -1), padded: pad(exp(x), "l", 4, 2, "m", 2) }),
    sizes,
    { backend: "gpu" },
  );
  assert.equal(ahead.kernels.length, 2);
  assert.ok(ahead.kernels.every((k) => k.reads.every((r) => r.kind === "input")));
  await checkGpu(ahead, 1e-6, "shift ahead, pad");
});

Deno.test("literal tensors on the GPU: fused into an elementwise, a reduction and a matmul", async () => {
  const next = rng(11);
  const small = Array.from({ length: 3 }, () => Array.from({ length: 5 }, () => next() * 4 - 2));
  const elementwise = await compile(
    { x: "b t d" },
    ({ x }) => ({
      scaled: mul(x, tensor(small, "t d")),
      signs: sum(mul(x, tensor([-1, 1, 0.5], "t")), "t"),
    }),
    { b: 4, t: 3, d: 5 },
    { backend: "gpu" },
  );
  assert.equal(elementwise.kernels.length, 2);
  assert.ok(elementwise.kernels.every((k) => k.reads.every((r) => r.kind === "input")));
  await checkGpu(elementwise, 1e-6, "literal elementwise and reduction");
  // 65 summed rows: a real contraction kernel, the literal in its operand hook.
  const rot = Array.from({ length: 65 }, () => Array.from({ length: 3 }, () => next() * 2 - 1));
  const matmul = await compile(
    { x: "b t" },
    ({ x }) => einsum("b t, t s -> b s", x, tensor(rot, "t s")),
    { b: 3, t: 65 },
    { backend: "gpu" },
  );
  assertOneKernelReadingInputs(matmul);
  await checkGpu(matmul, 1e-5, "literal matmul operand");
});

Deno.test("rename on the GPU: attention scores over renamed key positions", async () => {
  const prog = await compile(
    { q: "b l d", k: "b l d" },
    ({ q, k }) => einsum("b l d, b s d -> b l s", q, rename(k, "l", "s")),
    { b: 2, l: 9, d: 7 },
    { backend: "gpu" },
  );
  await checkGpu(prog, 1e-5, "q·kᵀ");
});

// A selective scan whose input uses the previous position and a position-dependent factor:
// shift and arange evaluated inside the scan kernels (lane, chunked and tiled).
for (
  const [name, strategy] of [
    ["default", {}],
    ["chunked", { chunks: 3 }],
    ["tiled", { tileSteps: 16 }],
  ] as [string, ScanStrategy][]
) {
  Deno.test(`shift and arange inside a fused scan (${name})`, async () => {
    const L = 37;
    const prog = await compile(
      { x: "b l d", dt: "b l d", A: "d n", B: "b l n", C: "b l n" },
      ({ x, dt, A, B, C }) => {
        const positions = cos(mul(arange("l", L), 0.3));
        const u = mul(mul(shift(x, "l", 1), positions), dt);
        const h = scan(
          "l",
          exp(einsum("b l d, d n -> b l d n", dt, A)),
          einsum("b l d, b l n -> b l d n", u, B),
        );
        return einsum("b l d n, b l n -> b l d", h, C);
      },
      { b: 2, l: L, d: 5, n: 4 },
      { backend: "gpu", scan: strategy },
    );
    assert.ok(prog.kernels.some((k) => k.kind === "scan"), "a scan kernel");
    await checkGpu(prog, 1e-5, `scan ${name}`);
  });
}
