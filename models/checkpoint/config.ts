/**
 * `config.json` reading. Python's `json.dumps` (used by transformers) writes float infinities and
 * NaN as the bare, non-JSON tokens `Infinity`, `-Infinity` and `NaN`, and some configs instead
 * hold `{"__float__": "Infinity"}` objects (e.g. Mamba-2's `time_step_limit`). `JSON.parse`
 * rejects the former, so this module has its own small JSON parser that accepts both spellings
 * (only outside strings) and reports errors with line and column.
 *
 * @module
 */

import { platform } from "../../platform/current.ts";
import type { ModelSource } from "./source.ts";

/** Largest config.json read (real ones are a few KB). */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** Deepest nesting of arrays and objects the parser accepts (Python's json stops near 1000). */
export const MAX_JSON_DEPTH = 1000;

/**
 * Reads `DIR/config.json`, turning `Infinity`/`-Infinity`/`NaN` tokens and `{"__float__": s}`
 * objects into JS numbers.
 *
 * @param dir Model directory (a URL in a browser), or any {@link ModelSource}.
 * @returns The top-level config object.
 * @throws Error when the directory is missing or is a file, config.json is missing or not a
 *   regular file inside it, larger than {@link MAX_CONFIG_BYTES}, not valid JSON (with line and
 *   column), nested deeper than {@link MAX_JSON_DEPTH}, or not an object.
 */
export async function readConfig(dir: string | ModelSource): Promise<Record<string, unknown>> {
  const source = typeof dir === "string" ? await platform.modelSource(dir) : dir;
  const file = await source.readText("config.json", MAX_CONFIG_BYTES, "config.json");
  if (!file) throw new Error(`no config.json in model directory ${source.name}`);
  const { path, text } = file;
  const value = parseConfigJson(text, path);
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${path}: top level is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * Parses JSON extended with Python's `Infinity`, `-Infinity`, `NaN` tokens; objects of the form
 * `{"__float__": "Infinity" | "-Infinity" | "NaN" | "<number>"}` become numbers.
 *
 * @param text The JSON text.
 * @param source Name used in error messages (usually the file path).
 * @throws Error `SOURCE: invalid JSON at line L, column C: ...` on malformed input.
 */
export function parseConfigJson(text: string, source = "config.json"): unknown {
  return new ExtendedJsonParser(text, source).parseDocument();
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * Recursive-descent parser over the JSON grammar plus the three Python float tokens. Nesting is
 * bounded by {@link MAX_JSON_DEPTH}, so a hostile file gets a located error, not a stack overflow.
 */
class ExtendedJsonParser {
  #pos = 0;
  #depth = 0;
  constructor(readonly text: string, readonly source: string) {
    if (text.charCodeAt(0) === 0xfeff) this.#pos = 1; // UTF-8 BOM
  }

  parseDocument(): unknown {
    const v = this.#value();
    this.#ws();
    if (this.#pos < this.text.length) this.#fail("unexpected text after the top-level value");
    return v;
  }

  #fail(msg: string, at = this.#pos): never {
    let line = 1, col = 1;
    for (let i = 0; i < at && i < this.text.length; i++) {
      if (this.text[i] === "\n") {
        line++;
        col = 1;
      } else col++;
    }
    throw new Error(`${this.source}: invalid JSON at line ${line}, column ${col}: ${msg}`);
  }

  #ws(): void {
    const t = this.text;
    while (this.#pos < t.length) {
      const c = t[this.#pos];
      if (c !== " " && c !== "\t" && c !== "\n" && c !== "\r") break;
      this.#pos++;
    }
  }

  #describe(): string {
    return this.#pos >= this.text.length
      ? "unexpected end of input"
      : `unexpected character ${JSON.stringify(this.text[this.#pos])}`;
  }

  #word(word: string): boolean {
    if (this.text.startsWith(word, this.#pos)) {
      this.#pos += word.length;
      return true;
    }
    return false;
  }

  #value(): unknown {
    this.#ws();
    const c = this.text[this.#pos];
    if (c === "{" || c === "[") {
      if (this.#depth === MAX_JSON_DEPTH) {
        this.#fail(`arrays and objects nested more than ${MAX_JSON_DEPTH} deep`);
      }
      this.#depth++;
      const v = c === "{" ? this.#object() : this.#array();
      this.#depth--;
      return v;
    }
    if (c === '"') return this.#string();
    if (this.#word("true")) return true;
    if (this.#word("false")) return false;
    if (this.#word("null")) return null;
    if (this.#word("NaN")) return NaN;
    if (this.#word("Infinity")) return Infinity;
    if (this.#word("-Infinity")) return -Infinity;
    NUMBER.lastIndex = this.#pos;
    const m = NUMBER.exec(this.text);
    if (m) {
      this.#pos += m[0].length;
      return Number(m[0]);
    }
    return this.#fail(`expected a value, ${this.#describe()}`);
  }

  #string(): string {
    const start = this.#pos;
    const t = this.text;
    let i = start + 1;
    while (i < t.length && t[i] !== '"') {
      if (t.charCodeAt(i) < 0x20) this.#fail("control character inside a string", i);
      i += t[i] === "\\" ? 2 : 1;
    }
    if (i >= t.length) this.#fail("unterminated string", start);
    this.#pos = i + 1;
    try {
      // The slice is a single JSON string token: let JSON.parse decode its escapes.
      return JSON.parse(t.slice(start, i + 1)) as string;
    } catch {
      return this.#fail("invalid escape sequence in string", start);
    }
  }

  #array(): unknown[] {
    this.#pos++; // [
    const out: unknown[] = [];
    this.#ws();
    if (this.text[this.#pos] === "]") {
      this.#pos++;
      return out;
    }
    for (;;) {
      out.push(this.#value());
      this.#ws();
      const c = this.text[this.#pos];
      this.#pos++;
      if (c === "]") return out;
      if (c !== ",") this.#fail(`expected "," or "]" in array, ${this.#back()}`, this.#pos - 1);
    }
  }

  #object(): unknown {
    const start = this.#pos;
    this.#pos++; // {
    const out: Record<string, unknown> = {};
    const keys: string[] = [];
    this.#ws();
    if (this.text[this.#pos] === "}") {
      this.#pos++;
      return out;
    }
    for (;;) {
      this.#ws();
      if (this.text[this.#pos] !== '"') this.#fail(`expected a string key, ${this.#describe()}`);
      const key = this.#string();
      this.#ws();
      if (this.text[this.#pos] !== ":") this.#fail(`expected ":" after key, ${this.#describe()}`);
      this.#pos++;
      const v = this.#value();
      // defineProperty, so a "__proto__" key is stored as data instead of changing the prototype.
      Object.defineProperty(out, key, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
      keys.push(key);
      this.#ws();
      const c = this.text[this.#pos];
      this.#pos++;
      if (c === "}") break;
      if (c !== ",") this.#fail(`expected "," or "}" in object, ${this.#back()}`, this.#pos - 1);
    }
    if (keys.length === 1 && keys[0] === "__float__") return this.#floatObject(out, start);
    return out;
  }

  /** Describes the character just consumed (used after a failed delimiter check). */
  #back(): string {
    this.#pos--;
    const d = this.#describe();
    this.#pos++;
    return d;
  }

  #floatObject(obj: Record<string, unknown>, at: number): number {
    const s = obj.__float__;
    if (typeof s !== "string") this.#fail(`"__float__" must hold a string`, at);
    const v = floatFromString(s as string);
    if (v === undefined) this.#fail(`"__float__" value ${JSON.stringify(s)} is not a float`, at);
    return v as number;
  }
}

/** `Infinity`, `inf`, `-Infinity`, `NaN`, or a decimal number (case-insensitive names). */
function floatFromString(s: string): number | undefined {
  const t = s.trim().toLowerCase();
  if (t === "infinity" || t === "+infinity" || t === "inf" || t === "+inf") return Infinity;
  if (t === "-infinity" || t === "-inf") return -Infinity;
  if (t === "nan") return NaN;
  if (/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?$/.test(t)) return Number(t);
  return undefined;
}
