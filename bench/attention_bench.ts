/**
 * Attention (issue 20's shapes): causal GQA prefill, 32 query heads over 8 key/value heads,
 * d = 128, T = 2048 and 8192; decode of one token against caches of 4K and 32K keys; forward +
 * backward at T = 2048 (train_2048). Prints
 * one JSON object per line: time, GFLOP/s, the kernels run, and the relative error of a sample
 * of rows checked against a float64 loop before timing. The torch anchor (same shapes, f32 and
 * bf16): `python3 bench/attention_torch.py`.
 *
 *   deno run -A bench/attention_bench.ts [--iterations N] [--cases prefill_2048,decode_4096]
 *   deno task bench --only attention
 *
 * @module
 */

import { parseArgs } from "node:util";
import { attention } from "../dsl/attention.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { AttentionStrategy } from "../codegen/attention_shapes.ts";
import { compile } from "../runtime/compile.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";
import { randomF32 } from "./scan_inputs.ts";

/** One benchmark case: g key/value heads, r query heads per group, t queries, s keys. */
export interface AttentionCase {
  readonly name: string;
  readonly g: number;
  readonly r: number;
  readonly t: number;
  readonly s: number;
  readonly d: number;
  readonly strategy?: AttentionStrategy;
  /** Time forward and backward (dq, dk, dv of Σ w ∘ attention) instead of the forward. */
  readonly backward?: boolean;
}

/** The shapes (batch 1). */
export const ATTENTION_CASES: readonly AttentionCase[] = [
  { name: "prefill_2048", g: 8, r: 4, t: 2048, s: 2048, d: 128 },
  // Prefill with the next K/V tile loaded into registers during the current one (decode's form).
  {
    name: "prefill_2048_prefetch",
    g: 8,
    r: 4,
    t: 2048,
    s: 2048,
    d: 128,
    strategy: { prefetch: true },
  },
  { name: "prefill_8192", g: 8, r: 4, t: 8192, s: 8192, d: 128 },
  { name: "decode_4096", g: 8, r: 4, t: 1, s: 4096, d: 128 },
  { name: "decode_32768", g: 8, r: 4, t: 1, s: 32768, d: 128 },
  // Decode's default (key splits merged in the kernel by the last split: 32 and 128 splits at
  // these shapes) against the same splits merged by a second kernel (2026-12-07, H100: 0.088
  // and 0.612 ms) and against one workgroup per key/value head walking the keys in ways (the
  // default of 2026-12-07: 0.211 and 1.498 ms).
  {
    name: "decode_4096_combine_kernel",
    g: 8,
    r: 4,
    t: 1,
    s: 4096,
    d: 128,
    strategy: { splits: 32, ways: 1, combine: "kernel" },
  },
  {
    name: "decode_32768_combine_kernel",
    g: 8,
    r: 4,
    t: 1,
    s: 32768,
    d: 128,
    strategy: { splits: 128, ways: 1, combine: "kernel" },
  },
  { name: "decode_4096_ways", g: 8, r: 4, t: 1, s: 4096, d: 128, strategy: { splits: 1 } },
  { name: "decode_32768_ways", g: 8, r: 4, t: 1, s: 32768, d: 128, strategy: { splits: 1 } },
  // Training: forward and the fused backward kernels.
  { name: "train_2048", g: 8, r: 4, t: 2048, s: 2048, d: 128, backward: true },
];

/** Float64 outputs of a few rows (head, query) of causal attention, against the GPU's. */
function sampleError(
  c: AttentionCase,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  got: Float32Array,
) {
  let diff = 0, norm = 0;
  const rows = [0, c.t - 1, Math.floor(c.t / 3)];
  for (const gi of [0, c.g - 1]) {
    for (const ri of [0, c.r - 1]) {
      for (const t of rows) {
        const qb = ((gi * c.r + ri) * c.t + t) * c.d;
        const last = t + c.s - c.t;
        const w = new Float64Array(last + 1);
        let mx = -Infinity;
        for (let s = 0; s <= last; s++) {
          let dot = 0;
          for (let j = 0; j < c.d; j++) dot += q[qb + j] * k[(gi * c.s + s) * c.d + j];
          w[s] = dot / Math.sqrt(c.d);
          mx = Math.max(mx, w[s]);
        }
        let z = 0;
        for (let s = 0; s <= last; s++) z += w[s] = Math.exp(w[s] - mx);
        for (let j = 0; j < c.d; j++) {
          let o = 0;
          for (let s = 0; s <= last; s++) o += w[s] * v[(gi * c.s + s) * c.d + j];
          o /= z;
          diff += (got[qb + j] - o) ** 2;
          norm += o * o;
        }
      }
    }
  }
  return Math.sqrt(diff / norm);
}

/** Times each case; `report` receives one row per case. */
export async function attentionBenchmark(
  ctx: GpuContext,
  iterations: number,
  report: (row: Record<string, unknown>) => void,
  cases: readonly AttentionCase[] = ATTENTION_CASES,
): Promise<void> {
  for (const c of cases) {
    const spec = { q: "b g r t d", k: "b g s d", v: "b g s d", w: "b g r t d" } as const;
    const prog = await compile(
      spec,
      (x): Record<string, Tensor> => {
        if (!c.backward) return { out: attention(x.q, x.k, x.v, { causal: true }) };
        const f = valueAndGrad((p: { q: Tensor; k: Tensor; v: Tensor }) =>
          sum(mul(attention(p.q, p.k, p.v, { causal: true }), x.w), "b g r t d")
        );
        const [loss, grads] = f({ q: x.q, k: x.k, v: x.v });
        return { loss, dq: grads.q, dk: grads.k, dv: grads.v };
      },
      { b: 1, g: c.g, r: c.r, t: c.t, s: c.s, d: c.d },
      { gpu: ctx, backend: "gpu", attention: c.strategy },
    );
    const q = randomF32(c.g * c.r * c.t * c.d);
    const k = randomF32(c.g * c.s * c.d), v = randomF32(c.g * c.s * c.d);
    const w = c.backward ? randomF32(q.length) : new Float32Array(q.length);
    const inputs = { q, k, v, w };
    const got = await prog.run(inputs) as Record<string, Float32Array>;
    // The backward is checked by tests/attention_test.ts; here the forward's sampled rows.
    const error = c.backward ? undefined : sampleError(c, q, k, v, got.out);
    const probe = await prog.benchmark(inputs, { warmup: 1, iterations: 2 });
    const warmup = Math.min(200, Math.max(3, Math.ceil(0.3e9 / Math.max(probe.totalNs, 1))));
    const r = await prog.benchmark(inputs, { warmup, iterations });
    const ms = r.totalNs / 1e6;
    // Causal: query t sees t + s − t_len + 1 keys; 4·d flops per (query, key) pair (q·k, p·v);
    // the backward's 5 products make it 2.5× the forward (FlashAttention's count).
    const pairs = c.t * (c.s - c.t) + c.t * (c.t + 1) / 2;
    const flops = 4 * c.d * c.g * c.r * pairs * (c.backward ? 3.5 : 1);
    report({
      bench: `attention_${c.name}`,
      heads: `${c.g * c.r}/${c.g}`,
      t: c.t,
      s: c.s,
      d: c.d,
      ms,
      GFLOPs: flops / ms / 1e6,
      // Decode reads K and V once: the bandwidth it reaches.
      GBps: (2 * c.g * c.s * c.d * 4) / ms / 1e6,
      relativeError: error,
      kernels: r.kernels.map((k) => `${k.name} ${(k.medianNs / 1e3).toFixed(1)}us`),
      strategy: c.strategy ?? "default",
    });
    prog.destroy();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      iterations: { type: "string", default: "20" },
      cases: { type: "string", default: "" },
    },
    strict: true,
  });
  const names = values.cases.split(",").filter((n) => n);
  const cases = names.length
    ? ATTENTION_CASES.filter((c) => names.includes(c.name))
    : ATTENTION_CASES;
  const { getGpu } = await import("../runtime/gpu_device.ts");
  await attentionBenchmark(
    await getGpu(),
    Number(values.iterations),
    (row) => console.log(JSON.stringify(row)),
    cases,
  );
}
