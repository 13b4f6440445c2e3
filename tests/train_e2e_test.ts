// End to end: a tiny MLP classifier trained on the adapter. One resident program computes the
// loss and its gradients (valueAndGrad over crossEntropy) and applies AdamW to the parameters
// and moments in place; the loss of each step goes into a resident history read back every
// ten steps, never per step. The float64 interpreter runs the same program step by step as the
// oracle of the loss curve.
import assert from "node:assert/strict";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, eq, tanh, where } from "../dsl/elementwise.ts";
import { arange } from "../dsl/index_ops.ts";
import { crossEntropy } from "../dsl/losses.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import {
  adamw,
  type AdamWOptions,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
} from "../models/train/adamw.ts";
import { freshSeed, rng } from "./util.ts";

const PARAMS = { W1: "d e", b1: "e", W2: "e v", b2: "v" } as const;
const NAMES = Object.keys(PARAMS) as (keyof typeof PARAMS)[];
const SIZES = { n: 24, d: 4, e: 8, v: 3, s: 10 };
const STEPS = 40;
const BLOCK = SIZES.s;
const OPTIONS: AdamWOptions = { weightDecay: 0.01, maxGradNorm: 5 };

const INPUTS: Record<string, string | { axes: string; dtype: "i32" }> = {
  x: "n d",
  y: { axes: "n", dtype: "i32" },
  lr: "",
  bc1: "",
  bc2: "",
  slot: "",
  history: "s",
};
for (const [k, axes] of Object.entries(PARAMS)) {
  INPUTS[k] = axes;
  INPUTS[`m.${k}`] = axes;
  INPUTS[`v.${k}`] = axes;
}

/** One training step: loss, gradients, AdamW, and the loss written to slot `slot` of history. */
function trainStep(t: Record<string, Tensor>): Record<string, Tensor> {
  const pick = (prefix: string) => Object.fromEntries(NAMES.map((k) => [k, t[prefix + k]]));
  const [loss, grads] = valueAndGrad((p: Record<string, Tensor>) => {
    const h = tanh(add(einsum("n d, d e -> n e", t.x, p.W1), p.b1));
    const logits = add(einsum("n e, e v -> n v", h, p.W2), p.b2);
    return crossEntropy(logits, t.y, "v");
  })(pick(""));
  const scalars = { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs;
  const step = adamw({ params: pick(""), grads, m: pick("m."), v: pick("v.") }, scalars, OPTIONS);
  const history = where(eq(arange("s", SIZES.s), t.slot), loss, t.history);
  return { ...adamwOutputs(step), history, loss };
}

/** A separable 3-class problem: labels are the argmax of a random linear teacher. */
function dataset(next: () => number) {
  const x = Float32Array.from({ length: SIZES.n * SIZES.d }, () => 2 * next() - 1);
  const teacher = Float32Array.from({ length: SIZES.d * SIZES.v }, () => 2 * next() - 1);
  const y = Int32Array.from({ length: SIZES.n }, (_, i) => {
    let best = 0, bestScore = -Infinity;
    for (let c = 0; c < SIZES.v; c++) {
      let score = 0;
      for (let j = 0; j < SIZES.d; j++) score += x[i * SIZES.d + j] * teacher[j * SIZES.v + c];
      if (score > bestScore) [best, bestScore] = [c, score];
    }
    return best;
  });
  return { x, y };
}

Deno.test("training on the GPU: a tiny MLP's loss falls, matching the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const { x, y } = dataset(next);
  const init: Record<string, Float32Array> = {};
  for (const [k, axes] of Object.entries(PARAMS)) {
    const n = axes.split(" ").reduce((p, a) => p * SIZES[a as keyof typeof SIZES], 1);
    init[k] = Float32Array.from({ length: n }, () => k.startsWith("b") ? 0 : next() - 0.5);
  }
  const lr = (step: number) => 0.05 * Math.min(1, step / 5); // warm-up: a schedule as data
  const prog = await ResidentProgram.create(INPUTS, trainStep, SIZES, {
    state: { ...adamwState(NAMES), history: "history" },
  });
  const gpuLosses: number[] = [];
  try {
    for (const k of NAMES) prog.write(k, init[k]);
    for (let step = 1; step <= STEPS; step++) {
      const slot = Float32Array.of((step - 1) % BLOCK);
      await prog.step({ x, y, slot, ...adamwScalars(step, lr(step), OPTIONS) });
      if (step % BLOCK === 0) gpuLosses.push(...(await prog.read(["history"])).history);
    }
  } finally {
    prog.destroy();
  }
  // The oracle: the same program in float64, its outputs fed back as the next step's inputs.
  const graph = trace(INPUTS, trainStep, SIZES);
  const state: Record<string, Float64Array | Float32Array | Int32Array> = { x, y };
  for (const k of NAMES) {
    state[k] = init[k];
    state[`m.${k}`] = new Float64Array(init[k].length);
    state[`v.${k}`] = new Float64Array(init[k].length);
  }
  state.history = new Float64Array(SIZES.s);
  const cpuLosses: number[] = [];
  for (let step = 1; step <= STEPS; step++) {
    const out = interpret(graph, {
      ...state,
      slot: Float64Array.of((step - 1) % BLOCK),
      ...adamwScalars(step, lr(step), OPTIONS),
    });
    for (const k of Object.keys(adamwState(NAMES))) state[k] = out[k];
    state.history = out.history;
    cpuLosses.push(out.loss[0]);
  }
  assert.equal(gpuLosses.length, STEPS);
  const start = cpuLosses[0], end = gpuLosses[STEPS - 1];
  assert.ok(Math.abs(gpuLosses[0] - start) < 1e-5 * start, `first loss (seed ${seed})`);
  assert.ok(end < 0.25 * start, `loss fell from ${start} to ${end} (seed ${seed})`);
  const worst = Math.max(...gpuLosses.map((l, i) => Math.abs(l - cpuLosses[i]) / cpuLosses[i]));
  assert.ok(worst < 1e-4, `the loss curve matches float64 within ${worst} (seed ${seed})`);
});
