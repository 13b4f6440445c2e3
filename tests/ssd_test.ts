// The chunked SSD lowering (Mamba-2's state-space duality) against the recurrent scan kernel and
// the float64 interpreter, on fresh random inputs with awkward sizes.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { analyzeSsd, explainSsd } from "../codegen/ssd_plan.ts";
import { planFusion } from "../codegen/fusion.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, neg, sigmoid, silu, softplus } from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { trace } from "../dsl/trace.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

/** Heads written as (g r): g groups of r heads sharing B and C. */
type Sizes = { b: number; l: number; g: number; r: number; p: number; n: number };

const INPUTS = {
  x: "b l g r p",
  dt: "b l g r",
  A: "g r",
  B: "b l g n",
  C: "b l g n",
  D: "g r",
  z: "b l g r p",
  h0: "b g r p n",
} as const;

function ssdInputs(s: Sizes, next: () => number) {
  const { b, l, g, r, p, n } = s;
  return {
    x: randomArray(b * l * g * r * p, next),
    dt: randomArray(b * l * g * r, next, -3, 1),
    A: randomArray(g * r, next, -2, -0.2),
    B: randomArray(b * l * g * n, next),
    C: randomArray(b * l * g * n, next),
    D: randomArray(g * r, next),
    z: randomArray(b * l * g * r * p, next),
    h0: randomArray(b * g * r * p * n, next),
  };
}

/** Mamba-2's SSD with the D skip and a SiLU gate fused as the epilogue. */
function ssdProgram(opts: { init?: boolean; reverse?: boolean }) {
  return (t: Record<keyof typeof INPUTS, import("../dsl/tensor.ts").Tensor>) => {
    const delta = softplus(t.dt);
    const h = scan(
      "l",
      exp(mul(delta, t.A)),
      einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, t.x, t.B),
      { init: opts.init ? t.h0 : undefined, reverse: opts.reverse },
    );
    const y = add(einsum("b l g r p n, b l g n -> b l g r p", h, t.C), mul(t.D, t.x));
    return { y: mul(y, silu(t.z)), state: finalState(h) };
  };
}

async function runSsd(
  sizes: Sizes,
  scanOpts: ScanStrategy,
  opts: { init?: boolean; reverse?: boolean },
  inputs: ReturnType<typeof ssdInputs>,
) {
  const prog = await compile(INPUTS, ssdProgram(opts), sizes, { backend: "gpu", scan: scanOpts });
  const out = await prog.run(inputs);
  const kernels = prog.kernels.map((k) => k.name);
  const want = prog.interpret(inputs);
  prog.destroy();
  return { out, kernels, want };
}

async function checkSsd(
  sizes: Sizes,
  chunks: number | undefined,
  opts: { init?: boolean; reverse?: boolean } = {},
) {
  const seed = freshSeed();
  const inputs = ssdInputs(sizes, rng(seed));
  const what = `SSD ${JSON.stringify(sizes)} chunks ${chunks} ${JSON.stringify(opts)} seed ${seed}`;
  const chunked = await runSsd(sizes, { mode: "chunked", chunks }, opts, inputs);
  const recurrent = await runSsd(sizes, { mode: "recurrent" }, opts, inputs);
  assert.equal(chunked.kernels.length, 3, `${what}: ${chunked.kernels.join(", ")}`);
  assert.ok(chunked.kernels.every((k) => k.includes("_ssd_")), `${what}: chunked kernels`);
  assert.ok(!recurrent.kernels.some((k) => k.includes("_ssd_")), `${what}: recurrent kernels`);
  assertClose(chunked.out.y, chunked.want.y, 1e-4, `${what}: chunked y vs interpreter`);
  assertClose(chunked.out.state, chunked.want.state, 1e-4, `${what}: chunked state`);
  assertClose(chunked.out.y, recurrent.out.y, 1e-4, `${what}: chunked vs recurrent y`);
  assertClose(chunked.out.state, recurrent.out.state, 1e-4, `${what}: chunked vs recurrent state`);
}

Deno.test("chunked SSD: lengths 1, 15, 16, 17 around the chunk length 16, groups 1 and 2", async () => {
  for (const l of [1, 15, 16, 17]) {
    await checkSsd({ b: 2, l, g: 1, r: 3, p: 5, n: 7 }, Math.ceil(l / 16), { init: l % 2 === 1 });
    await checkSsd({ b: 1, l, g: 2, r: 2, p: 8, n: 16 }, Math.ceil(l / 16), { init: l === 16 });
  }
});

Deno.test("chunked SSD: length 300 with chunk lengths 8, 32, 64, 128 and init state", async () => {
  for (const [chunks, g] of [[38, 1], [10, 2], [5, 1], [3, 2]]) {
    await checkSsd({ b: 1, l: 300, g, r: 2, p: 6, n: 9 }, chunks, { init: chunks !== 5 });
  }
});

Deno.test("chunked SSD: head dimension 64 and state 32 (tiles of several threads)", async () => {
  await checkSsd({ b: 1, l: 77, g: 2, r: 1, p: 64, n: 32 }, 2, { init: true });
});

Deno.test("chunked SSD: reverse scans, with and without init", async () => {
  await checkSsd({ b: 2, l: 41, g: 2, r: 1, p: 4, n: 5 }, 4, { reverse: true, init: true });
  await checkSsd({ b: 1, l: 16, g: 1, r: 2, p: 3, n: 8 }, 1, { reverse: true });
});

Deno.test("chunked SSD: the default strategy and chunk length agree with the interpreter", async () => {
  const seed = freshSeed();
  const sizes = { b: 1, l: 150, g: 1, r: 2, p: 16, n: 16 };
  const inputs = ssdInputs(sizes, rng(seed));
  const { out, kernels, want } = await runSsd(sizes, { mode: "chunked" }, { init: true }, inputs);
  assert.equal(kernels.length, 3);
  assertClose(out.y, want.y, 1e-4, `default chunk (seed ${seed})`);
  assertClose(out.state, want.state, 1e-4, `default chunk state (seed ${seed})`);
});

Deno.test("SSD form: head, value, state and shared C·Bᵀ axes are read off the graph", () => {
  const graph = trace(
    INPUTS,
    ssdProgram({ init: true }),
    { b: 2, l: 9, g: 2, r: 3, p: 4, n: 5 },
  );
  const plan = planFusion(graph);
  const group = plan.kernels.find((k) => k.kind === "scan");
  assert.ok(group && group.kind === "scan");
  const spec = {
    scan: group.use.scan,
    stateAxes: group.use.stateAxes,
    channelAxes: group.use.channelAxes,
    outputs: group.outputs,
    finals: group.finals,
  };
  const form = analyzeSsd(spec, plan.materialized);
  assert.ok(form);
  assert.deepEqual(form.headAxes, ["b", "g", "r"]);
  assert.deepEqual(form.valueAxes, ["p"]);
  assert.deepEqual(form.stateAxes, ["n"]);
  assert.deepEqual(form.cbAxes, ["b", "g"], "heads of a group share C·Bᵀ");
  assert.equal(form.keyFactors.length, 1);
  assert.equal(form.valueFactors.length, 1);
  assert.equal(form.scaleFactors.length, 1);
  // exp(e) decays use e itself as the log-decay.
  assert.equal(form.logDecay.kind, "binary");
});

Deno.test("chunked SSD: other decays (sigmoid), no value axis, two outputs", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, l: 45, h: 3, n: 6 };
  const inputs = {
    a: randomArray(2 * 45 * 3, next),
    x: randomArray(2 * 45 * 3, next),
    B: randomArray(2 * 45 * 3 * 6, next),
    C1: randomArray(2 * 45 * 6, next),
    C2: randomArray(2 * 45 * 3 * 6, next),
  };
  const results = [];
  for (const mode of ["chunked", "recurrent"] as const) {
    const prog = await compile(
      { a: "b l h", x: "b l h", B: "b l h n", C1: "b l n", C2: "b l h n" },
      (t) => {
        // Decay sigmoid(a) (the log-decay is log(sigmoid(a))); the key factor B has the head
        // axis, the value factor x has no axis of its own: a value size of 1.
        const h = scan("l", sigmoid(t.a), mul(t.x, t.B));
        return {
          y1: einsum("b l h n, b l n -> b l h", h, t.C1),
          y2: neg(einsum("b l h n, b l h n -> b l h", h, t.C2)),
        };
      },
      sizes,
      { backend: "gpu", scan: { mode, chunks: 3 } },
    );
    const got = await prog.run(inputs);
    const want = prog.interpret(inputs);
    assertClose(got.y1, want.y1, 1e-4, `${mode} y1 (seed ${seed})`);
    assertClose(got.y2, want.y2, 1e-4, `${mode} y2 (seed ${seed})`);
    if (mode === "chunked") assert.equal(prog.kernels.length, 3, "both outputs in 3 dispatches");
    results.push(got);
    prog.destroy();
  }
  assertClose(results[0].y1, results[1].y1, 1e-4, `chunked vs recurrent (seed ${seed})`);
});

Deno.test("forcing the chunked lowering on a Mamba-1 scan says why it does not apply", async () => {
  await assert.rejects(
    () =>
      compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, { b: 1, l: 8, d: 3, n: 4 }, {
        backend: "gpu",
        scan: { mode: "chunked" },
      }),
    /chunked \(SSD\) lowering does not apply: the decay \[b l d n\] varies along the state axes \[n\]/,
  );
  const graph = trace(
    { a: "b l h", u: "b l h" },
    ({ a, u }) => finalState(scan("l", a, u)),
    { b: 1, l: 4, h: 2 },
  );
  const plan = planFusion(graph);
  const group = plan.kernels.find((k) => k.kind === "scan");
  assert.ok(group && group.kind === "scan");
  const why = explainSsd({
    scan: group.use.scan,
    stateAxes: group.use.stateAxes,
    channelAxes: group.use.channelAxes,
    outputs: group.outputs,
    finals: group.finals,
  });
  assert.match(why.reason ?? "", /no state axes/);
  await assert.rejects(
    () =>
      compile(INPUTS, ssdProgram({}), { b: 1, l: 40, g: 1, r: 1, p: 4, n: 4 }, {
        backend: "gpu",
        scan: { mode: "chunked", chunks: 1 },
      }).then(() => {
        throw new Error("unreachable");
      }),
    /unreachable/,
    "a forced chunk count larger than the maximum chunk length clamps, no error",
  );
});

Deno.test("cost model: the Mamba-2 2.7B layer shape lowers to 3 chunked kernels; decode stays recurrent", () => {
  const big = { b: 4, l: 2048, g: 1, r: 80, p: 64, n: 128 };
  const limits = {
    ...DEFAULT_LIMITS,
    maxStorageBufferBindingSize: 2 ** 31 - 4,
    maxBufferSize: 2 ** 31 - 4,
  };
  const prefill = generateKernels(trace(INPUTS, ssdProgram({ init: true }), big), limits);
  const scanKernels = prefill.kernels.filter((k) => k.kind === "scan").map((k) => k.name);
  assert.deepEqual(scanKernels.map((n) => n.replace(/^k\d+_scan_/, "")), [
    "ssd_states",
    "ssd_pass",
    "ssd_out",
  ]);
  const step = generateKernels(trace(INPUTS, ssdProgram({ init: true }), { ...big, l: 1 }), limits);
  assert.equal(step.kernels.filter((k) => k.kind === "scan").length, 1, "one recurrent kernel");
  // Head dimension 4 × state 4: chunk matrices too small to pay off, recurrent.
  const small = generateKernels(
    trace(INPUTS, ssdProgram({ init: true }), { b: 2, l: 2048, g: 1, r: 8, p: 4, n: 4 }),
    limits,
  );
  assert.ok(!small.kernels.some((k) => k.name.includes("_ssd_")), "small matrices: recurrent");
});
