// AdamW (models/train/adamw.ts) against a float64 reference written from Loshchilov & Hutter's
// Algorithm 2 over several steps with a learning-rate schedule, clipping and an undecayed
// parameter: in the interpreter, and on the adapter with the parameters and moments resident
// and updated in place (runtime/resident_program.ts), plus the in-place safety checks.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { flip } from "../dsl/views.ts";
import { mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import {
  adamw,
  adamwInputs,
  type AdamWOptions,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
  adamwStateOf,
} from "../models/train/adamw.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const SHAPES = { w: "d e", b: "e" };
const SIZES = { d: 5, e: 3 };
const NAMES = Object.keys(SHAPES);
const LENGTH: Record<string, number> = { w: 15, b: 3 };

const OPTIONS: AdamWOptions = {
  beta1: 0.8,
  beta2: 0.95,
  eps: 1e-6,
  weightDecay: 0.1,
  decays: (name) => name !== "b",
  maxGradNorm: 1,
};
/** The base learning rate α and the schedule η_t (warm-up then decay): lr_t = α·η_t. */
const ALPHA = 0.05;
const SCHEDULE = [0.25, 0.5, 1, 1, 0.7, 0.4];

type Vectors = Record<string, Float64Array>;

/**
 * One AdamW step from the paper (Algorithm 2, lines 6–12) in float64, after global norm
 * clipping as torch.nn.utils.clip_grad_norm_ does it. The paper's decay λ_paper = α·λ, so
 * that η_t·λ_paper = lr_t·λ.
 */
function referenceStep(
  theta: Vectors,
  m: Vectors,
  v: Vectors,
  grads: Vectors,
  t: number,
  o: Required<Pick<AdamWOptions, "beta1" | "beta2" | "eps" | "weightDecay" | "maxGradNorm">>,
  decays: (k: string) => boolean,
): number {
  let sq = 0;
  for (const k of NAMES) for (const g of grads[k]) sq += g * g;
  const norm = Math.sqrt(sq);
  const c = Math.min(1, o.maxGradNorm / (norm + 1e-6));
  const eta = SCHEDULE[t - 1];
  const lambdaPaper = ALPHA * o.weightDecay;
  for (const k of NAMES) {
    for (let i = 0; i < theta[k].length; i++) {
      const g = c * grads[k][i];
      m[k][i] = o.beta1 * m[k][i] + (1 - o.beta1) * g;
      v[k][i] = o.beta2 * v[k][i] + (1 - o.beta2) * g * g;
      const mHat = m[k][i] / (1 - o.beta1 ** t);
      const vHat = v[k][i] / (1 - o.beta2 ** t);
      const decay = decays(k) ? lambdaPaper * theta[k][i] : 0;
      theta[k][i] = theta[k][i] - eta * (ALPHA * mHat / (Math.sqrt(vHat) + o.eps) + decay);
    }
  }
  return norm;
}

function zeros(): Vectors {
  return Object.fromEntries(NAMES.map((k) => [k, new Float64Array(LENGTH[k])]));
}

/** Random start and gradients; steps 2 and 5 have gradients large enough to be clipped. */
function problem(seed: number) {
  const next = rng(seed);
  const vec = (n: number, s: number) =>
    Float64Array.from({ length: n }, () => s * (2 * next() - 1));
  const theta: Vectors = Object.fromEntries(NAMES.map((k) => [k, vec(LENGTH[k], 1)]));
  const grads = SCHEDULE.map((_, i) => {
    const scale = i === 1 || i === 4 ? 5 : 0.1;
    return Object.fromEntries(NAMES.map((k) => [k, vec(LENGTH[k], scale)])) as Vectors;
  });
  return { theta, grads };
}

const program = (t: Record<string, Tensor>) =>
  adamwOutputs(
    adamw(
      adamwStateOf(t, NAMES),
      { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs,
      OPTIONS,
    ),
  );

const FULL = {
  beta1: OPTIONS.beta1!,
  beta2: OPTIONS.beta2!,
  eps: OPTIONS.eps!,
  weightDecay: OPTIONS.weightDecay!,
  maxGradNorm: OPTIONS.maxGradNorm!,
};

Deno.test("adamw in the interpreter: six steps match the paper's update in float64", () => {
  const seed = freshSeed();
  const { theta, grads } = problem(seed);
  const graph = trace(adamwInputs(SHAPES), program, SIZES);
  const want = { theta: structuredClone(theta), m: zeros(), v: zeros() };
  let got = { theta: structuredClone(theta), m: zeros(), v: zeros() };
  let clipped = 0;
  for (let t = 1; t <= SCHEDULE.length; t++) {
    const norm = referenceStep(want.theta, want.m, want.v, grads[t - 1], t, FULL, OPTIONS.decays!);
    if (norm > 1) clipped++;
    const data: Record<string, Float64Array | Float32Array> = {
      ...adamwScalars(t, ALPHA * SCHEDULE[t - 1], OPTIONS),
    };
    for (const k of NAMES) {
      data[k] = got.theta[k];
      data[`grad.${k}`] = grads[t - 1][k];
      data[`m.${k}`] = got.m[k];
      data[`v.${k}`] = got.v[k];
    }
    const out = interpret(graph, data);
    assert.ok(Math.abs(out.gradNorm[0] - norm) < 1e-12 * norm, `gradNorm at step ${t}`);
    got = {
      theta: Object.fromEntries(NAMES.map((k) => [k, out[k]])),
      m: Object.fromEntries(NAMES.map((k) => [k, out[`m.${k}`]])),
      v: Object.fromEntries(NAMES.map((k) => [k, out[`v.${k}`]])),
    };
  }
  assert.equal(clipped, 2, "two steps are clipped");
  for (const k of NAMES) {
    // The scalars are rounded to f32 (lr, 1 − βᵗ): relative differences of ~1e-7.
    assertClose(got.theta[k], want.theta[k], 1e-6, `θ ${k} (seed ${seed})`);
    assertClose(got.m[k], want.m[k], 1e-12, `m ${k} (seed ${seed})`);
    assertClose(got.v[k], want.v[k], 1e-12, `v ${k} (seed ${seed})`);
  }
  // The undecayed bias moved by the Adam update alone: decaying it would change it.
  const noDecay = { ...FULL, weightDecay: 0 };
  const ref = { theta: structuredClone(theta), m: zeros(), v: zeros() };
  for (let t = 1; t <= SCHEDULE.length; t++) {
    referenceStep(ref.theta, ref.m, ref.v, grads[t - 1], t, noDecay, () => false);
  }
  assertClose(got.theta.b, ref.theta.b, 1e-6, "b is not decayed");
  assert.ok(
    Math.abs(got.theta.w[0] - ref.theta.w[0]) > 1e-4,
    "w is decayed (the test would see a missing decay)",
  );
});

Deno.test("adamw on the GPU: resident state updated in place over six steps", async () => {
  const seed = freshSeed();
  const { theta, grads } = problem(seed);
  const prog = await ResidentProgram.create(adamwInputs(SHAPES), program, SIZES, {
    state: adamwState(NAMES),
  });
  try {
    assert.ok(prog.kernels.every((k) => k.kind !== "matmul"));
    for (const k of NAMES) prog.write(k, Float32Array.from(theta[k]));
    const want = { theta: structuredClone(theta), m: zeros(), v: zeros() };
    const norms: number[] = [];
    for (let t = 1; t <= SCHEDULE.length; t++) {
      norms.push(referenceStep(want.theta, want.m, want.v, grads[t - 1], t, FULL, OPTIONS.decays!));
      const inputs: Record<string, Float32Array> = {
        ...adamwScalars(t, ALPHA * SCHEDULE[t - 1], OPTIONS),
      };
      for (const k of NAMES) inputs[`grad.${k}`] = Float32Array.from(grads[t - 1][k]);
      await prog.step(inputs);
    }
    const names = [...NAMES, ...NAMES.map((k) => `m.${k}`), ...NAMES.map((k) => `v.${k}`)];
    const got = await prog.read([...names, "gradNorm"]);
    for (const k of NAMES) {
      assertClose(got[k], want.theta[k], 1e-5, `θ ${k} (seed ${seed})`);
      assertClose(got[`m.${k}`], want.m[k], 1e-5, `m ${k} (seed ${seed})`);
      assertClose(got[`v.${k}`], want.v[k], 1e-5, `v ${k} (seed ${seed})`);
    }
    const last = norms[norms.length - 1];
    assert.ok(Math.abs(got.gradNorm[0] - last) < 1e-5 * last, "gradNorm of the last step");
  } finally {
    prog.destroy();
  }
});

Deno.test("ResidentProgram: unsafe in-place updates and bad names are one-line errors", async () => {
  const reject = async (
    fn: (t: Record<string, Tensor>) => Record<string, Tensor>,
    state: Record<string, string>,
    re: RegExp,
  ) => {
    await assert.rejects(
      ResidentProgram.create({ w: "d" }, fn, { d: 6 }, { state }),
      (e: Error) => re.test(e.message) && !e.message.includes("\n"),
    );
  };
  // A view of the old value: element i reads element d − 1 − i, which another thread may have
  // overwritten already.
  await reject((t) => ({ w: mul(flip(t.w, "d"), 2) }), { w: "w" }, /elementwise function/);
  // A kernel reading the old value and the new one (a reduction of their product): no order
  // runs it before the update and after it. (A reduction of the old value alone is ordered
  // before the update: tests/in_place_order_test.ts.)
  await reject(
    (t) => {
      const w = mul(t.w, 2);
      return { w, s: sum(mul(t.w, w), "d") };
    },
    { w: "w" },
    /in-place update of input "w": a kernel reads the old value and, through other kernels/,
  );
  await reject((t) => ({ w: mul(t.w, 2) }), { w: "x" }, /no input named "x"/);
  await reject((t) => ({ w: mul(t.w, 2) }), { y: "w" }, /no output named "y"/);
  await reject((t) => ({ w: sum(t.w, "d") }), { w: "w" }, /differ in layout/);
});

Deno.test("adamw: mismatched records and bad hyperparameters are one-line errors", () => {
  const bad = (fn: () => unknown, re: RegExp) =>
    assert.throws(fn, (e: Error) => re.test(e.message) && !e.message.includes("\n"));
  const run = (f: (t: Record<string, Tensor>) => unknown) =>
    trace({ ...adamwInputs(SHAPES), x: "e" }, (t) => f(t) as Record<string, Tensor>, SIZES);
  const scalars = (t: Record<string, Tensor>): AdamWScalarInputs =>
    ({ lr: t.lr, bc1: t.bc1, bc2: t.bc2 }) as AdamWScalarInputs;
  bad(
    () =>
      run((t) => {
        const s = adamwStateOf(t, NAMES);
        return adamwOutputs(adamw({ ...s, m: { w: s.m.w } }, scalars(t)));
      }),
    /adamw: m has no "b"/,
  );
  bad(
    () =>
      run((t) => {
        const s = adamwStateOf(t, NAMES);
        return adamwOutputs(adamw({ ...s, grads: { ...s.grads, w: t.x } }, scalars(t)));
      }),
    /adamw: grads\["w"\] \[e\] \(3\) does not match the parameter \[d e\] \(5×3\)/,
  );
  bad(
    () =>
      run((t) =>
        adamwOutputs(adamw(adamwStateOf(t, NAMES), { ...scalars(t), lr: t.x as Tensor<""> }))
      ),
    /scalar input lr must be a tensor with no axes/,
  );
  bad(() => adamwScalars(0, 0.1), /step must be an integer ≥ 1, got 0/);
  bad(() => adamwScalars(1, 0.1, { beta2: 1 }), /beta2 must be in \[0, 1\), got 1/);
  bad(() => adamwScalars(1, 0.1, { maxGradNorm: 0 }), /maxGradNorm must be positive/);
});

Deno.test("adamw: the global norm binds few buffers per kernel, however many parameters", () => {
  // Summing per-gradient norms elementwise would make one kernel read all 30 of them (devices
  // bind 8 to 10 buffers): the partial-sum kernels each bind 7 gradients and the partials,
  // and one small kernel adds the partials (codegen/horizontal_plan.ts).
  const shapes: Record<string, string> = { s: "" };
  for (let i = 0; i < 30; i++) shapes[`p${i}`] = i % 2 ? "d" : "d e";
  const names = Object.keys(shapes);
  const sizes = { d: 3, e: 2 };
  const graph = trace(adamwInputs(shapes), (t) =>
    adamwOutputs(
      adamw(
        adamwStateOf(t, names),
        { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs,
        { maxGradNorm: 1 },
      ),
    ), sizes);
  const kernels = generateKernels(graph, DEFAULT_LIMITS).kernels;
  for (const k of kernels) {
    const bindings = k.reads.length + k.writes.length;
    assert.ok(bindings <= 8, `${k.name} binds ${bindings} buffers`);
  }
  const sums = kernels.filter((k) => k.name.includes("_hsum_"));
  assert.equal(sums.length, Math.ceil(30 / 7) + 1, sums.map((k) => k.name).join(", "));
  const next = rng(3);
  const data: Record<string, Float64Array> = { ...adamwScalars(1, 0.1) } as never;
  let sq = 0;
  for (const inp of graph.inputs) {
    const n = inp.shape.reduce((p, s) => p * s, 1);
    data[inp.name] ??= Float64Array.from({ length: n }, () => 2 * next() - 1);
    if (inp.name.startsWith("grad.")) { for (const g of data[inp.name]) sq += g * g; }
  }
  const norm = interpret(graph, data).gradNorm[0];
  assert.ok(Math.abs(norm - Math.sqrt(sq)) < 1e-12 * norm, `${norm} vs ${Math.sqrt(sq)}`);
});
