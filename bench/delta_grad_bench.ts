/**
 * Benchmark of the Gated DeltaNet's forward and backward (`valueAndGrad` of Σ y·w with respect
 * to q, k, v, β and the gate) on the GPU, f32, at training shapes (default (B, T, H, D) =
 * (8, 2048, 16, 64)). The backward is the first, general kernel (codegen/delta_backward.ts):
 * this row measures where it stands. With `--peer`, FLA's Triton chunk_gated_delta_rule
 * forward and backward through autograd on the same shapes (bench/delta_grad_peer.py, f32 and
 * bf16; needs torch and `.peer/fla`).
 *
 *     deno run -A bench/delta_grad_bench.ts [--shapes 8x2048x16x64] [--iterations 5] [--peer]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { deltaRule } from "../dsl/delta.ts";
import { einsum } from "../dsl/einsum.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import { deltaInputs, parseDeltaShapes } from "./delta_bench.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "8x2048x16x64" },
    iterations: { type: "string", default: "5" },
    peer: { type: "boolean", default: false },
  },
  strict: true,
});

const INPUTS = {
  q: "b t h dk",
  k: "b t h dk",
  v: "b t h dv",
  beta: "b t h",
  g: "b t h",
  w: "b t h dv",
} as const;
type Params = {
  q: Tensor<"b t h dk">;
  k: Tensor<"b t h dk">;
  v: Tensor<"b t h dv">;
  beta: Tensor<"b t h">;
  g: Tensor<"b t h">;
};

for (const s of parseDeltaShapes(values.shapes)) {
  const shape = { b: s.b, t: s.t, h: s.h, d: s.d };
  const t0 = performance.now();
  const prog = await compile(INPUTS, (t) => {
    const [loss, g] = valueAndGrad((p: Params) => {
      const { y } = deltaRule({ q: p.q, k: p.k, v: p.v, beta: p.beta, gate: p.g }, {
        time: "t",
        key: "dk",
        value: "dv",
      });
      return einsum("b t h dv, b t h dv ->", y as Tensor<"b t h dv">, t.w);
    })({ q: t.q, k: t.k, v: t.v, beta: t.beta, g: t.g });
    return { loss, dq: g.q, dk: g.k, dv: g.v, dbeta: g.beta, dg: g.g };
  }, { b: s.b, t: s.t, h: s.h, dk: s.d, dv: s.d });
  const compileS = (performance.now() - t0) / 1000;
  try {
    const x = deltaInputs(s);
    const w = Float32Array.from(x.v, (_, i) => Math.sin(i * 0.37));
    const data = { ...x, w };
    const r = await prog.benchmark(data, { warmup: 1, iterations: Number(values.iterations) });
    const out = await prog.run(data);
    const finite = Object.values(out).every((a) => a.every(Number.isFinite));
    console.log(JSON.stringify({
      bench: "gated_delta_fwd_bwd_f32",
      shape,
      ms: r.totalNs / 1e6,
      compileS,
      finite,
      kernels: r.kernels.map((k) => ({ name: k.name, ms: k.medianNs / 1e6 })),
    }));
  } finally {
    prog.destroy();
  }
}

if (values.peer) {
  const out = await new Deno.Command("python3", {
    args: ["bench/delta_grad_peer.py", "--shapes", values.shapes],
    env: { PYTHONPATH: ".peer:bench" },
    stderr: "inherit",
  }).output();
  console.log(new TextDecoder().decode(out.stdout).trim());
}
