// models/layers/attention.ts (causal GQA with rotary positions) against a float64 loop written
// from the equations in this file, in prefill and in decode with a cache of earlier keys.
import { gqaAttention, type GqaParams } from "../models/layers/attention.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import assert from "node:assert/strict";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

type Dims = { b: number; t: number; c: number; m: number; g: number; r: number; d: number };

/** The layer in float64: projections, RoPE at positions c + i, causal softmax, output. */
function reference(
  dims: Dims,
  a: Record<string, Float32Array>,
): { out: Float64Array; k: Float64Array; v: Float64Array } {
  const { b: B, t: T, c: C, m: M, g: G, r: R, d: D } = dims;
  const half = D / 2;
  const proj = (w: Float32Array, bi: number, ti: number, row: number) => {
    let acc = 0;
    for (let j = 0; j < M; j++) acc += w[row * M + j] * a.x[(bi * T + ti) * M + j];
    return acc;
  };
  const rope = (vec: number[], pos: number) =>
    vec.map((_, i) => {
      const f = i % half, theta = pos * Math.pow(10000, -2 * f / D);
      return i < half
        ? vec[i] * Math.cos(theta) - vec[i + half] * Math.sin(theta)
        : vec[i] * Math.cos(theta) + vec[i - half] * Math.sin(theta);
    });
  const out = new Float64Array(B * T * M);
  const kNew = new Float64Array(B * G * T * D), vNew = new Float64Array(B * G * T * D);
  for (let bi = 0; bi < B; bi++) {
    for (let gi = 0; gi < G; gi++) {
      // Keys and values: the cache, then the new tokens'.
      const keys: number[][] = [], values: number[][] = [];
      for (let s = 0; s < C; s++) {
        const at = ((bi * G + gi) * C + s) * D;
        keys.push([...a.kc.subarray(at, at + D)]);
        values.push([...a.vc.subarray(at, at + D)]);
      }
      for (let ti = 0; ti < T; ti++) {
        const raw = Array.from({ length: D }, (_, di) => proj(a.wk, bi, ti, gi * D + di));
        keys.push(rope(raw, C + ti));
        values.push(Array.from({ length: D }, (_, di) => proj(a.wv, bi, ti, gi * D + di)));
        kNew.set(keys[C + ti], ((bi * G + gi) * T + ti) * D);
        vNew.set(values[C + ti], ((bi * G + gi) * T + ti) * D);
      }
      for (let ri = 0; ri < R; ri++) {
        for (let ti = 0; ti < T; ti++) {
          const raw = Array.from(
            { length: D },
            (_, di) => proj(a.wq, bi, ti, (gi * R + ri) * D + di),
          );
          const q = rope(raw, C + ti);
          const scores = keys.slice(0, C + ti + 1).map((k) =>
            k.reduce((acc, kv, i) => acc + kv * q[i], 0) / Math.sqrt(D)
          );
          const mx = Math.max(...scores);
          const w = scores.map((s) => Math.exp(s - mx));
          const z = w.reduce((p, x) => p + x, 0);
          const o = Array.from(
            { length: D },
            (_, di) => w.reduce((acc, wi, s) => acc + wi * values[s][di], 0) / z,
          );
          for (let mi = 0; mi < M; mi++) {
            let acc = 0;
            for (let di = 0; di < D; di++) {
              acc += a.wo[mi * G * R * D + (gi * R + ri) * D + di] * o[di];
            }
            out[(bi * T + ti) * M + mi] += acc;
          }
        }
      }
    }
  }
  return { out, k: kNew, v: vNew };
}

async function check(dims: Dims) {
  const seed = freshSeed();
  const next = rng(seed);
  const { b, t, c, m, g, r, d } = dims;
  const a: Record<string, Float32Array> = {
    x: randomArray(b * t * m, next),
    wq: randomArray(g * r * d * m, next),
    wk: randomArray(g * d * m, next),
    wv: randomArray(g * d * m, next),
    wo: randomArray(m * g * r * d, next),
    kc: randomArray(b * g * Math.max(c, 1) * d, next),
    vc: randomArray(b * g * Math.max(c, 1) * d, next),
  };
  const spec = {
    x: "b t m",
    wq: "g r d m",
    wk: "g d m",
    wv: "g d m",
    wo: "m g r d",
    ...(c > 0 ? { kc: "b g c d", vc: "b g c d" } : {}),
  };
  const prog = await compile(
    spec,
    (p: Record<string, Tensor>) => {
      const params = { wq: p.wq, wk: p.wk, wv: p.wv, wo: p.wo } as Parameters<
        typeof gqaAttention
      >[1];
      const cache = c > 0
        ? { k: p.kc, v: p.vc } as { k: Tensor<"b g c d">; v: Tensor<"b g c d"> }
        : undefined;
      return gqaAttention(p.x as Tensor<"b t m">, params, { t, d, cached: c }, cache);
    },
    { b, t, c: Math.max(c, 1), m, g, r, d },
    { backend: "gpu" },
  );
  try {
    const inputs = c > 0 ? a : { x: a.x, wq: a.wq, wk: a.wk, wv: a.wv, wo: a.wo };
    const got = await prog.run(inputs);
    const want = reference(dims, a);
    const names = prog.kernels.map((k) => k.name);
    assert.equal(names.filter((n) => n.includes("attention")).length, 1, `${names}`);
    const ctx = `seed ${seed} ${JSON.stringify(dims)} [${names}]`;
    assertClose(got.k, want.k, 1e-4, `k ${ctx}`);
    assertClose(got.v, want.v, 1e-4, `v ${ctx}`);
    assertClose(got.out, want.out, 1e-4, `out ${ctx}`);
  } finally {
    prog.destroy();
  }
}

Deno.test("GQA layer with RoPE: prefill, 6 query heads over 2 key/value heads, t = 7", async () => {
  await check({ b: 1, t: 7, c: 0, m: 12, g: 2, r: 3, d: 8 });
});

Deno.test("GQA layer with RoPE: decode with a cache of 5 (positions continue), t = 2", async () => {
  await check({ b: 2, t: 2, c: 5, m: 10, g: 1, r: 2, d: 6 });
});

Deno.test("GQA layer with RoPE: weight gradients (fused backward kernels) match the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 1, t: 6, c: 3, m: 10, g: 2, r: 2, d: 6 };
  const spec = {
    x: "b t m",
    wq: "g r d m",
    wk: "g d m",
    wv: "g d m",
    wo: "m g r d",
    kc: "b g c d",
    vc: "b g c d",
    w: "b t m",
  } as const;
  const prog = await compile(
    spec,
    (p) => {
      const f = valueAndGrad((w: GqaParams) => {
        const cache = { k: p.kc, v: p.vc };
        const { out } = gqaAttention(p.x, w, { t: 6, d: 6, cached: 3 }, cache);
        return sum(mul(out, p.w), "b t m");
      });
      const [loss, grads] = f({ wq: p.wq, wk: p.wk, wv: p.wv, wo: p.wo });
      return { loss, ...grads };
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const inputs: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) {
      inputs[inp.name] = randomArray(inp.shape.reduce((a, b) => a * b, 1), next);
    }
    const got = await prog.run(inputs) as Record<string, Float32Array>;
    const want = prog.interpret(inputs) as Record<string, Float64Array>;
    const names = prog.kernels.map((k) => k.name);
    assert.ok(names.some((n) => n.includes("attention_grad")), `${names}`);
    for (const name of ["wq", "wk", "wv", "wo"]) {
      assertClose(got[name], want[name], 1e-4, `${name} seed ${seed} [${names}]`);
    }
  } finally {
    prog.destroy();
  }
});
