// The on-GPU token sampler (models/sampler.ts) on the real adapter (lavapipe in CI): greedy is
// argmax, sampled tokens equal the CPU reference, the CPU reference follows HF's temperature /
// top-k / top-p semantics (checked against an independent float64 oracle), frequencies follow
// the distribution, counters stop at maxSteps, batches fold over the workgroup grid, and bad
// options and sizes fail with clear errors.
import assert from "node:assert/strict";
import {
  emitSamplerKernel,
  encodeSamplerParams,
  PARAM_WORDS,
  philox4x32,
  sampleOnCpu,
  sampleOnCpuDetailed,
  type SamplerKernel,
  type SamplingOptions,
  STATE_WORDS,
} from "../models/sampler.ts";
import { getGpu, type GpuContext, hasGpu, NoAdapterError } from "../runtime/gpu_device.ts";
import { readBuffers, uploadArray } from "../runtime/gpu_buffers.ts";
import { PipelineCache } from "../runtime/gpu_pipelines.ts";
import { submitDispatches } from "../runtime/gpu_submit.ts";
import { freshSeed, rng } from "./util.ts";

const available = await hasGpu();
const gpuOpts = { ignore: !available };

Deno.test({
  name: "sampler: a WebGPU adapter exists (set SSMKIT_ALLOW_NO_GPU=1 to run without one)",
  ignore: available || Deno.env.get("SSMKIT_ALLOW_NO_GPU") === "1",
  fn() {
    throw new NoAdapterError("the sampler GPU tests need an adapter");
  },
});

const seed = freshSeed();
console.log(`sampler_test seed ${seed}`);
const next = rng(seed);
const randInt = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
const F32_MAX = 3.4028234663852886e38;

/** Random logits in [-spread, spread] with a few -inf, NaN, +inf-free ties (duplicated values). */
function awkwardLogits(n: number, spread = 3, holes = 0.03): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * next() - 1) * spread;
  for (let i = 0; i < n; i++) {
    const r = next();
    if (r < holes) x[i] = -Infinity;
    else if (r < holes * 1.3) x[i] = NaN;
    else if (r < holes * 2) x[i] = x[randInt(0, n - 1)]; // a tie
  }
  return x;
}

/** Independent argmax: NaN and -inf skipped, lowest index on ties (-0 equals +0), 0 if none. */
function argmax(x: Float32Array): number {
  let best = -1;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (Number.isNaN(v) || v === -Infinity) continue;
    if (best < 0 || v > x[best]) best = i;
  }
  return Math.max(best, 0);
}

interface OracleResult {
  /** Every token the exact (float64) procedure could pick when sums are off by `slack`. */
  candidates: Set<number>;
  /** Possible sizes of the kept set. */
  keptSizes: Set<number>;
  /** Tokens outside the largest possible kept set (must never be sampled). */
  excluded: (i: number) => boolean;
  /** Exact probabilities over the (unambiguous) kept set, for frequency tests. */
  probs: Map<number, number>;
}

/**
 * HF semantics in float64, written from the definitions (sorts, not the kernel's search):
 * logits / T, keep the values ≥ the k-th largest, then keep each value whose strictly more
 * probable mass is < p (so the smallest set reaching p, ties kept, at least one), then the
 * inverse CDF in index order at u = draw / 2²⁴. Decisions within `slack` (relative to the mass)
 * of tipping are taken both ways.
 */
function oracle(x: Float32Array, o: SamplingOptions, draw: number, slack: number): OracleResult {
  const valid: number[] = [];
  const val = (i: number) => Math.min(x[i], F32_MAX);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isNaN(x[i]) && x[i] !== -Infinity) valid.push(i);
  }
  const T = o.temperature ?? 0;
  if (T === 0 || valid.length === 0) {
    const t = argmax(x);
    return {
      candidates: new Set([t]),
      keptSizes: new Set([1]),
      excluded: (i) => i !== t,
      probs: new Map([[t, 1]]),
    };
  }
  const invT = Number.isFinite(Math.fround(1 / T)) ? Math.fround(1 / T) : F32_MAX;
  const m = Math.max(...valid.map(val));
  const w = (i: number) => {
    const z = (val(i) - m) * invT;
    return z >= -87 ? Math.exp(z) : 0;
  };
  let kept = valid;
  const k = o.topK ?? 0;
  if (k > 0 && k < valid.length) {
    const kth = valid.map(val).sort((a, b) => b - a)[k - 1];
    kept = valid.filter((i) => val(i) >= kth);
  }
  // Nested candidate kept sets, from the surest (fewest tokens) to the most generous.
  let keptSets = [kept];
  const p = Math.fround(Math.max(o.topP ?? 1, 1e-30));
  if (p < 1) {
    const S = kept.reduce((s, i) => s + w(i), 0);
    const massOf = new Map<number, number>(); // weight of each distinct value
    for (const i of kept) massOf.set(val(i), (massOf.get(val(i)) ?? 0) + w(i));
    const levels = [...massOf.keys()].sort((a, b) => b - a);
    let above = 0, sure = 0, maybe = 0;
    for (const v of levels) {
      if (sure === 0 || above < (p - slack) * S) sure++;
      else if (above < (p + slack) * S) maybe++;
      else break;
      above += massOf.get(v)!;
    }
    keptSets = [];
    for (let j = 0; j <= maybe; j++) {
      const floor = levels[sure + j - 1];
      keptSets.push(kept.filter((i) => val(i) >= floor));
    }
  }
  const candidates = new Set<number>();
  for (const set of keptSets) {
    const S = set.reduce((s, i) => s + w(i), 0);
    const aim = (draw / 2 ** 24) * S;
    let before = 0;
    for (const i of set) {
      const after = before + w(i);
      if (w(i) > 0 && before - slack * S <= aim && aim < after + slack * S) candidates.add(i);
      before = after;
    }
  }
  const widest = new Set(keptSets[keptSets.length - 1]);
  const S0 = keptSets[0].reduce((s, i) => s + w(i), 0);
  return {
    candidates,
    keptSizes: new Set(keptSets.map((s) => s.length)),
    excluded: (i) => !widest.has(i),
    probs: new Map(keptSets[0].map((i) => [i, w(i) / S0])),
  };
}

// ---------------------------------------------------------------------------------------------
// Host-side checks (no GPU)

Deno.test("sampler: bad options fail with errors that name the option", () => {
  const bad: [SamplingOptions, RegExp][] = [
    [{ temperature: -0.5 }, /temperature must be a finite number ≥ 0.*-0\.5/],
    [{ temperature: NaN }, /temperature .*NaN/],
    [{ temperature: Infinity }, /temperature .*Infinity/],
    [{ temperature: "1" as unknown as number }, /temperature .*string "1"/],
    [{ topK: -1 }, /topK must be an integer ≥ 0.*-1/],
    [{ topK: 2.5 }, /topK .*2\.5/],
    [{ topK: 2 ** 33 }, /topK/],
    [{ topP: 0 }, /topP must be a number with 0 < topP ≤ 1.*got 0/],
    [{ topP: 1.5 }, /topP .*1\.5/],
    [{ topP: NaN }, /topP .*NaN/],
    [{ topP: -0.2 }, /topP .*-0\.2/],
    [{ seed: 1.5 }, /seed must be a safe integer.*1\.5/],
    [{ seed: 2 ** 60 }, /seed must be a safe integer/],
    [{ seed: NaN }, /seed .*NaN/],
  ];
  for (const [o, re] of bad) {
    assert.throws(() => encodeSamplerParams(o, 1), re, JSON.stringify(o));
    assert.throws(() => sampleOnCpu(new Float32Array(4), o, 0, 0), re);
  }
  assert.throws(
    () => encodeSamplerParams(null as unknown as SamplingOptions, 1),
    /must be an object/,
  );
  for (const steps of [0, 1.5, 2 ** 32, NaN]) {
    assert.throws(() => encodeSamplerParams({}, steps), /maxSteps must be an integer/);
  }
  assert.throws(() => sampleOnCpu(new Float32Array(0), {}, 0, 0), /1\.\.\d+ logits, got 0/);
  assert.throws(() => sampleOnCpu(new Float32Array(3), {}, -1, 0), /step must be an integer/);
  assert.throws(() => sampleOnCpu(new Float32Array(3), {}, 0, 0.5), /row must be an integer/);
  assert.throws(
    () => sampleOnCpu([1, 2] as unknown as Float32Array, {}, 0, 0),
    /logits must be a Float32Array/,
  );
});

Deno.test("sampler: params encode the options (defaults, 1/T, seed words, extra fields)", () => {
  const d = encodeSamplerParams({}, 5);
  assert.equal(d.length, PARAM_WORDS);
  assert.deepEqual(Array.from(d), [0, 0, 0, 0x3f800000, 0, 0, 0, 5]); // greedy, top-p off, 5 steps
  const o = encodeSamplerParams(
    { temperature: 0.5, topK: 40, topP: 0.9, seed: -3, maxNew: 9 } as SamplingOptions,
    0xffffffff,
  );
  assert.equal(o[7], 0xffffffff);
  const f = new Float32Array(o.buffer);
  assert.deepEqual([o[0], f[1], o[2], f[3], o[4]], [1, 2, 40, Math.fround(0.9), 1]);
  assert.deepEqual([o[5], o[6]], [0xfffffffd, 0xffffffff]); // -3 as 64-bit two's complement
  const big = encodeSamplerParams({ seed: 2 ** 40 + 7 }, 1);
  assert.deepEqual([big[5], big[6]], [7, 256]);
  // A temperature whose 1/T overflows f32 still samples (as the largest finite 1/T).
  const tiny = new Float32Array(encodeSamplerParams({ temperature: 1e-45 }, 1).buffer);
  assert.equal(tiny[1], F32_MAX);
});

Deno.test("sampler: emitSamplerKernel validates sizes and device limits", () => {
  const limits = {
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupsPerDimension: 65535,
    maxComputeWorkgroupStorageSize: 16384,
  };
  assert.deepEqual(emitSamplerKernel(3, 1000, limits).workgroups, [3, 1, 1]);
  assert.throws(() => emitSamplerKernel(0, 1000, limits), /batch must be an integer.*got 0/);
  assert.throws(() => emitSamplerKernel(1, 2 ** 24, limits), /vocab must be an integer/);
  assert.throws(() => emitSamplerKernel(1, 10.5, limits), /vocab .*10\.5/);
  assert.throws(() => emitSamplerKernel(2 ** 10, 2 ** 23, limits), /exceed u32 indexing/);
  assert.throws(
    () => emitSamplerKernel(1, 10, { ...limits, maxComputeInvocationsPerWorkgroup: 128 }),
    /maxComputeInvocationsPerWorkgroup ≥ 256, got 128/,
  );
  assert.throws(
    () => emitSamplerKernel(1, 10, { ...limits, maxComputeWorkgroupStorageSize: 8192 }),
    /maxComputeWorkgroupStorageSize ≥ \d+, got 8192/,
  );
  assert.throws(
    () => emitSamplerKernel(1, 10, { ...limits, maxComputeWorkgroupSizeX: 64 }),
    /maxComputeWorkgroupSizeX ≥ 256, got 64/,
  );
  assert.throws(
    () => emitSamplerKernel(1, 10, {} as typeof limits),
    /maxComputeInvocationsPerWorkgroup ≥ 256, got none/,
  );
  const folded = { ...limits, maxComputeWorkgroupsPerDimension: 3 };
  assert.deepEqual(emitSamplerKernel(7, 10, folded).workgroups, [3, 3, 1]);
  assert.throws(() => emitSamplerKernel(10, 10, folded), /batch 10 needs 3 × 4 workgroups/);
});

Deno.test("sampler: Philox4x32-10 matches the Random123 known-answer vectors", () => {
  const hex = (a: number[]) => a.map((v) => v.toString(16).padStart(8, "0")).join(" ");
  assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  const ones = 0xffffffff;
  assert.equal(
    hex(philox4x32([ones, ones, ones, ones], [ones, ones])),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});

/** Random options covering every mode; temperatures from tiny to hot. */
function randomOptions(vocab: number): SamplingOptions {
  const o: SamplingOptions = { seed: randInt(-(2 ** 40), 2 ** 40) };
  const r = next();
  o.temperature = r < 0.1 ? 1e-30 : r < 0.2 ? 0 : 0.3 + 2 * next();
  if (next() < 0.5) o.topK = next() < 0.2 ? randInt(1, 3) : randInt(1, Math.max(1, vocab));
  if (next() < 0.5) o.topP = next() < 0.15 ? 1e-9 : 0.05 + 0.95 * next();
  return o;
}

Deno.test("sampler: the CPU reference follows HF's semantics (float64 oracle)", () => {
  let checked = 0, ambiguous = 0;
  for (let c = 0; c < 150; c++) {
    const V = randInt(1, 700);
    const x = awkwardLogits(V, next() < 0.3 ? 20 : 3);
    const o = randomOptions(V);
    const step = randInt(0, 5000), row = randInt(0, 63);
    const got = sampleOnCpuDetailed(x, o, step, row);
    const words = encodeSamplerParams(o, 1);
    assert.equal(got.draw, philox4x32([step, row, 0, 0], [words[5], words[6]])[0] >>> 8);
    const want = oracle(x, o, got.draw, 2e-5);
    const what = `case ${c}: V ${V} ${JSON.stringify(o)} step ${step} row ${row}`;
    assert.ok(
      want.candidates.has(got.token),
      `${what}: token ${got.token} not among ${[...want.candidates]}`,
    );
    assert.ok(want.keptSizes.has(got.kept), `${what}: kept ${got.kept} of ${[...want.keptSizes]}`);
    if (want.candidates.size > 1) ambiguous++;
    checked++;
  }
  // The oracle must decide most cases, or the test says little.
  assert.ok(ambiguous <= checked / 5, `${ambiguous} of ${checked} cases were ambiguous`);
});

// ---------------------------------------------------------------------------------------------
// GPU

let gpu: { ctx: GpuContext; pipelines: PipelineCache } | undefined;
async function device() {
  if (!gpu) {
    const ctx = await getGpu();
    gpu = { ctx, pipelines: new PipelineCache(ctx) };
  }
  return gpu;
}

interface SamplerRun {
  state: Uint32Array;
  ids: Int32Array;
  tokens: Int32Array;
}

/**
 * Runs `kernel` `dispatches` times in one submit (as generation does) and reads everything back.
 * `tokensLength` may exceed batch · maxSteps: the excess is a canary filled with -7.
 */
async function runSampler(
  kernel: SamplerKernel,
  logits: Float32Array,
  o: SamplingOptions,
  dispatches: number,
  init: {
    batch: number;
    maxSteps: number;
    state?: Uint32Array;
    ids?: Int32Array;
    tokensLength: number;
  },
): Promise<SamplerRun> {
  const { ctx, pipelines } = await device();
  const pipeline = await pipelines.get(kernel);
  const batch = init.batch;
  const buffers = [
    uploadArray(ctx, logits),
    uploadArray(ctx, encodeSamplerParams(o, init.maxSteps)),
    uploadArray(ctx, init.state ?? new Uint32Array(batch * STATE_WORDS)),
    uploadArray(ctx, init.ids ?? new Int32Array(batch).fill(-1)),
    uploadArray(ctx, new Int32Array(init.tokensLength).fill(-7)),
  ];
  try {
    const d = { kernel, pipeline, buffers, workgroups: kernel.workgroups };
    await submitDispatches(ctx, Array.from({ length: dispatches }, () => d));
    const [state, ids, tokens] = await readBuffers(ctx, [
      { buffer: buffers[2], byteLength: 4 * batch * STATE_WORDS },
      { buffer: buffers[3], byteLength: 4 * batch },
      { buffer: buffers[4], byteLength: 4 * init.tokensLength },
    ]);
    return {
      state: new Uint32Array(state),
      ids: new Int32Array(ids),
      tokens: new Int32Array(tokens),
    };
  } finally {
    for (const b of buffers) b.destroy();
  }
}

Deno.test({
  name: "sampler: greedy picks the argmax (lowest index on ties, -inf/NaN skipped, +inf wins)",
  ...gpuOpts,
  async fn() {
    const { ctx } = await device();
    for (const [B, V, S] of [[4, 1000, 3], [2, 50280, 2]]) {
      const rows = Array.from({ length: B }, () => awkwardLogits(V));
      // Row 1: a tie for the maximum, -0 tied with +0 in a row of negatives (V=1000 only).
      const a = randInt(0, V - 2), b = randInt(a + 1, V - 1);
      rows[1][a] = rows[1][b] = 50;
      if (B > 2) {
        rows[2].fill(-1);
        rows[2][b] = 0;
        rows[2][a] = -0;
        // Row 3: no valid logit but one +inf (the winner) after the first valid maximum.
        rows[3].fill(-Infinity);
        rows[3][a] = 1;
        rows[3][b] = Infinity;
      }
      const logits = new Float32Array(B * V);
      rows.forEach((r, i) => logits.set(r, i * V));
      const kernel = emitSamplerKernel(B, V, ctx.limits as never);
      const got = await runSampler(kernel, logits, { topK: 3, topP: 0.5 }, S + 1, {
        batch: B,
        maxSteps: S,
        tokensLength: B * S,
      });
      const want = rows.map(argmax);
      if (B > 2) assert.deepEqual([want[1], want[2], want[3]], [a, a, b]);
      for (let r = 0; r < B; r++) {
        const toks = Array.from(got.tokens.subarray(r * S, (r + 1) * S));
        assert.deepEqual(toks, new Array(S).fill(want[r]), `V ${V} row ${r}`);
        assert.equal(got.ids[r], want[r], `ids[${r}] feeds the next step`);
        assert.deepEqual(Array.from(got.state.subarray(r * STATE_WORDS, r * STATE_WORDS + 3)), [
          S,
          want[r],
          1,
        ]);
        assert.equal(sampleOnCpu(rows[r], {}, 0, r), want[r]);
      }
    }
    // A row of only -inf and NaN gives token 0.
    const kernel = emitSamplerKernel(1, 300, ctx.limits as never);
    const dead = new Float32Array(300).fill(-Infinity);
    dead[7] = NaN;
    for (const o of [{}, { temperature: 1 }]) {
      const got = await runSampler(kernel, dead, o, 1, { batch: 1, maxSteps: 1, tokensLength: 1 });
      assert.equal(got.tokens[0], 0);
      assert.equal(sampleOnCpu(dead, o, 0, 0), 0);
    }
  },
});

/**
 * Samples `steps` tokens for each of `rows` on the GPU and checks each against the CPU reference
 * (equal, unless the reference itself was within rounding of a boundary) and, when `exact`, the
 * float64 oracle. Returns how many tokens differed from the reference.
 */
async function checkAgainstCpu(
  rows: Float32Array[],
  o: SamplingOptions,
  steps: number,
  exact: boolean,
): Promise<{ samples: number; differ: number }> {
  const { ctx } = await device();
  const B = rows.length, V = rows[0].length;
  const logits = new Float32Array(B * V);
  rows.forEach((r, i) => logits.set(r, i * V));
  const kernel = emitSamplerKernel(B, V, ctx.limits as never);
  const got = await runSampler(kernel, logits, o, steps, {
    batch: B,
    maxSteps: steps,
    tokensLength: B * steps,
  });
  let differ = 0;
  for (let r = 0; r < B; r++) {
    for (let s = 0; s < steps; s++) {
      const gpuToken = got.tokens[r * steps + s];
      const cpu = sampleOnCpuDetailed(rows[r], o, s, r);
      const what = `V ${V} ${JSON.stringify(o)} row ${r} step ${s}`;
      if (s === steps - 1) {
        const st = got.state.subarray(r * STATE_WORDS, (r + 1) * STATE_WORDS);
        assert.equal(st[0], steps, `${what}: counter`);
        assert.equal(st[1], gpuToken, `${what}: last token`);
        assert.equal(st[3], cpu.draw, `${what}: the GPU's random draw equals the CPU's`);
        if (cpu.thresholdMargin >= 0.02) assert.equal(st[2], cpu.kept, `${what}: kept`);
        assert.equal(got.ids[r], gpuToken, `${what}: ids`);
      }
      if (gpuToken !== cpu.token) {
        differ++;
        assert.ok(
          cpu.positionMargin < 0.02 || cpu.thresholdMargin < 0.02,
          `${what}: GPU ${gpuToken} ≠ CPU ${cpu.token} though the CPU's choice was clear ` +
            `(margins ${cpu.positionMargin}, ${cpu.thresholdMargin})`,
        );
      }
      const want = oracle(rows[r], o, cpu.draw, exact ? 2e-5 : 1e-3);
      assert.ok(!want.excluded(gpuToken), `${what}: GPU token ${gpuToken} is excluded`);
      if (exact) {
        assert.ok(
          want.candidates.has(gpuToken),
          `${what}: GPU token ${gpuToken} not among ${[...want.candidates]}`,
        );
      }
    }
  }
  return { samples: B * steps, differ };
}

Deno.test({
  name: "sampler: sampled tokens equal the CPU reference (vocab 1000 and 777, many options)",
  ...gpuOpts,
  async fn() {
    const options: SamplingOptions[] = [
      { temperature: 1 },
      { temperature: 0.6, topK: 7 },
      { temperature: 1.5, topP: 0.8 },
      { temperature: 0.9, topK: 60, topP: 0.7 },
      { temperature: 1e-30 },
      { temperature: 3, topK: 1 },
      { temperature: 1, topP: 1e-9 },
      { temperature: 0.25, topK: 900, topP: 0.97 },
    ];
    let samples = 0, differ = 0;
    for (const V of [1000, 777]) {
      for (const base of options) {
        const o = { ...base, seed: randInt(-(2 ** 40), 2 ** 40) };
        const rows = Array.from({ length: 3 }, () => awkwardLogits(V, next() < 0.5 ? 3 : 10));
        const r = await checkAgainstCpu(rows, o, 6, true);
        samples += r.samples;
        differ += r.differ;
      }
    }
    console.log(`  ${differ} of ${samples} GPU tokens differed from the CPU reference`);
    assert.ok(differ <= samples / 100, `${differ} of ${samples} differ`);
  },
});

Deno.test({
  name: "sampler: vocab 50280 (top-k + top-p and plain temperature) matches the CPU reference",
  ...gpuOpts,
  async fn() {
    let samples = 0, differ = 0;
    for (const o of [{ temperature: 0.8, topK: 50, topP: 0.9 }, { temperature: 1, topP: 0.95 }]) {
      const rows = Array.from({ length: 2 }, () => awkwardLogits(50280, 8, 0.01));
      const r = await checkAgainstCpu(rows, { ...o, seed: randInt(0, 2 ** 31) }, 3, false);
      samples += r.samples;
      differ += r.differ;
    }
    assert.ok(differ <= 1, `${differ} of ${samples} differ`);
  },
});

Deno.test({
  name: "sampler: tiny temperature or +inf logits sample only the maximum (uniform among ties)",
  ...gpuOpts,
  async fn() {
    const V = 513;
    const x = awkwardLogits(V);
    const a = randInt(0, V - 1), b = (a + randInt(1, V - 1)) % V;
    x[a] = x[b] = 9;
    const { ctx } = await device();
    const kernel = emitSamplerKernel(8, V, ctx.limits as never);
    const logits = new Float32Array(8 * V);
    for (let r = 0; r < 8; r++) logits.set(x, r * V);
    const o = { temperature: 1e-20, seed: 5 };
    const got = await runSampler(kernel, logits, o, 8, { batch: 8, maxSteps: 8, tokensLength: 64 });
    const seen = new Set(got.tokens);
    assert.deepEqual([...seen].sort((p, q) => p - q), [a, b].sort((p, q) => p - q));
    for (let r = 0; r < 8; r++) {
      for (let s = 0; s < 8; s++) assert.equal(got.tokens[r * 8 + s], sampleOnCpu(x, o, s, r));
    }
    // Two +inf logits at any temperature: both are the (clamped) maximum, nothing else counts.
    x[a] = x[b] = Infinity;
    for (let r = 0; r < 8; r++) logits.set(x, r * V);
    const hot = { temperature: 2, seed: 6 };
    const inf = await runSampler(kernel, logits, hot, 8, {
      batch: 8,
      maxSteps: 8,
      tokensLength: 64,
    });
    assert.deepEqual([...new Set(inf.tokens)].sort((p, q) => p - q), [a, b].sort((p, q) => p - q));
    for (let r = 0; r < 8; r++) {
      for (let s = 0; s < 8; s++) assert.equal(inf.tokens[r * 8 + s], sampleOnCpu(x, hot, s, r));
    }
  },
});

/** χ² of `counts` (total n) against `probs`; fails if any count falls outside `probs`. */
function chiSquare(counts: Map<number, number>, probs: Map<number, number>, n: number): number {
  let chi = 0;
  for (const t of counts.keys()) assert.ok(probs.has(t), `token ${t} has probability 0`);
  for (const [t, p] of probs) chi += ((counts.get(t) ?? 0) - n * p) ** 2 / (n * p);
  return chi;
}

Deno.test({
  name: "sampler: frequencies over many steps follow the distribution (χ², fixed seeds)",
  ...gpuOpts,
  async fn() {
    // Fixed logits and seeds: the draws are deterministic, so this cannot flake.
    const fixed = rng(20240607);
    const V = 23, B = 40, S = 100;
    const x = new Float32Array(V).map(() => 2.5 * (2 * fixed() - 1));
    x[4] = -Infinity;
    x[9] = x[3];
    const { ctx } = await device();
    const kernel = emitSamplerKernel(B, V, ctx.limits as never);
    const logits = new Float32Array(B * V);
    for (let r = 0; r < B; r++) logits.set(x, r * V);
    const cases: [SamplingOptions, number][] = [
      [{ temperature: 0.8, seed: 7 }, 21], // all valid tokens: 22 categories
      [{ temperature: 1.3, topK: 10, topP: 0.8, seed: 11 }, 0],
      [{ temperature: 2, topK: 6, seed: 12345 }, 5],
    ];
    for (const [o, df] of cases) {
      const got = await runSampler(kernel, logits, o, S, {
        batch: B,
        maxSteps: S,
        tokensLength: B * S,
      });
      const want = oracle(x, o, 0, 1e-9);
      assert.equal(want.keptSizes.size, 1, "the kept set is unambiguous");
      const counts = new Map<number, number>();
      for (const t of got.tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
      const n = B * S;
      const chi = chiSquare(counts, want.probs, n);
      const k = want.probs.size - 1;
      if (df > 0) assert.equal(k, df);
      // Mean k, sd √(2k): far out in the tail, yet far below what a wrong distribution gives.
      const bound = k + 6 * Math.sqrt(2 * k) + 10;
      console.log(`  ${JSON.stringify(o)}: χ² ${chi.toFixed(1)} with ${k} degrees of freedom`);
      assert.ok(chi < bound, `${JSON.stringify(o)}: χ² ${chi.toFixed(1)} ≥ ${bound.toFixed(1)}`);
      // Sensitivity: the same counts against the untruncated softmax are rejected when top-k/p cut.
      if (o.topK || o.topP) {
        const full = oracle(x, { temperature: o.temperature }, 0, 1e-9).probs;
        let chiFull = 0;
        for (const [t, p] of full) chiFull += ((counts.get(t) ?? 0) - n * p) ** 2 / (n * p);
        assert.ok(chiFull > 5 * bound, `the χ² test cannot tell ${JSON.stringify(o)} from none`);
      }
    }
  },
});

Deno.test({
  name: "sampler: counters advance per dispatch and stop at maxSteps without writing past it",
  ...gpuOpts,
  async fn() {
    const { ctx } = await device();
    const B = 3, V = 301, S = 5;
    const rows = Array.from({ length: B }, () => awkwardLogits(V));
    const logits = new Float32Array(B * V);
    rows.forEach((r, i) => logits.set(r, i * V));
    const kernel = emitSamplerKernel(B, V, ctx.limits as never);
    const state = new Uint32Array(B * STATE_WORDS);
    state[1 * STATE_WORDS] = 3; // row 1 resumes at step 3
    state[2 * STATE_WORDS] = S; // row 2 is already full
    const o = { temperature: 1, topK: 20, seed: randInt(0, 1000) };
    const canary = 16;
    const got = await runSampler(kernel, logits, o, S + 3, {
      batch: B,
      maxSteps: S,
      state,
      ids: Int32Array.from([-1, -2, -3]),
      tokensLength: B * S + canary,
    });
    assert.deepEqual([0, 1, 2].map((r) => got.state[r * STATE_WORDS]), [S, S, S]);
    const expect = (r: number, s: number) => sampleOnCpu(rows[r], o, s, r);
    for (let s = 0; s < S; s++) assert.equal(got.tokens[s], expect(0, s), `row 0 step ${s}`);
    for (let s = 0; s < S; s++) {
      assert.equal(got.tokens[S + s], s < 3 ? -7 : expect(1, s), `row 1 step ${s}`);
      assert.equal(got.tokens[2 * S + s], -7, `row 2 step ${s} (full) untouched`);
    }
    assert.deepEqual(Array.from(got.tokens.subarray(B * S)), new Array(canary).fill(-7));
    assert.deepEqual(Array.from(got.ids), [got.tokens[S - 1], got.tokens[2 * S - 1], -3]);
  },
});

Deno.test({
  name: "sampler: the first step whose logits hold NaN or ±inf is recorded with their count",
  ...gpuOpts,
  async fn() {
    const { ctx } = await device();
    const B = 4, V = 777, S = 6, W = STATE_WORDS;
    const rows = Array.from({ length: B }, () => Float32Array.from({ length: V }, () => next()));
    // Row 0 is finite; row 1 has one NaN; row 2 has +inf, -inf and NaN; row 3 is all NaN.
    const spots = Array.from({ length: V }, (_, i) => i).sort(() => next() - 0.5).slice(0, 3);
    rows[1][spots[0]] = NaN;
    [rows[2][spots[0]], rows[2][spots[1]], rows[2][spots[2]]] = [Infinity, -Infinity, NaN];
    rows[3].fill(NaN);
    const logits = new Float32Array(B * V);
    rows.forEach((r, i) => logits.set(r, i * V));
    const state = new Uint32Array(B * W);
    state[2 * W] = 2; // row 2 resumes at step 2
    [state[3 * W + 4], state[3 * W + 5]] = [2, 99]; // row 3 was flagged at step 1 already
    const o = { temperature: 1, seed: randInt(0, 1000) };
    const kernel = emitSamplerKernel(B, V, ctx.limits as never);
    const got = await runSampler(kernel, logits, o, S, {
      batch: B,
      maxSteps: S,
      state,
      tokensLength: B * S,
    });
    const flags = [0, 1, 2, 3].map((r) => [got.state[r * W + 4], got.state[r * W + 5]]);
    assert.deepEqual(flags, [[0, 0], [1, 1], [3, 3], [2, 99]]);
    assert.deepEqual(rows.map((r) => sampleOnCpuDetailed(r, o, 0, 0).nonFinite), [0, 1, 3, V]);
    // Flagged rows still get tokens, as the CPU reference chooses them (all NaN: token 0).
    for (let s = 0; s < S; s++) {
      const cpu = sampleOnCpuDetailed(rows[1], o, s, 1);
      if (cpu.positionMargin > 0.02) assert.equal(got.tokens[S + s], cpu.token, `row 1 step ${s}`);
      assert.equal(got.tokens[3 * S + s], 0, `row 3 step ${s}`);
    }
  },
});

Deno.test({
  name: "sampler: a batch folded over a small workgroup grid samples every row",
  ...gpuOpts,
  async fn() {
    const { ctx } = await device();
    const B = 7, V = 270, S = 2;
    const limits = { ...(ctx.limits as never as Record<string, number>) };
    limits.maxComputeWorkgroupsPerDimension = 3;
    const kernel = emitSamplerKernel(B, V, limits as never);
    assert.deepEqual(kernel.workgroups, [3, 3, 1]);
    const rows = Array.from({ length: B }, () => awkwardLogits(V));
    const logits = new Float32Array(B * V);
    rows.forEach((r, i) => logits.set(r, i * V));
    const o = { temperature: 0.7, topP: 0.9, seed: randInt(0, 99) };
    const got = await runSampler(kernel, logits, o, S, {
      batch: B,
      maxSteps: S,
      tokensLength: B * S,
    });
    for (let r = 0; r < B; r++) {
      for (let s = 0; s < S; s++) {
        const cpu = sampleOnCpuDetailed(rows[r], o, s, r);
        if (cpu.positionMargin > 0.02 && cpu.thresholdMargin >= 0.02) {
          assert.equal(got.tokens[r * S + s], cpu.token, `row ${r} step ${s}`);
        }
      }
    }
  },
});
