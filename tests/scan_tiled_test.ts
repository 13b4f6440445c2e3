// The workgroup-tiled scan kernel (ScanStrategy.tileSteps) computes the same function as the
// float64 interpreter: partial last tiles, channel counts the workgroup does not divide,
// state sizes the lanes do not divide, reverse scans with init and final state, several
// contracted outputs, and its refusals.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS, type DeviceLimits } from "../codegen/limits.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { einsum } from "../dsl/einsum.ts";
import { exp, softplus } from "../dsl/elementwise.ts";
import { scan } from "../dsl/scan.ts";
import { trace } from "../dsl/trace.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { checkSelectiveScan } from "./scan_check.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

async function check(
  sizes: { b: number; l: number; d: number; n: number },
  strategy: ScanStrategy,
  opts: { reverse?: boolean; init?: boolean } = {},
): Promise<string> {
  const { wgsl, kernels } = await checkSelectiveScan(sizes, strategy, opts);
  assert.equal(kernels, 1, `${JSON.stringify(sizes)} ${JSON.stringify(strategy)}: one kernel`);
  return wgsl;
}

Deno.test("tiled scan: agrees with the interpreter on awkward sizes, both directions", async () => {
  // l = 37: the last 16-step tile is partial; d = 5 with 16 channels per workgroup: most
  // threads of the workgroup hold no channel.
  const wgsl = await check({ b: 2, l: 37, d: 5, n: 16 }, {
    tileSteps: 16,
    unroll: 4,
    tileReduce: "workgroup",
  });
  assert.match(
    wgsl,
    /tiled: 16 channels × 4 lane\(s\) per workgroup, 16-step tiles \(4 × 4 steps\)/,
  );
  assert.match(wgsl, /lane sums in workgroup memory/);
  assert.doesNotMatch(wgsl, /subgroup/, "no subgroup operations");
  // Δ and Δ·x of a (step, channel) are packed in one vec2.
  assert.match(wgsl, /var<workgroup> sk_sd: array<array<vec2<f32>, 16>, 16>/);
  assert.match(wgsl, /workgroupBarrier/);
  // d = 5 leaves threads without a channel and l = 37 a partial tile: the epilogue is guarded.
  assert.match(wgsl, /if \(ivalid && livea0\) \{/);
  // An item's channel part of its offset is computed once, before the tile loop.
  assert.match(wgsl, /let ib0: u32 = ich_b \* 185u \+ ich_d;[\s\S]*for \(var k/);
  assert.match(wgsl, /\[ib0 \+ /);
  await check({ b: 2, l: 37, d: 5, n: 16 }, { tileSteps: 16, tileReduce: "workgroup" }, {
    reverse: true,
    init: true,
  });
  // The same with B and C staged (16 channels per workgroup, one batch each), with the tile
  // loop (next tile filled after the epilogue) and straight-line (filled at the top).
  await check({ b: 2, l: 37, d: 16, n: 16 }, { tileSteps: 16 }, { reverse: true, init: true });
  await check({ b: 2, l: 37, d: 16, n: 16 }, { tileSteps: 16, unroll: 16 }, {
    reverse: true,
    init: true,
  });
  // One step, a tile longer than the sequence.
  await check({ b: 1, l: 1, d: 3, n: 16 }, { tileSteps: 8 }, { init: true });
});

Deno.test("tiled scan: lane sums by subgroup shuffles", async () => {
  // The same awkward sizes with the lanes' parts summed by a butterfly of shuffles after each
  // step body: a partial last tile, idle threads, both directions, init and final state.
  const wgsl = await check({ b: 2, l: 37, d: 5, n: 16 }, { tileSteps: 16, unroll: 8 }, {
    reverse: true,
    init: true,
  });
  assert.match(wgsl, /lane sums by shuffles/);
  // Two rounds for 4 lanes (masks 2 then 1), each halving the 8 steps a lane holds; a lane
  // writes its 2 finished sums, and the epilogue reads one value per item.
  assert.equal(wgsl.match(/subgroupShuffleXor\([^;]*, 2u\)/g)?.length, 4);
  assert.equal(wgsl.match(/subgroupShuffleXor\([^;]*, 1u\)/g)?.length, 2);
  assert.match(wgsl, /sk_yp\[1u \+ sgu \+ j \* 2u\]\[cl\] = /);
  assert.match(wgsl, /let y0_0: f32 = sk_yp\[0u \+ ts0\]\[cs\];/);
  // 16 channels, rows padded to 20 columns: a warp's stores (8 channels × 4 lanes, lanes two
  // rows apart) hit 32 different banks.
  assert.match(wgsl, /var<workgroup> sk_yp: array<array<f32, 20>, 17>;/);
  // Lanes from one to eight, straight-line and looped tiles, staged and per-lane B/C.
  const sizes = { b: 3, l: 29, d: 8, n: 12 };
  for (
    const s of [
      { tileSteps: 8, lanes: 1, workgroup: 32 }, // one lane: its sums are final, no shuffle
      { tileSteps: 8, lanes: 2, workgroup: 32, unroll: 2 }, // one sum per lane and body
      { tileSteps: 16, lanes: 8, workgroup: 64, unroll: 16 }, // three rounds, straight-line
      { tileSteps: 12, lanes: 4, workgroup: 64, unroll: 4 },
    ] satisfies ScanStrategy[]
  ) {
    const w = await check(sizes, { ...s, tileReduce: "shuffle" }, { reverse: s.lanes === 2 });
    assert.equal(
      (w.match(/subgroupShuffleXor/g) ?? []).length,
      s.unroll ? s.unroll - s.unroll / s.lanes : 0,
      `${JSON.stringify(s)}: U − U / lanes shuffles per body`,
    );
  }
});

Deno.test("tiled scan: the narrow scans' default shape (32-step tiles, 16-step bodies)", async () => {
  // Three tiles, the last partial (l = 70), and a last workgroup with idle threads (80 channels
  // in workgroups of 32): both directions, with init and final state.
  for (const reverse of [false, true]) {
    const wgsl = await check(
      { b: 2, l: 70, d: 40, n: 16 },
      { tileSteps: 32, workgroup: 128, unroll: 16 },
      { reverse, init: reverse },
    );
    assert.match(wgsl, /32-step tiles \(2 × 16 steps\)/);
    assert.match(wgsl, /lane sums by shuffles/);
  }
});

Deno.test("tiled scan: two contracted outputs, both lane reductions", async () => {
  // One state read by two contractions (with C and with B): each output has its own rows of
  // lane sums and its own epilogue.
  const sizes = { b: 2, l: 21, d: 6, n: 8 };
  for (const tileReduce of ["shuffle", "workgroup"] as const) {
    const seed = freshSeed();
    const prog = await compile(
      { x: "b l d", dt: "b l d", B: "b l n", C: "b l n", A: "d n" },
      (t) => {
        const delta = softplus(t.dt);
        const h = scan(
          "l",
          exp(einsum("b l d, d n -> b l d n", delta, t.A)),
          einsum("b l d, b l n, b l d -> b l d n", delta, t.B, t.x),
        );
        return {
          yC: einsum("b l d n, b l n -> b l d", h, t.C),
          yB: einsum("b l d n, b l n -> b l d", h, t.B),
        };
      },
      sizes,
      { backend: "gpu", scan: { tileSteps: 8, lanes: 4, workgroup: 32, tileReduce } },
    );
    assert.equal(prog.kernels.length, 1);
    assert.match(
      prog.kernels[0].wgsl,
      new RegExp(
        `tiled: .*lane sums ${tileReduce === "shuffle" ? "by shuffles" : "in workgroup memory"}`,
      ),
    );
    const inputs = randomInputs(prog.graph, rng(seed)) as Record<string, Float32Array>;
    inputs.A = inputs.A.map((a) => -Math.abs(a));
    const got = await prog.run(inputs), want = prog.interpret(inputs);
    for (const k of ["yC", "yB"] as const) {
      assertClose(got[k], want[k], 1e-4, `${tileReduce} ${k} seed ${seed}`);
    }
    prog.destroy();
  }
});

Deno.test("tiled scan: lanes, tile lengths, workgroups and vector widths", async () => {
  // d = 8: workgroups of 8 channels lie in one batch (B, C staged); wider ones straddle
  // batches (each lane reads B, C itself). n = 12 does not divide among 8 lanes.
  const sizes = { b: 3, l: 29, d: 8, n: 12 };
  const settings: [ScanStrategy, boolean][] = [
    [{ tileSteps: 8, lanes: 4, workgroup: 32 }, true], // 3 states per lane: scalar
    [{ tileSteps: 8, lanes: 2, workgroup: 32 }, false], // 6 states per lane: vec2
    [{ tileSteps: 4, lanes: 1, workgroup: 32 }, false], // 12 states in one lane: vec4
    [{ tileSteps: 16, lanes: 8, workgroup: 64, unroll: 16 }, true], // 2 states per lane, two idle
    [{ tileSteps: 12, lanes: 4, workgroup: 32, unroll: 3 }, true], // a loop of 4 × 3 steps
    [{ tileSteps: 8, lanes: 2, workgroup: 32, unroll: 1 }, false], // a rolled loop of 1 step
    [{ tileSteps: 8, lanes: 4, workgroup: 32, prefetchDepth: 2 }, true], // items 2 tiles ahead
    [{ tileSteps: 8, lanes: 4, workgroup: 32, unroll: 8, prefetchDepth: 3 }, true], // 3 of 4
    [{ tileSteps: 8, lanes: 4, workgroup: 32, vector: false, foldLog2e: false }, true],
    [{ tileSteps: 12, lanes: 4, workgroup: 32, vectorIndex: "whole", math: "prelude" }, true],
  ];
  for (const [s, staged] of settings) {
    const wgsl = await check(sizes, s, { reverse: s.lanes !== 8, init: s.lanes !== 4 });
    assert.equal(/sk_stage/.test(wgsl), staged, `${JSON.stringify(s)}: staged B/C`);
  }
});

Deno.test("tiled scan: B and C are staged when the workgroup's channels share them", async () => {
  // d = 16 with 16 channels per workgroup: each workgroup lies in one batch, B and C staged.
  const shared = await check({ b: 3, l: 20, d: 16, n: 16 }, { tileSteps: 8 });
  assert.match(shared, /, 16 staged load\(s\)/);
  // B and C each in an array of their own (rows of one step, one column per lane).
  assert.match(shared, /var<workgroup> sk_stage0: array<array<vec4<f32>, 4>, 8>;/);
  assert.match(shared, /var<workgroup> sk_stage1: array<array<vec4<f32>, 4>, 8>;/);
  // d = 24: a workgroup of 16 channels straddles two batches; each lane reads B and C itself.
  const own = await check({ b: 2, l: 20, d: 24, n: 16 }, { tileSteps: 8 });
  assert.match(own, /, 0 staged load\(s\)/);
  assert.doesNotMatch(own, /sk_stage/);
});

Deno.test("tiled scan: bad knobs are rejected with a message naming them", async () => {
  const sizes = { b: 1, l: 10, d: 4, n: 16 };
  for (
    const [strategy, message] of [
      [{ tileSteps: 6 }, /tileSteps must be a multiple of the 4 lanes between 4 and 64, got 6/],
      [{ tileSteps: 128 }, /tileSteps must be a multiple of the 4 lanes between 4 and 64/],
      [{ tileSteps: 8, lanes: 3 }, /tiled lanes must be a power of two, got 3/],
      [{ tileSteps: 8, workgroup: 48 }, /tiled workgroup must be 32, 64, 128 or 256 threads/],
      [{ tileSteps: 8, chunks: 2 }, /tileSteps runs one pass; chunks must be 1, got 2/],
      [{ tileSteps: 16, unroll: 5 }, /tiled unroll .* must divide tileSteps 16, got 5/],
      [
        { tileSteps: 12, unroll: 6, tileReduce: "shuffle" },
        /tileReduce "shuffle" needs .* an unroll that is a multiple of them \(got 6\)/,
      ],
      [{ tileSteps: 8, tileReduce: "both" as "shuffle" }, /tileReduce must be "shuffle" or/],
      [{ tileReduce: "shuffle" }, /tileReduce applies to the tiled kernel only/],
      [{ tileSteps: 8, prefetch: "own" }, /tileSteps: prefetch do\(es\) not apply/],
      [{ tileSteps: 8, prefetchDepth: 4 }, /tiled prefetchDepth must be 1, 2 or 3, got 4/],
      [
        { tileSteps: 8, stateLoads: "late", broadcast: "staged" },
        /tileSteps: stateLoads, broadcast do\(es\) not apply/,
      ],
    ] as [ScanStrategy, RegExp][]
  ) {
    await assert.rejects(() => check(sizes, strategy), message, JSON.stringify(strategy));
  }
});

/** WebGPU's default limits with 32-wide subgroups (an H100/H200-like device). */
const SUBGROUP_DEVICE: DeviceLimits = { ...DEFAULT_LIMITS, subgroups: true, subgroupMinSize: 32 };
/** A large GPU's limits (the H200's binding sizes and buffer count), for long scans. */
const LARGE_DEVICE: DeviceLimits = {
  ...SUBGROUP_DEVICE,
  maxStorageBufferBindingSize: 2 ** 31,
  maxBufferSize: 2 ** 31,
  maxStorageBuffersPerShaderStage: 16,
};

/** The first line of the selective scan's first kernel, generated for `limits` (no GPU). */
function firstKernelHead(
  sizes: { b: number; l: number; d: number; n: number },
  limits: DeviceLimits,
  scan: ScanStrategy = {},
): string {
  const graph = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, sizes);
  return generateKernels(graph, limits, { scan }).kernels[0].wgsl.split("\n")[0];
}

Deno.test("tiled scan: the default for wide, long contracted scans, and only there", async () => {
  // 8192 channels × 256 steps: the default strategy is the tiled kernel (32 channels × 4
  // lanes, 16-step tiles), checked against the interpreter like any other.
  const wide = await check({ b: 1, l: 256, d: 8192, n: 16 }, {});
  assert.match(
    wide,
    /tiled: 32 channels × 4 lane\(s\) per workgroup, 16-step tiles \(2 × 8 steps\), /,
  );
  // Looped tiles: tile 0 is filled before the loop, tile k + 1 after tile k's epilogue (the
  // loop's last barrier follows the fill); every item is real, so the epilogue has no guard.
  const [beforeLoop, loop] = wide.split("for (var k: u32");
  assert.match(beforeLoop, /sk_sd\[0u \+ ts0\]\[cs\] = [\s\S]*workgroupBarrier\(\);\s*$/);
  assert.match(
    loop,
    /out\[[^\n]*\n[\s\S]*sk_sd\[0u \+ ts0\]\[cs\] = [\s\S]*workgroupBarrier\(\);\n\s*\}/,
  );
  assert.doesNotMatch(wide, /ivalid\)/);
  // One step short, one channel short of the thresholds, a lane-kernel knob, or an explicit
  // tileSteps: 0 keep the lane kernel.
  const cases: [{ b: number; l: number; d: number; n: number }, ScanStrategy][] = [
    [{ b: 1, l: 255, d: 8192, n: 16 }, {}],
    [{ b: 1, l: 256, d: 8191, n: 16 }, {}],
    [{ b: 1, l: 256, d: 8192, n: 16 }, { lanes: 8 }],
    [{ b: 1, l: 256, d: 8192, n: 16 }, { workgroup: 128 }],
    [{ b: 1, l: 256, d: 8192, n: 16 }, { tileSteps: 0 }],
    [{ b: 64, l: 1, d: 1536, n: 16 }, {}], // a decode step
  ];
  for (const [sizes, strategy] of cases) {
    const what = `${JSON.stringify(sizes)} ${JSON.stringify(strategy)}`;
    assert.doesNotMatch(firstKernelHead(sizes, SUBGROUP_DEVICE, strategy), /tiled/, what);
  }
  // Narrower scans need 3072 channels and 4096 steps: the benchmark scan at batch 2 is tiled,
  // one channel or one step less is not.
  assert.match(
    firstKernelHead({ b: 2, l: 4096, d: 1536, n: 16 }, LARGE_DEVICE),
    /tiled: 32 channels × 4 lane\(s\) per workgroup/,
  );
  for (const sizes of [{ b: 1, l: 4095, d: 3072, n: 16 }, { b: 1, l: 4096, d: 3071, n: 16 }]) {
    assert.doesNotMatch(firstKernelHead(sizes, LARGE_DEVICE), /tiled/, JSON.stringify(sizes));
  }
  // Up to 6144 channels such long scans take 32-step tiles (two 16-step bodies) where their
  // 16640 bytes of workgroup arrays fit; 6145 channels, or a device with 16 KiB, 16-step ones.
  const roomy = { ...LARGE_DEVICE, maxComputeWorkgroupStorageSize: 49152 };
  for (
    const [sizes, limits, tile] of [
      [{ b: 4, l: 4096, d: 1536, n: 16 }, roomy, "32-step tiles \\(2 × 16 steps\\)"],
      [{ b: 1, l: 4096, d: 6144, n: 16 }, roomy, "32-step tiles \\(2 × 16 steps\\)"],
      [{ b: 1, l: 4096, d: 6145, n: 16 }, roomy, "16-step tiles \\(2 × 8 steps\\)"],
      [{ b: 8, l: 4096, d: 1536, n: 16 }, roomy, "16-step tiles \\(2 × 8 steps\\)"],
      [
        { b: 4, l: 4096, d: 1536, n: 16 },
        { ...roomy, maxComputeWorkgroupStorageSize: 16384 },
        "16-step tiles \\(2 × 8 steps\\)",
      ],
    ] as const
  ) {
    const what = `${JSON.stringify(sizes)} ${limits.maxComputeWorkgroupStorageSize} bytes`;
    assert.match(
      firstKernelHead(sizes, limits),
      new RegExp(`32 channels × 4 lane\\(s\\) per workgroup, ${tile}`),
      what,
    );
  }
});

Deno.test("tiled scan: the default yields to the lane kernel when its arrays do not fit", () => {
  // The Mamba-1 scan's tiled kernel (32 channels × 4 lanes, 16 steps, lane sums by shuffles)
  // needs 8448 bytes of workgroup memory; a device with 8 KiB keeps the lane kernel, and asking
  // for the tiled kernel there is an error naming the sizes.
  const sizes = { b: 1, l: 256, d: 8192, n: 16 };
  assert.match(firstKernelHead(sizes, SUBGROUP_DEVICE), /tiled: 32 channels/);
  const small = { ...SUBGROUP_DEVICE, maxComputeWorkgroupStorageSize: 8192 };
  assert.match(firstKernelHead(sizes, small), /8 lane\(s\)\/channel/);
  assert.throws(
    () => firstKernelHead(sizes, small, { tileSteps: 16, workgroup: 128 }),
    /tileSteps 16 with 32 channels × 4 lanes needs 8448 bytes of workgroup memory; the device allows 8192/,
  );
  // The spare row of the shuffled sums (measured faster on the H200) is added only where it
  // fits: with exactly 8448 bytes the kernel keeps its 16 rows, with more it declares 17.
  const yp = (limits: DeviceLimits) => {
    const graph = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, sizes);
    const wgsl = generateKernels(graph, limits, { scan: {} }).kernels[0].wgsl;
    return wgsl.match(/var<workgroup> sk_yp: array<array<f32, (\d+)>, (\d+)>;/)?.slice(1);
  };
  assert.deepEqual(yp({ ...SUBGROUP_DEVICE, maxComputeWorkgroupStorageSize: 8448 }), ["36", "16"]);
  assert.deepEqual(yp({ ...SUBGROUP_DEVICE, maxComputeWorkgroupStorageSize: 8592 }), ["36", "17"]);
});
