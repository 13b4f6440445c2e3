// The gather backward as a scatter-add kernel (codegen/scatter_kernel.ts): an embedding's
// gradient, tied to a projection (the scatter's epilogue adds the projection's gradient), at
// sizes that leave the last workgroup's rows short and the columns over one and two threads'
// worth, with repeated and unused ids, against the float64 interpreter; run twice, the result
// is bitwise the same.
import assert from "node:assert/strict";
import { grad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { tanh } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gather } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

for (const d of [13, 300]) {
  Deno.test(`scatter-add: a tied embedding's gradient, ${d} columns`, async () => {
    const seed = freshSeed();
    const next = rng(seed);
    const sizes = { v: 37, d, b: 3, l: 29 };
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
      // Ids 0…30 of 37 (rows 31…36 get only the projection's gradient), many repeated.
      const ids = Int32Array.from({ length: 3 * 29 }, () => Math.floor(next() * 31));
      const data = {
        table: randomArray(37 * d, next),
        ids,
        y: randomArray(3 * 29 * 37, next),
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
