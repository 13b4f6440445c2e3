// The single-pass associative scan (decoupled look-back with fallback) against the float64
// interpreter: awkward lengths (1, 37, many tiles and a ragged tail), several channels, both
// directions, one- to four-component combines, the look-back reading published words, the
// fallback recomputing every predecessor (lookbackSpins 0), the two mixed (some tiles withholding
// their words), and repeated runs (the tile counter and word tags flip between runs; nothing is
// cleared).
import assert from "node:assert/strict";
import { associativeScan, cummax, cumsum, logcumsumexp } from "../dsl/assoc_scan.ts";
import { add, maximum, mul } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import type { AssocScanStrategy } from "../codegen/assoc_scan_kernel.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";
import { matmul2 } from "./assoc_cases.ts";

type Rec = Record<string, Tensor>;

// Tiles of 4 × 3 = 12 steps (lavapipe's subgroups are 8 wide: a partial subgroup), of 40 × 2
// (several subgroups, the look-back window of 32 threads), and 8 × 5 unstaged.
const SMALL: AssocScanStrategy = { mode: "chunked", workgroup: 4, perThread: 3, singlePass: true };
const WIDE: AssocScanStrategy = { mode: "chunked", workgroup: 40, perThread: 2, singlePass: true };
const UNSTAGED: AssocScanStrategy = {
  mode: "chunked",
  workgroup: 8,
  perThread: 5,
  stage: false,
  tileScan: "workgroup",
  singlePass: true,
};
const LOOKBACK = [SMALL, WIDE, UNSTAGED];
const FALLBACK = LOOKBACK.map((s) => ({ ...s, lookbackSpins: 0 }));
// Some tiles publish nothing, some only their aggregate: look-backs fold aggregates across
// windows and recompute the silent tiles between them (the mixed path of a real GPU).
const WITHHELD: AssocScanStrategy[] = [
  { ...SMALL, lookbackWithhold: 3, lookbackSpins: 2 },
  { ...WIDE, lookbackWithhold: 2, lookbackSpins: 1 },
];

/**
 * Runs `fn` `runs` times on fresh inputs against the interpreter, with the single-pass kernel
 * asked for (it is opt-in); checks there is one kernel per output, single-pass where the axis
 * spans several tiles.
 */
async function check(
  what: string,
  inputs: Record<string, string>,
  fn: (t: Rec) => Rec,
  sizes: Record<string, number>,
  strategy: AssocScanStrategy,
  range: [number, number] = [-1, 1],
  runs = 1,
) {
  const seed = freshSeed();
  const prog = await compile(inputs, fn, sizes, {
    backend: "gpu",
    assocScan: { singlePass: true, ...strategy },
  });
  const context = `${what} ${JSON.stringify(sizes)} ${JSON.stringify(strategy)} seed ${seed}`;
  const names = prog.kernels.map((k) => k.name);
  assert.equal(names.length, Object.keys(prog.graph.outputs).length, `${context}: ${names}`);
  const tile = (strategy.workgroup ?? 256) * (strategy.perThread ?? 8);
  const suffix = sizes.l > tile ? /_single_pass$/ : /_outputs$/;
  for (const name of names) assert.match(name, suffix, context);
  const next = rng(seed);
  for (let r = 0; r < runs; r++) {
    const data: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) {
      data[inp.name] = randomArray(inp.shape.reduce((p, s) => p * s, 1), next, ...range);
    }
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of Object.keys(want)) {
      assertClose(got[k], want[k], 1e-4, `${context} run ${r}: ${k}`);
    }
  }
  prog.destroy();
}

Deno.test("single pass: asked for, over several tiles, is one kernel", async () => {
  const prog = await compile({ x: "b l" }, ({ x }) => cummax(x, "l"), { b: 2, l: 37 }, {
    backend: "gpu",
    assocScan: { mode: "chunked", workgroup: 4, perThread: 3, singlePass: true },
  });
  assert.deepEqual(prog.kernels.map((k) => k.name), ["k0_assocScan_bl_single_pass"]);
  assert.match(prog.kernels[0].wgsl, /single pass \(decoupled look-back with fallback\)/);
  prog.destroy();
});

Deno.test("single pass: awkward lengths, channels and both directions", async () => {
  const layouts: [string, Record<string, number>][] = [
    ["l", { l: 1 }],
    ["l", { l: 37 }],
    // Many tiles (a look-back longer than the window) and a ragged tail.
    ["l", { l: 1001 }],
    ["b l", { b: 3, l: 37 }],
    // The scan axis outermost: channels interleaved in memory.
    ["l b", { l: 53, b: 5 }],
  ];
  for (const strategy of [...LOOKBACK, ...FALLBACK, ...WITHHELD]) {
    for (const [axes, sizes] of layouts) {
      // The fallback recomputes every predecessor (quadratic): short axes, two layouts.
      if (strategy.lookbackSpins === 0 && (sizes.l > 100 || axes === "l")) continue;
      for (const reverse of [false, true]) {
        await check(
          `cumsum/cummax ${axes} reverse=${reverse}`,
          { x: axes },
          (t) => ({ out: add(cummax(t.x, "l", { reverse }), mul(t.x, 0.5)) }),
          sizes,
          strategy,
        );
      }
    }
  }
  // Without the linear-scan route: cumsum itself on a long one-channel axis (default tiles).
  await check("cumsum", { x: "l" }, (t) => ({ out: cumsum(t.x, "l") }), { l: 70001 }, {
    singlePass: true,
  });
});

Deno.test("single pass: multi-component combines ((max, +), 2×2 products, logcumsumexp)", async () => {
  const maxPlus = (a: Rec, b: Rec) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) });
  // (max, +) under every strategy; logcumsumexp and 2×2 products under two (look-back with
  // subgroup tile scans; fallback with 40-thread workgroups), to keep lavapipe's compiles short.
  for (const strategy of [...LOOKBACK, ...FALLBACK]) {
    for (const reverse of [false, true]) {
      await check(
        `(max, +) reverse=${reverse}`,
        { s: "b l", m: "b l" },
        (t) => ({ m: associativeScan("l", maxPlus, { s: t.s, m: t.m }, { reverse }).m }),
        { b: 2, l: 61 },
        strategy,
      );
      if (strategy !== SMALL && strategy !== FALLBACK[1]) continue;
      await check(
        `logcumsumexp reverse=${reverse}`,
        { x: "l" },
        (t) => ({ out: logcumsumexp(t.x, "l", { reverse }) }),
        { l: 77 },
        strategy,
        [-4, 4],
      );
      // Four components, four kernels: the costliest to compile on lavapipe.
      await check(
        `2×2 products reverse=${reverse}`,
        { a: "l b", b: "l b", c: "l b", d: "l b" },
        (t) => associativeScan("l", matmul2 as never, t, { reverse }),
        { l: 41, b: 2 },
        strategy,
        [-0.8, 0.8],
      );
    }
  }
});

Deno.test("single pass: repeated runs flip the counter and tags; nothing is cleared", async () => {
  for (const strategy of [SMALL, FALLBACK[0], WITHHELD[0]]) {
    await check(
      "2×2 products, 5 runs",
      { a: "l", b: "l", c: "l", d: "l" },
      (t) => associativeScan("l", matmul2 as never, t),
      { l: 97 },
      strategy,
      [-0.8, 0.8],
      5,
    );
  }
});

Deno.test("single pass: default tiles, a thousand in all, three runs", async () => {
  // 2 × (2^19 + 123) steps of a non-commutative (max, +) pair: 513 tiles of 256 × 4 (two
  // components: 4 per thread) per channel, so on a GPU many workgroups look back at once
  // (lavapipe runs them in turn).
  const maxPlus = (a: Rec, b: Rec) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) });
  await check(
    "(max, +), default tiles",
    { s: "b l", m: "b l" },
    (t) => ({ m: associativeScan("l", maxPlus, { s: mul(t.s, 0.01), m: t.m }).m }),
    { b: 2, l: 2 ** 19 + 123 },
    {},
    [-1, 1],
    3,
  );
});

Deno.test("single pass: a bad lookbackSpins is one clear error", async () => {
  await assert.rejects(
    () =>
      compile({ x: "l" }, ({ x }) => cummax(x, "l"), { l: 50 }, {
        backend: "gpu",
        assocScan: { ...SMALL, lookbackSpins: -1 },
      }),
    /lookbackSpins must be a whole number ≥ 0, got -1/,
  );
});

Deno.test("single pass over chunks of tiles: lengths, directions, combines, fallback, runs", async () => {
  // Chunks of 2 and 3 tiles (the last chunk ragged), built-in (commutative fold) and user
  // (tile loop) combines, the look-back reading words, recomputing stalled chunks, and both
  // mixed; repeated runs flip the counter and tags.
  const chunked = [
    { ...SMALL, lookbackChunkTiles: 2 },
    { ...WIDE, lookbackChunkTiles: 3 },
    { ...UNSTAGED, lookbackChunkTiles: 2 },
  ];
  const stalled = [
    { ...chunked[0], lookbackSpins: 0 },
    { ...chunked[1], lookbackWithhold: 3, lookbackSpins: 1 },
  ];
  const maxPlus = (a: Rec, b: Rec) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) });
  for (const strategy of [...chunked, ...stalled]) {
    for (const reverse of [false, true]) {
      const layouts: Record<string, number>[] = [{ l: 13 }, { l: 211 }, { b: 3, l: 61 }];
      for (const sizes of layouts) {
        if (strategy.lookbackSpins === 0 && sizes.l > 100) continue;
        const axes = "b" in sizes ? "b l" : "l";
        await check(
          `chunked cummax ${axes} reverse=${reverse}`,
          { x: axes },
          (t) => ({ out: add(cummax(t.x, "l", { reverse }), mul(t.x, 0.5)) }),
          sizes,
          strategy,
        );
      }
      await check(
        `chunked (max, +) reverse=${reverse}`,
        { s: "b l", m: "b l" },
        (t) => ({ m: associativeScan("l", maxPlus, { s: t.s, m: t.m }, { reverse }).m }),
        { b: 2, l: 97 },
        strategy,
        [-1, 1],
        strategy === chunked[0] ? 3 : 1,
      );
    }
  }
  const prog = await compile({ x: "l" }, ({ x }) => cummax(x, "l"), { l: 50 }, {
    backend: "gpu",
    assocScan: chunked[0],
  });
  assert.match(prog.kernels[0].wgsl, /single pass over chunks of 2 tiles/);
  prog.destroy();
  await assert.rejects(
    () =>
      compile({ x: "l" }, ({ x }) => cummax(x, "l"), { l: 50 }, {
        backend: "gpu",
        assocScan: { ...SMALL, lookbackChunkTiles: 0 },
      }),
    /lookbackChunkTiles must be a whole number ≥ 1, got 0/,
  );
});
