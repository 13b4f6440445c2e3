/**
 * Language-model benchmark (issue 5): loads the checkpoints bench/lm_hf.py wrote and times
 * prefill at l = 2048 (kernel time, timestamp queries) and batch-1 greedy decode of 128 tokens
 * (wall clock, after a warm-up run that compiles everything). Also reports where a decode step's
 * time goes: its GPU time with 32 steps in one pass, the CPU time to encode and submit a step,
 * per-kernel times (each kernel in its own timed pass, which inflates small kernels) and the
 * decode rate with larger token blocks.
 *
 *   deno run -A bench/lm_bench.ts DIR [mamba,mamba2] [--decode-lanes 16,32] [--dtype f16]
 *     [--batches 8,64] [--size 1.4b] [--autotune]
 *
 * `--decode-lanes` also times decode with the scan forced to those lane counts per channel.
 * `--no-ride-along` also times decode with every elementwise kernel in its own dispatch
 * (`codegen: { rideAlong: false }`, the form before 2026-12-07).
 * `--dtype f16|bf16` loads the weight matrices in that precision (`loadModel`'s `dtype`; the
 * default is f32); the results' `bench` names then end in `_f16` / `_bf16`. `--batches` (default
 * 8,64) times batched decode too: that many prompts per `generate`, tokens/s over all of them
 * (bench/decode_peer.py is mamba_ssm's anchor for every batch size). `--size` (default 130m) only
 * names the rows: DIR holds whichever checkpoints bench/lm_hf.py wrote (`130m` or `1.4b`).
 * `--autotune` loads the models with `autotune` (a fresh cache file per run): every program's
 * tuning points are timed on this adapter when first compiled; rows end in `_autotuned`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { loadModel } from "../models/language_model.ts";
import type { WeightDtype } from "../models/weight_dtype.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    "decode-lanes": { type: "string", default: "" },
    "no-ride-along": { type: "boolean", default: false },
    dtype: { type: "string", default: "f32" },
    batches: { type: "string", default: "8,64" },
    size: { type: "string", default: "130m" },
    autotune: { type: "boolean", default: false },
  },
  allowPositionals: true,
  strict: true,
});
const [root, kindsArg] = positionals;

/**
 * The eight kernel kinds with the most GPU time in a step (each kernel timed in its own pass),
 * in µs: names without their `kN_` index, summed over the layers.
 */
function topKinds(kernels: readonly { name: string; medianNs: number }[]) {
  const byKind = new Map<string, number>();
  for (const k of kernels) {
    const kind = k.name.replace(/k\d+_/g, "");
    byKind.set(kind, (byKind.get(kind) ?? 0) + k.medianNs);
  }
  return Object.fromEntries(
    [...byKind].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, ns]) => [k, ns / 1e3]),
  );
}
const dtype = values.dtype as WeightDtype;
// `--autotune`: every program is tuned on this adapter into a fresh cache (rows end `_autotuned`).
const autotune = values.autotune
  ? { cacheFile: `${await Deno.makeTempDir()}/autotune.json` }
  : false;
const suffix = (dtype === "f32" ? "" : `_${dtype}`) + (autotune ? "_autotuned" : "");
for (const kind of (kindsArg ?? "mamba,mamba2").split(",")) {
  const model = await loadModel(`${root}/${kind}`, { progress: false, dtype, autotune });
  // Token ids within the vocabulary (50280 at the benchmark's shapes; tiny test models too).
  const ids = Math.min(50000, model.definition.vocab - 1);
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919) % ids + 1);
  const long = Array.from({ length: 2048 }, (_, i) => (i * 104729) % ids + 1);
  const prefill = await model.benchmarkPrefill([long]);
  const step = await model.benchmarkDecodeStep(1);
  const block = await model.benchmarkDecodeBlock(1, 32);
  // A decode step reads every weight once (the tied head included): the step's bandwidth.
  let weightBytes = 0;
  for (const e of Deno.readDirSync(`${root}/${kind}`)) {
    if (e.name.endsWith(".safetensors")) {
      weightBytes += Deno.statSync(`${root}/${kind}/${e.name}`).size;
    }
  }
  if (dtype !== "f32") weightBytes /= 2; // the matrices dominate; norms and biases stay f32
  const generateRate = async (maxNew: number, blockSize?: number) => {
    const t0 = performance.now();
    const out = await model.generate([prompt], { maxNew, eos: -1, blockSize });
    return out[0].length / ((performance.now() - t0) / 1000);
  };
  await generateRate(128);
  // Median of three back-to-back runs (HF's anchor: one run after one warm-up).
  const rates = [await generateRate(128), await generateRate(128), await generateRate(128)];
  const rate = [...rates].sort((a, b) => a - b)[1];
  // Other block caps, and a long run (steady state: start-up and the last readback amortized).
  const blockSizes: Record<string, number> = {};
  for (const blockSize of [32, 128]) blockSizes[blockSize] = await generateRate(128, blockSize);
  const steady = await generateRate(1024);
  // One traced run (stderr): when each block was submitted and read back.
  Deno.env.set("SSMKIT_TRACE_GENERATE", "1");
  await generateRate(256);
  Deno.env.delete("SSMKIT_TRACE_GENERATE");
  console.log(JSON.stringify({
    bench: `ssmkit_${kind}_${values.size}${suffix}`,
    prefill_2048_s: prefill.totalNs / 1e9,
    prefill_kernels: prefill.kernels.length,
    decode_tok_s: rate,
    decode_tok_s_runs: rates,
    decode_tok_s_by_block_cap: blockSizes,
    decode_tok_s_1024_tokens: steady,
    step_gpu_one_pass_ms: block.gpuNsPerStep / 1e6,
    weight_bytes: weightBytes,
    step_weight_GBps: weightBytes / block.gpuNsPerStep,
    sampler_gpu_ms: block.samplerNs / 1e6,
    step_cpu_submit_ms: block.cpuSubmitNsPerStep / 1e6,
    step_cpu_submit_with_pending_read_ms: block.cpuSubmitWithPendingReadNsPerStep / 1e6,
    step_dispatches: block.dispatchesPerStep,
    step_gpu_ms_per_kernel_passes: step.totalNs / 1e6,
    step_kernels: step.kernels.length,
    step_by_kind_us: topKinds(step.kernels),
  }));
  // Batched decode: b prompts at once, tokens/s over all of them, and the GPU time of a step.
  for (const b of values.batches.split(",").filter((v) => v).map(Number)) {
    const prompts = Array.from(
      { length: b },
      (_, j) => prompt.map((t) => (t + 31 * j) % ids + 1),
    );
    const blk = await model.benchmarkDecodeBlock(b, 32);
    const kernels = (await model.benchmarkDecodeStep(b)).kernels;
    await model.generate(prompts, { maxNew: 128, eos: -1 });
    const t0 = performance.now();
    const outs = await model.generate(prompts, { maxNew: 128, eos: -1 });
    const tokens = outs.reduce((n, o) => n + o.length, 0);
    console.log(JSON.stringify({
      bench: `ssmkit_${kind}_${values.size}_batch${b}${suffix}`,
      batch: b,
      decode_tok_s: tokens / ((performance.now() - t0) / 1000),
      step_gpu_one_pass_ms: blk.gpuNsPerStep / 1e6,
      step_dispatches: blk.dispatchesPerStep,
      step_by_kind_us: topKinds(kernels),
    }));
  }
  model.destroy();
  // Variants to compare in decode: scan lane counts (`--decode-lanes 16,32`), and every
  // elementwise kernel in its own dispatch (`--no-ride-along`): step GPU time and rate.
  const variants: { scan?: { lanes: number }; rideAlong?: boolean }[] = [
    ...values["decode-lanes"].split(",").filter((v) => v).map((v) => ({
      scan: { lanes: Number(v) },
    })),
    ...(values["no-ride-along"] ? [{ rideAlong: false }] : []),
  ];
  for (const codegen of variants) {
    const variant = await loadModel(`${root}/${kind}`, { progress: false, dtype, codegen });
    const blk = await variant.benchmarkDecodeBlock(1, 32);
    await variant.generate([prompt], { maxNew: 128, eos: -1 });
    const t0 = performance.now();
    const out = await variant.generate([prompt], { maxNew: 128, eos: -1 });
    console.log(JSON.stringify({
      bench: `ssmkit_${kind}_${values.size}_decode_variant${suffix}`,
      codegen,
      step_gpu_one_pass_ms: blk.gpuNsPerStep / 1e6,
      step_dispatches: blk.dispatchesPerStep,
      decode_tok_s: out[0].length / ((performance.now() - t0) / 1000),
    }));
    variant.destroy();
  }
}
// The autotuner's choices and every candidate's time (the cache file of this run).
if (autotune) {
  const cache = JSON.parse(await Deno.readTextFile(autotune.cacheFile).catch(() => "{}"));
  console.log(JSON.stringify({ bench: "autotune_cache", cache }));
}
