/**
 * Does a readback wait only for the work submitted before it, or for everything submitted so
 * far? Decides how generation can overlap CPU encoding with GPU work. A block is R dispatches
 * of a 128 MiB copy kernel; the timings are wall clock.
 *
 *   deno run -A bench/readback_overlap.ts [--r 200]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu } from "../runtime/gpu_device.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import { type Dispatch, submitDispatches } from "../runtime/gpu_submit.ts";
import { readBuffers } from "../runtime/gpu_buffers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { r: { type: "string", default: "200" } },
  strict: true,
});
const R = Number(values.r);
const ctx = await getGpu();
// Within the smallest binding limit WebGPU guarantees (128 MiB).
const elements = 32 * 1024 * 1024;
const wgsl = `
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${65535 * 256}u;
  if (i < ${elements / 4}u) { dst[i] = src[i]; }
}`;
const kernel = { name: "copy_vec4", wgsl };
const pipeline = await new PipelineCache(ctx).get(kernel);
const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const src = ctx.device.createBuffer({ size: elements * 4, usage });
const dst = ctx.device.createBuffer({ size: elements * 4, usage });
const groups = Math.ceil(elements / 4 / 256);
const one: Dispatch = {
  kernel,
  pipeline,
  buffers: [src, dst],
  workgroups: [Math.min(groups, 65535), Math.ceil(groups / 65535), 1],
};
const block = Array.from({ length: R }, () => one);
const small = [{ buffer: dst, byteLength: 256 }];

async function timeIt<T>(f: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
}

// Warm up (clocks, pipelines).
for (let i = 0; i < 3; i++) {
  await submitDispatches(ctx, block);
  await readBuffers(ctx, small);
}
for (let round = 0; round < 3; round++) {
  const submitMs = await timeIt(() => submitDispatches(ctx, block));
  await readBuffers(ctx, small);
  // One block, then its readback.
  const alone = await timeIt(async () => {
    await submitDispatches(ctx, block);
    await readBuffers(ctx, small);
  });
  // Block 1, its readback queued, block 2 submitted, then wait for readback 1.
  const t0 = performance.now();
  await submitDispatches(ctx, block);
  const read1 = readBuffers(ctx, small);
  await submitDispatches(ctx, block);
  await read1;
  const firstRead = performance.now() - t0;
  await readBuffers(ctx, small);
  const both = performance.now() - t0;
  // Block 1 and its readback, then more blocks submitted (yielding to the event loop between
  // them) while the readback is pending: does it resolve before the queue drains?
  let resolvedAt = -1, blocksAtResolve = -1, submittedBlocks = 0;
  const t1 = performance.now();
  await submitDispatches(ctx, block);
  submittedBlocks++;
  const pending = readBuffers(ctx, small).then(() => {
    resolvedAt = performance.now() - t1;
    blocksAtResolve = submittedBlocks;
  });
  while (resolvedAt < 0 && submittedBlocks < 6) {
    await new Promise((r) => setTimeout(r, 0));
    await submitDispatches(ctx, block);
    submittedBlocks++;
  }
  await pending;
  await readBuffers(ctx, small);
  const allSix = performance.now() - t1;
  console.log(JSON.stringify({
    bench: "readback_overlap",
    keptSubmitting: {
      resolvedAtMs: resolvedAt,
      blocksSubmittedThen: blocksAtResolve,
      submittedBlocks,
      totalMs: allSix,
    },
    dispatchesPerBlock: R,
    submitMs,
    oneBlockThenReadMs: alone,
    readOfBlock1WithBlock2QueuedMs: firstRead,
    twoBlocksMs: both,
    // Near 1: the first read waited for both blocks; near oneBlockThenRead / twoBlocks: only
    // for its own (readBuffers requests its map before block 2 is submitted).
    firstReadOverTwoBlocks: firstRead / both,
  }));
}
src.destroy();
dst.destroy();
