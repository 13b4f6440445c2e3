// The fused scan kernel's tuning knobs (lanes, prefetch, math spelling, vector loads) all
// compute the same function as the float64 interpreter, including the awkward cases: state
// sizes that the lanes do not divide, reverse scans with init and final state, chunking,
// several state axes, B and C read at shifted (unaligned) state indices, and extreme inputs.
import assert from "node:assert/strict";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { einsum } from "../dsl/einsum.ts";
import { exp, neg } from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { checkSelectiveScan } from "./scan_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const INPUTS = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" } as const;

async function check(
  sizes: { b: number; l: number; d: number; n: number },
  strategy: ScanStrategy,
  opts: { reverse?: boolean; init?: boolean; wide?: boolean } = {},
): Promise<string> {
  return (await checkSelectiveScan(sizes, strategy, opts)).wgsl;
}

Deno.test("scan knobs: every lane count × prefetch × math × vector setting agrees", async () => {
  // n = 12: 1 lane holds 12 states (vec4 loads), 2 lanes 6 (vec2), 4 lanes 3 (no vectors),
  // 8 lanes 2 (vec2, and the last two lanes hold no state at all).
  const sizes = { b: 2, l: 37, d: 3, n: 12 };
  const settings: ScanStrategy[] = [
    { prefetch: "all", math: "fast", vector: true },
    { prefetch: "own", math: "exact", vector: false },
    { prefetch: "none", math: "prelude", vector: true },
    { prefetch: "own", math: "fast-exp2", vector: true },
    { prefetch: "all", math: "fast", vector: true, vectorIndex: "split" },
    { prefetch: "all", math: "fast", vector: true, prefetchDepth: 3, workgroup: 64 },
    { prefetch: "all", math: "fast", foldLog2e: true },
  ];
  for (const lanes of [1, 2, 4, 8]) {
    for (const [k, s] of settings.entries()) {
      await check(sizes, { lanes, ...s }, { reverse: k % 2 === 1, init: k !== 2 });
    }
  }
  // Not transposed, and chunked (local, carry and output passes all prefetch).
  await check(sizes, { lanes: 4, transpose: false, prefetch: "all" }, { init: true });
  await check({ ...sizes, l: 301 }, { lanes: 2, chunks: 5, prefetch: "all" }, {
    reverse: true,
    init: true,
  });
  // Deeper prefetch than the loop has blocks (3 blocks of 8 steps), and a chunked one.
  await check({ ...sizes, l: 19 }, { lanes: 8, prefetch: "own", prefetchDepth: 4 }, {
    init: true,
  });
  await check({ ...sizes, l: 301 }, { lanes: 4, chunks: 3, prefetchDepth: 2, workgroup: 32 }, {
    reverse: true,
  });
});

Deno.test("scan knobs: per-state loads late or staged in workgroup memory agree", async () => {
  // A workgroup holds 8 or 16 channels, which divide d = 16: B and C (indexed by b, not d)
  // are the same for the whole workgroup.
  const sizes = { b: 3, l: 45, d: 16, n: 16 };
  for (const lanes of [8, 4, 2]) {
    const staged = await check(sizes, {
      lanes,
      stateLoads: "staged",
      workgroup: lanes === 2 ? 32 : 64,
      prefetchDepth: 2,
    }, { reverse: lanes === 4, init: true });
    assert.match(staged, /var<workgroup> sk_stage/);
    // A load's channel part of its offset is computed once, before the step loop; the staged
    // per-state loads keep their own offsets.
    assert.match(staged, /let ib0: u32 = ch_b \* 720u \+ ch_d;[\s\S]*for \(var /);
    assert.match(staged, /\[ib0 \+ ta_0 \* 16u\]/);
    assert.match(staged, /sk_stage\[skc \+ /);
    await check(sizes, { lanes, stateLoads: "late" }, { init: lanes !== 2 });
  }
  // n = 12 over 8 lanes: lanes 6 and 7 hold no state (clamped indices); 3 chunks, reverse.
  await check({ b: 2, l: 61, d: 16, n: 12 }, {
    lanes: 8,
    stateLoads: "staged",
    workgroup: 128,
    chunks: 3,
  }, { reverse: true, init: true });
  // Not transposed (one step per iteration); scalar loads (no vectors).
  await check(sizes, { lanes: 4, transpose: false, stateLoads: "staged", workgroup: 32 });
  await check(sizes, { lanes: 8, vector: false, stateLoads: "staged", workgroup: 64 });
});

Deno.test("scan knobs: broadcast through workgroup memory, one block ahead, agrees", async () => {
  // Lengths that the 8/4/2-step blocks do not divide; with and without staged B and C; chunks
  // (all three passes); deeper prefetch (phase A then reads registers two blocks deep).
  const sizes = { b: 2, l: 45, d: 16, n: 16 };
  for (const lanes of [8, 4, 2]) {
    const wgsl = await check(sizes, { lanes, broadcast: "staged" }, {
      reverse: lanes === 4,
      init: true,
    });
    assert.match(wgsl, /var<workgroup> sk_ph: array<vec4<f32>/);
    assert.doesNotMatch(wgsl, /subgroupShuffle\(a\d+/, "no shuffles of phase-A values");
    await check(sizes, {
      lanes,
      broadcast: "staged",
      stateLoads: "staged",
      prefetchDepth: 2,
      workgroup: lanes === 2 ? 32 : 64,
    }, { reverse: lanes !== 4 });
  }
  await check({ b: 2, l: 301, d: 5, n: 12 }, { lanes: 4, chunks: 3, broadcast: "staged" }, {
    reverse: true,
    init: true,
  });
  // Step mode (l = 1) is not lane-transposed: the knob does not apply there.
  const step = await check({ b: 2, l: 1, d: 5, n: 16 }, { lanes: 8, broadcast: "staged" }, {
    init: true,
  });
  assert.doesNotMatch(step, /sk_ph/);
});

Deno.test("scan knobs: foldLog2e hoists A·log2 e and spells the decay with exp2", async () => {
  const sizes = { b: 2, l: 19, d: 5, n: 4 };
  for (const lanes of [1, 4]) {
    const wgsl = await check(sizes, { lanes, foldLog2e: true }, { reverse: true, init: true });
    assert.match(wgsl, /let (\w+)_log2e: f32 = \1 \* 1\.44269504;/);
    assert.match(wgsl, /exp2\(\w+ \* \w+_log2e\)/);
  }
  // Wide inputs: Δ up to 30, so Δ·A down to -60 (decays underflow towards 0).
  await check(sizes, { lanes: 4, foldLog2e: true }, { wide: true });
});

Deno.test("scan knobs: vector loads are used where the layout allows, not elsewhere", async () => {
  const sizes = { b: 2, l: 9, d: 3, n: 16 };
  assert.match(await check(sizes, { lanes: 4, vector: true }), /array<vec4<f32>>/);
  // The split index spelling divides strides, not the whole offset.
  const split = await check(sizes, { lanes: 4, vectorIndex: "split" }, { init: true });
  assert.match(split, /split index/);
  assert.doesNotMatch(split, /\) \/ 4u\]/);
  assert.match(await check(sizes, { lanes: 8, vector: true }), /array<vec2<f32>>/);
  assert.doesNotMatch(await check(sizes, { lanes: 4, vector: false }), /array<vec/);
  assert.match(await check(sizes, { lanes: 1, vector: true }), /array<vec4<f32>>/);
  // One state per lane: nothing to group.
  assert.doesNotMatch(await check({ ...sizes, n: 8 }, { lanes: 8 }), /array<vec/);
});

Deno.test("scan knobs: fast math matches at extreme softplus and silu arguments", async () => {
  for (const math of ["fast", "exact", "fast-exp2"] as const) {
    const wgsl = await check({ b: 1, l: 50, d: 4, n: 8 }, { lanes: 2, math }, {
      wide: true,
      init: true,
    });
    // The decay's exp goes through exp2 only when asked (beyond the helper's definition).
    const calls = wgsl.split("sk_exp(").length - 1 - (wgsl.includes("fn sk_exp(") ? 1 : 0);
    assert.equal(calls > 0, math === "fast-exp2", `${math}: ${calls} sk_exp calls`);
  }
});

// B and C at unaligned state offsets with prefetching: tests/scan_test.ts (sliced B and C).
Deno.test("scan knobs: several state axes", async () => {
  const seed = freshSeed();
  // State axes (p, n): lane slots run over both; u is read as vec2 groups along n, its index
  // spelled whole or split (an odd lane count of the p axis makes the split terms differ).
  for (
    const [lanes, vectorIndex] of [[1, "whole"], [2, "split"], [4, "whole"], [4, "split"]] as const
  ) {
    const prog = await compile(
      { a: "b l h", u: "b l h p n", C: "b l n", s0: "b h p n" },
      ({ a, u, C, s0 }) => {
        const h = scan("l", exp(neg(a)), u, { init: s0 });
        return { y: einsum("b l h p n, b l n -> b l h p", h, C), last: finalState(h) };
      },
      { b: 2, l: 11, h: 3, p: 3, n: 4 },
      { backend: "gpu", scan: { lanes, prefetch: "all", vectorIndex } },
    );
    const next = rng(seed + lanes);
    const data = {
      a: randomArray(2 * 11 * 3, next, 0, 1),
      u: randomArray(2 * 11 * 3 * 3 * 4, next),
      C: randomArray(2 * 11 * 4, next),
      s0: randomArray(2 * 3 * 3 * 4, next),
    };
    const got = await prog.run(data);
    const want = prog.interpret(data);
    const what = `p n lanes ${lanes} ${vectorIndex}`;
    assertClose(got.y, want.y, 1e-4, `${what} y (seed ${seed})`);
    assertClose(got.last, want.last, 1e-4, `${what} last (seed ${seed})`);
    prog.destroy();
  }
});

Deno.test("scan knobs: bad values are rejected with a message naming them", async () => {
  const bad = [
    [{ prefetch: "some" }, /prefetch must be "none", "own" or "all"/],
    [{ math: "quick" }, /math must be "prelude", "exact", "fast" or "fast-exp2"/],
    [{ vectorIndex: "halved" as never }, /vectorIndex must be "whole" or "split"/],
    [{ prefetchDepth: 5 }, /prefetchDepth must be 1, 2, 3 or 4, got 5/],
    [{ workgroup: 96 }, /workgroup must be 32, 64, 128 or 256 threads .* got 96/],
    [{ stateLoads: "cached" as never }, /stateLoads must be "early", "late" or "staged"/],
    [{ stateLoads: "staged", prefetch: "own" }, /stateLoads "staged" needs prefetch "all"/],
    [{ broadcast: "smem" as never }, /broadcast must be "shuffle" or "staged"/],
    [{ broadcast: "staged", prefetch: "none" }, /broadcast "staged" needs prefetch "all"/],
  ] as const;
  for (const [strategy, message] of bad) {
    await assert.rejects(
      () =>
        compile(INPUTS, (t) => selectiveScan(t).y, { b: 1, l: 3, d: 2, n: 4 }, {
          backend: "gpu",
          scan: strategy as unknown as ScanStrategy,
        }),
      message,
    );
  }
});
