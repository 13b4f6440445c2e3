/**
 * Text tokenization for model directories, wrapping `@huggingface/tokenizers` (pure JS; reads the
 * same `tokenizer.json` as the Rust `tokenizers` crate, e.g. the GPT-NeoX byte-level BPE used by
 * state-spaces Mamba models). `tokenizer_config.json`, when present, supplies settings such as
 * `clean_up_tokenization_spaces`.
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { parseConfigJson } from "./config.ts";
import { describeValue } from "./describe.ts";
import { platform } from "../../platform/current.ts";
import type { ModelSource } from "./source.ts";

/** Largest tokenizer.json read (the largest published ones are a few tens of MB). */
export const MAX_TOKENIZER_BYTES = 256 * 1024 * 1024;

/** Largest token id accepted: ids travel as i32 on the GPU. */
export const MAX_TOKEN_ID = 2 ** 31 - 2;

/** Options of {@link TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (e.g. `<|endoftext|>`) from the text. Default false. */
  skipSpecialTokens?: boolean;
}

/** A loaded tokenizer: text ↔ token ids. */
export interface TextTokenizer {
  /** Number of ids (vocabulary plus added tokens); valid ids are `0 .. vocabSize - 1`. */
  readonly vocabSize: number;
  /**
   * Token ids of a text, with the special tokens the tokenizer's post-processor adds (as HF
   * `tokenizer(text)` does).
   */
  encode(text: string): number[];
  /**
   * Text of a sequence of token ids (`""` for none).
   *
   * @throws Error when an id is not an integer in `[0, vocabSize)`.
   */
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** Id of a token string, or undefined. */
  tokenToId(token: string): number | undefined;
  /** Token string of an id, or undefined. */
  idToToken(id: number): string | undefined;
}

async function readJson(
  source: ModelSource,
  name: string,
): Promise<{ path: string; json: unknown } | undefined> {
  const file = await source.readText(name, MAX_TOKENIZER_BYTES, name);
  if (!file) return undefined;
  return { path: file.path, json: parseJson(file.text, file.path) };
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text); // fast path: tokenizer.json files are MBs of plain JSON
  } catch {
    return parseConfigJson(text, path); // located error message (or Python float tokens)
  }
}

/**
 * The id range of a tokenizer spec: one more than its largest id, over the model's vocabulary
 * and the added tokens. Computed from the spec itself (linear in the number of tokens) rather
 * than from the library's id → token table, which is as long as the largest id: one id of 1e9
 * would make a billion-step loop.
 *
 * @param spec The parsed tokenizer.json.
 * @param path The file, for messages.
 * @throws Error naming the token when an id is not an integer in `[0, MAX_TOKEN_ID]`.
 */
export function vocabSizeOf(spec: unknown, path: string): number {
  let size = 0;
  const check = (id: unknown, token: string) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
      throw new Error(
        `${path}: token ${JSON.stringify(token.slice(0, 40))} has id ${describeValue(id)}; ids ` +
          `must be integers from 0 to ${MAX_TOKEN_ID}`,
      );
    }
    if (id + 1 > size) size = id + 1;
  };
  const s = (spec ?? {}) as { model?: { vocab?: unknown }; added_tokens?: unknown };
  const vocab = s.model?.vocab;
  if (Array.isArray(vocab)) {
    // Unigram: a list of [token, score]; the id is the position.
    size = vocab.length;
  } else if (vocab !== null && typeof vocab === "object") {
    for (const [token, id] of Object.entries(vocab)) check(id, token);
  }
  if (Array.isArray(s.added_tokens)) {
    for (const t of s.added_tokens as { id?: unknown; content?: unknown }[]) {
      check(t?.id, String(t?.content ?? ""));
    }
  }
  return size;
}

/**
 * Loads `DIR/tokenizer.json` (and `DIR/tokenizer_config.json` if present).
 *
 * @param dir Model directory (a URL in a browser), or any {@link ModelSource}.
 * @returns The tokenizer, or undefined when the directory has no `tokenizer.json`.
 * @throws Error naming the file when the directory is missing or is a file, a tokenizer file is
 *   not a regular file inside it, is larger than {@link MAX_TOKENIZER_BYTES}, is not valid JSON,
 *   holds a token id outside `[0, MAX_TOKEN_ID]`, or is not a supported tokenizer.
 */
export async function loadTokenizer(
  dir: string | ModelSource,
): Promise<TextTokenizer | undefined> {
  const source = typeof dir === "string" ? await platform.modelSource(dir) : dir;
  const file = await readJson(source, "tokenizer.json");
  if (!file) return undefined;
  const { path, json: spec } = file;
  const vocabSize = vocabSizeOf(spec, path);
  const configFile = await readJson(source, "tokenizer_config.json");
  const config = configFile ? configFile.json : {};
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new Error(`${configFile?.path}: top level is not a JSON object`);
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(spec as object, config as object);
  } catch (e) {
    throw new Error(`${path}: cannot build a tokenizer from it: ${(e as Error).message}`);
  }
  return {
    vocabSize,
    encode: (text) => tok.encode(text).ids,
    decode(ids, opts = {}) {
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
          throw new Error(`decode: token id ${id} is not in [0, ${vocabSize})`);
        }
      }
      // The library rejects empty input; an empty sequence simply has no text.
      if (ids.length === 0) return "";
      return tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
    },
    tokenToId: (token) => tok.token_to_id(token),
    idToToken: (id) => tok.id_to_token(id),
  };
}
