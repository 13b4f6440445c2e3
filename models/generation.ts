/**
 * Generation on a resident language model: the prompt pass, then many decode steps and their
 * sampling encoded in one submit, with tokens read back in blocks while the next block runs.
 *
 * @module
 */

import type { GpuContext } from "../runtime/gpu_device.ts";
import { platform } from "../platform/current.ts";
import { readBuffers } from "../runtime/gpu_buffers.ts";
import {
  type Dispatch,
  type EncodedDispatches,
  encodeDispatches,
  submitEncoded,
} from "../runtime/gpu_submit.ts";
import { nextBlockSteps } from "./block_ramp.ts";
import { encodeSamplerParams, type SamplingOptions, STATE_WORDS } from "./sampler.ts";
import { type ModelPrograms, STORAGE } from "./model_programs.ts";
import { runPrompt } from "./prompt_run.ts";
import { checkTokens, describe, eosIds, nonFiniteStepError } from "./model_call_checks.ts";

/**
 * Steps per block at most, by default. Each block costs a readback (its map resolves about
 * 11–12 ms after it is requested in Deno) while the GPU lives on the next block alone, and
 * encoding a step costs the CPU about as much as the GPU's step (0.24–0.52 ms against
 * 0.46–0.62 ms for the 130M shapes on an H100, 2026-12-07). Blocks grow from 8 steps
 * (models/block_ramp.ts): a block four times the last (tried, up to 128) took longer to encode
 * than the GPU took to run the last, which then idled (45 ms in a 256-token call), and 128-token
 * calls ran 5–18% slower than with 32-step blocks (bench/RESULTS.md). Doubling to 64 ran
 * 1,578–1,644 tok/s over 1,024 tokens there; the four-fold ramp to 128, 1,532. A row's end
 * token is seen up to a block late, so larger blocks waste more.
 */
const DEFAULT_BLOCK = 64;

/** Options of {@link LanguageModel.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens per row, at most (see {@link maxNewTokens} for the device's limit). */
  maxNew: number;
  /**
   * Stop a row at this token, or at any token of a list (default: the config's eos_token_id,
   * one id or a list); -1 or [] never stops early.
   */
  eos?: number | readonly number[];
  /** Called with each block of new tokens per row, as blocks arrive. */
  onTokens?: (tokens: number[][]) => void;
  /**
   * Largest number of decode steps per submit (default 64). Blocks start at 8 steps, so text
   * starts streaming early, and grow up to this size: they double while a block takes the CPU
   * under 5 ms to encode, then grow 1.5× (so block sizes depend on the CPU's speed; the tokens
   * do not).
   */
  blockSize?: number;
}

/**
 * The most new tokens per row {@link LanguageModel.generate} accepts for `batch` rows on `ctx`'s
 * device: its token buffer (4 bytes per token) must fit one storage binding, and be indexed in
 * 32 bits.
 */
export function maxNewTokens(ctx: GpuContext, batch = 1): number {
  const limits = ctx.limits;
  const bytes = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  return Math.min(Math.floor(bytes / (4 * batch)), Math.floor((2 ** 32 - 1) / batch));
}

/** Whether SSMKIT_TRACE_GENERATE=1 is set and readable (never prompts for permission). */
function traceRequested(): boolean {
  const variable = "SSMKIT_TRACE_GENERATE";
  return platform.envFlag(variable);
}

/**
 * Generates up to `options.maxNew` tokens after each prompt row on `model` (see
 * {@link LanguageModel.generate}); returns the new tokens per row. `onPrefill` gets the names
 * of the prompt pass's kernels once it has run.
 */
export async function generateTokens(
  model: ModelPrograms,
  prompts: number[][],
  options: GenerateOptions,
  onPrefill: (kernels: string[]) => void,
): Promise<number[][]> {
  const { b, l, ids } = checkTokens(prompts, model.definition.vocab);
  if (options === null || typeof options !== "object") {
    throw new Error(`generate options must be an object, got ${describe(options)}`);
  }
  const maxNew = options.maxNew;
  if (!Number.isInteger(maxNew) || maxNew < 1) {
    throw new Error(`maxNew must be a positive integer, got ${describe(maxNew)}`);
  }
  const limit = maxNewTokens(model.ctx, b);
  if (maxNew > limit) {
    throw new Error(
      `maxNew ${maxNew} is too large for this device: at most ${limit} new tokens per row ` +
        `for a batch of ${b} (the token buffer must fit one storage binding)`,
    );
  }
  const block = options.blockSize ?? DEFAULT_BLOCK;
  if (!Number.isInteger(block) || block < 1) {
    throw new Error(`blockSize must be a positive integer, got ${describe(block)}`);
  }
  const eos = eosIds(options.eos, model.definition.vocab, model.definition.eosTokenIds);
  const params = encodeSamplerParams(options, maxNew);
  const ctx = model.ctx;
  const device = ctx.device;
  const vocab = model.definition.vocab;
  const lane = model.lane(b);
  const [decode, chunks] = await Promise.all([
    model.decodePrograms(lane),
    model.chunkPrograms(lane, "last", l),
  ]);
  const tokensBuf = device.createBuffer({ size: Math.max(16, 4 * b * maxNew), usage: STORAGE });
  try {
    const sample = await model.samplerDispatch(lane, tokensBuf);
    device.queue.writeBuffer(lane.paramsBuf, 0, params as Uint32Array<ArrayBuffer>);
    device.queue.writeBuffer(lane.stateBuf, 0, new Uint32Array(b * STATE_WORDS));
    onPrefill(await runPrompt(model, lane, ids, l, chunks));
    const result: number[][] = Array.from({ length: b }, () => []);
    const done = new Array(b).fill(false);
    let submitted = 0;
    let lastCount = 0;
    let lastEncodeMs = 0;
    // SSMKIT_TRACE_GENERATE=1 prints when each block was encoded, submitted, requested and read
    // back (stderr).
    const trace = traceRequested() ? [] as string[] : undefined;
    const t0 = performance.now();
    const at = () => (performance.now() - t0).toFixed(1);
    /** A block of steps, encoded, and where its tokens lie. */
    interface Block {
      first: number;
      count: number;
      encoded: EncodedDispatches;
    }
    // Encodes the next block of steps (without submitting it). Blocks grow from 8 steps: the
    // first tokens arrive early, and later blocks amortize each readback.
    const encodeBlock = async (): Promise<Block> => {
      const first = submitted;
      const count = nextBlockSteps(lastCount, lastEncodeMs, block, maxNew - first);
      const started = performance.now();
      lastCount = count;
      submitted += count;
      const dispatches: Dispatch[] = [];
      for (let k = 0; k < count; k++) {
        const step = first + k;
        // Step 0 samples the prompt's logits; decode steps alternate between the two
        // conv-cache buffer sets (the prompt left its caches in ping).
        if (step > 0) dispatches.push(...(step % 2 === 1 ? decode.ping : decode.pong).dispatches);
        dispatches.push(sample);
      }
      trace?.push(`encode ${first}+${count} at ${at()}`);
      const encoded = await encodeDispatches(ctx, dispatches, "ssmkit generate");
      lastEncodeMs = performance.now() - started;
      trace?.push(`encoded at ${at()}`);
      return { first, count, encoded };
    };
    // A block's tokens, and every row's sampler state (which records non-finite logits).
    const readBlock = (blk: Block) =>
      readBuffers(ctx, [
        ...Array.from({ length: b }, (_, row) => ({
          buffer: tokensBuf,
          byteOffset: 4 * (row * maxNew + blk.first),
          byteLength: 4 * blk.count,
        })),
        { buffer: lane.stateBuf, byteLength: 4 * b * STATE_WORDS },
      ]);
    // Software pipelining, shaped by how Deno's WebGPU maps a buffer (bench/RESULTS.md): the
    // `mapAsync` call first waits, blocking, until all work submitted so far is done, then
    // settles its promise at least 10 ms later while the thread is free. So, while the GPU runs
    // block k with block k + 1 encoded: request block k's map (it waits for block k alone),
    // submit block k + 1 at once, encode block k + 2 while the map settles, then read block k.
    // The GPU idles only between a map's wait and the next submit. Blocks in flight or encoded
    // when every row has stopped are discarded.
    const more = () => submitted < maxNew;
    const submit = async (blk: Block) => {
      await submitEncoded(ctx, blk.encoded);
      trace?.push(`submit ${blk.first}+${blk.count} at ${at()}`);
    };
    let current: Block | undefined = await encodeBlock();
    await submit(current);
    let next: Block | undefined = more() ? await encodeBlock() : undefined;
    while (current) {
      trace?.push(`request ${current.first}+${current.count} at ${at()}`);
      const read = readBlock(current);
      let after: Block | undefined;
      try {
        if (next) await submit(next);
        after = next && more() ? await encodeBlock() : undefined;
      } catch (e) {
        read.catch(() => {});
        throw e;
      }
      const raw = await read;
      trace?.push(`read ${current.first}+${current.count} at ${at()}`);
      const arrived: number[][] = raw.slice(0, b).map((a, row) => {
        const kept: number[] = [];
        for (const t of new Int32Array(a)) {
          if (done[row]) break;
          kept.push(t);
          if (eos.has(t)) done[row] = true;
        }
        return kept;
      });
      const accepted = arrived.map((toks, row) => result[row].length + toks.length);
      const bad = nonFiniteStepError(new Uint32Array(raw[b]), accepted, vocab);
      if (bad) throw bad;
      arrived.forEach((toks, row) => result[row].push(...toks));
      options.onTokens?.(arrived);
      if (done.every((d) => d)) break;
      current = next;
      next = after;
    }
    if (trace) console.error(`ssmkit generate trace (ms): ${trace.join("; ")}; end ${at()}`);
    return result;
  } finally {
    tokensBuf.destroy();
  }
}
