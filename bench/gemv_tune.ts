/**
 * Matrix-vector (decode) kernels at the Mamba-130M shapes, with and without staging the
 * activation rows in workgroup memory: median kernel time, the weight bandwidth it reaches,
 * and the copy kernel of the same run as the anchor. Each product carries the prologue it has
 * in the model (RMSNorm before in_proj and the LM head, the SiLU gate before out_proj).
 *
 *   deno run -A bench/gemv_tune.ts [--iterations 50] [--vocab 50280]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { einsum } from "../dsl/einsum.ts";
import { mul, silu } from "../dsl/elementwise.ts";
import { rmsnorm } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { copyElements, copyKernelBenchmark } from "./copy_kernel.ts";
import { randomF32 } from "./scan_inputs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    iterations: { type: "string", default: "50" },
    vocab: { type: "string", default: "50280" },
  },
  strict: true,
});
const iterations = Number(values.iterations);
const ctx = await getGpu();

type Fn = (t: Record<string, Tensor>) => Tensor;
const normed: Fn = (t) => einsum("b m, e m -> b e", rmsnorm(t.x, "m", t.g), t.W);
const gated: Fn = (t) => einsum("b m, e m -> b e", mul(t.x, silu(t.z)), t.W);
const shapes: { name: string; n: number; k: number; fn: Fn; gate: boolean }[] = [
  { name: "in_proj (norm prologue)", n: 3072, k: 768, fn: normed, gate: false },
  { name: "x_proj", n: 80, k: 1536, fn: (t) => einsum("b m, e m -> b e", t.x, t.W), gate: false },
  { name: "out_proj (gate prologue)", n: 768, k: 1536, fn: gated, gate: true },
  { name: "LM head (norm prologue)", n: Number(values.vocab), k: 768, fn: normed, gate: false },
];

const copyGBps = (await copyKernelBenchmark(ctx, copyElements(ctx, 16 * 1024 * 1024), 20)).GBps;
console.log(JSON.stringify({ bench: "copy", GBps: copyGBps }));
for (const s of shapes) {
  for (const gemvStage of [false, true]) {
    const inputs: Record<string, string> = { x: "b m", W: "e m", g: "m" };
    if (s.gate) inputs.z = "b m";
    const prog = await compile(inputs, s.fn, { b: 1, e: s.n, m: s.k }, { matmul: { gemvStage } });
    const data: Record<string, Float32Array> = {
      x: randomF32(s.k),
      W: randomF32(s.n * s.k),
      g: randomF32(s.k),
    };
    if (s.gate) data.z = randomF32(s.k);
    const r = await prog.benchmark(data, { warmup: 20, iterations });
    const last = r.kernels[r.kernels.length - 1];
    console.log(JSON.stringify({
      bench: "gemv",
      shape: s.name,
      staged: gemvStage,
      kernels: r.kernels.length,
      gemvUs: last.medianNs / 1e3,
      weightGBps: (4 * s.n * s.k) / last.medianNs,
      fractionOfCopy: (4 * s.n * s.k) / last.medianNs / copyGBps,
    }));
    prog.destroy();
  }
}
