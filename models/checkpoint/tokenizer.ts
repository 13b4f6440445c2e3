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
import { isFile, joinPath } from "./file_io.ts";

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

async function readJson(path: string): Promise<unknown> {
  const text = await Deno.readTextFile(path);
  try {
    return JSON.parse(text); // fast path: tokenizer.json files are MBs of plain JSON
  } catch {
    return parseConfigJson(text, path); // located error message (or Python float tokens)
  }
}

/**
 * Loads `DIR/tokenizer.json` (and `DIR/tokenizer_config.json` if present).
 *
 * @param dir Model directory.
 * @returns The tokenizer, or undefined when the directory has no `tokenizer.json`.
 * @throws Error naming the file when it is not valid JSON or not a supported tokenizer.
 */
export async function loadTokenizer(dir: string): Promise<TextTokenizer | undefined> {
  const path = joinPath(dir, "tokenizer.json");
  if (!(await isFile(path))) return undefined;
  const spec = await readJson(path);
  const configPath = joinPath(dir, "tokenizer_config.json");
  const config = (await isFile(configPath)) ? await readJson(configPath) : {};
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new Error(`${configPath}: top level is not a JSON object`);
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(spec as object, config as object);
  } catch (e) {
    throw new Error(`${path}: cannot build a tokenizer from it: ${(e as Error).message}`);
  }
  // Ids may have gaps, so the id range (not the token count) bounds what decode accepts.
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
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
