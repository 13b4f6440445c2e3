// The generation ramp: how many decode steps each block holds (models/block_ramp.ts).
import assert from "node:assert/strict";
import { FIRST_BLOCK, MAP_FLOOR_MS, nextBlockSteps } from "../models/block_ramp.ts";
import { assertLegalRamp } from "./block_ramp_util.ts";

Deno.test("blocks start at 8 steps, double while encoding is cheap, then grow 1.5×", () => {
  assert.equal(nextBlockSteps(0, 0, 64, 1000), FIRST_BLOCK);
  const cheap = MAP_FLOOR_MS / 2 - 0.01, dear = MAP_FLOOR_MS / 2;
  assert.equal(nextBlockSteps(8, cheap, 64, 1000), 16);
  assert.equal(nextBlockSteps(8, dear, 64, 1000), 12);
  assert.equal(nextBlockSteps(27, dear, 64, 1000), 40); // floor(40.5)
  assert.equal(nextBlockSteps(1, dear, 64, 1000), 2); // at least one step more
  assert.equal(nextBlockSteps(2, dear, 64, 1000), 3);
});

Deno.test("blocks never pass the cap nor the steps left, and hold at least one step", () => {
  assert.equal(nextBlockSteps(0, 0, 3, 1000), 3);
  assert.equal(nextBlockSteps(48, 0, 64, 1000), 64);
  assert.equal(nextBlockSteps(64, 20, 64, 1000), 64);
  assert.equal(nextBlockSteps(16, 0, 64, 5), 5);
  assert.equal(nextBlockSteps(0, 0, 64, 2), 2);
  assert.equal(nextBlockSteps(5, 0, 1, 100), 1);
});

Deno.test("assertLegalRamp accepts the ramp's sequences and rejects others", () => {
  assertLegalRamp([8, 16, 32, 64, 64, 64, 52], 300, 64);
  assertLegalRamp([8, 16, 24, 36, 54, 64, 64, 34], 300, 64);
  assertLegalRamp([3], 3, 64);
  assert.throws(() => assertLegalRamp([8, 16, 33, 64], 121, 64), /block 2/);
  assert.throws(() => assertLegalRamp([8, 16, 32], 60, 64), /sum/);
  assert.throws(() => assertLegalRamp([16, 32], 48, 64), /block 0/);
});
