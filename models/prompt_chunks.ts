/**
 * How a prompt of any length runs on a bounded set of compiled programs: it is split into chunks
 * whose lengths are the binary digits of its length (powers of two, largest first), lengths above
 * a cap being repeats of the cap. Each chunk runs the model's cached forward, continuing from the
 * conv windows and SSM states the previous chunk left, so the result is exact (no padding, no
 * masking) and at most log2(cap) + 1 chunk programs exist per batch size.
 *
 * @module
 */

/**
 * The chunk lengths of a prompt of `length` tokens, in the order they run: `cap` repeated
 * ⌊length / cap⌋ times, then the binary digits of the rest, largest first. `cap` must be a power
 * of two. Example: `chunkLengths(2100, 1024)` is [1024, 1024, 32, 16, 4].
 */
export function chunkLengths(length: number, cap: number): number[] {
  if (!Number.isInteger(cap) || cap < 1 || (cap & (cap - 1)) !== 0) {
    throw new Error(`chunkLengths: cap must be a power of two, got ${cap}`);
  }
  if (!Number.isInteger(length) || length < 1) {
    throw new Error(`chunkLengths: length must be a positive integer, got ${length}`);
  }
  const chunks: number[] = new Array(Math.floor(length / cap)).fill(cap);
  const rest = length % cap;
  for (let c = cap / 2; c >= 1; c /= 2) if (rest & c) chunks.push(c);
  return chunks;
}

/** Columns [start, start + width) of a row-major `rows` × `length` array of ids. */
export function idColumns(
  ids: Int32Array,
  rows: number,
  length: number,
  start: number,
  width: number,
): Int32Array<ArrayBuffer> {
  const out = new Int32Array(rows * width);
  for (let r = 0; r < rows; r++) {
    out.set(ids.subarray(r * length + start, r * length + start + width), r * width);
  }
  return out;
}
