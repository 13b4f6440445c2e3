// Checks a sequence of generation blocks against the ramp's rule (models/block_ramp.ts), whose
// choice between doubling and 1.5× growth depends on how fast this machine encodes.
import assert from "node:assert/strict";
import { MAP_FLOOR_MS, nextBlockSteps } from "../models/block_ramp.ts";

/** Asserts that `blocks` (steps per block) is one of the ramps for `total` steps under `cap`. */
export function assertLegalRamp(blocks: readonly number[], total: number, cap: number): void {
  let done = 0;
  blocks.forEach((steps, i) => {
    const last = i === 0 ? 0 : blocks[i - 1];
    const options = [0, MAP_FLOOR_MS].map((ms) => nextBlockSteps(last, ms, cap, total - done));
    assert.ok(options.includes(steps), `block ${i}: ${steps} steps, expected one of ${options}`);
    done += steps;
  });
  assert.equal(done, total, `the blocks' sum ${done} is not ${total}: ${blocks}`);
}
