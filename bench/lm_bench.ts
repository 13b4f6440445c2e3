/**
 * Language-model benchmark (issue 5): loads the checkpoints bench/lm_hf.py wrote and times
 * prefill at l = 2048 (kernel time, timestamp queries) and batch-1 greedy decode of 128 tokens
 * (wall clock, after a warm-up run that compiles everything).
 *
 *   deno run -A bench/lm_bench.ts DIR [mamba,mamba2]
 *
 * @module
 */

import { loadModel } from "../models/language_model.ts";

const [root, kindsArg] = Deno.args;
for (const kind of (kindsArg ?? "mamba,mamba2").split(",")) {
  const model = await loadModel(`${root}/${kind}`, { progress: false });
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919) % 50000 + 1);
  const long = Array.from({ length: 2048 }, (_, i) => (i * 104729) % 50000 + 1);
  const prefill = await model.benchmarkPrefill([long]);
  const step = await model.benchmarkDecodeStep(1);
  const byKind = new Map<string, number>();
  for (const k of step.kernels) {
    const kind = k.name.replace(/^k\d+_/, "");
    byKind.set(kind, (byKind.get(kind) ?? 0) + k.medianNs);
  }
  await model.generate([prompt], { maxNew: 128, eos: -1 });
  const t0 = performance.now();
  const out = await model.generate([prompt], { maxNew: 128, eos: -1 });
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({
    bench: `ssmkit_${kind}_130m`,
    prefill_2048_s: prefill.totalNs / 1e9,
    prefill_kernels: prefill.kernels.length,
    decode_128_s: seconds,
    decode_tok_s: out[0].length / seconds,
    step_gpu_ms: step.totalNs / 1e6,
    step_kernels: step.kernels.length,
    step_by_kind_us: Object.fromEntries(
      [...byKind].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, ns]) => [k, ns / 1e3]),
    ),
  }));
  model.destroy();
}
