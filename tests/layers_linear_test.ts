// The linear-attention layers of models/layers/ (RetNet's retention, simple GLA, GLA, HGRN2)
// against a float64 loop of S_t = diag(γ_t)·S_{t−1} + k_t v_tᵀ, o_t = scale·S_tᵀ q_t written
// from the papers, compiled for the GPU, from a given state, at awkward sizes; prefill against
// step-by-step decode; kernel counts.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { einsum } from "../dsl/einsum.ts";
import { exp } from "../dsl/elementwise.ts";
import { scan } from "../dsl/scan.ts";
import { trace } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gla } from "../models/layers/gla.ts";
import { hgrn2 } from "../models/layers/hgrn2.ts";
import { retention, simpleGla } from "../models/layers/retnet.ts";
import { checkDecode, checkLayer } from "./layers_util.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

const S = { b: 2, t: 13, h: 3, k: 5, v: 7 };
const N = S.b * S.t * S.h;

/** The gated linear recurrence in float64; `q`, `k` and `logDecay` per (b, t, h, key). */
function linearLoop(
  q: (i: number, a: number) => number,
  k: (i: number, a: number) => number,
  v: Float32Array,
  logDecay: (i: number, h: number, a: number) => number,
  s0: Float32Array,
  scale: number,
): { o: Float64Array; state: Float64Array } {
  const { b: B, t: T, h: H, k: K, v: V } = S;
  const o = new Float64Array(N * V), state = Float64Array.from(s0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const st = state.subarray((b * H + h) * K * V, (b * H + h + 1) * K * V);
      for (let t = 0; t < T; t++) {
        const i = (b * T + t) * H + h;
        for (let a = 0; a < K; a++) {
          const g = Math.exp(logDecay(i, h, a));
          for (let c = 0; c < V; c++) st[a * V + c] = g * st[a * V + c] + k(i, a) * v[i * V + c];
        }
        for (let c = 0; c < V; c++) {
          let acc = 0;
          for (let a = 0; a < K; a++) acc += scale * q(i, a) * st[a * V + c];
          o[i * V + c] = acc;
        }
      }
    }
  }
  return { o, state };
}

function inputs(seed: number) {
  const next = rng(seed);
  return {
    q: randomArray(N * S.k, next),
    k: randomArray(N * S.k, next),
    v: randomArray(N * S.v, next),
    g: randomArray(N, next, -1, -0.01),
    gk: randomArray(N * S.k, next, -1, -0.01),
    f: randomArray(N * S.k, next, -3, 3),
    s0: randomArray(S.b * S.h * S.k * S.v, next),
  };
}

const SPEC = {
  q: "b t h k",
  k: "b t h k",
  v: "b t h v",
  g: "b t h",
  gk: "b t h k",
  f: "b t h k",
  s0: "b h k v",
} as const;
type X = { [K in keyof typeof SPEC]: Tensor<(typeof SPEC)[K]> };
const at = (x: Float32Array, w: number) => (i: number, a: number) => x[i * w + a];
const sig = (x: number) => 1 / (1 + Math.exp(-x));

const CASES: {
  name: string;
  fn: (x: X) => { o: Tensor; state: Tensor };
  loop: (d: ReturnType<typeof inputs>) => { o: Float64Array; state: Float64Array };
  maxKernels: number;
}[] = [
  {
    name: "retention",
    fn: (x) => retention(x.q, x.k, x.v, { init: x.s0 }),
    loop: (d) =>
      linearLoop(
        at(d.q, S.k),
        at(d.k, S.k),
        d.v,
        (_i, h) => Math.log(1 - 2 ** (-5 - h)),
        d.s0,
        1 / Math.sqrt(S.k),
      ),
    maxKernels: 2,
  },
  {
    name: "simple GLA",
    fn: (x) => simpleGla(x.q, x.k, x.v, x.g, { init: x.s0, scale: 0.3 }),
    loop: (d) => linearLoop(at(d.q, S.k), at(d.k, S.k), d.v, (i) => d.g[i], d.s0, 0.3),
    maxKernels: 2,
  },
  {
    name: "GLA",
    fn: (x) => gla(x.q, x.k, x.v, x.gk, { init: x.s0 }),
    loop: (d) =>
      linearLoop(
        at(d.q, S.k),
        at(d.k, S.k),
        d.v,
        (i, _h, a) => d.gk[i * S.k + a],
        d.s0,
        1 / Math.sqrt(S.k),
      ),
    maxKernels: 2,
  },
  {
    // q̃ = d.q, f̃ = d.f, i = d.v; forget gate f = β + (1 − β)σ(f̃), key 1 − f, query silu(q̃).
    name: "HGRN2",
    fn: (x) => hgrn2(x.q, x.f, x.v, { init: x.s0, lowerBound: 0.25 }),
    loop: (d) => {
      const fg = (i: number, a: number) => 0.25 + 0.75 * sig(d.f[i * S.k + a]);
      return linearLoop(
        (i, a) => d.q[i * S.k + a] * sig(d.q[i * S.k + a]),
        (i, a) => 1 - fg(i, a),
        d.v,
        (i, _h, a) => Math.log(fg(i, a)),
        d.s0,
        1 / Math.sqrt(S.k),
      );
    },
    maxKernels: 3,
  },
];

for (const c of CASES) {
  Deno.test(`layers: ${c.name} matches its float64 loop; prefill = decode`, async () => {
    const seed = freshSeed();
    const data = inputs(seed);
    const want = c.loop(data);
    const what = `${c.name}, seed ${seed}`;
    const kernels = await checkLayer(what, SPEC, (x) => c.fn(x), S, data, want);
    console.log(`${c.name}: ${kernels.length} kernels: ${kernels.join(", ")}`);
    assert.ok(kernels.length <= c.maxKernels, `${c.name}: ${kernels.join(", ")}`);
    if (c.name === "retention" || c.name === "simple GLA") {
      // The scalar decay per head has the SSD form: the chunked kernels, forced, agree too.
      const chunked = await checkLayer(`${what} (chunked)`, SPEC, (x) => c.fn(x), S, data, want, {
        scan: { mode: "chunked", chunks: 3 },
      });
      assert.ok(chunked.some((k) => k.includes("ssd")), chunked.join(", "));
    }
    await checkDecode(
      what,
      SPEC,
      (x) => c.fn(x),
      S,
      data,
      ["q", "k", "v", "g", "gk", "f"],
      { state: "s0" },
      "o",
      want.o,
      9,
    );
  });
}

Deno.test("layers: GLA at (1, 8192, 32, 128) compiles: its 2^32 states are never written", () => {
  const sizes = { b: 1, t: 8192, h: 32, k: 128, v: 128 };
  const spec = { q: "b t h k", k: "b t h k", v: "b t h v", gk: "b t h k" } as const;
  const graph = trace(spec, (x) => gla(x.q, x.k, x.v, x.gk).o, sizes);
  const names = generateKernels(graph, DEFAULT_LIMITS).kernels.map((k) => k.name);
  assert.ok(names.every((n) => n.startsWith("k0_scan")), names.join(", "));
  // Asking for the states themselves needs a 2^32-element buffer: one error naming it.
  const states = trace(
    spec,
    (x) => scan("t", exp(x.gk), einsum("b t h k, b t h v -> b t h k v", x.k, x.v)),
    sizes,
  );
  assert.throws(() => generateKernels(states, DEFAULT_LIMITS), /\[b t h k v\]/);
});
