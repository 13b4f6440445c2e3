/**
 * How many decode steps generation puts in its next block, from the last block's size and the
 * CPU time it took to encode.
 *
 * Why it matters (bench/RESULTS.md, 2026-12-08): block k + 2 is encoded while block k + 1 runs,
 * and a block's readback settles at least {@link MAP_FLOOR_MS} after the GPU finishes it (how
 * Deno maps a buffer). While a block's encoding is short against that floor, the floor bounds
 * each block's cycle, so doubling costs nothing and amortizes it sooner. Once encoding a block
 * takes a sizeable part of the floor, a block twice the running one takes longer to encode than
 * the GPU takes to run it (encoding costs 0.5–0.9 of a step's GPU time at the 130M shapes), and
 * the GPU waits; so growth slows to 1.5×. A model of the schedule with the H100's measured step
 * and encode times found this ramp as fast as or faster than pure doubling, and than 1.5× from
 * the start, for every shape from a toy model to 1.4B, over 128 and 1,024 tokens.
 *
 * @module
 */

/** Steps of the first block: the first tokens arrive early. */
export const FIRST_BLOCK = 8;

/** The least time, in ms, from a block's completion on the GPU to its tokens on the CPU in Deno. */
export const MAP_FLOOR_MS = 10;

/**
 * The next block's steps after a block of `last` steps (0 before any) whose encoding took
 * `lastEncodeMs`: 8 first, then double while encoding a block took under half the map floor,
 * else grow 1.5× (at least one step); never more than `cap` nor the `left` steps still to run.
 */
export function nextBlockSteps(
  last: number,
  lastEncodeMs: number,
  cap: number,
  left: number,
): number {
  const grown = last === 0
    ? FIRST_BLOCK
    : lastEncodeMs < MAP_FLOOR_MS / 2
    ? 2 * last
    : Math.max(last + 1, Math.floor(1.5 * last));
  return Math.max(1, Math.min(grown, cap, left));
}
