// The delta rule's gradients (dsl/vjp_delta.ts): the interpreter's against central finite
// differences, with y and the final state both in the loss, every operand differentiated, at
// awkward sizes; then the GPU kernel's against the interpreter's.
import { deltaRule } from "../dsl/delta.ts";
import { add, exp, mul, neg, sigmoid } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import assert from "node:assert/strict";
import { compile } from "../runtime/compile.ts";
import { gatedDeltaNet } from "../models/layers/gated_deltanet.ts";
import { checkGradients, gradFn, randomData, weighted } from "./grad_check.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const INPUTS = {
  q: "b t h dk",
  k: "b t h dk",
  v: "b t h dv",
  braw: "b t h",
  graw: "b t h",
  init: "b h dv dk",
  wy: "b t h dv",
  ws: "b h dv dk",
} as const;
const WRT = ["q", "k", "v", "braw", "graw", "init"] as const;

/** Σ y·wy + Σ state·ws of Gated DeltaNet (β = sigmoid, log α = −exp: α in (0, 1)). */
function loss(opts: { gate: boolean; init: boolean; state: boolean }) {
  return (t: Record<string, Tensor>) => {
    const { y, state } = deltaRule(
      {
        q: t.q,
        k: mul(t.k, 0.7),
        v: t.v,
        beta: sigmoid(t.braw),
        gate: opts.gate ? neg(exp(t.graw)) : undefined,
      },
      { time: "t", key: "dk", value: "dv", init: opts.init ? t.init : undefined },
    );
    const ly = weighted(y, t.wy);
    return opts.state ? add(ly, weighted(state, t.ws)) : ly;
  };
}

Deno.test("delta grad: every operand against finite differences (interpreter)", () => {
  const cases = [
    { sizes: { b: 2, t: 7, h: 1, dk: 3, dv: 2 }, gate: true, init: true, state: true },
    { sizes: { b: 1, t: 9, h: 2, dk: 4, dv: 5 }, gate: true, init: false, state: false },
    { sizes: { b: 1, t: 5, h: 1, dk: 5, dv: 3 }, gate: false, init: true, state: true },
  ];
  for (const c of cases) {
    const seed = freshSeed();
    const data = randomData(INPUTS, c.sizes, rng(seed), { braw: [-2, 2], graw: [-3, 0] });
    const wrt = WRT.filter((w) => (w !== "graw" || c.gate) && (w !== "init" || c.init));
    try {
      checkGradients(INPUTS, loss(c), wrt, c.sizes, data, { tol: 1e-6 });
    } catch (e) {
      throw new Error(`${JSON.stringify(c)} seed ${seed}: ${(e as Error).message}`);
    }
  }
});

Deno.test("delta grad: the GPU kernels agree with the interpreter at awkward sizes", async () => {
  const cases = [
    // Several checkpoints with a partial last one; keys over several lanes, a masked tail.
    { sizes: { b: 2, t: 37, h: 2, dk: 19, dv: 6 }, gate: true, init: true, state: true },
    { sizes: { b: 1, t: 16, h: 3, dk: 8, dv: 9 }, gate: false, init: false, state: false },
    { sizes: { b: 1, t: 50, h: 1, dk: 40, dv: 33 }, gate: true, init: true, state: false },
  ];
  for (const c of cases) {
    const seed = freshSeed();
    const wrt = WRT.filter((w) => (w !== "graw" || c.gate) && (w !== "init" || c.init));
    const prog = await compile(INPUTS, gradFn(loss(c), wrt), c.sizes, { backend: "gpu" });
    try {
      const data = randomData(INPUTS, c.sizes, rng(seed), { braw: [-2, 2], graw: [-3, 0] });
      const inputs = Object.fromEntries(
        Object.entries(data).map(([k, v]) => [k, Float32Array.from(v as Float64Array)]),
      );
      const got = await prog.run(inputs);
      const want = prog.interpret(inputs);
      for (const key of Object.keys(want)) {
        assertClose(got[key], want[key], 1e-4, `${key} ${JSON.stringify(c)} seed ${seed}`);
      }
      // One walk writes every operand's gradient from y's cotangent; another from the state's.
      const walks = prog.kernels.filter((k) => k.name.includes("delta_grad"));
      assert.equal(walks.length, c.state ? 2 : 1, prog.kernels.map((k) => k.name).join());
    } finally {
      prog.destroy();
    }
  }
});

Deno.test("delta grad: through the Gated DeltaNet layer (L2 norms, gates), chunked forward", async () => {
  const seed = freshSeed();
  const inputs = {
    q: "b t h k",
    k: "b t h k",
    v: "b t h v",
    braw: "b t h",
    a: "b t h",
    h0: "b h v k",
    w: "b t h v",
  } as const;
  const sizes = { b: 1, t: 70, h: 2, k: 12, v: 7 };
  const layerLoss = (t: Record<string, Tensor>) => {
    const g = neg(mul(exp(t.a), 0.5)) as Tensor;
    const { o } = gatedDeltaNet(
      {
        q: t.q as Tensor<"b t h k">,
        k: t.k as Tensor<"b t h k">,
        v: t.v as Tensor<"b t h v">,
        beta: sigmoid(t.braw),
        g,
      },
      { init: t.h0 as Tensor<"b h v k"> },
    );
    return weighted(o, t.w);
  };
  const wrt = ["q", "k", "v", "braw", "a", "h0"];
  // The forward forced chunked (70 steps: two 64-step chunks): the gradient reads its y.
  const prog = await compile(inputs, gradFn(layerLoss, wrt), sizes, {
    backend: "gpu",
    scan: { mode: "chunked" },
  });
  try {
    const data = randomData(inputs, sizes, rng(seed), { braw: [-2, 2], a: [-2, 1] });
    const f32 = Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Float32Array.from(v as Float64Array)]),
    );
    const got = await prog.run(f32);
    const want = prog.interpret(f32);
    for (const key of Object.keys(want)) {
      assertClose(got[key], want[key], 1e-4, `${key} seed ${seed}`);
    }
    assert.ok(prog.kernels.some((k) => /_delta_\w+_prep$/.test(k.name)), "chunked forward");
  } finally {
    prog.destroy();
  }
  // And the interpreter's gradients against finite differences at a smaller size.
  const small = { b: 1, t: 6, h: 1, k: 3, v: 2 };
  const data = randomData(inputs, small, rng(seed), { braw: [-2, 2], a: [-2, 1] });
  checkGradients(inputs, layerLoss, wrt, small, data, { tol: 1e-6 });
});
