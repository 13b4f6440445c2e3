/**
 * `deno task demo`: the induction-heads task of the Mamba paper (§4.1.2), run end to end on
 * this machine's WebGPU adapter.
 *
 * A sequence of random tokens holds a special token once, followed by a token X, and ends with
 * the special token again: the model must answer X. The demo loads a 2-layer Mamba (d_model 64)
 * that ships in models/induction/checkpoint, makes fresh random sequences of each length, runs
 * them through ssmkit's kernels and reports accuracy and speed per length, plus an SVG plot.
 *
 * What to expect from the shipped checkpoint: ssmkit trained it (`deno task train-induction`,
 * the paper's recipe at length 256: 110,368 of its 204,800 steps in three runs of about four
 * minutes on an H100, each resuming the last; the last run's log is
 * models/induction/checkpoint/train_log.json, the whole history bench/RESULTS.md). On the H100
 * (2026-12-06) it answered 100% at every length from 256 to 1M tokens (32, 32, 16, then 4
 * sequences from 16K on): the paper's extrapolation, 4096× the training length. At 59,168 steps
 * the same run still fell to 25% from 64K on. `deno task train-induction --out DIR` trains
 * another (`--seconds` caps the time); `--model DIR` evaluates it here.
 *
 *   deno task demo [--max-len 16384] [--sequences N] [--seed S] [--svg PATH] [--model DIR]
 *
 * The default lengths (256 to 16K) take about 70 seconds on a 2-core machine without a GPU
 * (Mesa's software Vulkan; longer on the first run, which compiles every kernel);
 * `--max-len 1048576` is for a real GPU.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu, loadModel } from "../mod.ts";
import {
  accuracyTable,
  evaluateInduction,
  lengthsUpTo,
  seededRandom,
} from "../models/induction/task.ts";
import { accuracyPlotSvg } from "./plot.ts";

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
  const rows = await evaluateInduction(model, lengthsUpTo(maxLen), rand, {
    sequences: values.sequences === undefined ? undefined : Number(values.sequences),
  });

  const kernels = model.lastPrefillKernels();
  console.log(
    `\nkernels of the last prompt pass (${kernels.length}): ${summarizeKernels(kernels)}`,
  );
  console.log("\n" + accuracyTable(rows));
  console.log(
    "\nThe shipped checkpoint was trained by ssmkit at length 256 (110,368 steps): on an H100 it\n" +
      "answered 100% at every length up to 1M tokens (chance is 1/16 = 6.3%; see the header of\n" +
      "examples/induction_demo.ts).",
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
