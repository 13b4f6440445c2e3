// Split contractions (codegen/split_contractions.ts): a contraction with few output tiles and a
// long sum over several axes keeps one summed axis as a batch axis and sums it in a reduction. Against
// the interpreter on awkward sizes, with a fused prologue and epilogue; the axis choice; shapes
// that stay one matmul (many outputs, short sums, one summed axis).
import assert from "node:assert/strict";
import { splitAxis } from "../codegen/split_contractions.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, tanh } from "../dsl/elementwise.ts";
import type { ContractNode } from "../dsl/ir.ts";
import { type InputSpec, trace, type TraceResult } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

/** The contraction `einsum(spec)` traces to at `sizes`. */
function contraction(spec: string, inputs: Record<string, string>, sizes: Record<string, number>) {
  const graph = trace(inputs, (t) => {
    const [x, y] = Object.values(t);
    // deno-lint-ignore no-explicit-any
    return { out: (einsum as any)(spec, x, y) };
  }, sizes);
  return graph.outputs.out as ContractNode;
}

Deno.test("splitAxis: few output tiles over a long sum split on the summed axis nearest the target", () => {
  const gradient = (sizes: Record<string, number>) =>
    splitAxis(contraction("b l v, b l m -> v m", { x: "b l v", y: "b l m" }, sizes));
  const cases: [string, Record<string, number>, string | undefined][] = [
    [
      "the induction model's tied embedding, 17×64 over 8·256 rows",
      { b: 8, l: 256, v: 17, m: 64 },
      "b",
    ],
    // Parts keep 64 steps of the sum: l (parts of 64), not b (64 parts of 40).
    ["17×64 over 64·40 rows", { b: 64, l: 40, v: 17, m: 64 }, "l"],
    // 72 tiles: parts of 256, the least for outputs this many.
    ["768×768 over 8·256 rows", { b: 8, l: 256, v: 768, m: 768 }, "b"],
    ["768×768 over 16·128 rows (parts too short)", { b: 16, l: 128, v: 768, m: 768 }, undefined],
    ["the Mamba-2 130M out_proj gradient (144 tiles)", { b: 8, l: 2048, v: 768, m: 1536 }, "b"],
    ["4096×1024 (512 tiles fill the GPU)", { b: 8, l: 2048, v: 4096, m: 1024 }, undefined],
    ["a sum of 1,200 terms", { b: 4, l: 300, v: 17, m: 64 }, undefined],
  ];
  for (const [what, sizes, axis] of cases) assert.equal(gradient(sizes), axis, what);
  const one = { x: "l v", y: "l m" };
  assert.equal(
    splitAxis(contraction("l v, l m -> v m", one, { l: 8192, v: 17, m: 64 })),
    undefined,
  );
});

/** Compiles `fn` on the adapter: a split matmul and its reduction, agreeing with float64. */
async function checkSplit<const S extends InputSpec>(
  inputs: S,
  fn: Parameters<typeof compile<S, TraceResult>>[1],
  sizes: Record<string, number>,
) {
  const seed = freshSeed();
  const prog = await compile(inputs, fn, sizes, { backend: "gpu" });
  try {
    const kinds = prog.kernels.map((k) => k.kind);
    assert.deepEqual(kinds, ["matmul", "reduce"], prog.kernels.map((k) => k.name).join(", "));
    const data = randomInputs(prog.graph, rng(seed));
    const got = (await prog.run(data)) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    assertClose(got.g, want.g, 1e-4, `split contraction (seed ${seed})`);
  } finally {
    prog.destroy();
  }
}

Deno.test("split contractions on the adapter: a weight gradient with prologue and epilogue", () =>
  // 7·317 = 2,219 summed rows, 19×13 outputs: split on b (7 parts of 317).
  checkSplit(
    { x: "b l v", y: "b l m", w: "v m" },
    (t) => ({
      g: tanh(add(einsum("b l v, b l m -> v m", exp(mul(t.x, 0.5)), t.y), t.w)),
    }),
    { b: 7, l: 317, v: 19, m: 13 },
  ));

Deno.test("split contractions on the adapter: a larger gradient keeps parts of 256 or more", () =>
  // 71×601 = 42,671 outputs (6 tiles) over 8·263 rows: parts of 263 (b), not of 8 (l).
  checkSplit(
    { x: "b l v", y: "b l m" },
    (t) => ({ g: einsum("b l v, b l m -> v m", t.x, t.y) }),
    { b: 8, l: 263, v: 71, m: 601 },
  ));
