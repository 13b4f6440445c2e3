// The backward of Mamba-2's scalar-decay scan (SSD) when the decay is differentiated (dA, dΔ):
// the gradient program of a Mamba-2-shaped scan (groups of heads sharing B and C, init, the D
// skip, the gated RMSNorm over every channel, the final state in the loss) on the adapter
// against the float64 interpreter, and the interpreter's gradients against central
// differences, at awkward sizes; and the plan of Mamba-2 130M's training step (b = 8,
// l = 2048), which must write no b·l·h·p·n tensor.
import assert from "node:assert/strict";
import { elementsOf, type KernelArtifact } from "../codegen/artifact.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import { numel } from "../dsl/ir.ts";
import { rmsnorm } from "../dsl/reduce.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { type InputDecl, trace } from "../dsl/trace.ts";
import { collectNodes, type Graph } from "../dsl/ir.ts";
import { interpret } from "../runtime/interpreter.ts";
import { rewriteSsdBackward } from "../codegen/ssd_backward.ts";
import { rearrange } from "../dsl/views.ts";
import { mamba2Definition } from "../models/definitions.ts";
import { mamba2ConfigFromHF } from "../models/mamba2.ts";
import { lmLossAndGradOutputs, lmLossAndGrads, lmLossInputs } from "../models/train/lm_loss.ts";
import {
  adamw,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
} from "../models/train/adamw.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile, type CompileOptions } from "../runtime/compile.ts";
import { checkGradients, type Data, gradFn, gradProgram, type Loss } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

/** The Mamba-2 scan with its neighbours in the mixer, heads written (g r) as the mixer does. */
const INPUTS = {
  x: "b l g r p",
  dt: "b l g r",
  dtBias: "g r",
  Alog: "g r",
  B: "b l g n",
  C: "b l g n",
  D: "g r",
  z: "b l g r p",
  h0: "b g r p n",
  wy: "b l d",
  ws: "b g r p n",
} as const;
const WRT = ["x", "dt", "dtBias", "Alog", "B", "C", "D", "z", "h0"];
const RANGES: Record<string, [number, number]> = { Alog: [-1, 1], dt: [-3, 0.5] };

/** Σ wy·rmsnorm(y·silu(z)) (+ Σ ws·state): the norm couples every channel's gradient to y. */
function lossOf(withFinalState: boolean, reverse = false): Loss {
  return (t) => {
    const delta = ew.softplus(ew.add(t.dt, t.dtBias));
    const A = ew.neg(ew.exp(t.Alog));
    const h = scan(
      "l",
      ew.exp(ew.mul(delta, A)),
      einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, t.x, t.B),
      { init: t.h0, reverse },
    );
    const y = ew.add(einsum("b l g r p n, b l g n -> b l g r p", h, t.C), ew.mul(t.D, t.x));
    const yd = rearrange(y, "b l g r p -> b l d=(g r p)");
    const zd = rearrange(t.z, "b l g r p -> b l d=(g r p)");
    const normed = rmsnorm(ew.mul(yd, ew.silu(zd)), "d");
    const out = einsum("b l d, b l d -> ", normed, t.wy);
    return withFinalState
      ? ew.add(out, einsum("b g r p n, b g r p n -> ", finalState(h), t.ws))
      : out;
  };
}
const mamba2Loss = lossOf(true);

/** Elements of every buffer a kernel reads or writes. */
const sizesOf = (k: KernelArtifact) => [...k.reads, ...k.writes].map((key) => elementsOf(key));

function randomData(
  sizes: Record<string, number>,
  seed: number,
  ranges: Record<string, [number, number]> = RANGES,
): Record<string, Float32Array> {
  const next = rng(seed);
  const g = trace(INPUTS, mamba2Loss, sizes);
  const data: Record<string, Float32Array> = {};
  for (const inp of g.inputs) {
    const [lo, hi] = ranges[inp.name] ?? [-1, 1];
    data[inp.name] = randomArray(numel(inp), next, lo, hi);
  }
  return data;
}

/** Compiles the gradient program, checks every gradient against the interpreter; kernel names. */
async function adapterMatches(
  sizes: Record<string, number>,
  options: CompileOptions,
  loss: Loss = mamba2Loss,
  ranges: Record<string, [number, number]> = RANGES,
): Promise<string[]> {
  const seed = freshSeed();
  const prog = await compile(INPUTS, gradFn(loss, WRT), sizes, { backend: "gpu", ...options });
  try {
    const data = randomData(sizes, seed, ranges);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of WRT) assertClose(got[`d_${k}`], want[`d_${k}`], 1e-4, `d_${k} (seed ${seed})`);
    return prog.kernels.map((k) => k.name);
  } finally {
    prog.destroy();
  }
}

Deno.test("ssd backward: the fused scan backward, every gradient, on the adapter", async () => {
  // 13 steps in chunks of 5 (5, 5, 3); 2 groups of 3 heads; p = 3, n = 5.
  const sizes = { b: 2, l: 13, g: 2, r: 3, p: 3, n: 5, d: 18 };
  const names = await adapterMatches(sizes, { scanBackward: { chunk: 5 }, ssdBackward: false });
  assert.ok(names.some((n) => n.includes("_scanbwd_bwd")), names.join(", "));
});

Deno.test("ssd backward: the state-free rewrite, every gradient, on the adapter", async () => {
  const sizes = { b: 2, l: 13, g: 2, r: 3, p: 3, n: 5, d: 18 };
  // Boundary chunks of 4 steps: 4, 4, 4 and 1 (padded to 4).
  const names = await adapterMatches(sizes, { ssdBackward: { chunk: 4 } });
  // h and g are each read through two sets of state axes (n: y, dx; p: dC, dB), and the final
  // state's cotangent through both: five fused scans; then the chunk-level scans.
  assert.equal(names.filter((n) => /^k\d+_scan$/.test(n)).length, 5, names.join(", "));
  assert.equal(names.filter((n) => /_scan_.*chunk[a-z]+$/.test(n)).length, 2, names.join(", "));
});

Deno.test("ssd backward: the state-free rewrite on the chunked SSD kernels", async () => {
  // Every fused scan forced onto the chunked kernels: chunks of 8 over 11 steps (8 + 3).
  const sizes = { b: 1, l: 11, g: 2, r: 3, p: 2, n: 3, d: 12 };
  const names = await adapterMatches(sizes, {
    ssdBackward: { chunk: 4 },
    scan: { mode: "chunked", chunks: 2 },
  }, lossOf(false));
  // Forward y (whose sums the dout·y term reuses), dC; the adjoint's dx and dB.
  assert.equal(names.filter((n) => n.endsWith("_ssd_out")).length, 4, names.join(", "));
});

Deno.test("ssd backward: the graph's gradients match central differences", () => {
  const sizes = { b: 1, l: 7, g: 1, r: 3, p: 2, n: 3, d: 6 };
  const seed = freshSeed();
  const data: Data = {};
  for (const [k, v] of Object.entries(randomData(sizes, seed))) data[k] = Float64Array.from(v);
  checkGradients(INPUTS, mamba2Loss, WRT, sizes, data, { tol: 1e-6 });
});

/** Random float64 data for a traced graph's inputs. */
function data64(graph: Graph, seed: number): Data {
  const next = rng(seed);
  const out: Data = {};
  for (const inp of graph.inputs) {
    const [lo, hi] = RANGES[inp.name] ?? [-1, 1];
    out[inp.name] = Float64Array.from(randomArray(numel(inp), next, lo, hi));
  }
  return out;
}

Deno.test("ssd backward: the state-free rewrite is exact in float64 (long, with and without init)", () => {
  const withoutInit: Loss = (t) => {
    const delta = ew.softplus(ew.add(t.dt, t.dtBias));
    const h = scan(
      "l",
      ew.exp(ew.mul(delta, ew.neg(ew.exp(t.Alog)))),
      einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, t.x, t.B),
    );
    const y = einsum("b l g r p n, b l g n -> b l g r p", h, t.C);
    return einsum("b l d, b l d -> ", rearrange(y, "b l g r p -> b l d=(g r p)"), t.wy);
  };
  const sizes = { b: 2, l: 67, g: 3, r: 1, p: 2, n: 3, d: 6 };
  const cases = [
    ["init, final state, norm", mamba2Loss],
    ["reverse", lossOf(true, true)],
    ["plain", withoutInit],
  ] as const;
  for (const [what, loss] of cases) {
    const graph = gradProgram(INPUTS, loss as Loss, WRT, sizes);
    const seed = freshSeed();
    const data = data64(graph, seed);
    const want = interpret(graph, data);
    // Boundary chunks of 8 (9 chunks, the last of 3 steps), 64 (64 + 3) and 128 (one chunk).
    for (const chunk of [8, 64, 128]) {
      const rewritten = rewriteSsdBackward(graph, { chunk });
      assert.notEqual(rewritten, graph, `${what}: the rewrite applies`);
      const got = interpret(rewritten, data);
      for (const k of WRT) {
        assertClose(
          got[`d_${k}`],
          want[`d_${k}`],
          1e-10,
          `${what}, chunk ${chunk}: d_${k} (${seed})`,
        );
      }
    }
  }
});

Deno.test("ssd backward: the state-free rewrite of a reverse scan, on the adapter", async () => {
  const sizes = { b: 2, l: 13, g: 2, r: 3, p: 3, n: 5, d: 18 };
  const graph = gradProgram(INPUTS, lossOf(true, true), WRT, sizes);
  assert.notEqual(rewriteSsdBackward(graph), graph);
  await adapterMatches(sizes, { ssdBackward: { chunk: 8 } }, lossOf(true, true));
});

Deno.test("ssd backward: the rewrite leaves other decays alone", () => {
  const sizes = { b: 1, l: 5, g: 1, r: 2, p: 2, n: 3, d: 4 };
  // A sigmoid decay (a = 0 would not make a·∂a vanish), and a decay with a state axis.
  const sigmoid: Loss = (t) => {
    const delta = ew.softplus(t.dt);
    const u = einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, t.x, t.B);
    return einsum("b l g r p n, b l g n -> ", scan("l", ew.sigmoid(delta), u), t.C);
  };
  // Mamba-1's form: the decay has every axis of the state (no axis to sum a·∂a over).
  const perState: Loss = (t) => {
    const delta = ew.softplus(t.dt);
    const decay = ew.exp(ew.neg(einsum("b l g r, b l g n -> b l g r n", delta, ew.exp(t.B))));
    const u = einsum("b l g r, b l g n -> b l g r n", delta, t.B);
    return einsum("b l g r n, b l g n -> ", scan("l", decay, u), t.C);
  };
  for (const [what, loss] of [["sigmoid", sigmoid], ["per-state decay", perState]] as const) {
    const graph = gradProgram(INPUTS, loss, ["x", "dt", "B", "C"], sizes);
    assert.equal(rewriteSsdBackward(graph), graph, what);
  }
});

Deno.test("ssd backward: a Mamba-2 language model's gradients, rewritten, in float64", () => {
  // Two layers of two groups of two heads: every layer's scan is rewritten, and every weight's
  // gradient (in_proj, conv, A_log, dt_bias, D, norms, the tied embedding) stays exact.
  const config = {
    ...MAMBA2_130M_LAYER,
    hidden_size: 6,
    num_hidden_layers: 2,
    state_size: 3,
    head_dim: 3,
    num_heads: 4,
    n_groups: 2,
    vocab_size: 11,
  };
  const def = mamba2Definition(mamba2ConfigFromHF(config));
  const graph = trace(
    lmLossInputs(def) as Record<string, InputDecl>,
    (t) => lmLossAndGradOutputs(def, t),
    def.sizes(2, 9),
  );
  const rewritten = rewriteSsdBackward(graph, { chunk: 4 });
  const scans = (g: Graph) =>
    collectNodes(Object.values(g.outputs)).filter((n) => n.kind === "scan");
  assert.ok(scans(rewritten).length > scans(graph).length, "the scans are rewritten");
  const seed = freshSeed();
  const next = rng(seed);
  const data: Data = {};
  for (const inp of graph.inputs) {
    data[inp.name] = inp.dtype === "i32"
      ? Int32Array.from({ length: numel(inp) }, () => Math.floor(next() * config.vocab_size))
      : Float64Array.from(randomArray(numel(inp), next, -0.5, 0.5));
  }
  const want = interpret(graph, data);
  const got = interpret(rewritten, data);
  for (const k of Object.keys(graph.outputs)) {
    assertClose(got[k], want[k], 1e-9, `${k} (seed ${seed})`);
  }
});

/** Mamba-2 130M with one layer: the real training step (forward, cross-entropy, gradients). */
const MAMBA2_130M_LAYER = {
  model_type: "mamba2",
  hidden_size: 768,
  num_hidden_layers: 1,
  state_size: 128,
  expand: 2,
  head_dim: 64,
  num_heads: 24,
  n_groups: 1,
  conv_kernel: 4,
  vocab_size: 50280,
  tie_word_embeddings: true,
};

Deno.test("ssd backward: Mamba-2 130M's training step writes no b·l·h·p·n tensor", () => {
  const def = mamba2Definition(mamba2ConfigFromHF(MAMBA2_130M_LAYER));
  const b = 8, l = 2048;
  const full = b * l * 24 * 64 * 128;
  const graph = trace(
    lmLossInputs(def) as Record<string, InputDecl>,
    (t) => lmLossAndGradOutputs(def, t),
    def.sizes(b, l),
  );
  // Planning only: a device binding 24 storage buffers, with no cap on a buffer's size (the
  // materializing path's states would not fit a real binding).
  const limits = {
    ...DEFAULT_LIMITS,
    maxStorageBuffersPerShaderStage: 24,
    maxStorageBufferBindingSize: 2 ** 40,
    maxBufferSize: 2 ** 40,
  };
  const fused = generateKernels(graph, limits, { scanBackward: {}, ssdBackward: false });
  const largest = Math.max(...fused.kernels.flatMap(sizesOf));
  // The largest buffer is a piece of the logits (the loss builds them 1 GiB at a time: two
  // batch rows, 2·l·vocab); no state is written.
  assert.equal(largest, 2 * l * 50280);
  for (const n of fused.plan.materialized) {
    if (n.axes.includes("v")) continue;
    assert.ok(numel(n) < full / 8, `node ${n.id} [${n.axes.join(" ")}] is materialized`);
  }
  const scratch = fused.kernels.flatMap((k) => [...k.reads, ...k.writes])
    .filter((key) => key.kind === "scratch").map(elementsOf);
  // The checkpoints of h every 16 steps, b·(l/16)·h·p·n, and nothing as large as an eighth of
  // the states (the per-step partials of the walk's lanes are a little larger than the
  // checkpoints).
  assert.ok(scratch.includes(full / 16));
  assert.ok(Math.max(...scratch) < full / 8, `largest scratch ${Math.max(...scratch)}`);
  assert.ok(fused.kernels.some((k) => k.name.includes("_scanbwd_bwd")));
  // Without the fused backward, h and its adjoint are both written.
  const unfused = generateKernels(graph, limits, { scanBackward: false, ssdBackward: false });
  const big = [...unfused.plan.materialized].filter((n) => numel(n) === full).length;
  assert.equal(big, 2, `the materializing path writes ${big} b·l·h·p·n tensors`);
});

Deno.test("ssd backward: Mamba-2 130M's step with the state-free rewrite: SSD kernels only", () => {
  // Two layers: the second layer's adjoint is traced after the first rewritten node (rebuilt).
  const def = mamba2Definition(
    mamba2ConfigFromHF({ ...MAMBA2_130M_LAYER, num_hidden_layers: 2 }),
  );
  const b = 8, l = 2048;
  const full = b * l * 24 * 64 * 128;
  const graph = trace(
    lmLossInputs(def) as Record<string, InputDecl>,
    (t) => lmLossAndGradOutputs(def, t),
    def.sizes(b, l),
  );
  // Bindings as large as the logits (b·l·vocab), which any training step of this shape needs.
  const limits = {
    ...DEFAULT_LIMITS,
    maxStorageBuffersPerShaderStage: 24,
    maxStorageBufferBindingSize: 2 ** 34,
    maxBufferSize: 2 ** 34,
  };
  const program = generateKernels(graph, limits, { ssdBackward: {} });
  for (const n of program.plan.materialized) {
    if (n.axes.includes("v")) continue;
    assert.ok(numel(n) < full / 32, `node ${n.id} [${n.axes.join(" ")}] is materialized`);
  }
  const scratch = program.kernels.flatMap((k) => [...k.reads, ...k.writes])
    .filter((key) => key.kind === "scratch").map(elementsOf);
  assert.ok(Math.max(...scratch) < full / 32, `scratch of ${Math.max(...scratch)} elements`);
  // Per layer, the forward scan (y) and three backward ones (dx, dB, dC), all chunked SSD.
  const names = program.kernels.map((k) => k.name);
  assert.equal(names.filter((n) => n.endsWith("_ssd_out")).length, 8, names.join(", "));
});

Deno.test("ssd backward: a Mamba-2 training step with in-place AdamW on the adapter", async () => {
  // The rewrite rebuilds every output; the in-place updates must follow (ResidentProgram).
  const config = {
    ...MAMBA2_130M_LAYER,
    hidden_size: 6,
    state_size: 3,
    head_dim: 3,
    num_heads: 4,
    n_groups: 2,
    vocab_size: 11,
  };
  const def = mamba2Definition(mamba2ConfigFromHF(config));
  const names = Object.keys(def.weightInputs());
  const inputs: Record<string, InputDecl> = { ...lmLossInputs(def), lr: "", bc1: "", bc2: "" };
  for (const [k, decl] of Object.entries(def.weightInputs())) {
    inputs[`m.${k}`] = decl;
    inputs[`v.${k}`] = decl;
  }
  const stepFn = (t: Record<string, Tensor>) => {
    const { loss, grads } = lmLossAndGrads(def, t);
    const pick = (prefix: string) => Object.fromEntries(names.map((k) => [k, t[prefix + k]]));
    const scalars = { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs;
    const step = adamw({ params: pick(""), grads, m: pick("m."), v: pick("v.") }, scalars);
    return { ...adamwOutputs(step), loss };
  };
  const sizes = def.sizes(2, 7);
  const prog = await ResidentProgram.create(inputs, stepFn, sizes, {
    state: adamwState(names),
    ssdBackward: { chunk: 4 },
  });
  const seed = freshSeed();
  const next = rng(seed);
  const graph = trace(inputs, stepFn, sizes);
  const data: Record<string, Float32Array | Int32Array> = {};
  for (const inp of graph.inputs) {
    data[inp.name] = inp.dtype === "i32"
      ? Int32Array.from({ length: numel(inp) }, () => Math.floor(next() * config.vocab_size))
      : inp.name.startsWith("v.") || inp.name.startsWith("m.")
      ? new Float32Array(numel(inp))
      : randomArray(numel(inp), next, -0.5, 0.5);
  }
  Object.assign(data, adamwScalars(1, 1e-2));
  try {
    assert.ok(prog.kernels.some((k) => k.name.includes("chunk")), "the rewrite applies");
    for (const k of [...names, ...names.map((k) => `m.${k}`), ...names.map((k) => `v.${k}`)]) {
      prog.write(k, data[k] as Float32Array);
    }
    await prog.step({
      ids: data.ids,
      targets: data.targets,
      lr: data.lr,
      bc1: data.bc1,
      bc2: data.bc2,
    });
    const got = await prog.read(names.map((k) => `m.${k}`));
    const want = interpret(graph, data);
    for (const k of names) {
      // The first moment after one step is (1 − β1)·grad: the gradients, through the update.
      assertClose(got[`m.${k}`], want[`m.${k}`], 1e-4, `m.${k} (seed ${seed})`);
    }
  } finally {
    prog.destroy();
  }
});

Deno.test("ssd backward: decays that underflow to zero (chunked SSD kernels)", async () => {
  // A = −e^4…−e^5 and Δ up to 2: most steps' decay exp(Δ·A) is below f32's range. The adjoint's
  // SSD kernels must not take log(0) (NaN before), and a·∂a, a difference of O(1) sums, is
  // exact to f32 rounding of those sums (the materializing path gets them relatively exact).
  // dA_log, nearly 0 here (~1e-10), is A·Δ times such a difference: its terms reach
  // |A|·Δ·|∂L/∂Δ| ≈ e^5 · 2 · 2 ≈ 600, so f32 rounding leaves up to ~1e-4 (61 seeds: at most
  // 1.04e-4); it is checked to an absolute 5e-4, far below what a wrong gradient would give.
  // dt_bias, O(1) here, is checked to 1e-4 of its largest value.
  const sizes = { b: 1, l: 11, g: 2, r: 3, p: 2, n: 3, d: 12 };
  const ranges = { Alog: [4, 5], dt: [0, 2] } as Record<string, [number, number]>;
  const seed = freshSeed();
  const prog = await compile(INPUTS, gradFn(lossOf(false), WRT), sizes, {
    backend: "gpu",
    ssdBackward: { chunk: 4 },
    scan: { mode: "chunked", chunks: 2 },
  });
  try {
    const data = randomData(sizes, seed, ranges);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of WRT) {
      const [g, w] = [got[`d_${k}`], want[`d_${k}`]];
      const wMax = Math.max(...w.map(Math.abs));
      if (k === "Alog" || k === "dtBias") {
        // Cancelling sums (above): an absolute bound, also where the reference is ~0 (a seed
        // gave d_Alog ~3e-31 and the kernels ~1e-6, f32 rounding of terms ~600).
        const worst = Math.max(...w.map((v, i) => Math.abs(g[i] - v)));
        const tolerance = k === "Alog" ? 5e-4 : 1e-4 * Math.max(1, wMax);
        assert.ok(worst <= tolerance, `d_${k}: error ${worst} > ${tolerance} (seed ${seed})`);
      } else if (wMax < 1e-30) {
        // The whole reference underflows f32 (d_h0 ~ 1e-50 when every decay underflows): the
        // kernels must give (near) zeros, and a relative comparison would be meaningless.
        assert.ok(g.every((v) => Math.abs(v) < 1e-30), `d_${k}: want ~${wMax}, got ${g}`);
      } else {
        assertClose(g, w, 1e-4, `d_${k} (seed ${seed})`);
      }
    }
  } finally {
    prog.destroy();
  }
});
