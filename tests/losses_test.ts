// The training losses (dsl/losses.ts): cross-entropy's value against a float64 reference written
// here (also at logits of magnitude 100, where log(softmax) underflows), its gradient
// against central differences and against softmax − onehot, the same gradient program on the
// adapter against the interpreter at an awkward size, the fusion (no b·l·v tensor but the
// logits and their gradient in memory), mse, and the one-line errors.
import assert from "node:assert/strict";
import { planFusion } from "../codegen/fusion.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { log, mul } from "../dsl/elementwise.ts";
import { crossEntropy, mse } from "../dsl/losses.ts";
import { softmax } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { checkGradients, type Data, gradProgram, randomData } from "./grad_check.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const CE_INPUTS = { logits: "b l v", ids: { axes: "b l", dtype: "i32" as const } };

/** Cross-entropy of rows of `logits` [rows, v] at `ids`, in float64, written from the definition. */
function referenceCrossEntropy(logits: ArrayLike<number>, ids: Int32Array, v: number) {
  const terms: number[] = [];
  for (let r = 0; r < ids.length; r++) {
    const row = Array.from({ length: v }, (_, j) => logits[r * v + j]);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
    terms.push(lse - row[ids[r]]);
  }
  return terms;
}

function randomIds(n: number, v: number, next: () => number): Int32Array {
  return Int32Array.from({ length: n }, () => Math.floor(next() * v));
}

Deno.test("crossEntropy: mean and sum against a float64 reference", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, l: 5, v: 11 };
  const ids = randomIds(10, 11, next);
  const data = randomData(CE_INPUTS, sizes, next, { logits: [-4, 4] }, { ids });
  const terms = referenceCrossEntropy(data.logits, ids, 11);
  const sumWant = terms.reduce((a, b) => a + b, 0);
  for (const reduction of ["mean", "sum"] as const) {
    const g = trace(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v", { reduction }), sizes);
    const got = interpret(g, data)["out"];
    assert.equal(got.length, 1);
    const want = reduction === "sum" ? sumWant : sumWant / 10;
    assert.ok(Math.abs(got[0] - want) < 1e-12 * Math.abs(want), `${reduction} (seed ${seed})`);
  }
});

Deno.test("crossEntropy: targets may list the other axes in any order", () => {
  const next = rng(7);
  const sizes = { b: 3, l: 4, v: 5 };
  const inputs = { logits: "l v b", ids: { axes: "b l", dtype: "i32" as const } };
  const ids = randomIds(12, 5, next);
  const data = randomData(inputs, sizes, next, {}, { ids });
  const got = interpret(trace(inputs, (t) => crossEntropy(t.logits, t.ids, "v"), sizes), data);
  // Reference: reorder the logits to [b, l, v] rows.
  const x = data.logits as Float64Array;
  const rows = new Float64Array(60);
  for (let b = 0; b < 3; b++) {
    for (let l = 0; l < 4; l++) {
      for (let v = 0; v < 5; v++) rows[(b * 4 + l) * 5 + v] = x[(l * 5 + v) * 3 + b];
    }
  }
  const want = referenceCrossEntropy(rows, ids, 5).reduce((a, c) => a + c, 0) / 12;
  assert.ok(Math.abs(got["out"][0] - want) < 1e-12 * want);
});

Deno.test("crossEntropy: a term of 200 at logits ±100 in the interpreter", () => {
  const sizes = { b: 1, l: 2, v: 3 };
  // Row 0 targets a logit 200 below the maximum; row 1 its maximum.
  const data: Data = {
    logits: Float64Array.from([100, -100, 100, 100, 0, -100]),
    ids: Int32Array.from([1, 0]),
  };
  const want = referenceCrossEntropy(data.logits, data.ids as Int32Array, 3);
  assert.ok(want[0] > 200 && want[0] < 201, `reference term ${want[0]}`);
  const sum = trace(
    CE_INPUTS,
    (t) => crossEntropy(t.logits, t.ids, "v", { reduction: "sum" }),
    sizes,
  );
  const got = interpret(sum, data)["out"][0];
  assert.ok(Math.abs(got - (want[0] + want[1])) < 1e-12 * got, `got ${got}`);
});

Deno.test("crossEntropy: gradient is (softmax − onehot)/N and matches central differences", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, l: 3, v: 7 };
  const ids = randomIds(6, 7, next);
  const data = randomData(CE_INPUTS, sizes, next, { logits: [-3, 3] }, { ids });
  const loss = (t: Record<string, Tensor>) => crossEntropy(t.logits, t.ids, "v");
  const g = checkGradients(CE_INPUTS, loss, ["logits"], sizes, data, { tol: 1e-6 }).logits;
  const x = data.logits as Float64Array;
  const want = new Float64Array(x.length);
  for (let r = 0; r < 6; r++) {
    const row = x.subarray(r * 7, r * 7 + 7);
    const m = Math.max(...row);
    const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
    for (let j = 0; j < 7; j++) {
      want[r * 7 + j] = (Math.exp(row[j] - m) / z - (j === ids[r] ? 1 : 0)) / 6;
    }
  }
  assertClose(g, want, 1e-12, `softmax − onehot (seed ${seed})`);
  // Large logits: the analytic gradient is still softmax − onehot, finite.
  const big = { logits: Float64Array.from(x, (v) => 40 * v), ids };
  checkGradients(CE_INPUTS, loss, ["logits"], sizes, big, { tol: 1e-5, step: 1e-4 });
});

Deno.test("crossEntropy: gradient through a projection (sum reduction) against differences", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const inputs = { x: "n d", W: "d v", ids: { axes: "n", dtype: "i32" as const } };
  const sizes = { n: 5, d: 4, v: 6 };
  const ids = randomIds(5, 6, next);
  const data = randomData(inputs, sizes, next, {}, { ids });
  const loss = (t: Record<string, Tensor>) =>
    crossEntropy(einsum("n d, d v -> n v", t.x, t.W), t.ids, "v", { reduction: "sum" });
  checkGradients(inputs, loss, ["x", "W"], sizes, data);
});

Deno.test("crossEntropy on the GPU: value and gradient at b=2 l=7 v=37 vs the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, l: 7, v: 37 };
  const program = (t: Record<string, Tensor>) => {
    const [loss, g] = valueAndGrad((p: { logits: Tensor<"b l v"> }) =>
      crossEntropy(p.logits, t.ids, "v")
    )({ logits: t.logits as Tensor<"b l v"> });
    return { loss, dLogits: g.logits };
  };
  const prog = await compile(CE_INPUTS, program, sizes, { backend: "gpu" });
  try {
    for (const scale of [3, 100]) {
      const ids = randomIds(14, 37, next);
      const logits = Float32Array.from({ length: 2 * 7 * 37 }, () => scale * (2 * next() - 1));
      const got = await prog.run({ logits, ids }) as Record<string, Float32Array>;
      const want = prog.interpret({ logits, ids }) as Record<string, Float64Array>;
      const ref = referenceCrossEntropy(logits, ids, 37).reduce((a, c) => a + c, 0) / 14;
      assert.ok(Number.isFinite(got.loss[0]), `loss at scale ${scale}: ${got.loss[0]}`);
      assert.ok(
        Math.abs(got.loss[0] - ref) <= 1e-5 * Math.max(1, ref),
        `loss at scale ${scale}: ${got.loss[0]} vs ${ref} (seed ${seed})`,
      );
      assert.ok(Math.abs(want.loss[0] - ref) <= 1e-12 * Math.max(1, ref));
      assertClose(got.dLogits, want.dLogits, 1e-5, `dLogits at scale ${scale} (seed ${seed})`);
    }
  } finally {
    prog.destroy();
  }
  // The same logits through log(softmax): f32 exp underflows to 0 and the loss is not finite
  // (what the fused form avoids; this also shows the scale of 100 tests something).
  const naiveInputs = { logits: "b l v", onehot: "b l v" };
  const naive = await compile(
    naiveInputs,
    (t) => {
      const logp = log(softmax(t.logits, "v"));
      return mul(einsum("b l v, b l v -> ", t.onehot, logp), -1 / 14);
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const logits = new Float32Array(2 * 7 * 37), onehot = new Float32Array(2 * 7 * 37);
    for (let r = 0; r < 14; r++) {
      logits[r * 37] = 100;
      logits[r * 37 + 1] = -100;
      onehot[r * 37 + 1] = 1;
    }
    const got = await naive.run({ logits, onehot }, { checkNaN: false }) as Float32Array;
    assert.ok(!Number.isFinite(got[0]), `log(softmax) at ±100 gave ${got[0]}`);
    const fused = await fusedLoss(logits, onehot);
    assert.ok(Math.abs(fused - 200) < 1e-3, `crossEntropy at ±100: ${fused}`);
  } finally {
    naive.destroy();
  }
});

/** crossEntropy's loss on the adapter for logits and a one-hot of the targets. */
async function fusedLoss(logits: Float32Array, onehot: Float32Array): Promise<number> {
  const rows = logits.length / 37;
  const ids = Int32Array.from(
    { length: rows },
    (_, r) => onehot.subarray(r * 37, r * 37 + 37).indexOf(1),
  );
  const prog = await compile(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v"), {
    b: 2,
    l: 7,
    v: 37,
  }, { backend: "gpu" });
  try {
    return (await prog.run({ logits, ids }) as Float32Array)[0];
  } finally {
    prog.destroy();
  }
}

Deno.test("crossEntropy fuses: only the logits and their gradient have a vocabulary axis", () => {
  const sizes = { b: 2, l: 7, v: 37 };
  const forward = trace(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v"), sizes);
  const withV = (g: typeof forward) =>
    [...planFusion(g).materialized].filter((n) => n.axes.includes("v")).map((n) => n.kind);
  assert.deepEqual(withV(forward), ["input"], "forward: only the logits input");
  const backward = gradProgram(
    CE_INPUTS,
    (t) => crossEntropy(t.logits, t.ids, "v"),
    ["logits"],
    sizes,
  );
  const materialized = [...planFusion(backward).materialized].filter((n) => n.axes.includes("v"));
  // The logits and the gradient output: softmax − onehot is computed by the kernel that writes
  // the gradient, never stored as probabilities first.
  assert.equal(materialized.length, 2, materialized.map((n) => n.kind).join(", "));
});

Deno.test("crossEntropy: the backward pass adds one kernel (stopGradient on the row maximum)", () => {
  const sizes = { b: 2, l: 7, v: 37 };
  const kernels = (g: ReturnType<typeof trace>) => generateKernels(g, DEFAULT_LIMITS).kernels;
  const forward = kernels(trace(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v"), sizes));
  const backward = kernels(
    gradProgram(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v"), ["logits"], sizes),
  );
  // Forward: max, Σ exp, the masked sum, the mean. The gradient program repeats them and adds
  // only the kernel writing (softmax − onehot)/N; without stopGradient the row maximum's zero
  // gradient cost two more reductions over v (7 kernels).
  assert.equal(forward.length, 4, forward.map((k) => k.name).join(" "));
  assert.equal(backward.length, 5, backward.map((k) => k.name).join(" "));
  assert.deepEqual(backward.filter((k) => k.kind !== "reduce").length, 1);
});

Deno.test("mse: value and gradient against a reference and central differences", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const inputs = { p: "b e", y: "e b" };
  const sizes = { b: 3, e: 5 };
  const data = randomData(inputs, sizes, next);
  const p = data.p as Float64Array, y = data.y as Float64Array;
  let want = 0;
  for (let b = 0; b < 3; b++) {
    for (let e = 0; e < 5; e++) want += (p[b * 5 + e] - y[e * 3 + b]) ** 2;
  }
  for (const reduction of ["mean", "sum"] as const) {
    const g = trace(inputs, (t) => mse(t.p, t.y, { reduction }), sizes);
    const got = interpret(g, data)["out"][0];
    const w = reduction === "sum" ? want : want / 15;
    assert.ok(Math.abs(got - w) < 1e-12 * w, `${reduction}: ${got} vs ${w}`);
  }
  const grads = checkGradients(inputs, (t) => mse(t.p, t.y), ["p", "y"], sizes, data);
  for (let b = 0; b < 3; b++) {
    for (let e = 0; e < 5; e++) {
      const d = 2 * (p[b * 5 + e] - y[e * 3 + b]) / 15;
      assert.ok(Math.abs(grads.p[b * 5 + e] - d) < 1e-12, `dp[${b},${e}] (seed ${seed})`);
    }
  }
});

Deno.test("losses: bad arguments are one-line errors naming the problem", () => {
  const sizes = { b: 2, l: 3, v: 4 };
  const expectError = (
    inputs: Record<string, unknown>,
    fn: (t: Record<string, Tensor>) => Tensor,
    re: RegExp,
  ) =>
    assert.throws(
      // deno-lint-ignore no-explicit-any
      () => trace(inputs as any, fn, sizes),
      (e: Error) => re.test(e.message) && !e.message.includes("\n"),
    );
  const i32 = (axes: string) => ({ axes, dtype: "i32" as const });
  expectError(
    { x: "b l v", ids: i32("b") },
    (t) => crossEntropy(t.x, t.ids, "v"),
    /targets \[b\] must have the logits' axes without "v"/,
  );
  expectError(
    { x: "b l v", ids: "b l" },
    (t) => crossEntropy(t.x, t.ids, "v"),
    /targets \[b l\] must be i32 ids/,
  );
  expectError(
    { x: "b l v", ids: i32("b l") },
    (t) => crossEntropy(t.x, t.ids, "q"),
    /no vocabulary axis "q"/,
  );
  expectError(
    { x: "b l v", ids: i32("b l") },
    // deno-lint-ignore no-explicit-any
    (t) => crossEntropy(t.x, t.ids, "v", { reduction: "avg" as any }),
    /reduction must be "mean" or "sum", got "avg"/,
  );
  // Ids out of range: the interpreter rejects them (the GPU clamps them, like gather).
  const ce = trace(CE_INPUTS, (t) => crossEntropy(t.logits, t.ids, "v"), sizes);
  assert.throws(
    () => interpret(ce, { logits: new Float64Array(24), ids: Int32Array.of(0, 1, 2, 3, 4, 0) }),
    /gather: index 4 is out of range for axis "v" \(4\)/,
  );
  expectError(
    { x: "b l", y: "b v" },
    (t) => mse(t.x, t.y),
    /mse: the prediction \[b l\] and the target \[b v\] must have the same axes/,
  );
});
