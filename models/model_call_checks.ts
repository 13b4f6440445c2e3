/**
 * Checks of a language model's calls and their errors: token rows, stop tokens, and logits
 * holding NaN or ±Inf (read back, or recorded by the sampler during generation).
 *
 * @module
 */

import { STATE_WORDS } from "./sampler.ts";

/** A value for an error message: a number as is, anything else with its type. */
export function describe(v: unknown): string {
  return typeof v === "number" ? String(v) : `${typeof v} ${JSON.stringify(v)}`;
}

/**
 * Checks that `tokens` are non-empty rows of equal length of ids in [0, vocab); returns the
 * batch size, the row length and the ids row by row.
 */
export function checkTokens(
  tokens: number[][],
  vocab: number,
): { b: number; l: number; ids: Int32Array } {
  if (!Array.isArray(tokens) || tokens.length === 0 || !Array.isArray(tokens[0])) {
    throw new Error("tokens must be a non-empty array of rows of token ids");
  }
  const l = tokens[0].length;
  if (l === 0) throw new Error("token rows must not be empty");
  const ids = new Int32Array(tokens.length * l);
  tokens.forEach((row, i) => {
    if (!Array.isArray(row) || row.length !== l) {
      throw new Error(
        `all token rows must have the same length (row 0 has ${l}, row ${i} has ` +
          `${Array.isArray(row) ? row.length : describe(row)})`,
      );
    }
    row.forEach((t, j) => {
      if (!Number.isInteger(t) || t < 0 || t >= vocab) {
        throw new Error(
          `token id ${t} (row ${i}, position ${j}) is outside the vocabulary [0, ${vocab})`,
        );
      }
      ids[i * l + j] = t;
    });
  });
  return { b: tokens.length, l, ids };
}

/**
 * The stop tokens of `eos` (validated: ids in [0, vocab), -1 or [] for none), or `defaults`
 * when `eos` is undefined.
 */
export function eosIds(
  eos: number | readonly number[] | undefined,
  vocab: number,
  defaults: readonly number[],
): Set<number> {
  if (eos === undefined) {
    return new Set(defaults);
  }
  const bad = () =>
    new Error(
      `eos must be a token id in [0, ${vocab}) or a list of them (-1 or [] for none), got ` +
        (Array.isArray(eos) ? JSON.stringify(eos) : describe(eos)),
    );
  const list = eos === -1 ? [] : typeof eos === "number" ? [eos] : eos;
  if (!Array.isArray(list)) throw bad();
  for (const id of list) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocab) throw bad();
  }
  return new Set(list);
}

/**
 * The error for the first step whose logits held a NaN or an infinity (the sampler records it
 * in its state), if that step's token was accepted: `accepted[row]` tokens were (a step after
 * a row stopped does not count).
 */
export function nonFiniteStepError(
  state: Uint32Array,
  accepted: number[],
  vocab: number,
): Error | undefined {
  for (let row = 0; row < accepted.length; row++) {
    const step = state[row * STATE_WORDS + 4] - 1;
    if (step < 0 || step >= accepted[row]) continue;
    const count = state[row * STATE_WORDS + 5];
    return new Error(
      `generate: the logits of step ${step}${accepted.length > 1 ? ` (row ${row})` : ""} hold ` +
        `${count} non-finite value(s) (NaN or ±Inf) of ${vocab}: the model's weights or ` +
        `activations overflow (${step} token(s) were generated before it)`,
    );
  }
  return undefined;
}

/** Rejects logits holding NaN or ±Inf, naming how many and the first. */
export function checkFinite(logits: Float32Array, b: number, l: number, vocab: number): void {
  let count = 0, first = -1;
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) {
      count++;
      if (first < 0) first = i;
    }
  }
  if (count === 0) return;
  const row = Math.floor(first / (l * vocab));
  const position = Math.floor(first / vocab) % l;
  throw new Error(
    `logits: ${count} of ${logits.length} values are not finite (NaN or ±Inf), the first ` +
      `(${logits[first]}) at ${b > 1 ? `row ${row}, ` : ""}position ${position}, token ` +
      `${first % vocab}: the model's weights or activations overflow`,
  );
}
