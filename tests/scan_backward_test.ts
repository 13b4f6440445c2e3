// The fused scan backward (codegen/scan_backward_plan.ts, scan_backward_kernel.ts): gradient
// programs of diagonal scans compiled with the primal and adjoint scans in one group, run on
// the adapter and compared with the float64 interpreter's gradients (exact), on awkward sizes:
// lengths not a multiple of the checkpoint chunk, channel counts not a multiple of the
// workgroup, both directions, init and final-state cotangents. Also: the backward program of
// Mamba-130M's shape allocates no b·l·d·n buffer.
import assert from "node:assert/strict";
import type { KernelArtifact } from "../codegen/artifact.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import type { ScanBackwardStrategy } from "../codegen/scan_backward_kernel.ts";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import { numel } from "../dsl/ir.ts";
import { scan } from "../dsl/scan.ts";
import { flip } from "../dsl/views.ts";
import type { InputSpec, Sizes } from "../dsl/trace.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { gradFn, gradProgram, type Loss } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

type Ranges = Record<string, [number, number]>;

/** Runs the gradient program on the adapter, checks it against the interpreter; kernel names. */
async function fusedMatchesInterpreter(
  what: string,
  inputs: InputSpec,
  loss: Loss,
  wrt: string[],
  sizes: Sizes,
  ranges: Ranges,
  scanBackward: ScanBackwardStrategy = {},
): Promise<string[]> {
  const seed = freshSeed();
  // The fused walk is under test: scalar-decay scans would take the chunked rewrite by default.
  const prog = await compile(inputs, gradFn(loss, wrt), sizes, {
    backend: "gpu",
    scanBackward,
    ssdBackward: false,
  });
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(
      names.some((n) => n.includes("_scanbwd_bwd")),
      `${what}: the scan and its adjoint are fused (${names.join(", ")})`,
    );
    const next = rng(seed);
    const data: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) {
      const [lo, hi] = ranges[inp.name] ?? [-1, 1];
      data[inp.name] = randomArray(numel(inp), next, lo, hi);
    }
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of Object.keys(want)) {
      if (k === "value") continue;
      assertClose(got[k], want[k], 1e-4, `${what}: ${k} (seed ${seed})`);
    }
    return names;
  } finally {
    prog.destroy();
  }
}

const MAMBA_INPUTS = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n", wy: "b l d", ws: "b d n" } as const;
const MAMBA_WRT = ["x", "dt", "z", "B", "C", "A", "D", "dtBias", "h0"];
const MAMBA_RANGES: Ranges = { A: [-2, -0.2], dt: [-3, 0.5] };

/** Mamba-1's selective scan with init, its output and final state both in the loss. */
function mambaLoss(reverse: boolean): Loss {
  return (t) => {
    // deno-lint-ignore no-explicit-any
    const { y, state } = selectiveScan(t as any, { init: t.h0 as any, reverse });
    return ew.add(
      einsum("b l d, b l d -> ", y, t.wy),
      einsum("b d n, b d n -> ", state, t.ws),
    );
  };
}

Deno.test("scan backward: Mamba-1 selective scan, every gradient, both directions", async () => {
  // 37 steps: chunks of 16, 16 and 5; 2·5 channels; 3 states.
  for (const reverse of [false, true]) {
    const what = `selective scan${reverse ? " (reverse)" : ""}`;
    const names = await fusedMatchesInterpreter(
      what,
      MAMBA_INPUTS,
      mambaLoss(reverse),
      MAMBA_WRT,
      { b: 2, l: 37, d: 5, n: 3 },
      MAMBA_RANGES,
    );
    // Checkpoints, the walk, and one partial sum each for dB, dC and dA.
    assert.equal(names.filter((n) => n.includes("_scanbwd")).length, 5, names.join(", "));
  }
});

Deno.test("scan backward: channel sums across workgroups, short chunks", async () => {
  // 3·7 channels in workgroups of 4: the per-step sums over d span several workgroups and
  // workgroups hold several b; chunks of 4 over 11 steps (4, 4, 3); 6 states.
  await fusedMatchesInterpreter(
    "selective scan, workgroup 4, chunk 4",
    MAMBA_INPUTS,
    mambaLoss(false),
    MAMBA_WRT,
    { b: 3, l: 11, d: 7, n: 6 },
    MAMBA_RANGES,
    { chunk: 4, workgroup: 4 },
  );
});

Deno.test("scan backward: per-step channel sums as a tree where workgroups tile the channels", async () => {
  // Summed channels d a multiple of the workgroup: the tree path. d = 16 in workgroups of 8
  // (two workgroups per b, 2 roots × 6 states = 12 rows > 8 threads) and of 16 (one).
  for (const workgroup of [8, 16]) {
    await fusedMatchesInterpreter(
      `selective scan, tree sums, workgroup ${workgroup}`,
      MAMBA_INPUTS,
      mambaLoss(workgroup === 8),
      MAMBA_WRT,
      { b: 3, l: 23, d: 16, n: 6 },
      MAMBA_RANGES,
      { chunk: 8, workgroup },
    );
  }
});

Deno.test("scan backward: lanes split a channel's states over several threads", async () => {
  // Sums over the lane axis combine the lanes' partials; values every lane holds are written
  // by lane 0. Both per-step channel sum paths (d = 7: segment heads; d = 8 in workgroups of 4:
  // the tree), both directions, init and final state; 6 states in 2 lanes, 8 in 4 and 8.
  const cases: [Sizes, ScanBackwardStrategy, boolean][] = [
    [{ b: 2, l: 19, d: 7, n: 6 }, { chunk: 8, workgroup: 4, lanes: 2 }, false],
    [{ b: 3, l: 13, d: 8, n: 8 }, { chunk: 4, workgroup: 4, lanes: 4 }, true],
    [{ b: 1, l: 21, d: 5, n: 8 }, { chunk: 16, workgroup: 2, lanes: 8 }, false],
  ];
  for (const [sizes, strategy, reverse] of cases) {
    await fusedMatchesInterpreter(
      `selective scan, ${strategy.lanes} lanes${reverse ? " (reverse)" : ""}`,
      MAMBA_INPUTS,
      mambaLoss(reverse),
      MAMBA_WRT,
      sizes,
      MAMBA_RANGES,
      strategy,
    );
  }
});

Deno.test("scan backward: lanes over one of two state axes", async () => {
  // Key-wise decay over (k, e) states: the lanes split e (the larger), the reads of h and g
  // sum over k in the thread and over e across lanes.
  const inputs = { f: "b l c k", k: "b l c k", v: "b l c e", q: "b l c k", wy: "b l c e" };
  const loss: Loss = (t) => {
    const h = scan("l", ew.sigmoid(t.f), einsum("b l c k, b l c e -> b l c k e", t.k, t.v));
    const y = einsum("b l c k e, b l c k -> b l c e", h, t.q);
    return einsum("b l c e, b l c e -> ", ew.tanh(y), t.wy);
  };
  await fusedMatchesInterpreter(
    "gated recurrence, 2 lanes",
    inputs,
    loss,
    ["f", "k", "v", "q"],
    { b: 2, l: 17, c: 3, k: 3, e: 4 },
    {},
    { chunk: 8, lanes: 2 },
  );
});

Deno.test("scan backward: long walks with several channel-summed roots in one kernel", async () => {
  // lavapipe ends every loop of a shader after 65535 iterations of all its loops together; the
  // per-step channel sums once looped over the workgroup per kept state and root, so these
  // walks lost their last steps (wrong dB, dx, dA, dh0). 67 steps × 1·16 channels (d = 40
  // states), and 300 steps.
  for (const sizes of [{ b: 1, l: 67, d: 40, n: 16 }, { b: 1, l: 300, d: 8, n: 16 }]) {
    await fusedMatchesInterpreter(
      `selective scan, l = ${sizes.l}, d = ${sizes.d}`,
      MAMBA_INPUTS,
      mambaLoss(false),
      MAMBA_WRT,
      sizes,
      MAMBA_RANGES,
    );
  }
});

Deno.test("scan backward: a gated linear recurrence (key-wise decay, outer-product input)", async () => {
  // h[t] = sigmoid(f[t]) ⊙ h[t−1] + k[t] ⊗ v[t] over (key, value) states, y = Σ_k q·h.
  const inputs = { f: "b l c k", k: "b l c k", v: "b l c e", q: "b l c k", wy: "b l c e" };
  for (const reverse of [false, true]) {
    const loss: Loss = (t) => {
      const h = scan(
        "l",
        ew.sigmoid(t.f),
        einsum("b l c k, b l c e -> b l c k e", t.k, t.v),
        { reverse },
      );
      const y = einsum("b l c k e, b l c k -> b l c e", h, t.q);
      return einsum("b l c e, b l c e -> ", ew.tanh(y), t.wy);
    };
    await fusedMatchesInterpreter(
      `gated recurrence${reverse ? " (reverse)" : ""}`,
      inputs,
      loss,
      ["f", "k", "v", "q"],
      { b: 2, l: 19, c: 3, k: 5, e: 3 },
      {},
      { chunk: 8 },
    );
  }
});

Deno.test("scan backward: an SSD-shaped scalar-decay scan", async () => {
  const inputs = {
    x: "b l h p",
    dt: "b l h",
    A: "h",
    B: "b l n",
    C: "b l n",
    wy: "b l h p",
  };
  const loss: Loss = (t) => {
    const delta = ew.softplus(t.dt);
    const state = scan(
      "l",
      ew.exp(ew.mul(delta, t.A)),
      einsum("b l h, b l h p, b l n -> b l h p n", delta, t.x, t.B),
    );
    const y = einsum("b l h p n, b l n -> b l h p", state, t.C);
    return einsum("b l h p, b l h p -> ", y, t.wy);
  };
  await fusedMatchesInterpreter(
    "ssd",
    inputs,
    loss,
    ["x", "dt", "A", "B", "C"],
    { b: 2, l: 21, h: 3, p: 5, n: 4 },
    { A: [-2, -0.2] },
    { chunk: 8 },
  );
});

Deno.test("scan backward: the loss reads the state itself (the adjoint's input reads h)", async () => {
  // Σ w·h² makes h's cotangent 2·w·h: the walk evaluates h inside the adjoint's input, and the
  // loss term itself is a sum over every axis of the scan (per-thread partials).
  const inputs = { ...MAMBA_INPUTS, w2: "b l d n" } as const;
  const loss: Loss = (t) => {
    // deno-lint-ignore no-explicit-any
    const { y } = selectiveScan(t as any, { init: t.h0 as any });
    const h = scan(
      "l",
      ew.exp(einsum("b l d, d n -> b l d n", ew.softplus(t.dt), t.A)),
      einsum("b l d, b l n -> b l d n", t.x, t.B),
    );
    return ew.add(
      einsum("b l d, b l d -> ", y, t.wy),
      einsum("b l d n, b l d n -> ", ew.mul(h, h), t.w2),
    );
  };
  await fusedMatchesInterpreter(
    "state in the loss",
    inputs,
    loss,
    ["x", "dt", "B", "A", "h0"],
    { b: 2, l: 13, d: 3, n: 5 },
    MAMBA_RANGES,
    { chunk: 5 },
  );
});

Deno.test("scan backward: reads the walk cannot serve keep the materializing path", async () => {
  // flip(h) reads the state at L−1−t: no chunk of the walk holds it, so h and its adjoint
  // stay in memory, and the gradients are still exact.
  const inputs = { a: "b l d", u: "b l d", w: "b l d" };
  const loss: Loss = (t) => {
    const h = scan("l", ew.sigmoid(t.a), ew.tanh(t.u));
    return einsum("b l d, b l d -> ", ew.mul(flip(h, "l"), h), t.w);
  };
  const seed = freshSeed();
  const prog = await compile(inputs, gradFn(loss, ["a", "u"]), { b: 2, l: 7, d: 3 }, {
    backend: "gpu",
    scanBackward: {},
  });
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(!names.some((n) => n.includes("_scanbwd")), names.join(", "));
    const next = rng(seed);
    const data: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) data[inp.name] = randomArray(numel(inp), next);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of ["d_a", "d_u"]) assertClose(got[k], want[k], 1e-4, `${k} (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});

Deno.test("scan backward: Mamba-130M's training shape writes no b·l·d·n tensor", () => {
  const sizes = { b: 8, l: 2048, d: 1536, n: 16 };
  const full = sizes.b * sizes.l * sizes.d * sizes.n;
  const graph = gradProgram(MAMBA_INPUTS, mambaLoss(false), MAMBA_WRT, sizes);
  // A device binding 24 storage buffers per kernel (the walk reads 11 and writes 6).
  const limits = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 24 };
  const program = generateKernels(graph, limits, { scanBackward: {} });
  const elements = (k: KernelArtifact) =>
    [...k.reads, ...k.writes].map((b) => b.kind === "scratch" ? b.elements : numel(b));
  const largest = Math.max(...program.kernels.flatMap(elements));
  assert.ok(largest < full / 8, `largest buffer ${largest} elements (b·l·d·n = ${full})`);
  for (const n of program.plan.materialized) {
    assert.ok(numel(n) < full / 8, `node ${n.id} [${n.axes.join(" ")}] is materialized`);
  }
  const names = program.kernels.map((k) => k.name);
  const backward = names.filter((n) => n.includes("_scanbwd"));
  // Checkpoints, the walk, and the partial sums of dB and dC (dA, 1,536×16 outputs over b·l, is
  // split over b first, split_contractions.ts: the walk writes its b parts, a reduction adds them).
  assert.equal(backward.length, 4, names.join(", "));
  // The unfused program materializes h and its adjoint.
  const unfused = generateKernels(graph, {
    ...limits,
    maxStorageBufferBindingSize: 2 ** 40,
    maxBufferSize: 2 ** 40,
  }, {
    noScanBackward: true,
  });
  const big = [...unfused.plan.materialized].filter((n) => numel(n) === full).length;
  assert.ok(big >= 2, `the materializing path writes ${big} b·l·d·n tensors`);
});

Deno.test("scan backward: a device binding too few buffers keeps the materializing path", () => {
  // WebGPU's default: 8 storage buffers per kernel; the Mamba-1 walk needs 17.
  const graph = gradProgram(MAMBA_INPUTS, mambaLoss(false), MAMBA_WRT, { b: 2, l: 9, d: 5, n: 3 });
  const names = generateKernels(graph, DEFAULT_LIMITS, { scanBackward: {} }).kernels.map((k) =>
    k.name
  );
  assert.ok(!names.some((n) => n.includes("_scanbwd")), names.join(", "));
  const wide = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 24 };
  const fused = generateKernels(graph, wide, { scanBackward: {} }).kernels.map((k) => k.name);
  assert.ok(fused.some((n) => n.includes("_scanbwd_bwd")), fused.join(", "));
});
