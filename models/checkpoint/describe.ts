/**
 * Short, safe descriptions of values read from files, for error messages: bounded in length
 * (a 10 MB array becomes "an array of N items"), never recursive, and exact about the values
 * JSON cannot spell (`NaN`, `Infinity`; `JSON.stringify` would print `null` for both).
 *
 * @module
 */

const MAX_TEXT = 40;

/**
 * Describes a value in a few words: numbers and booleans as written (`1.5`, `NaN`,
 * `-Infinity`), strings quoted (`the string "false"`, cut after 40 characters), short arrays of
 * numbers as `[1, 2]`, other arrays and objects by their size.
 *
 * @param value Any value parsed from JSON (or undefined for a missing field).
 * @example
 * ```ts
 * describeValue(NaN); // "NaN"
 * describeValue("false"); // 'the string "false"'
 * ```
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "number") return Number.isNaN(value) ? "NaN" : String(value);
  if (typeof value === "string") {
    const cut = value.length > MAX_TEXT ? `${JSON.stringify(value.slice(0, MAX_TEXT))}…` : JSON
      .stringify(value);
    return `the string ${cut}`;
  }
  if (Array.isArray(value)) {
    if (value.length <= 8 && value.every((v) => typeof v === "number")) {
      return `[${value.map((v) => describeValue(v)).join(", ")}]`;
    }
    return `an array of ${value.length} items`;
  }
  if (typeof value === "object") return "an object";
  return String(value);
}
