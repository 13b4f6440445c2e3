/**
 * Walks the members of a top-level JSON object one at a time, without building the object:
 * `JSON.parse` would keep only the last of two equal keys and would decode and build every member
 * before the caller could stop early (a 900k-entry safetensors header takes a GB that way). The
 * walk runs over the UTF-8 bytes (JSON's structural characters are ASCII, and no byte of a
 * multi-byte UTF-8 sequence is), so only the members looked at are decoded; it is a loop, not a
 * recursion, so nesting depth costs nothing. Each member's value is handed over as text for the
 * caller to `JSON.parse` on its own. Errors give byte positions, never the text itself.
 *
 * @module
 */

/** One member of the object: its key (escapes decoded) and the raw JSON text of its value. */
export interface JsonMember {
  /** The key. */
  key: string;
  /** The value's JSON text, to be checked and parsed by `JSON.parse`. */
  value: string;
  /** Byte offset of the key in the text (for messages). */
  at: number;
}

/** Thrown when the text is not a JSON object; the message gives a byte position. */
export class JsonShapeError extends Error {}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/**
 * Yields the members of the JSON object in `bytes` in order (duplicates included).
 *
 * @param bytes UTF-8 JSON whose top level is an object (whitespace around it is allowed).
 * @throws JsonShapeError `expected ... at byte N` when the text is not such an object, or a key
 *   or value is not valid UTF-8. A member's value is only delimited here; invalid JSON inside it
 *   is left to the caller's parse.
 */
export function* jsonObjectMembers(bytes: Uint8Array): Generator<JsonMember> {
  const n = bytes.length;
  let pos = 0;
  const fail = (what: string): never => {
    throw new JsonShapeError(
      pos >= n ? `${what}, found the end of the text` : `${what} at byte ${pos}`,
    );
  };
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const decode = (start: number, end: number): string => {
    try {
      return utf8.decode(bytes.subarray(start, end));
    } catch {
      pos = start;
      return fail("invalid UTF-8");
    }
  };
  const skipSpace = () => {
    while (pos < n && isSpace(bytes[pos])) pos++;
  };
  // Moves past a string starting at pos (a quote); escapes are skipped, not decoded.
  const skipString = () => {
    pos++;
    while (pos < n) {
      const c = bytes[pos];
      if (c === 0x22) {
        pos++;
        return;
      }
      if (c < 0x20) fail("a control character inside a string");
      pos += c === 0x5c ? 2 : 1;
    }
    fail("an unterminated string");
  };
  // Moves past one value: a string, a bracketed value (matched by depth), or a bare token.
  const skipValue = () => {
    const c = bytes[pos];
    if (c === 0x22) return skipString();
    if (c === 0x7b || c === 0x5b) {
      let depth = 0;
      while (pos < n) {
        const d = bytes[pos];
        if (d === 0x22) {
          skipString();
          continue;
        }
        pos++;
        if (d === 0x7b || d === 0x5b) depth++;
        else if ((d === 0x7d || d === 0x5d) && --depth === 0) return;
      }
      return fail("an unterminated object or array");
    }
    const start = pos;
    while (pos < n) {
      const d = bytes[pos];
      if (d === 0x2c || d === 0x7d || d === 0x5d || isSpace(d)) break;
      pos++;
    }
    if (pos === start) fail("expected a value");
  };

  skipSpace();
  if (bytes[pos] !== 0x7b) fail('expected "{"');
  pos++;
  skipSpace();
  if (bytes[pos] === 0x7d) {
    pos++;
  } else {
    for (;;) {
      skipSpace();
      if (bytes[pos] !== 0x22) fail("expected a string key");
      const at = pos;
      skipString();
      const raw = decode(at, pos);
      let key: string;
      try {
        key = raw.includes("\\") ? JSON.parse(raw) : raw.slice(1, -1);
      } catch {
        pos = at;
        return fail("an invalid escape in the key");
      }
      skipSpace();
      if (bytes[pos] !== 0x3a) fail('expected ":" after a key');
      pos++;
      skipSpace();
      const start = pos;
      skipValue();
      const end = pos;
      yield { key, value: decode(start, end), at };
      skipSpace();
      const c = bytes[pos];
      pos++;
      if (c === 0x7d) break;
      if (c !== 0x2c) {
        pos--;
        fail('expected "," or "}"');
      }
    }
  }
  skipSpace();
  if (pos < n) fail("unexpected text after the object");
}
