// Split reductions (codegen/reduce_kernel.ts): a long reduction to few outputs runs as a partials
// kernel and a combine kernel; sum, max and min with a fused prologue and epilogue, scalar and
// few-output results, slices that do not divide the reduced length, against the interpreter;
// many outputs or short reductions stay one kernel.
import assert from "node:assert/strict";
import { exp, mul, sub } from "../dsl/elementwise.ts";
import { max, min, sum } from "../dsl/reduce.ts";
import { compile } from "../runtime/compile.ts";
import { reduceSplits } from "../codegen/reduce_kernel.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

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
