// mLSTM (stabilized) and Gated DeltaNet of models/layers/ against float64 loops written from
// their papers, compiled for the GPU from a given state at awkward sizes, and their prefill
// against step-by-step decode (Mamba-3: tests/layers_mamba3_test.ts).
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { gatedDeltaNet } from "../models/layers/gated_deltanet.ts";
import { mlstm } from "../models/layers/mlstm.ts";
import { checkDecode, checkLayer } from "./layers_util.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

const S = { b: 2, t: 11, h: 3, k: 5, v: 7 };
const N = S.b * S.t * S.h;
const sig = (x: number) => 1 / (1 + Math.exp(-x));

const MLSTM = {
  q: "b t h k",
  k: "b t h k",
  v: "b t h v",
  i: "b t h",
  f: "b t h",
  C0: "b h k v",
  n0: "b h k",
  m0: "b h",
} as const;

/** The stabilized mLSTM of the xLSTM paper, one (b, h) at a time, from (C0, n0, m0). */
function mlstmLoop(d: Record<keyof typeof MLSTM, Float32Array>) {
  const { b: B, t: T, h: H, k: K, v: V } = S;
  const h = new Float64Array(N * V), C = Float64Array.from(d.C0), n = Float64Array.from(d.n0);
  const mOut = Float64Array.from(d.m0), scale = 1 / Math.sqrt(K);
  for (let b = 0; b < B; b++) {
    for (let hh = 0; hh < H; hh++) {
      const bh = b * H + hh;
      let m = d.m0[bh];
      for (let t = 0; t < T; t++) {
        const g = (b * T + t) * H + hh;
        const logf = Math.log(sig(d.f[g]));
        const mNew = Math.max(logf + m, d.i[g]);
        const fp = Math.exp(logf + m - mNew), ip = Math.exp(d.i[g] - mNew);
        let nq = 0;
        for (let a = 0; a < K; a++) {
          const ka = scale * d.k[g * K + a];
          n[bh * K + a] = fp * n[bh * K + a] + ip * ka;
          nq += n[bh * K + a] * d.q[g * K + a];
          for (let c = 0; c < V; c++) {
            const j = (bh * K + a) * V + c;
            C[j] = fp * C[j] + ip * ka * d.v[g * V + c];
          }
        }
        const den = Math.max(Math.abs(nq), Math.exp(-mNew));
        for (let c = 0; c < V; c++) {
          let acc = 0;
          for (let a = 0; a < K; a++) acc += C[(bh * K + a) * V + c] * d.q[g * K + a];
          h[g * V + c] = acc / den;
        }
        m = mNew;
      }
      mOut[bh] = m;
    }
  }
  return { h, C, n, m: mOut };
}

Deno.test("layers: stabilized mLSTM matches its float64 loop; prefill = decode", async () => {
  const seed = freshSeed(), next = rng(seed);
  const { b, t, h, k, v } = S;
  const data = {
    q: randomArray(N * k, next),
    k: randomArray(N * k, next),
    v: randomArray(N * v, next),
    i: randomArray(N, next, -3, 3),
    f: randomArray(N, next, -2, 4),
    C0: randomArray(b * h * k * v, next),
    n0: randomArray(b * h * k, next, 0, 1),
    m0: randomArray(b * h, next, -1, 1),
  };
  const want = mlstmLoop(data);
  const fn = (x: { [K in keyof typeof MLSTM]: Tensor<(typeof MLSTM)[K]> }) => {
    const r = mlstm(x, { init: { C: x.C0, n: x.n0, m: x.m0 } });
    return { h: r.h, C: r.state.C, n: r.state.n, m: r.state.m };
  };
  const what = `mLSTM, seed ${seed} (t = ${t})`;
  const kernels = await checkLayer(what, MLSTM, fn, S, data, want);
  console.log(`mLSTM: ${kernels.length} kernels: ${kernels.join(", ")}`);
  // Without a state: the loop from C = 0, n = 0, m = −∞.
  const zero = {
    ...data,
    C0: new Float32Array(data.C0.length),
    n0: new Float32Array(data.n0.length),
  };
  const fresh = mlstmLoop({ ...zero, m0: new Float32Array(data.m0.length).fill(-Infinity) });
  await checkLayer(
    `${what}, no state`,
    MLSTM,
    (x) => {
      const r = mlstm(x);
      return { h: r.h, C: r.state.C, n: r.state.n, m: r.state.m };
    },
    S,
    zero,
    fresh,
  );
  const state = { C: "C0", n: "n0", m: "m0" };
  await checkDecode(what, MLSTM, fn, S, data, ["q", "k", "v", "i", "f"], state, "h", want.h, 6);
});

const GDN = {
  q: "b t h k",
  k: "b t h k",
  v: "b t h v",
  beta: "b t h",
  g: "b t h",
  s0: "b h v k",
} as const;

/** Gated DeltaNet: S ← α·S(I − β k kᵀ) + β v kᵀ, o = scale·S q, q and k L2-normalized. */
function gdnLoop(d: Record<keyof typeof GDN, Float32Array>, scale: number) {
  const { b: B, t: T, h: H, k: K, v: V } = S;
  const o = new Float64Array(N * V), st = Float64Array.from(d.s0);
  const unit = (x: Float32Array, at: number) => {
    let ss = 1e-6;
    for (let a = 0; a < K; a++) ss += x[at + a] ** 2;
    return Array.from({ length: K }, (_, a) => x[at + a] / Math.sqrt(ss));
  };
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const s = st.subarray((b * H + h) * V * K, (b * H + h + 1) * V * K);
      for (let t = 0; t < T; t++) {
        const g = (b * T + t) * H + h;
        const q = unit(d.q, g * K), k = unit(d.k, g * K);
        const alpha = Math.exp(d.g[g]), beta = d.beta[g];
        for (let c = 0; c < V; c++) {
          let sk = 0;
          for (let a = 0; a < K; a++) sk += s[c * K + a] * k[a];
          let acc = 0;
          for (let a = 0; a < K; a++) {
            s[c * K + a] = alpha * (s[c * K + a] - beta * sk * k[a]) + beta * d.v[g * V + c] * k[a];
            acc += s[c * K + a] * q[a];
          }
          o[g * V + c] = scale * acc;
        }
      }
    }
  }
  return { o, state: st };
}

Deno.test("layers: Gated DeltaNet matches its float64 loop; prefill = decode", async () => {
  const seed = freshSeed(), next = rng(seed);
  const data = {
    q: randomArray(N * S.k, next),
    k: randomArray(N * S.k, next),
    v: randomArray(N * S.v, next),
    beta: randomArray(N, next, 0.05, 0.95),
    g: randomArray(N, next, -1, -0.01),
    s0: randomArray(S.b * S.h * S.v * S.k, next),
  };
  const want = gdnLoop(data, 0.4);
  const fn = (x: { [K in keyof typeof GDN]: Tensor<(typeof GDN)[K]> }) =>
    gatedDeltaNet(x, { init: x.s0, scale: 0.4 });
  const what = `Gated DeltaNet, seed ${seed}`;
  for (const mode of ["recurrent", "chunked"] as const) {
    await checkLayer(`${what} ${mode}`, GDN, fn, S, data, want, { scan: { mode, chunks: 3 } });
  }
  const timed = ["q", "k", "v", "beta", "g"];
  await checkDecode(what, GDN, fn, S, data, timed, { state: "s0" }, "o", want.o, 4);
});

Deno.test("layers: Gated DeltaNet's L2 norms get kernels of their own, not loops in every step", () => {
  const graph = trace(
    { q: "b t h k", k: "b t h k", v: "b t h v", beta: "b t h", g: "b t h" },
    (x) => gatedDeltaNet(x).o,
    { b: 2, t: 300, h: 2, k: 64, v: 32 },
  );
  for (const mode of ["recurrent", "chunked"] as const) {
    const { kernels } = generateKernels(graph, DEFAULT_LIMITS, { scan: { mode } });
    const delta = kernels.filter((k) => k.name.includes("_delta"));
    assert.ok(delta.length >= 1, mode);
    // Before: each lane summed 64 squares of q and of k in every step (and the chunked
    // kernels per tile element).
    for (const k of delta) assert.doesNotMatch(k.wgsl, /acc\d+ \+= /, `${mode}: ${k.name}`);
    assert.equal(kernels.length - delta.length, 2, `${mode}: the two norms' kernels`);
  }
});
