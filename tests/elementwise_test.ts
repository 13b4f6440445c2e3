// Large elementwise kernels (several elements per thread) and fused views, against the oracle.
import assert from "node:assert/strict";
import { add, gt, mul, sigmoid, where } from "../dsl/elementwise.ts";
import { flip, rearrange, slice } from "../dsl/views.ts";
import { einsum } from "../dsl/einsum.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

Deno.test("a large fused chain with views and broadcasting (4 elements per thread)", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { x: "a b", y: "b", z: "a" },
    ({ x, y, z }) => {
      const f = flip(mul(x, sigmoid(y)), "b");
      return where(gt(x, 0), add(f, z), mul(f, 0.5));
    },
    { a: 7, b: 10001 },
    { backend: "gpu" },
  );
  assert.match(prog.kernels[0].wgsl, /4 per thread/);
  const inputs = randomInputs(prog.graph, rng(seed));
  assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-5, `seed ${seed}`);
  prog.destroy();
});

Deno.test("split and merge with rearrange, slice with offset, fused into one kernel", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { x: "b d" },
    ({ x }) => {
      const heads = rearrange(x, "b (h p) -> b h p", { p: 5 });
      const back = rearrange(heads, "b h p -> b e=(p h)");
      return mul(slice(back, "e", 3, 18, "f"), 2);
    },
    { b: 3, d: 35 },
    { backend: "gpu" },
  );
  assert.equal(prog.kernels.length, 1);
  const inputs = randomInputs(prog.graph, rng(seed));
  assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-6, `seed ${seed}`);
  prog.destroy();
});

Deno.test("short contractions (≤ 64 summed) are computed inline, as a loop in their consumer", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { x: "b l q", W: "d q", bias: "d" },
    ({ x, W, bias }) => sigmoid(add(einsum("b l q, d q -> b l d", x, W), bias)),
    { b: 2, l: 9, q: 48, d: 37 },
    { backend: "gpu" },
  );
  assert.equal(prog.kernels.length, 1);
  assert.match(prog.kernels[0].wgsl, /for \(var v\w*k\d+: u32 = 0u; v\w*k\d+ < 48u/);
  const inputs = randomInputs(prog.graph, rng(seed));
  assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-5, `seed ${seed}`);
  prog.destroy();
});
