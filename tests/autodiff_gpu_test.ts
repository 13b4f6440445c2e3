// Gradient programs compiled to WGSL and run on the adapter (f32) against the float64
// interpreter's gradients of the same program (relative L2 error ≤ 1e-4 per output): a small
// MLP with rmsnorm and softmax cross-entropy, Mamba-1's selective scan, an SSD-style
// scalar-decay scan, an embedding + conv1d + reverse scan with init, and the views.
import assert from "node:assert/strict";
import { type FusionPlan, planFusion } from "../codegen/fusion.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import { max, mean, rmsnorm, softmax, sum } from "../dsl/reduce.ts";
import { finalState, pick, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { InputSpec, Sizes } from "../dsl/trace.ts";
import { concat, conv1d, flip, gather, slice, transpose } from "../dsl/views.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { gradFn, type Loss } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

type Ranges = Record<string, [number, number]>;

/**
 * Compiles the gradient program of `loss`, runs it on the adapter and checks every output;
 * returns the program's fusion plan and kernel names.
 */
async function gpuMatchesInterpreter(
  what: string,
  inputs: InputSpec,
  loss: Loss,
  wrt: string[],
  sizes: Sizes,
  ranges: Ranges = {},
  ids: Record<string, Int32Array> = {},
  scanStrategy: ScanStrategy = {},
): Promise<{ plan: FusionPlan; kernels: string[] }> {
  const seed = freshSeed();
  const prog = await compile(inputs, gradFn(loss, wrt), sizes, {
    backend: "gpu",
    scan: scanStrategy,
  });
  try {
    const next = rng(seed);
    const data: Record<string, Float32Array | Int32Array> = {};
    for (const inp of prog.graph.inputs) {
      const n = inp.shape.reduce((p, s) => p * s, 1);
      const [lo, hi] = ranges[inp.name] ?? [-1, 1];
      data[inp.name] = inp.dtype === "i32" ? ids[inp.name] : randomArray(n, next, lo, hi);
    }
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    // The loss is a sum of hundreds of terms of both signs: its f32 rounding is relative to
    // their size (about 1), not to the sum's, which may cancel to near zero.
    const lossError = Math.abs(got.value[0] - want.value[0]) / Math.max(1, Math.abs(want.value[0]));
    assert.ok(
      lossError <= 1e-4,
      `${what}: loss ${got.value[0]} vs ${want.value[0]} (seed ${seed})`,
    );
    for (const k of Object.keys(want)) {
      if (k === "value") continue;
      assertClose(got[k], want[k], 1e-4, `${what}: ${k} (seed ${seed})`);
    }
    return { plan: planFusion(prog.graph), kernels: prog.kernels.map((k) => k.name) };
  } finally {
    prog.destroy();
  }
}

Deno.test("autodiff on the GPU: MLP with rmsnorm and softmax cross-entropy", async () => {
  const inputs = { x: "b l d", g: "d", W1: "d e", b1: "e", W2: "e v", y: "b l v" };
  const loss: Loss = (t) => {
    const h = ew.silu(ew.add(einsum("b l d, d e -> b l e", rmsnorm(t.x, "d", t.g), t.W1), t.b1));
    const p = softmax(einsum("b l e, e v -> b l v", h, t.W2), "v");
    return ew.neg(mean(einsum("b l v, b l v -> b l", t.y, ew.log(p)), "b l"));
  };
  // 66 rows: the weight gradients sum over more than 64 terms, so they run as matmul kernels
  // (shorter contractions are inlined as loops).
  await gpuMatchesInterpreter("mlp", inputs, loss, ["x", "g", "W1", "b1", "W2"], {
    b: 2,
    l: 33,
    d: 7,
    e: 9,
    v: 6,
  }, { y: [0, 1] });
});

Deno.test("autodiff on the GPU: Mamba-1 selective scan with init and final state", async () => {
  const inputs = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n", wy: "b l d", ws: "b d n" } as const;
  const loss: Loss = (t) => {
    // deno-lint-ignore no-explicit-any
    const { y, state } = selectiveScan(t as any, { init: t.h0 as any });
    return ew.add(
      einsum("b l d, b l d -> ", y, t.wy),
      einsum("b d n, b d n -> ", state, t.ws),
    );
  };
  const wrt = ["x", "dt", "z", "B", "C", "A", "D", "dtBias", "h0"];
  await gpuMatchesInterpreter("selective scan", inputs, loss, wrt, { b: 2, l: 9, d: 5, n: 3 }, {
    A: [-2, -0.2],
    dt: [-3, 0.5],
  });
});

Deno.test("autodiff on the GPU: the adjoint scan fused (gradient of x only)", async () => {
  // d/dx contracts the adjoint scan (a scan in the other direction over a shifted decay) with
  // Δ·B over the state axis: the scan-group kernel computes it without materializing it.
  const inputs = { ...SELECTIVE_SCAN_INPUTS, wy: "b l d" } as const;
  const strategies: [boolean, ScanStrategy][] = [
    [false, {}],
    [false, { chunks: 4 }],
    [false, { tileSteps: 16 }],
    [true, {}],
    [true, { chunks: 4 }],
  ];
  for (const [reverse, strategy] of strategies) {
    const loss: Loss = (t) => {
      // deno-lint-ignore no-explicit-any
      const { y } = selectiveScan(t as any, { reverse });
      return einsum("b l d, b l d -> ", y, t.wy);
    };
    const what = `d/dx${reverse ? " (reverse)" : ""} ${JSON.stringify(strategy)}`;
    const { plan } = await gpuMatchesInterpreter(
      what,
      inputs,
      loss,
      ["x"],
      {
        b: 2,
        l: 67,
        d: 3,
        n: 4,
      },
      { A: [-2, -0.2], dt: [-3, 0.5] },
      {},
      strategy,
    );
    const fused = plan.kernels.filter((k) => k.kind === "scan").length;
    assert.equal(fused, 2, `${what}: the forward and the adjoint scan are both fused`);
  }
});

Deno.test("autodiff on the GPU: SSD-style scalar-decay scan", async () => {
  const inputs = {
    x: "b l h p",
    dt: "b l h",
    A: "h",
    B: "b l n",
    C: "b l n",
    D: "h",
    wy: "b l h p",
  };
  const program = (reverse: boolean): Loss => (t) => {
    const delta = ew.softplus(t.dt);
    const state = scan(
      "l",
      ew.exp(ew.mul(delta, t.A)),
      einsum("b l h, b l h p, b l n -> b l h p n", delta, t.x, t.B),
      { reverse },
    );
    const y = ew.add(einsum("b l h p n, b l n -> b l h p", state, t.C), ew.mul(t.D, t.x));
    return einsum("b l h p, b l h p -> ", y, t.wy);
  };
  const sizes = { b: 2, l: 11, h: 3, p: 5, n: 4 };
  const ranges: Ranges = { A: [-2, -0.2] };
  const wrt = ["x", "dt", "A", "B", "C", "D"];
  await gpuMatchesInterpreter("ssd", inputs, program(false), wrt, sizes, ranges);
  // d/dx alone: both scans fuse, and the chunked (SSD) lowering runs the adjoint scan too. It
  // works with log(decay): the adjoint's shifted decay must stay positive at the end it pads.
  for (const reverse of [false, true]) {
    const what = `ssd d/dx chunked${reverse ? " (reverse)" : ""}`;
    const { kernels } = await gpuMatchesInterpreter(
      what,
      inputs,
      program(reverse),
      ["x"],
      sizes,
      {
        ...ranges,
      },
      {},
      { mode: "chunked", chunks: 2 },
    );
    const chunked = kernels.filter((k) => k.endsWith("_ssd_out")).length;
    assert.equal(chunked, 2, `${what}: both scans chunked (${kernels.join(", ")})`);
  }
});

Deno.test("autodiff on the GPU: embedding, conv1d, reverse scan with init", async () => {
  const inputs = {
    table: "v d",
    ids: { axes: "b l", dtype: "i32" as const },
    w: "d k",
    a: "d",
    h0: "b d",
    wy: "b l d",
  };
  const loss: Loss = (t) => {
    const e = gather(t.table, t.ids, "v");
    const h = scan("l", ew.sigmoid(t.a), conv1d(e, t.w, "l", "k"), { reverse: true, init: t.h0 });
    const last = finalState(h);
    return ew.add(einsum("b l d, b l d -> ", h, t.wy), sum(ew.mul(last, last), "b d"));
  };
  const ids = Int32Array.from([3, 0, 3, 6, 1, 1, 3, 0, 2, 6, 4, 3, 3, 5]);
  await gpuMatchesInterpreter(
    "embedding",
    inputs,
    loss,
    ["table", "w", "a", "h0"],
    {
      v: 7,
      d: 5,
      b: 2,
      l: 7,
      k: 4,
    },
    {},
    { ids },
  );
});

Deno.test("autodiff on the GPU: views and a max reduction", async () => {
  // "unused" does not reach the loss: its gradient is a constant zero output.
  const inputs = { x: "b l d", y: "b m d", wy: "d b", unused: "d" };
  const loss: Loss = (t) => {
    const joined = concat([flip(t.x, "l"), t.y], ["l", "m"], "c");
    const window = slice(transpose(joined, "d c b"), "c", 2, 8, "s");
    const peak: Tensor = max(ew.tanh(window), "s");
    return ew.add(einsum("d b, d b -> ", peak, t.wy), sum(pick(t.x, "l", 2), "b d"));
  };
  await gpuMatchesInterpreter("views", inputs, loss, ["x", "y", "unused"], {
    b: 3,
    l: 5,
    m: 4,
    d: 7,
  });
});
