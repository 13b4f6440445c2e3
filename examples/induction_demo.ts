/**
 * `deno task demo`: the induction-heads task of the Mamba paper (§4.1.2), run end to end on
 * this machine's WebGPU adapter.
 *
 * A sequence of random tokens holds a special token once, followed by a token X, and ends with
 * the special token again: the model must answer X. The demo loads a 2-layer Mamba (d_model 64)
 * that ships in models/induction/checkpoint, makes fresh random sequences of each length, runs
 * them through ssmkit's kernels and reports accuracy and speed per length, plus an SVG plot.
 *
 * What to expect from the shipped checkpoint: it was trained only at length 256, and only until
 * it solved that length (1,250 steps). It answers 100% at 256, about 90% at 1K, and falls
 * towards chance (1/16) from 4K on: it does NOT reproduce the paper's extrapolation to 1M
 * tokens. The torch model of models/induction/train.py falls off the same way, so the fall-off is
 * the checkpoint's, not ssmkit's (bench/RESULTS.md); retraining it is future work. What the demo
 * does show is ssmkit running the model on sequences 64× to 4096× longer than it was trained on.
 *
 *   deno task demo [--max-len 16384] [--sequences N] [--seed S] [--svg PATH]
 *
 * The default lengths (256 to 16K) take about 70 seconds on a 2-core machine without a GPU
 * (Mesa's software Vulkan; longer on the first run, which compiles every kernel);
 * `--max-len 1048576` is for a real GPU.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu, loadModel } from "../mod.ts";
import { createProgressBar } from "../models/checkpoint/progress.ts";
import { accuracyPlotSvg } from "./plot.ts";

const DATA_TOKENS = 16;
const SPECIAL = DATA_TOKENS + 1;
/** Tokens per batch: bounds the activations to what a software adapter can bind. */
const TOKENS_PER_BATCH = 65536;
/** Tokens evaluated per length (at least 4 sequences, at most 32). */
const TOKENS_PER_LENGTH = 1 << 16;

/** One row of the results table. */
interface Row {
  length: number;
  accuracy: number;
  tokensPerSecond: number;
  sequences: number;
}

/** The lengths evaluated: 256, 1K, 4K… up to `maxLen` (included). */
function lengthsUpTo(maxLen: number): number[] {
  const lengths: number[] = [];
  for (let l = 256; l <= maxLen; l *= 4) lengths.push(l);
  if (lengths[lengths.length - 1] !== maxLen) lengths.push(maxLen);
  return lengths;
}

/** A small seeded generator (mulberry32) so a run can be repeated with --seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One task sequence: random tokens, [SPECIAL, X] somewhere, SPECIAL at the end; answer X. */
function taskSequence(length: number, rand: () => number): { seq: number[]; answer: number } {
  const token = () => 1 + Math.floor(rand() * DATA_TOKENS);
  const seq = Array.from({ length }, token);
  const pos = Math.floor(rand() * (length - 3));
  const answer = token();
  seq[pos] = SPECIAL;
  seq[pos + 1] = answer;
  seq[length - 1] = SPECIAL;
  return { seq, answer };
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "max-len": { type: "string", default: "16384" },
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
    return 2;
  }
  const rand = seededRandom(Number(values.seed));

  const gpu = await getGpu();
  console.log(`adapter: ${gpu.adapterInfo.description}`);
  const model = await loadModel(values.model, { progress: false });
  const rows: Row[] = [];
  for (const length of lengthsUpTo(maxLen)) {
    const count = Number(
      values.sequences ?? Math.min(32, Math.max(4, TOKENS_PER_LENGTH / length)),
    );
    const perBatch = Math.max(1, Math.min(count, Math.floor(TOKENS_PER_BATCH / length)));
    const bar = createProgressBar(`length ${length}`, count);
    let correct = 0, done = 0, seconds = 0;
    while (done < count) {
      const n = Math.min(perBatch, count - done);
      const tasks = Array.from({ length: n }, () => taskSequence(length, rand));
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
  console.log(
    `\nkernels of the last prompt pass (${kernels.length}): ${summarizeKernels(kernels)}`,
  );
  console.log("\n  length   accuracy   tokens/s   sequences");
  for (const r of rows) {
    console.log(
      `${String(r.length).padStart(8)}   ${(100 * r.accuracy).toFixed(1).padStart(7)}%  ` +
        `${r.tokensPerSecond.toExponential(2).padStart(9)}   ${String(r.sequences).padStart(9)}`,
    );
  }
  console.log(
    "\nThe shipped checkpoint was trained at length 256 only: expect ~100% there and a fall " +
      "towards\nchance (1/16 = 6.3%) from 4K on. It does not reproduce the paper's " +
      "extrapolation\n(see the header of examples/induction_demo.ts).",
  );
  await Deno.writeTextFile(values.svg, accuracyPlotSvg(rows, gpu.adapterInfo.description));
  console.log(
    `\nplot: ${await Deno.realPath(values.svg)}  ` +
      "(tokens/s is wall clock, compilation of each new shape included)",
  );
  model.destroy();
  return 0;
}

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

// Command-line code runs only when this file is the program, not when a tool imports it.
if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    // A bad command line gets one line, not a stack trace.
    if (!(e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) throw e;
    console.error(`ssmkit demo: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
