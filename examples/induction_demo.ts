/**
 * `deno task demo`: the Mamba paper's induction-heads extrapolation, end to end on the GPU.
 *
 * A 2-layer Mamba (d_model 64) trained only on sequences of length 256 (models/induction/)
 * must recall the token that followed the special token's first occurrence. The demo makes
 * fresh random sequences, runs them through ssmkit on whatever WebGPU adapter exists, and
 * reports accuracy and speed at each length, plus an SVG plot of accuracy against length.
 *
 *   deno task demo [--max-len 65536] [--sequences N] [--seed S] [--svg PATH]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { loadModel } from "../models/language_model.ts";
import { createProgressBar } from "../models/checkpoint/progress.ts";
import { describeGpu } from "../runtime/gpu_info.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { accuracyPlotSvg } from "./plot.ts";

const DATA_TOKENS = 16;
const SPECIAL = DATA_TOKENS + 1;
/** Tokens per batch: bounds the activations to what a software adapter can bind. */
const TOKENS_PER_BATCH = 65536;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "max-len": { type: "string", default: "65536" },
    sequences: { type: "string" },
    seed: { type: "string", default: String(Date.now() % 100000) },
    svg: { type: "string", default: "induction_accuracy.svg" },
    model: {
      type: "string",
      default: new URL("../models/induction/checkpoint", import.meta.url).pathname,
    },
  },
  strict: true,
});
const maxLen = Number(values["max-len"]);
if (!Number.isInteger(maxLen) || maxLen < 256 || maxLen > 1 << 20) {
  console.error("ssmkit demo: --max-len must be an integer in [256, 1048576]");
  Deno.exit(2);
}
const lengths: number[] = [];
for (let l = 256; l <= maxLen; l *= 4) lengths.push(l);
if (lengths[lengths.length - 1] !== maxLen) lengths.push(maxLen);

// A small seeded generator (mulberry32) so a run can be repeated with --seed.
let state = Number(values.seed) >>> 0;
const rand = () => {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = Math.imul(state ^ (state >>> 15), state | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const token = () => 1 + Math.floor(rand() * DATA_TOKENS);

/** One task sequence: random tokens, [SPECIAL, X] somewhere, SPECIAL at the end; answer X. */
function taskSequence(length: number): { seq: number[]; answer: number } {
  const seq = Array.from({ length }, token);
  const pos = Math.floor(rand() * (length - 3));
  const answer = token();
  seq[pos] = SPECIAL;
  seq[pos + 1] = answer;
  seq[length - 1] = SPECIAL;
  return { seq, answer };
}

const gpu = await getGpu();
console.log(`adapter: ${describeGpu(gpu).adapter.description}`);
const model = await loadModel(values.model, { progress: false });
const rows: { length: number; accuracy: number; tokensPerSecond: number; sequences: number }[] = [];
for (const length of lengths) {
  // About 128K tokens per length (at least 4 sequences): minutes on a software adapter.
  const count = Number(values.sequences ?? Math.min(32, Math.max(4, (1 << 17) / length)));
  const perBatch = Math.max(1, Math.min(count, Math.floor(TOKENS_PER_BATCH / length)));
  const bar = createProgressBar(`length ${length}`, count);
  let correct = 0, done = 0, seconds = 0;
  while (done < count) {
    const n = Math.min(perBatch, count - done);
    const tasks = Array.from({ length: n }, () => taskSequence(length));
    const t0 = performance.now();
    // The model's greedy next token after the final special token is its answer.
    const out = await model.generate(tasks.map((t) => t.seq), { maxNew: 1, eos: -1 });
    seconds += (performance.now() - t0) / 1000;
    out.forEach((o, i) => correct += o[0] === tasks[i].answer ? 1 : 0);
    done += n;
    bar.update(done);
  }
  bar.finish();
  rows.push({
    length,
    accuracy: correct / count,
    tokensPerSecond: (count * length) / seconds,
    sequences: count,
  });
}

const kernels = model.lastPrefillKernels();
console.log(`\nkernels of the last prompt pass (${kernels.length}): ${summarizeKernels(kernels)}`);
console.log("\n  length   accuracy   tokens/s   sequences");
for (const r of rows) {
  console.log(
    `${String(r.length).padStart(8)}   ${(100 * r.accuracy).toFixed(1).padStart(7)}%  ` +
      `${r.tokensPerSecond.toExponential(2).padStart(9)}   ${String(r.sequences).padStart(9)}`,
  );
}
await Deno.writeTextFile(values.svg, accuracyPlotSvg(rows, describeGpu(gpu).adapter.description));
console.log(
  `\nplot: ${values.svg}  (tokens/s is wall clock, compilation of each new shape included)`,
);
model.destroy();

function summarizeKernels(names: string[]): string {
  const scans = names.filter((n) => n.includes("scan") || n.includes("ssd"));
  const chunked = scans.some((n) => n.includes("_local") || n.includes("ssd"));
  const counts = new Map<string, number>();
  for (const n of names) {
    const kind = n.replace(/^k\d+_/, "").replace(/_.*/, "");
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  return `${[...counts].map(([k, c]) => `${c}× ${k}`).join(", ")}; scan strategy: ` +
    (chunked ? "recurrent, chunked along the sequence" : "recurrent, one pass");
}
