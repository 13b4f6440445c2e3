/**
 * Typed reads of `config.json` fields. Every field a model reads goes through one of these, so a
 * wrong value (a size of 0 or 1.5, the string `"false"` for a flag, a NaN epsilon) is refused at
 * load with one line naming the file and the field, instead of running a different model.
 *
 * @module
 */

import { describeValue } from "./describe.ts";

/** Bounds of a {@link ConfigFields.size} field. */
export interface SizeBounds {
  /** Smallest allowed value (default 1). */
  min?: number;
  /** Largest allowed value (default {@link MAX_WIDTH}). */
  max?: number;
  /** Why the bounds are what they are, appended to the error (e.g. "the decode cache ..."). */
  why?: string;
}

/**
 * Largest width ssmkit accepts for any size field (hidden size, vocabulary, state, heads...).
 * Far above any published model; tensors built from these sizes are checked against the
 * device's limits before anything is read.
 */
export const MAX_WIDTH = 1 << 24;

/** The fields of one parsed config.json, read with validation. */
export class ConfigFields {
  /**
   * @param config The parsed config.json.
   * @param source Name used in messages, usually the file's path.
   */
  constructor(readonly config: Record<string, unknown>, readonly source = "config.json") {}

  /** Whether the field is present (null counts as present: it is a value, and usually wrong). */
  has(key: string): boolean {
    return Object.hasOwn(this.config, key) && this.config[key] !== undefined;
  }

  /** The raw value of a field (undefined when absent). */
  raw(key: string): unknown {
    return Object.hasOwn(this.config, key) ? this.config[key] : undefined;
  }

  /**
   * Throws `SOURCE: "key" must be EXPECTED, got VALUE`.
   *
   * @param key The field.
   * @param expected What the field must hold, in words.
   */
  fail(key: string, expected: string): never {
    throw new Error(
      `${this.source}: "${key}" must be ${expected}, got ${describeValue(this.raw(key))}`,
    );
  }

  /** Throws `SOURCE: MESSAGE` (for rules that involve several fields). */
  error(message: string): never {
    throw new Error(`${this.source}: ${message}`);
  }

  /**
   * An integer size in `[min, max]`; `fallback` when the field is absent (an error when there is
   * no fallback).
   */
  size(key: string, fallback?: number, bounds: SizeBounds = {}): number {
    const min = bounds.min ?? 1, max = bounds.max ?? MAX_WIDTH;
    const expected = `an integer from ${min} to ${max}${bounds.why ? ` (${bounds.why})` : ""}`;
    if (!this.has(key)) {
      if (fallback === undefined) this.error(`"${key}" is missing (${expected})`);
      return fallback;
    }
    const v = this.raw(key);
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      this.fail(key, expected);
    }
    return v;
  }

  /** A finite number greater than zero (e.g. an epsilon); `fallback` when absent. */
  positive(key: string, fallback: number): number {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      this.fail(key, "a finite number greater than 0");
    }
    return v;
  }

  /** `true` or `false` (JSON booleans only; the string "false" is an error). */
  flag(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== "boolean") this.fail(key, "true or false");
    return v;
  }

  /** One of the given strings; `fallback` when absent. */
  choice<const T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    if (!this.has(key)) return fallback;
    const v = this.raw(key);
    if (typeof v !== "string" || !allowed.includes(v as T)) {
      this.fail(key, `one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
    }
    return v as T;
  }

  /**
   * Token ids: an integer or a list of integers in `[0, vocab)`; absent, null or `[]` give none.
   * Duplicates are dropped (the order of first appearance is kept).
   */
  tokenIds(key: string, vocab: number): number[] {
    const v = this.raw(key);
    if (v === undefined || v === null) return [];
    const expected = `a token id or a list of token ids (integers from 0 to ${vocab - 1})`;
    const list = Array.isArray(v) ? v : [v];
    const ok = (t: unknown) => typeof t === "number" && Number.isInteger(t) && t >= 0 && t < vocab;
    if (!list.every(ok)) this.fail(key, expected);
    return [...new Set(list as number[])];
  }
}

/**
 * Bounds of `num_hidden_layers`: published Mamba models have at most 64 layers; 1024 leaves
 * room while refusing, before any per-layer work, a corrupt count such as 1e6.
 */
export const LAYER_BOUNDS: SizeBounds = { max: 1024 };

/** Bounds of `conv_kernel`: the decode cache keeps `conv_kernel − 1` inputs, so at least 2. */
export const CONV_KERNEL_BOUNDS: SizeBounds = {
  min: 2,
  max: 256,
  why: "the decode cache keeps conv_kernel − 1 inputs",
};

/**
 * The inner width `expand × hidden_size` (HF's default `intermediate_size`): `expand` must be a
 * positive finite number (default 2) and the product an integer within {@link MAX_WIDTH}.
 *
 * @param f The config's fields.
 * @param hidden The validated `hidden_size`.
 */
export function innerWidth(f: ConfigFields, hidden: number): number {
  const expand = f.positive("expand", 2);
  const inner = expand * hidden;
  if (!Number.isInteger(inner) || inner > MAX_WIDTH) {
    f.error(
      `"expand" × "hidden_size" = ${expand} × ${hidden} = ${inner} must be an integer from 1 ` +
        `to ${MAX_WIDTH}`,
    );
  }
  return inner;
}
