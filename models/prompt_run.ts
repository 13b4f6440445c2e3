/**
 * The prompt pass of a resident language model: a prompt runs as chunks of power-of-two lengths
 * (prompt_chunks.ts), each continuing from the previous chunk's caches.
 *
 * @module
 */

import { type Dispatch, submitDispatches } from "../runtime/gpu_submit.ts";
import { type ChunkProgram, type Lane, MAX_CHUNK, type ModelPrograms } from "./model_programs.ts";
import { chunkLengths, idColumns } from "./prompt_chunks.ts";

/**
 * Runs a prompt's chunks, each continuing from the caches the previous one left in
 * `lane.ping` (zeroed first); returns the names of the kernels that ran. `afterChunk` is
 * called after each chunk's submit, before anything later is queued. Chunks of length 1
 * without a program of their own (generation) run the decode step, on ids written to
 * `lane.idsBuf`.
 */
export async function runPrompt(
  model: ModelPrograms,
  lane: Lane,
  ids: Int32Array,
  l: number,
  programs: Map<number, ChunkProgram>,
  afterChunk?: (chunk: ChunkProgram, start: number, length: number) => Promise<void>,
): Promise<string[]> {
  const device = model.ctx.device;
  const clear = device.createCommandEncoder({ label: "ssmkit prompt caches" });
  for (const buffer of Object.values(lane.ping)) clear.clearBuffer(buffer);
  device.queue.submit([clear.finish()]);
  const kernels: string[] = [];
  let start = 0;
  for (const c of chunkLengths(l, MAX_CHUNK)) {
    const columns = idColumns(ids, lane.b, l, start, c);
    const chunk = programs.get(c);
    let dispatches: readonly Dispatch[];
    if (chunk) {
      chunk.program.upload({ ids: columns });
      dispatches = chunk.program.dispatches;
    } else {
      device.queue.writeBuffer(lane.idsBuf, 0, columns);
      dispatches = (await model.decodePrograms(lane)).ping.dispatches;
    }
    await submitDispatches(model.ctx, [...dispatches], { label: "ssmkit prompt" });
    kernels.push(...dispatches.map((d) => d.kernel.name));
    // The chunk wrote its conv windows to pong: copy them back, so that every chunk (and
    // decode step 1) reads ping. In-place caches need nothing.
    const copy = device.createCommandEncoder({ label: "ssmkit prompt caches" });
    for (const [name, buffer] of Object.entries(lane.pong)) {
      if (buffer !== lane.ping[name]) {
        copy.copyBufferToBuffer(buffer, 0, lane.ping[name], 0, buffer.size);
      }
    }
    device.queue.submit([copy.finish()]);
    if (chunk) await afterChunk?.(chunk, start, c);
    start += c;
  }
  return kernels;
}
