/**
 * `deno task train-induction`: trains the induction-heads model (Mamba paper, §4.1.2) with
 * ssmkit on this machine's GPU, saves it as an HF checkpoint `deno task demo --model DIR`
 * loads, then evaluates its accuracy at lengths far beyond the training length.
 *
 *   deno task train-induction [--steps N] [--seconds T] [--batch B] [--lr LR] [--seed S]
 *     [--length L] [--out DIR] [--eval-lengths 256,1024,4096,16384] [--sequences N] [--block K]
 *     [--steps-per-submit K] [--clip NORM] [--resume DIR] [--autotune]
 *
 * `--autotune` times the step's tunable kernels on this GPU first (matmul tiles, the scan
 * backward's workgroup and checkpoints, …; cached in ~/.cache/ssmkit/autotune.json).
 *
 * `--resume DIR` continues a run this script saved in DIR: its weights are the start, its
 * train_log.json says how many steps it had done, and `--steps` counts the steps of both runs
 * (so `--steps 204800` ends where the recipe does, over several runs). AdamW's state is saved
 * in DIR/optimizer/ and restored, so the runs train as one would; a directory saved without it
 * (before 2026-12-06) restarts the moments from zero, with their bias correction. The data stream
 * is seeded by the seed and the steps done, so a resumed run does not repeat the batches of the
 * first.
 *
 * The recipe (the defaults), from Gu & Dao, "Mamba: Linear-Time Sequence Modeling with
 * Selective State Spaces" (arXiv 2312.00752), §4.1.2, Table 11 and Appendix E.1 ("Induction
 * Heads"):
 * - model: 2 layers, d_model 64, Mamba with state size 16 (§4.1.2, Table 2's setup); the same
 *   config and tensor names as models/induction/train.py (INDUCTION_CONFIG);
 * - task: vocabulary of 16 data tokens plus the special token, training length 256, a fresh
 *   random batch every step (Appendix E.1);
 * - batch 8 (E.1: "randomly generating data every step, with a batch size of 8");
 * - Adam without weight decay, constant learning rate 1e-3 (E.1: both 2e-4 and 1e-3 were
 *   tried; "Mamba learned at both LRs, but extrapolated better at the larger LR of 1e-3");
 *   PyTorch's default betas (0.9, 0.999) and eps; no warm-up and no clipping (E.1 states
 *   none; `--clip` adds global-norm clipping);
 * - steps: 25 "epochs" of 8192 steps = 204,800 (E.1: Mamba's results "are reported after the
 *   25th epoch");
 *   use --seconds to cap the wall time (about 5 minutes on an H200: `--seconds 300`);
 * - init: mamba_ssm's (not stated in E.1; the authors' code: models/train/init.ts: A_log = log(1..16), dt bias = softplus⁻¹ of
 *   log-uniform dt in [1e-3, 0.1], D = 1, embedding N(0, 0.02²), out_proj scaled by 1/√2);
 * - loss: cross-entropy of the answer after the final special token only (the task's single
 *   prediction, as models/induction/train.py).
 *
 * Host cost: each step uploads its batch; `--steps-per-submit` (default 16) encodes that many
 * steps into one GPU submit (16 copies of the step's intermediate buffers, a few hundred MB),
 * and losses are read back once per `--block` steps (default 512), when a progress line is
 * printed.
 *
 * Writes DIR/config.json, DIR/model.safetensors and DIR/train_log.json (losses per block, the
 * options, the evaluation).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu } from "../../runtime/gpu_device.ts";
import { loadModel } from "../language_model.ts";
import { initParams, type ParamRecord } from "../train/init.ts";
import { loadOptimizerState, type OptimizerState } from "../train/optimizer_state.ts";
import { loadParams } from "../train/save.ts";
import { Trainer, type TrainProgress } from "../train/trainer.ts";
import {
  accuracyTable,
  evaluateInduction,
  INDUCTION_CONFIG,
  seededRandom,
  taskBatch,
} from "./task.ts";

/** The recipe's defaults (see the module documentation for their sources). */
export const RECIPE = {
  steps: 25 * 8192,
  batch: 8,
  length: 256,
  lr: 1e-3,
  weightDecay: 0,
  evalLengths: [256, 1024, 4096, 16384],
} as const;

/** Parsed command-line options. */
interface Options {
  steps: number;
  length: number;
  seconds: number;
  batch: number;
  lr: number;
  seed: number;
  out: string;
  evalLengths: number[];
  sequences?: number;
  block: number;
  perSubmit: number;
  clip?: number;
  resume?: string;
  autotune: boolean;
}

function parse(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      steps: { type: "string", default: String(RECIPE.steps) },
      length: { type: "string", default: String(RECIPE.length) },
      seconds: { type: "string", default: "Infinity" },
      batch: { type: "string", default: String(RECIPE.batch) },
      lr: { type: "string", default: String(RECIPE.lr) },
      seed: { type: "string", default: "1" },
      out: { type: "string", default: "induction_trained" },
      "eval-lengths": { type: "string", default: RECIPE.evalLengths.join(",") },
      sequences: { type: "string" },
      block: { type: "string", default: "512" },
      "steps-per-submit": { type: "string", default: "16" },
      clip: { type: "string" },
      resume: { type: "string" },
      autotune: { type: "boolean", default: false },
    },
    strict: true,
  });
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${v}`);
    }
    return n;
  };
  const positive = (name: string, v: string) => {
    const n = Number(v);
    if (!(n > 0)) throw new UsageError(`--${name} must be a positive number, got ${v}`);
    return n;
  };
  return {
    steps: int("steps", values.steps, 1),
    length: int("length", values.length, 4),
    seconds: positive("seconds", values.seconds),
    batch: int("batch", values.batch, 1),
    lr: positive("lr", values.lr),
    seed: int("seed", values.seed, 0),
    out: values.out,
    evalLengths: values["eval-lengths"].split(",").map((v) => int("eval-lengths", v, 4)),
    sequences: values.sequences === undefined ? undefined : int("sequences", values.sequences, 1),
    block: int("block", values.block, 1),
    perSubmit: int("steps-per-submit", values["steps-per-submit"], 1),
    clip: values.clip === undefined ? undefined : positive("clip", values.clip),
    resume: values.resume,
    autotune: values.autotune,
  };
}

/**
 * Where a resumed run starts: the saved weights, the steps their run had done and AdamW's state
 * (when it was saved).
 */
async function resumePoint(
  dir: string,
): Promise<{ params: ParamRecord; steps: number; optimizer?: OptimizerState }> {
  const { config, params } = await loadParams(dir);
  if (JSON.stringify(config) !== JSON.stringify(INDUCTION_CONFIG)) {
    throw new UsageError(`--resume ${dir}: its config.json is not the induction model's`);
  }
  let log: { steps?: unknown; optimizer_steps?: unknown };
  try {
    log = JSON.parse(await Deno.readTextFile(`${dir}/train_log.json`));
  } catch (e) {
    throw new UsageError(`--resume ${dir}: cannot read train_log.json (${(e as Error).message})`);
  }
  const steps = log.steps;
  if (!Number.isInteger(steps) || (steps as number) < 0) {
    throw new UsageError(`--resume ${dir}: train_log.json has no step count`);
  }
  // AdamW's step counts the updates since its moments started, which is fewer than the run's
  // steps where an earlier run was resumed without them (train_log.json's optimizer_steps).
  const updates = log.optimizer_steps ?? steps;
  const optimizer = await loadOptimizerState(dir);
  if (optimizer && optimizer.step !== updates) {
    throw new UsageError(
      `--resume ${dir}: its optimizer state is at step ${optimizer.step}, train_log.json at ${updates}`,
    );
  }
  return { params, steps: steps as number, optimizer };
}

/** A bad command line: one line on stderr, exit code 2. */
class UsageError extends Error {}

/** Trains, saves and evaluates; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const o = parse(args);
  const gpu = await getGpu();
  console.log(`adapter: ${gpu.adapterInfo.description}`);
  const config = { ...INDUCTION_CONFIG };
  const resumed = o.resume === undefined ? undefined : await resumePoint(o.resume);
  const before = resumed?.steps ?? 0;
  if (before >= o.steps) {
    throw new UsageError(`--resume ${o.resume}: it already ran ${before} of --steps ${o.steps}`);
  }
  const log: { step: number; loss: number; seconds: number }[] = [];
  const trainer = await Trainer.create({
    config,
    params: resumed?.params ?? initParams(config, { seed: o.seed }),
    batch: o.batch,
    length: o.length,
    target: "last",
    optimizer: { weightDecay: RECIPE.weightDecay, maxGradNorm: o.clip },
    lr: o.lr,
    blockSize: o.block,
    stepsPerSubmit: o.perSubmit,
    autotune: o.autotune,
    resume: resumed?.optimizer,
    onProgress: (p: TrainProgress) => {
      log.push({ step: before + p.step, loss: p.loss, seconds: p.seconds });
      console.log(
        `step ${String(before + p.step).padStart(7)}  loss ${p.loss.toFixed(4)}  ` +
          `tokens/s ${p.tokensPerSecond.toExponential(2)}  ${p.seconds.toFixed(1)} s`,
      );
    },
  });
  console.log(
    `training: ${o.steps} steps at most${
      resumed
        ? ` (resuming at ${before}${resumed.optimizer ? "" : ", AdamW's moments from zero"})`
        : ""
    }, ` +
      `${o.seconds} s at most, batch ${o.batch}, length ${o.length}, lr ${o.lr}; one step is ` +
      `${trainer.program.kernels.length} kernels`,
  );
  // Data, initialisation and evaluation draw from differently seeded streams.
  const rand = seededRandom(o.seed + 7919 + before);
  const start = performance.now();
  try {
    while (before + trainer.steps < o.steps && (performance.now() - start) / 1000 < o.seconds) {
      const { ids, answers } = taskBatch(o.batch, o.length, rand);
      await trainer.step(ids, answers);
    }
    await trainer.flush();
    await trainer.save(o.out, { optimizer: true });
  } finally {
    trainer.destroy();
  }
  const seconds = (performance.now() - start) / 1000;
  const steps = before + trainer.steps;
  console.log(`saved ${o.out} after ${steps} steps (${seconds.toFixed(1)} s)`);

  // The log is written before the evaluation too, so a run stopped during it keeps its record.
  const writeLog = (rows: unknown) =>
    Deno.writeTextFile(
      `${o.out}/train_log.json`,
      JSON.stringify(
        {
          trainer: "ssmkit models/induction/train.ts",
          adapter: gpu.adapterInfo.description,
          steps,
          // AdamW's updates since its moments started (its bias correction's step).
          optimizer_steps: (resumed?.optimizer?.step ?? 0) + trainer.steps,
          resumed_from: resumed ? { dir: o.resume, steps: before } : null,
          seconds,
          batch: o.batch,
          length: o.length,
          lr: o.lr,
          weight_decay: RECIPE.weightDecay,
          clip: o.clip ?? null,
          seed: o.seed,
          log,
          eval: rows,
        },
        null,
        1,
      ) + "\n",
    );
  await writeLog(null);

  const model = await loadModel(o.out, { progress: false });
  let rows;
  try {
    rows = await evaluateInduction(model, o.evalLengths, seededRandom(o.seed + 1_000_003), {
      sequences: o.sequences,
    });
  } finally {
    model.destroy();
  }
  console.log("\n" + accuracyTable(rows));
  await writeLog(rows);
  return 0;
}

// Command-line code runs only when this file is the program, not when a test imports it.
if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    const parseError = (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    if (!(e instanceof UsageError) && !parseError) throw e;
    console.error(`train-induction: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
