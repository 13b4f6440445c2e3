// Associative scans: the interpreter against float64 loops written here, the kernels (both
// lowerings forced, awkward sizes, both directions) against the interpreter, the trace-time
// errors, and the mLSTM stabilizer as a (max, +) scan.
import assert from "node:assert/strict";
import {
  associativeScan,
  cummax,
  cummin,
  cumprod,
  cumsum,
  logcumsumexp,
} from "../dsl/assoc_scan.ts";
import { add, log, maximum, mul, sigmoid, sub } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { acquireGpu } from "../runtime/gpu_device.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { interpret } from "../runtime/interpreter.ts";
import type { AssocScanStrategy } from "../codegen/assoc_scan_kernel.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";
import { matmul2 } from "./assoc_cases.ts";

/** y[b, t, d] = fold of f over x[b, ·, d] up to t (from t with reverse), row-major b l d. */
function foldLoop(
  x: Float32Array,
  s: { b: number; l: number; d: number },
  f: (acc: number, v: number) => number,
  reverse: boolean,
): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < s.b; b++) {
    for (let d = 0; d < s.d; d++) {
      let acc = NaN;
      for (let j = 0; j < s.l; j++) {
        const t = reverse ? s.l - 1 - j : j;
        const i = (b * s.l + t) * s.d + d;
        acc = j === 0 ? x[i] : f(acc, x[i]);
        out[i] = acc;
      }
    }
  }
  return out;
}

const NAMED: [string, (x: Tensor, r: boolean) => Tensor, (a: number, v: number) => number][] = [
  ["cumsum", (x, reverse) => cumsum(x, "l", { reverse }), (a, v) => a + v],
  ["cumprod", (x, reverse) => cumprod(x, "l", { reverse }), (a, v) => a * v],
  ["cummax", (x, reverse) => cummax(x, "l", { reverse }), Math.max],
  ["cummin", (x, reverse) => cummin(x, "l", { reverse }), Math.min],
  [
    "logcumsumexp",
    (x, reverse) => logcumsumexp(x, "l", { reverse }),
    (a, v) => Math.max(a, v) + Math.log1p(Math.exp(-Math.abs(a - v))),
  ],
];

Deno.test("assocScan: the interpreter matches float64 loops for every named scan", () => {
  const seed = freshSeed();
  const s = { b: 2, l: 37, d: 3 };
  const x = randomArray(s.b * s.l * s.d, rng(seed), 0.5, 1.5);
  for (const [name, op, f] of NAMED) {
    for (const reverse of [false, true]) {
      const g = trace({ x: "b l d" }, ({ x }) => op(x, reverse), s);
      const got = interpret(g, { x })["out"];
      assertClose(got, foldLoop(x, s, f, reverse), 1e-12, `${name} reverse=${reverse} ${seed}`);
    }
  }
});

Deno.test("assocScan: the interpreter folds 2×2 matrix products in order", () => {
  const seed = freshSeed();
  const next = rng(seed);
  const s = { l: 23 };
  const m = { a: randomArray(23, next), b: randomArray(23, next), c: randomArray(23, next) };
  const dd = randomArray(23, next);
  for (const reverse of [false, true]) {
    const g = trace(
      { a: "l", b: "l", c: "l", d: "l" },
      (t) => associativeScan("l", matmul2, { a: t.a, b: t.b, c: t.c, d: t.d }, { reverse }),
      s,
    );
    const got = interpret(g, { ...m, d: dd });
    let acc = [1, 0, 0, 1];
    const want = {
      a: new Float64Array(23),
      b: new Float64Array(23),
      c: new Float64Array(23),
      d: new Float64Array(23),
    };
    for (let j = 0; j < 23; j++) {
      const t = reverse ? 22 - j : j;
      const x = [m.a[t], m.b[t], m.c[t], dd[t]];
      // Earlier positions multiply on the left: reverse folds x[t]·(x[t+1]·…).
      acc = reverse ? mat(x, acc) : mat(acc, x);
      [want.a[t], want.b[t], want.c[t], want.d[t]] = acc;
    }
    for (const k of ["a", "b", "c", "d"] as const) {
      assertClose(got[k], want[k], 1e-12, `matrix product ${k} reverse=${reverse} seed ${seed}`);
    }
  }
});

function mat(p: number[], q: number[]): number[] {
  return [
    p[0] * q[0] + p[1] * q[2],
    p[0] * q[1] + p[1] * q[3],
    p[2] * q[0] + p[3] * q[2],
    p[2] * q[1] + p[3] * q[3],
  ];
}

const SEQUENTIAL: AssocScanStrategy = { mode: "sequential" };
// The three chunk kernels (the single pass has its own tests): tiles of 4 × 3 = 12 steps, chunks
// of 2 tiles: 101 steps are 5 chunks, the last one partial. The tile scan uses subgroup shuffles
// where the adapter has subgroups (lavapipe's are 8 wide, so a 4-thread workgroup is a partial
// subgroup), or workgroup memory.
const CHUNKED: AssocScanStrategy = {
  mode: "chunked",
  workgroup: 4,
  perThread: 3,
  chunkTiles: 2,
  singlePass: false,
};
const CHUNKED_WIDE: AssocScanStrategy = {
  mode: "chunked",
  singlePass: false,
  workgroup: 24,
  perThread: 2,
  chunkTiles: 1,
};
const CHUNKED_MEMORY: AssocScanStrategy = { ...CHUNKED, tileScan: "workgroup" };
const CHUNKED_ORDERED_TOTALS: AssocScanStrategy = { ...CHUNKED_WIDE, commutativeTotals: false };
// Elements and outputs read and written by the scanning thread itself, not through the stage.
const CHUNKED_UNSTAGED: AssocScanStrategy = { ...CHUNKED_MEMORY, perThread: 5, stage: false };
const STRATEGIES = [
  SEQUENTIAL,
  CHUNKED,
  CHUNKED_WIDE,
  CHUNKED_MEMORY,
  CHUNKED_ORDERED_TOTALS,
  CHUNKED_UNSTAGED,
];

async function checkGpu(
  what: string,
  inputs: Record<string, string>,
  fn: (t: Record<string, Tensor>) => Record<string, Tensor>,
  sizes: Record<string, number>,
  strategy: AssocScanStrategy,
  kernels?: number,
  range: [number, number] = [-1, 1],
) {
  const seed = freshSeed();
  const prog = await compile(inputs, fn, sizes, { backend: "gpu", assocScan: strategy });
  const next = rng(seed);
  const data: Record<string, Float32Array> = {};
  for (const inp of prog.graph.inputs) {
    data[inp.name] = randomArray(inp.shape.reduce((p, s) => p * s, 1), next, ...range);
  }
  const got = await prog.run(data) as Record<string, Float32Array>;
  const want = prog.interpret(data) as Record<string, Float64Array>;
  const context = `${what} ${JSON.stringify(sizes)} ${JSON.stringify(strategy)} seed ${seed}`;
  for (const k of Object.keys(want)) assertClose(got[k], want[k], 1e-4, `${context}: ${k}`);
  if (kernels !== undefined) {
    assert.equal(prog.kernels.length, kernels, `${context}: ${prog.kernels.map((k) => k.name)}`);
  }
  prog.destroy();
}

Deno.test("assocScan: kernels match the interpreter (prologue and epilogue fused)", async () => {
  const s = { b: 2, l: 101, d: 3 };
  for (const strategy of STRATEGIES) {
    const perScan = strategy.mode === "chunked" ? 3 : 1;
    for (const reverse of [false, true]) {
      for (const name of ["cummax", "cummin", "logcumsumexp"]) {
        const op = NAMED.find((n) => n[0] === name)![1];
        // The element is an expression of two inputs; the output is an epilogue of the scan:
        // one scan's kernels in all.
        await checkGpu(
          `${name} reverse=${reverse}`,
          { x: "b l d", y: "b l d" },
          (t) => ({
            out: sub(op(mul(t.x, add(t.y, 2)), reverse), t.x),
          }),
          s,
          strategy,
          perScan,
        );
      }
    }
  }
});

Deno.test("assocScan: scan axis innermost, one channel, chunk boundaries", async () => {
  for (const strategy of STRATEGIES) {
    for (const reverse of [false, true]) {
      await checkGpu(
        "cummax over b d l",
        { x: "b d l" },
        (t) => ({
          out: cummax(t.x, "l", { reverse }),
        }),
        { b: 3, d: 2, l: 97 },
        strategy,
      );
      // 1-D: a single channel of 200 steps (17 tiles; pass 2 widens its workgroup to take the
      // 17 chunk totals in one tile).
      await checkGpu(
        "logcumsumexp 1-D",
        { x: "l" },
        (t) => ({
          out: logcumsumexp(t.x, "l", { reverse }),
        }),
        { l: 200 },
        { ...strategy, chunkTiles: 1 },
        undefined,
        [-4, 4],
      );
    }
  }
});

Deno.test("assocScan: chunk carries over several tiles of the widest workgroup", async () => {
  // 10,007 steps in chunks of 4: 2,502 chunk totals, which pass 2 walks in tiles of (at most)
  // 1,024 threads × 1, its loop's carry crossing tiles.
  for (const tileScan of ["subgroup", "workgroup"] as const) {
    for (const reverse of [false, true]) {
      await checkGpu(
        "cummax 1-D, many chunks",
        { x: "l" },
        (t) => ({ out: cummax(t.x, "l", { reverse }) }),
        { l: 10007 },
        { mode: "chunked", singlePass: false, workgroup: 4, perThread: 1, chunkTiles: 1, tileScan },
      );
    }
  }
});

Deno.test("assocScan: a long axis with few channels is chunked by default", async () => {
  const prog = await compile({ x: "l" }, ({ x }) => cummax(x, "l"), { l: 5000 }, {
    backend: "gpu",
  });
  // Three tiles of 256 × 8: the three chunk kernels (the single-pass kernel is opt-in).
  assert.deepEqual(prog.kernels.map((k) => k.name.replace(/^k0_assocScan_l_/, "")), [
    "totals",
    "carries",
    "outputs",
  ]);
  const x = randomArray(5000, rng(freshSeed()));
  assertClose(await prog.run({ x }), prog.interpret({ x }), 1e-6, "cummax 5000");
  prog.destroy();
});

Deno.test("assocScan: cumsum and cumprod run on the linear scan's kernels", async () => {
  for (const reverse of [false, true]) {
    await checkGpu(
      `cumsum/cumprod reverse=${reverse}`,
      { x: "b l d" },
      (t) => ({
        s: cumsum(t.x, "l", { reverse }),
        p: cumprod(t.x, "l", { reverse }),
      }),
      { b: 2, l: 29, d: 3 },
      {},
      undefined,
      [0.8, 1.2],
    );
  }
  const g = trace({ x: "l" }, ({ x }) => ({ s: cumsum(x, "l"), p: cumprod(x, "l") }), { l: 5 });
  assert.deepEqual(Object.values(g.outputs).map((n) => n.kind), ["scan", "scan"]);
});

Deno.test("assocScan: cumsum/cumprod with a long carry chain take the chunked kernels", async () => {
  const fn = (t: Rec) => ({
    s: cumsum(t.x, "l"),
    p: cumprod(t.x, "l", { reverse: true }),
  });
  // The linear scan would carry across ⌈66001/64⌉ = 1032 chunks in one thread; 1500 steps keep it.
  const g = trace({ x: "b l" }, fn, { b: 2, l: 66001 });
  assert.deepEqual(Object.values(g.outputs).map((n) => n.kind), ["assocScan", "assocScan"]);
  const short = trace({ x: "b l" }, fn, { b: 2, l: 1500 });
  assert.deepEqual(Object.values(short.outputs).map((n) => n.kind), ["scan", "scan"]);
  await checkGpu("long cumsum/cumprod", { x: "b l" }, fn, { b: 2, l: 66001 }, {}, 6, [
    0.999,
    1.001,
  ]);
});

Deno.test("assocScan: (max, +) pairs and matrix products on the GPU", async () => {
  for (const strategy of [SEQUENTIAL, CHUNKED, CHUNKED_MEMORY, CHUNKED_UNSTAGED]) {
    for (const reverse of [false, true]) {
      await checkGpu(
        "(max, +)",
        { s: "b l", m: "b l" },
        (t) =>
          associativeScan("l", (a, b) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) }), {
            s: t.s,
            m: t.m,
          }, { reverse }),
        { b: 3, l: 61 },
        strategy,
      );
      await checkGpu(
        "2×2 products",
        { a: "l b", b: "l b", c: "l b", d: "l b" },
        (t) => associativeScan("l", matmul2, { a: t.a, b: t.b, c: t.c, d: t.d }, { reverse }),
        {
          l: 41,
          b: 2,
        },
        strategy,
        undefined,
        [-0.8, 0.8],
      );
    }
  }
});

Deno.test("assocScan: the mLSTM stabilizer is one O(L) pass", async () => {
  // m[t] = max(log f[t] + m[t−1], i[t]), m[0] = i[0]: the scan of (s, m) pairs under
  // (s, m) ⊕ (s', m') = (s + s', max(m + s', m')), whose m component is the stabilizer.
  const s = { b: 2, l: 53, h: 3 };
  const fn = (t: Record<string, Tensor>) => {
    const logf = log(sigmoid(t.f));
    return {
      m: associativeScan("l", (a, b) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) }), {
        s: logf,
        m: t.i,
      }).m,
    };
  };
  const seed = freshSeed();
  const next = rng(seed);
  const f = randomArray(s.b * s.l * s.h, next, -3, 3),
    i = randomArray(s.b * s.l * s.h, next, -3, 3);
  const want = new Float64Array(f.length);
  for (let b = 0; b < s.b; b++) {
    for (let h = 0; h < s.h; h++) {
      let m = -Infinity;
      for (let t = 0; t < s.l; t++) {
        const k = (b * s.l + t) * s.h + h;
        m = Math.max(Math.log(1 / (1 + Math.exp(-f[k]))) + m, i[k]);
        want[k] = m;
      }
    }
  }
  const g = trace({ f: "b l h", i: "b l h" }, fn, s);
  assertClose(interpret(g, { f, i })["m"], want, 1e-12, `mLSTM m, interpreter, seed ${seed}`);
  for (const strategy of [SEQUENTIAL, CHUNKED]) {
    const prog = await compile({ f: "b l h", i: "b l h" }, fn, s, {
      backend: "gpu",
      assocScan: strategy,
    });
    assertClose((await prog.run({ f, i })).m, want, 1e-5, `mLSTM m ${strategy.mode} ${seed}`);
    // log σ(f) is computed inside the scan: one kernel (three when chunked).
    assert.equal(prog.kernels.length, strategy.mode === "chunked" ? 3 : 1);
    prog.destroy();
  }
});

type Rec = Record<string, Tensor>;
/** associativeScan without its compile-time checks, to reach the trace-time ones. */
const untyped = associativeScan as unknown as (
  axis: string,
  combine: (a: Rec, b: Rec) => Rec,
  elems: Rec,
  options?: { reverse?: boolean },
) => Rec;

Deno.test("assocScan: bad input fails at trace time with one clear line", () => {
  const s = { b: 2, l: 5, d: 3 };
  const cases: [(t: Record<string, Tensor>) => Tensor, RegExp][] = [
    [(t) => cummax(t.x, "q" as "l"), /cummax: the tensor \[b l d\] has no axis "q"/],
    [
      (t) => untyped("l", (a, b) => ({ x: add(a.x, b.x) }), { x: t.x, y: t.v }).x,
      /associativeScan: elems.y \[b l\] must have the axes and sizes of elems.x \[b l d\]/,
    ],
    [
      (t) => untyped("l", (a) => ({ y: a.x }), { x: t.x }).x,
      /associativeScan: combine returned the keys \{y\}, expected \{x\}/,
    ],
    [
      (t) => associativeScan("l", (a, b) => ({ x: add(mul(a.x, t.x), b.x) }), { x: t.x }).x,
      /associativeScan: combine may read only its two arguments, not input "x" from outside/,
    ],
    [
      (t) => associativeScan("l", (a, b) => ({ x: add(sum(a.x, "d"), b.x) }), { x: t.x }).x,
      /associativeScan: combine may use only elementwise ops .* got a reduce/,
    ],
  ];
  for (const [fn, message] of cases) {
    assert.throws(() => trace({ x: "b l d", v: "b l" }, fn, s), message);
  }
});

Deno.test("assocScan: a linear recurrence written as pairs lowers to the linear scan", async () => {
  // Composing h ↦ a·h + b maps: the newer map is the right operand going forward, the left one
  // in reverse.
  const forward = (o: Rec, n: Rec) => ({ a: mul(o.a, n.a), b: add(mul(n.a, o.b), n.b) });
  const backward = (n: Rec, o: Rec) => ({ a: mul(n.a, o.a), b: add(n.b, mul(o.b, n.a)) });
  const s = { b: 2, l: 31, d: 3 };
  const seed = freshSeed();
  const next = rng(seed);
  const a = randomArray(2 * 31 * 3, next, 0.5, 1), b = randomArray(2 * 31 * 3, next);
  for (const reverse of [false, true]) {
    const fn = (t: Rec) =>
      untyped("l", reverse ? backward : forward, { a: t.a, b: t.b }, { reverse });
    const g = trace({ a: "b l d", b: "b l d" }, fn, s);
    assert.deepEqual(Object.values(g.outputs).map((n) => n.kind), ["scan", "scan"]);
    const got = interpret(g, { a, b });
    const wantB = new Float64Array(a.length), wantA = new Float64Array(a.length);
    for (let bi = 0; bi < 2; bi++) {
      for (let d = 0; d < 3; d++) {
        let h = 0, p = 1;
        for (let j = 0; j < 31; j++) {
          const i = (bi * 31 + (reverse ? 30 - j : j)) * 3 + d;
          h = a[i] * h + b[i];
          p *= a[i];
          wantB[i] = h;
          wantA[i] = p;
        }
      }
    }
    assertClose(got["b"], wantB, 1e-12, `linear b reverse=${reverse} seed ${seed}`);
    assertClose(got["a"], wantA, 1e-12, `linear a reverse=${reverse} seed ${seed}`);
    await checkGpu(`linear pairs reverse=${reverse}`, { a: "b l d", b: "b l d" }, fn, s, {});
    // The forward composition run in reverse is another function: a generic scan then.
    const other = trace(
      { a: "b l d", b: "b l d" },
      (t) => untyped("l", reverse ? forward : backward, { a: t.a, b: t.b }, { reverse }),
      s,
    );
    assert.deepEqual(Object.values(other.outputs).map((n) => n.kind), ["assocScan", "assocScan"]);
  }
});

Deno.test("assocScan: without subgroups the tiles are scanned in workgroup memory", async () => {
  const ctx = await acquireGpu({ subgroups: false });
  try {
    const sizes = { b: 2, l: 3001 };
    const prog = await compile({ x: "b l" }, ({ x }) => logcumsumexp(x, "l"), sizes, {
      gpu: ctx,
      backend: "gpu",
    });
    // Two tiles per channel: the three chunk kernels.
    assert.equal(prog.kernels.length, 3);
    assert.ok(prog.kernels.every((k) => !k.wgsl.includes("subgroup")), "no subgroup code");
    const x = randomArray(2 * 3001, rng(freshSeed()), -3, 3);
    assertClose(await prog.run({ x }), prog.interpret({ x }), 1e-5, "logcumsumexp, no subgroups");
    prog.destroy();
    const graph = trace({ x: "l" }, ({ x }) => cummax(x, "l"), { l: 9 });
    assert.throws(
      () =>
        generateKernels(graph, { ...DEFAULT_LIMITS, subgroups: false }, {
          assocScan: { mode: "chunked", tileScan: "subgroup" },
        }),
      /tileScan "subgroup" needs a device with subgroups/,
    );
  } finally {
    ctx.device.destroy();
  }
});

Deno.test("assocScan: one chunk per channel is a single kernel", async () => {
  const single: AssocScanStrategy = {
    mode: "chunked",
    workgroup: 8,
    perThread: 2,
    chunkTiles: 7,
    singlePass: false,
  };
  for (const reverse of [false, true]) {
    await checkGpu(
      `one chunk reverse=${reverse}`,
      { x: "b l" },
      (t) => ({
        out: cummin(t.x, "l", { reverse }),
      }),
      { b: 3, l: 101 },
      single,
      1,
    );
  }
  // Many channels: an innermost scan axis is read as contiguous tiles (one chunk each), any
  // other layout by one thread per channel over coalesced rows.
  const sizes = { c: 9000, l: 1024 };
  const innermost = generateKernels(
    trace({ x: "c l" }, ({ x }) => cummax(x, "l"), sizes),
    DEFAULT_LIMITS,
  ).kernels;
  assert.equal(innermost.length, 1);
  assert.match(innermost[0].wgsl, /pass 3\/3: outputs, 9000 channels × 1 chunks/);
  const rows =
    generateKernels(trace({ x: "l c" }, ({ x }) => cummax(x, "l"), sizes), DEFAULT_LIMITS)
      .kernels;
  assert.equal(rows.length, 1);
  assert.match(rows[0].wgsl, /sequential, 9000 channels/);
});
