/**
 * The induction-heads task of the Mamba paper (Gu & Dao 2023, §4.1.2), shared by the demo
 * (`examples/induction_demo.ts`) and the trainer (`models/induction/train.ts`): a sequence of
 * random data tokens holds the special token once, followed by a token X, and ends with the
 * special token again; the model must answer X. Also the model's config (as
 * models/induction/train.py writes it) and the accuracy evaluation over lengths.
 *
 * @module
 */

import type { LanguageModel } from "../language_model.ts";
import { createProgressBar } from "../checkpoint/progress.ts";
import { Random } from "../train/init.ts";

/** Data tokens are ids 1..16. */
export const DATA_TOKENS = 16;
/** The special (marker) token: id 17. */
export const SPECIAL = DATA_TOKENS + 1;
/** Vocabulary: id 0 (unused), the data tokens and the special token. */
export const VOCAB = DATA_TOKENS + 2;

/**
 * The HF config of the induction model: a 2-layer Mamba with d_model 64 (the paper's §4.1.2
 * setup; the same config and tensor names as models/induction/train.py, so `deno task demo`
 * loads either).
 */
export const INDUCTION_CONFIG: Readonly<Record<string, unknown>> = {
  model_type: "mamba",
  architectures: ["MambaForCausalLM"],
  vocab_size: VOCAB,
  hidden_size: 64,
  intermediate_size: 128,
  state_size: 16,
  num_hidden_layers: 2,
  conv_kernel: 4,
  time_step_rank: 4,
  expand: 2,
  layer_norm_epsilon: 1e-5,
  use_bias: false,
  use_conv_bias: true,
  tie_word_embeddings: true,
  eos_token_id: 0,
  pad_token_id: 0,
  bos_token_id: 0,
};

/** A seeded uniform [0, 1) generator (mulberry32), so a run can be repeated. */
export function seededRandom(seed: number): () => number {
  const r = new Random(seed);
  return () => r.next();
}

/** One task sequence: random tokens, [SPECIAL, X] somewhere, SPECIAL at the end; answer X. */
export function taskSequence(
  length: number,
  rand: () => number,
): { seq: number[]; answer: number } {
  const token = () => 1 + Math.floor(rand() * DATA_TOKENS);
  const seq = Array.from({ length }, token);
  const pos = Math.floor(rand() * (length - 3));
  const answer = token();
  seq[pos] = SPECIAL;
  seq[pos + 1] = answer;
  seq[length - 1] = SPECIAL;
  return { seq, answer };
}

/** A training batch: ids [b, l] (row-major) and the answers [b]. */
export function taskBatch(
  batch: number,
  length: number,
  rand: () => number,
): { ids: Int32Array; answers: Int32Array } {
  const ids = new Int32Array(batch * length), answers = new Int32Array(batch);
  for (let r = 0; r < batch; r++) {
    const { seq, answer } = taskSequence(length, rand);
    ids.set(seq, r * length);
    answers[r] = answer;
  }
  return { ids, answers };
}

/** The lengths 256, 1K, 4K… up to `maxLen` (included). */
export function lengthsUpTo(maxLen: number): number[] {
  const lengths: number[] = [];
  for (let l = 256; l <= maxLen; l *= 4) lengths.push(l);
  if (lengths[lengths.length - 1] !== maxLen) lengths.push(maxLen);
  return lengths;
}

/** The accuracy at one length. */
export interface AccuracyRow {
  /** Sequence length. */
  length: number;
  /** Fraction of sequences answered right. */
  accuracy: number;
  /** Tokens per second (wall clock, compilation of new shapes included). */
  tokensPerSecond: number;
  /** Sequences evaluated. */
  sequences: number;
}

/** Options of {@link evaluateInduction}. */
export interface EvaluateOptions {
  /** Sequences per length (default: 65536 tokens' worth, at least 4 and at most 32). */
  sequences?: number;
  /** Tokens per batch (default 65536: bounds the activations a software adapter must bind). */
  tokensPerBatch?: number;
  /** Show a progress bar per length (default: when stderr is a terminal). */
  progress?: boolean;
}

/**
 * Accuracy of `model` on fresh task sequences of each length: its greedy next token after
 * the final special token is its answer.
 */
export async function evaluateInduction(
  model: LanguageModel,
  lengths: readonly number[],
  rand: () => number,
  options: EvaluateOptions = {},
): Promise<AccuracyRow[]> {
  const rows: AccuracyRow[] = [];
  const perBatchTokens = options.tokensPerBatch ?? 1 << 16;
  for (const length of lengths) {
    const count = options.sequences ?? Math.min(32, Math.max(4, (1 << 16) / length));
    const perBatch = Math.max(1, Math.min(count, Math.floor(perBatchTokens / length)));
    const bar = createProgressBar(`length ${length}`, count, {
      enabled: options.progress,
      unit: "count",
    });
    let correct = 0, done = 0, seconds = 0;
    while (done < count) {
      const n = Math.min(perBatch, count - done);
      const tasks = Array.from({ length: n }, () => taskSequence(length, rand));
      const t0 = performance.now();
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
  return rows;
}

/** The results as a text table. */
export function accuracyTable(rows: readonly AccuracyRow[]): string {
  const lines = ["  length   accuracy   tokens/s   sequences"];
  for (const r of rows) {
    lines.push(
      `${String(r.length).padStart(8)}   ${(100 * r.accuracy).toFixed(1).padStart(7)}%  ` +
        `${r.tokensPerSecond.toExponential(2).padStart(9)}   ${String(r.sequences).padStart(9)}`,
    );
  }
  return lines.join("\n");
}
