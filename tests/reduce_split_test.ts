// Split reductions (codegen/reduce_kernel.ts): a long reduction to few outputs runs as a partials
// kernel and a combine kernel; sum, max and min with a fused prologue and epilogue, scalar and
// few-output results, slices that do not divide the reduced length, against the interpreter;
// many outputs or short reductions stay one kernel. Column reductions (the kept axis innermost)
// run 64 neighbouring outputs per workgroup, in slices of rows when the rows are many.
import assert from "node:assert/strict";
import { exp, mul, sub } from "../dsl/elementwise.ts";
import { max, min, sum } from "../dsl/reduce.ts";
import { einsum } from "../dsl/einsum.ts";
import { compile } from "../runtime/compile.ts";
import { columnSlices, groupThreads, reduceSplits } from "../codegen/reduce_kernel.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

Deno.test("reduceSplits: few outputs of a long reduction are split; others are not", () => {
  assert.equal(reduceSplits(1, 100), 1);
  assert.equal(reduceSplits(1, 8191), 1);
  assert.ok(reduceSplits(1, 8 * 1024 * 1024) > 100);
  assert.ok(reduceSplits(3, 20011) >= 2);
  assert.equal(reduceSplits(4096, 1 << 20), 1);
});

Deno.test("split reductions on the adapter: sum, max, min with prologue and epilogue", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  // 3 outputs × 20,011 reduced elements (a prime: the last slice is short).
  const sizes = { c: 3, n: 20011 };
  const prog = await compile(
    { x: "c n", y: "c n" },
    (t) => ({
      total: sum(mul(t.x, t.y), "c n"),
      rows: mul(sum(exp(mul(t.x, 0.5)), "n"), 2),
      top: sub(max(t.x, "n"), 1),
      low: min(mul(t.x, t.y), "n"),
    }),
    sizes,
    { backend: "gpu" },
  );
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(names.filter((n) => n.endsWith("_partials")).length >= 3, names.join(", "));
    const data = {
      x: Float32Array.from({ length: 3 * 20011 }, () => 2 * next() - 1),
      y: Float32Array.from({ length: 3 * 20011 }, () => 2 * next() - 1),
    };
    for (let run = 0; run < 2; run++) {
      const got = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      for (const k of ["total", "rows", "top", "low"]) {
        assertClose(got[k], want[k], 1e-4, `${k}, run ${run} (seed ${seed})`);
      }
    }
  } finally {
    prog.destroy();
  }
});

Deno.test("split reductions: a short reduction or many outputs stay one kernel", async () => {
  const prog = await compile({ x: "c n" }, (t) => ({ s: sum(t.x, "n") }), { c: 2048, n: 9000 }, {
    backend: "cpu",
  });
  assert.equal(prog.kernels.length, 1);
  const small = await compile({ x: "n" }, (t) => sum(t.x, "n"), { n: 5000 }, { backend: "cpu" });
  assert.equal(small.kernels.length, 1);
});

Deno.test("column reductions on the adapter: sums and maxes over rows, taps after the column", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  // 77 columns (two tiles, the second short), k = 3 taps after the column; 1037 rows in slices
  // that do not divide them, and 100 rows in one slice.
  for (const r of [1037, 100]) {
    const sizes = { r, c: 77, k: 3 };
    const prog = await compile(
      { x: "r c", w: "r c k" },
      (t) => ({
        colSum: mul(sum(mul(t.x, t.x), "r"), 0.5),
        colMax: max(t.x, "r"),
        taps: sum(mul(t.x, t.w), "r"),
      }),
      sizes,
      { backend: "gpu" },
    );
    try {
      const columns = prog.kernels.filter((k) => k.wgsl.includes("by columns"));
      assert.equal(columns.length, 3, prog.kernels.map((k) => k.name).join(", "));
      const split = prog.kernels.filter((k) => k.name.endsWith("_partials")).length;
      assert.equal(split, columnSlices(2, r) > 1 ? 3 : 0, `r = ${r}`);
      const data = randomInputs(prog.graph, next);
      const got = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      for (const k of ["colSum", "colMax", "taps"]) {
        assertClose(got[k], want[k], 1e-4, `${k}, r = ${r} (seed ${seed})`);
      }
    } finally {
      prog.destroy();
    }
  }
});

Deno.test("a per-channel dot product over a long axis is a split reduction, not a matmul", async () => {
  // M·N = 1 per output: the matmul kernel would give each of the 5 outputs one workgroup.
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 3, l: 4099, h: 5 };
  const prog = await compile(
    { x: "b l h", y: "b l h" },
    (t) => ({ g: einsum("b l h, b l h -> h", exp(t.x), t.y) }),
    sizes,
    { backend: "gpu" },
  );
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(prog.kernels.every((k) => k.kind === "reduce"), names.join(", "));
    assert.ok(names.some((n) => n.endsWith("_partials")), names.join(", "));
    const data = randomInputs(prog.graph, next);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    assertClose(got.g, want.g, 1e-4, `g (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});

Deno.test("a short per-row dot product that gets a kernel of its own runs as a reduction", async () => {
  // Σ_p over 40 elements is computed inline where one kernel reads it; read by two kernels it
  // is materialized, and then it is a reduction kernel (before: a matmul kernel of 1×1 tiles).
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 3, l: 37, p: 40 };
  const prog = await compile(
    { x: "b l p", w: "b l p" },
    (t) => {
      const dot = einsum("b l p, b l p -> b l", t.x, exp(t.w));
      return { s: sum(exp(dot), "l"), m: max(dot, "b") };
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    assert.ok(
      prog.kernels.every((k) => k.kind === "reduce"),
      prog.kernels.map((k) => k.name).join(),
    );
    assert.ok(prog.kernels.some((k) => k.wgsl.split("\n")[0].includes("reduce sum over [p] (40)")));
    const data = randomInputs(prog.graph, next);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of ["s", "m"]) assertClose(got[k], want[k], 1e-4, `${k} (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});

Deno.test("short reductions to many outputs run a group of threads per output", async () => {
  assert.equal(groupThreads(33), 8);
  assert.equal(groupThreads(64), 8);
  assert.equal(groupThreads(255), 32);
  const seed = freshSeed();
  // Extents 37 (odd, not a multiple of the group), 64 and 2·97 over two axes; outputs that do
  // not fill the last workgroup (1,031 and 1,097 rows).
  for (const [a, n] of [[1031, 37], [1097, 64], [1031, 97]]) {
    const prog = await compile(
      { x: "a n c", y: "a n c" },
      (t) => ({
        s: mul(sum(mul(t.x, t.y), "n c"), 3),
        top: sub(max(exp(t.x), "n c"), 1),
        low: min(t.x, "n c"),
      }),
      { a, n, c: n === 97 ? 2 : 1 },
      { backend: "gpu" },
    );
    try {
      const grouped = prog.kernels.filter((k) => /let j = lid %/.test(k.wgsl));
      assert.equal(grouped.length, 3, prog.kernels.map((k) => k.name).join(", "));
      const data = randomInputs(prog.graph, rng(seed + n));
      const got = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      for (const k of ["s", "top", "low"]) {
        assertClose(got[k], want[k], 1e-4, `${k}, ${a}×${n} (seed ${seed})`);
      }
    } finally {
      prog.destroy();
    }
  }
});
