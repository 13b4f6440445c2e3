/**
 * Command-line option values checked as the text the user typed, before any conversion: a
 * message quotes that text (a seed of 9007199254740993 is not shown rounded), and numbers are
 * accepted only in plain decimal notation.
 *
 * @module
 */

/** A usage problem: printed with the usage text, exit code 2. */
export class UsageError extends Error {}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * The integer `--name TEXT` gives, in [min, max] (safe integers). Without `text`, `fallback`.
 *
 * @throws UsageError quoting the text when it is not such an integer.
 */
export function integerOption(
  name: string,
  text: string | undefined,
  range: { min: number; max: number; fallback?: number; what?: string },
): number {
  if (text === undefined && range.fallback !== undefined) return range.fallback;
  const what = range.what ?? `an integer in [${range.min}, ${range.max}]`;
  const t = (text ?? "").trim();
  if (!INTEGER.test(t)) throw new UsageError(`--${name} must be ${what}, got "${text}"`);
  const v = BigInt(t);
  if (v < BigInt(range.min) || v > BigInt(range.max)) {
    throw new UsageError(`--${name} must be ${what}, got "${text}"`);
  }
  return Number(v);
}

/**
 * The number `--name TEXT` gives, accepted by `ok` (described by `what`). Without `text`,
 * `fallback`.
 *
 * @throws UsageError quoting the text when it is not a finite decimal number `ok` accepts.
 */
export function numberOption(
  name: string,
  text: string | undefined,
  fallback: number,
  what: string,
  ok: (v: number) => boolean,
): number {
  if (text === undefined) return fallback;
  const t = text.trim();
  const v = Number(t);
  if (!DECIMAL.test(t) || !Number.isFinite(v) || !ok(v)) {
    throw new UsageError(`--${name} must be ${what}, got "${text}"`);
  }
  return v;
}

/**
 * Comma-separated token ids (`--name 5,17,300`), each in [0, vocab) when `vocab` is given.
 *
 * @throws UsageError quoting the text (and the id) when one is not such an id.
 */
export function tokenIdsOption(name: string, text: string, vocab?: number): number[] {
  const parts = text.split(",").map((t) => t.trim());
  if (parts.some((t) => !/^\d+$/.test(t))) {
    throw new UsageError(`--${name} must be comma-separated token ids, got "${text}"`);
  }
  for (const t of parts) {
    const id = BigInt(t);
    const max = vocab ?? Number.MAX_SAFE_INTEGER + 1;
    if (id >= BigInt(max)) {
      throw new UsageError(
        `--${name}: token id ${t} is outside ` +
          (vocab === undefined ? "the safe integers" : `the model's vocabulary [0, ${vocab})`),
      );
    }
  }
  return parts.map(Number);
}
