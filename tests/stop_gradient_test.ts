// stopGradient: the identity forward (interpreter and GPU), no gradient backward: d/dx of
// Σ x·stopGradient(x) is x, not 2x; a parameter reaching the loss only through it gets zero;
// a shift by stopGradient(max) that cancels leaves the gradient exact.
import assert from "node:assert/strict";
import { grad } from "../dsl/autodiff.ts";
import { exp, log, mul, stopGradient, sub } from "../dsl/elementwise.ts";
import { max, mean, sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { checkGradients } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const SIZES = { r: 5, c: 13 };

Deno.test("stopGradient: identity forward, no cotangent backward (interpreter)", () => {
  const seed = freshSeed();
  const x = randomArray(SIZES.r * SIZES.c, rng(seed), -2, 2);
  const graph = trace({ x: "r c" }, (t) => {
    const g = grad((p: { x: Tensor<"r c"> }) => sum(mul(p.x, stopGradient(p.x)), "r c"))({
      x: t.x,
    });
    const only = grad((p: { x: Tensor<"r c"> }) => sum(stopGradient(p.x), "r c"))({ x: t.x });
    return { y: stopGradient(t.x), dx: g.x, dOnly: only.x };
  }, SIZES);
  const out = interpret(graph, { x });
  assert.deepEqual([...out.y], [...x].map(Number), "forward is the identity");
  assertClose(out.dx, x, 1e-12, `d Σ x·sg(x) / dx = sg(x) = x (seed ${seed})`);
  assert.ok(out.dOnly.every((v) => v === 0), "through stopGradient only: a zero gradient");
});

Deno.test("stopGradient: a shift by stopGradient(max) keeps logsumexp's gradient exact", () => {
  const seed = freshSeed();
  const next = rng(seed);
  // log Σ exp(x − m) − mean(x − m) does not depend on m (it cancels), so holding m constant
  // leaves the gradient exact: softmax − 1/c, as central differences measure it.
  const lse = (t: Record<string, Tensor>) => {
    const m = stopGradient(max(t.x, "c"));
    const shifted = sub(t.x, m);
    return sum(sub(log(sum(exp(shifted), "c")), mean(shifted, "c")), "r");
  };
  checkGradients({ x: "r c" }, lse, ["x"], SIZES, {
    x: Float64Array.from(randomArray(SIZES.r * SIZES.c, next, -3, 3)),
  }, { tol: 1e-6 });
});

Deno.test("stopGradient on the GPU: fused into its consumer, equal to the interpreter", async () => {
  const seed = freshSeed();
  const x = randomArray(SIZES.r * SIZES.c, rng(seed), -2, 2);
  const fn = (t: { x: Tensor<"r c"> }) => {
    const g = grad((p: { x: Tensor<"r c"> }) => sum(mul(exp(p.x), stopGradient(p.x)), "r c"))(
      { x: t.x },
    );
    return { dx: g.x, y: mul(stopGradient(t.x), 2) };
  };
  const prog = await compile({ x: "r c" }, fn, SIZES);
  const got = await prog.run({ x });
  const want = interpret(trace({ x: "r c" }, fn, SIZES), { x });
  assertClose(got.dx, want.dx, 1e-5, `gradient (seed ${seed})`);
  assertClose(got.y, want.y, 1e-6, `forward (seed ${seed})`);
  prog.destroy?.();
});
