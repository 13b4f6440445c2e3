// The gather backward as a scatter-add kernel (codegen/scatter_kernel.ts): an embedding's
// gradient, tied to a projection (the scatter's epilogue adds the projection's gradient), at
// sizes that leave the last workgroup's rows short and the columns over one and two threads'
// worth, with repeated and unused ids, against the float64 interpreter; run twice, the result
// is bitwise the same. A table of few rows stays a dense product, split over its tokens.
import assert from "node:assert/strict";
import { grad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { tanh } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gather } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

// 87 tokens (one block of ids) with ids among the first 41 rows; 903 tokens (three blocks and a
// short one) with ids over every row, so each workgroup finds its rows in some blocks only.
for (const [d, l, idRange] of [[13, 29, 41], [300, 29, 41], [13, 301, 1031]]) {
  Deno.test(`scatter-add: a tied embedding's gradient, ${d} columns, ${3 * l} tokens`, async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const sizes = { v: 1031, d, b: 3, l };
    const prog = await compile(
      { table: "v d", ids: { axes: "b l", dtype: "i32" }, y: "b l v" },
      (t) => {
        const g = grad((p: { table: Tensor }) => {
          const e = tanh(gather(p.table, t.ids, "v"));
          // Tied: the same table projects back onto the vocabulary.
          return einsum("b l d, v d, b l v -> ", e, p.table, t.y);
        })({ table: t.table });
        return { dTable: g.table };
      },
      sizes,
      { backend: "gpu" },
    );
    try {
      const heads = prog.kernels.map((k) => k.wgsl.split("\n")[0]);
      assert.ok(heads.some((h) => h.includes("scatter-add")), heads.join("\n"));
      // Ids below idRange (the other rows get only the projection's gradient), some repeated.
      const ids = Int32Array.from({ length: 3 * l }, () => Math.floor(next() * idRange));
      const data = {
        table: randomArray(1031 * d, next),
        ids,
        y: randomArray(3 * l * 1031, next),
      };
      const first = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      assertClose(first.dTable, want.dTable, 1e-4, `dTable (seed ${seed})`);
      const again = await prog.run(data) as Record<string, Float32Array>;
      assert.deepEqual(again.dTable, first.dTable);
    } finally {
      prog.destroy();
    }
  });
}

Deno.test("gather backward: a table of few rows is a dense product split over its tokens", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  // The induction model's shape: 18 rows, 64 columns, 8·256 tokens.
  const sizes = { v: 18, d: 64, b: 8, l: 256 };
  const prog = await compile(
    { table: "v d", ids: { axes: "b l", dtype: "i32" }, y: "b l d" },
    (t) => {
      const g = grad((p: { table: Tensor }) =>
        einsum("b l d, b l d -> ", tanh(gather(p.table, t.ids, "v")), t.y)
      )({ table: t.table });
      return { dTable: g.table };
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const heads = prog.kernels.map((k) => k.wgsl.split("\n")[0]).join("\n");
    assert.ok(!heads.includes("scatter-add"), heads);
    assert.deepEqual(prog.kernels.map((k) => k.kind), ["matmul", "reduce"], heads);
    const data = {
      table: randomArray(18 * 64, next),
      ids: Int32Array.from({ length: 8 * 256 }, () => Math.floor(next() * 17)),
      y: randomArray(8 * 256 * 64, next),
    };
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    assertClose(got.dTable, want.dTable, 1e-4, `dTable (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});
