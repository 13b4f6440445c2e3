// The chunked SSD lowering of scans whose decay varies along the state (GLA's gate over the key
// dimension): its five kernels against the recurrent kernel and the float64 interpreter, on
// fresh random inputs of awkward sizes, chunk lengths 8 to 64, reverse scans, init and final
// states, and decays strong enough that one chunk's total decay leaves f32's range.
import assert from "node:assert/strict";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { einsum } from "../dsl/einsum.ts";
import { exp, mul, sigmoid, tanh } from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { gla } from "../models/layers/gla.ts";
import { hgrn2 } from "../models/layers/hgrn2.ts";
import { simpleGla } from "../models/layers/retnet.ts";
import { gradFn } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const INPUTS = {
  q: "b t h k",
  k: "b t h k",
  v: "b t h v",
  gk: "b t h k",
  s0: "b h k v",
} as const;

type Sizes = { b: number; t: number; h: number; k: number; v: number };
type Options = { init?: boolean; reverse?: boolean; sigmoidGate?: boolean };

/** GLA's recurrence: S_t = diag(exp(gk_t))·S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t. */
function glaProgram(opts: Options) {
  return (x: Record<keyof typeof INPUTS, Tensor>) => {
    const decay = opts.sigmoidGate ? sigmoid(x.gk) : exp(x.gk);
    const S = scan("t", decay, einsum("b t h k, b t h v -> b t h k v", x.k, x.v), {
      init: opts.init ? x.s0 : undefined,
      reverse: opts.reverse,
    });
    const o = einsum("b t h k v, b t h k -> b t h v", S, mul(x.q, 0.5));
    return { o, state: finalState(S) };
  };
}

function glaInputs(s: Sizes, next: () => number, gateLo: number) {
  const { b, t, h, k, v } = s;
  return {
    q: randomArray(b * t * h * k, next),
    k: randomArray(b * t * h * k, next),
    v: randomArray(b * t * h * v, next),
    gk: randomArray(b * t * h * k, next, gateLo, 0),
    s0: randomArray(b * h * k * v, next),
  };
}

async function run(sizes: Sizes, strategy: ScanStrategy, opts: Options, inputs: object) {
  const prog = await compile(INPUTS, glaProgram(opts), sizes, { backend: "gpu", scan: strategy });
  const out = await prog.run(inputs as Record<string, Float32Array>);
  const want = prog.interpret(inputs as Record<string, Float32Array>);
  const kernels = prog.kernels.map((k) => k.name);
  prog.destroy();
  return { out, want, kernels };
}

async function checkVector(sizes: Sizes, chunks: number, opts: Options = {}, gateLo = -1) {
  const seed = freshSeed();
  const inputs = glaInputs(sizes, rng(seed), gateLo);
  const what = `GLA ${JSON.stringify(sizes)} chunks ${chunks} ${JSON.stringify(opts)} ` +
    `gate ≥ ${gateLo} seed ${seed}`;
  const chunked = await run(sizes, { mode: "chunked", chunks }, opts, inputs);
  const recurrent = await run(sizes, { mode: "recurrent" }, opts, inputs);
  const scanKernels = chunked.kernels.filter((k) => k.includes("_ssd_"))
    .map((k) => k.replace(/^.*_ssd_/, ""));
  assert.deepEqual(scanKernels, ["gates", "states", "intra", "pass", "out"], what);
  assert.ok(!recurrent.kernels.some((k) => k.includes("_ssd_")), `${what}: recurrent kernels`);
  for (const name of ["o", "state"] as const) {
    assertClose(chunked.out[name], chunked.want[name], 1e-4, `${what}: chunked ${name}`);
    assertClose(chunked.out[name], recurrent.out[name], 1e-4, `${what}: vs recurrent ${name}`);
  }
}

Deno.test("vector-decay SSD: lengths around the chunk, odd key and value sizes, init", async () => {
  for (const t of [1, 7, 8, 9, 23]) {
    await checkVector({ b: 2, t, h: 1, k: 5, v: 3 }, Math.ceil(t / 8), { init: t % 2 === 1 });
  }
});

Deno.test("vector-decay SSD: chunk lengths 16, 32, 64 over several sub-chunks", async () => {
  await checkVector({ b: 1, t: 70, h: 2, k: 9, v: 6 }, 5, { init: true });
  await checkVector({ b: 1, t: 70, h: 1, k: 16, v: 8 }, 3);
  await checkVector({ b: 1, t: 130, h: 1, k: 13, v: 5 }, 3, { init: true });
});

Deno.test("vector-decay SSD: reverse scans, and a sigmoid decay (its log computed)", async () => {
  await checkVector({ b: 1, t: 45, h: 2, k: 6, v: 4 }, 2, { reverse: true, init: true });
  await checkVector({ b: 2, t: 33, h: 1, k: 7, v: 5 }, 2, { sigmoidGate: true }, -4);
});

Deno.test("vector-decay SSD: chunks whose total decay leaves f32's range stay finite", async () => {
  // Up to −30 per step: 64 steps decay by e^−1900, far past what exp(−G_j) could hold.
  await checkVector({ b: 1, t: 100, h: 1, k: 8, v: 4 }, 2, { init: true }, -30);
});

Deno.test("vector-decay SSD: the cost model's default at issue 20's shapes, as measured", () => {
  const limits = {
    ...DEFAULT_LIMITS,
    maxStorageBufferBindingSize: 2 ** 31 - 4,
    maxBufferSize: 2 ** 31 - 4,
  };
  const ssdKernels = (sizes: Sizes, scan?: ScanStrategy) =>
    generateKernels(trace(INPUTS, glaProgram({}), sizes), limits, { scan }).kernels
      .filter((k) => k.name.includes("_ssd_")).length;
  // H100: chunked 1.91 ms against recurrent 2.85 at (1, 8192, 32, 128); at (8, 2048, 16, 64)
  // chunked 0.79 and 0.80 ms, recurrent 0.64, 1.58 and 1.67 ms in three calls.
  assert.equal(ssdKernels({ b: 1, t: 8192, h: 32, k: 128, v: 128 }), 5, "long, wide: chunked");
  assert.equal(ssdKernels({ b: 8, t: 2048, h: 16, k: 64, v: 64 }), 5, "(8, 2048, 16, 64)");
  const forced = ssdKernels({ b: 8, t: 2048, h: 16, k: 64, v: 64 }, { mode: "recurrent" });
  assert.equal(forced, 0, "forced recurrent");
});

Deno.test("vector-decay SSD: two outputs, and keys shared by the heads", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, t: 37, h: 3, k: 6, v: 5 };
  const spec = { q1: "b t h k", q2: "b t h k", k: "b t k", v: "b t h v", gk: "b t h k" } as const;
  const program = (x: Record<keyof typeof spec, Tensor>) => {
    const S = scan("t", exp(x.gk), einsum("b t k, b t h v -> b t h k v", x.k, x.v));
    return {
      o1: einsum("b t h k v, b t h k -> b t h v", S, x.q1),
      o2: einsum("b t h k v, b t h k -> b t h v", S, x.q2),
    };
  };
  const n = { q: 2 * 37 * 3 * 6, k: 2 * 37 * 6, v: 2 * 37 * 3 * 5 };
  const inputs = {
    q1: randomArray(n.q, next),
    q2: randomArray(n.q, next),
    k: randomArray(n.k, next),
    v: randomArray(n.v, next),
    gk: randomArray(n.q, next, -2, 0),
  };
  const prog = await compile(spec, program, sizes, {
    backend: "gpu",
    scan: { mode: "chunked", chunks: 3 },
  });
  const names = prog.kernels.map((k) => k.name);
  assert.equal(names.filter((k) => k.includes("_ssd_")).length, 5, `${names}`);
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  prog.destroy();
  for (const o of ["o1", "o2"] as const) assertClose(got[o], want[o], 1e-4, `${o}, seed ${seed}`);
});

Deno.test("vector-decay SSD: its tuning key differs from a scalar decay's of the same shape", () => {
  const sizes = { b: 1, t: 256, h: 2, k: 16, v: 16 };
  const keyOf = (graph: ReturnType<typeof trace>) =>
    generateKernels(graph, DEFAULT_LIMITS).kernels.find((k) => k.tuning)?.tuning?.key;
  const vector = keyOf(trace(
    { q: "b t h k", k: "b t h k", v: "b t h v", g: "b t h k" },
    (x) => gla(x.q, x.k, x.v, x.g).o,
    sizes,
  ));
  const scalar = keyOf(trace(
    { q: "b t h k", k: "b t h k", v: "b t h v", g: "b t h" },
    (x) => simpleGla(x.q, x.k, x.v, x.g).o,
    sizes,
  ));
  assert.ok(vector && scalar && vector !== scalar, `${vector} / ${scalar}`);
});

Deno.test("vector-decay SSD: HGRN2 (key 1 − f, decay f with a lower bound) runs chunked", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, t: 50, h: 2, k: 6, v: 5 };
  const spec = { q: "b t h k", f: "b t h k", i: "b t h v" } as const;
  const n = 2 * 50 * 2;
  const inputs = {
    q: randomArray(n * 6, next),
    f: randomArray(n * 6, next, -3, 3),
    i: randomArray(n * 5, next),
  };
  const prog = await compile(
    spec,
    (x) => hgrn2(x.q, x.f, x.i, { lowerBound: 0.2 }).o,
    sizes,
    { backend: "gpu", scan: { mode: "chunked", chunks: 2 } },
  );
  const names = prog.kernels.map((k) => k.name);
  assert.equal(names.filter((k) => k.includes("_ssd_")).length, 5, `${names}`);
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  prog.destroy();
  assertClose(got, want, 1e-4, `seed ${seed}`);
});

Deno.test("vector-decay SSD: gradients through a chunked GLA scan match the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const spec = { g: "b l c k", k: "b l c k", v: "b l c e", q: "b l c k", wy: "b l c e" } as const;
  const loss = (t: Record<keyof typeof spec, Tensor>) => {
    const h = scan("l", exp(t.g), einsum("b l c k, b l c e -> b l c k e", t.k, t.v));
    const y = einsum("b l c k e, b l c k -> b l c e", h, t.q);
    return einsum("b l c e, b l c e -> ", tanh(y), t.wy);
  };
  const prog = await compile(spec, gradFn(loss, ["g", "k", "v", "q"]), {
    b: 2,
    l: 70,
    c: 2,
    k: 6,
    e: 5,
  }, { backend: "gpu", scan: { mode: "chunked", chunks: 3 } });
  assert.ok(prog.kernels.some((k) => k.name.includes("_ssd_intra")), "the forward runs chunked");
  const data: Record<string, Float32Array> = {};
  for (const inp of prog.graph.inputs) {
    const n = inp.shape.reduce((a, b) => a * b, 1);
    data[inp.name] = randomArray(n, next, inp.name === "g" ? -1 : -0.5, inp.name === "g" ? 0 : 0.5);
  }
  const got = await prog.run(data) as Record<string, Float32Array>;
  const want = prog.interpret(data) as Record<string, Float64Array>;
  prog.destroy();
  for (const key of ["g", "k", "v", "q"]) {
    assertClose(got[`d_${key}`], want[`d_${key}`], 1e-4, `∂${key}, seed ${seed}`);
  }
});
