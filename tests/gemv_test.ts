// Decode-shaped contractions (a few rows times a weight stored [N, K]) take the matrix-vector
// kernel, with prologue and epilogue fused; checked against the float64 interpreter.
import assert from "node:assert/strict";
import { einsum } from "../dsl/einsum.ts";
import { mul, silu, sub } from "../dsl/elementwise.ts";
import { max, rmsnorm } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { gather } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

Deno.test("matrix-vector kernel: rows 1–4, K multiple of 4 or not, fused norm and SiLU", async () => {
  const seed = freshSeed();
  // Long rows (the last two) take the looped path, with a masked tail in the last round.
  const short = [[1, 333, 768], [3, 100, 133], [1, 70, 96], [4, 257, 65]];
  const long = [[2, 2049, 2060], [1, 300, 2061]];
  for (const [b, e, m] of [...short, ...long]) {
    // Activations staged in workgroup memory (the default here) and read through the prologue;
    // each of the autotuner's thread counts per column, and 16.
    const cases = [
      ...[undefined, false].map((gemvStage) => ({ gemvStage })),
      ...[16, 32, 64, 128].map((gemvThreadsPerColumn) => ({ gemvThreadsPerColumn })),
    ];
    for (const matmul of cases) {
      const gemvStage = "gemvStage" in matmul ? matmul.gemvStage : undefined;
      const prog = await compile(
        { x: "b m", W: "e m", g: "m" },
        (t) => silu(einsum("b m, e m -> b e", rmsnorm(t.x, "m", t.g), t.W)),
        { b, e, m },
        { backend: "gpu", matmul },
      );
      const wgsl = prog.kernels[prog.kernels.length - 1].wgsl;
      assert.match(wgsl, /matrix-vector/);
      assert.equal(/gemv_a/.test(wgsl), gemvStage !== false, `staging ${gemvStage}`);
      if (!("gemvThreadsPerColumn" in matmul)) {
        assert.equal(/for \(var i: u32 = lane;/.test(wgsl), m > 2000, `looped path for K = ${m}`);
      } else assert.match(wgsl, new RegExp(`\\(${matmul.gemvThreadsPerColumn} threads per column`));
      const inputs = randomInputs(prog.graph, rng(seed));
      assertClose(
        await prog.run(inputs),
        prog.interpret(inputs),
        1e-4,
        `${b}×${e}×${m} ${JSON.stringify(matmul)} seed ${seed}`,
      );
      prog.destroy();
    }
  }
});

Deno.test("matrix-vector staging that cannot fit the workgroup memory is a clear error", async () => {
  await assert.rejects(
    () =>
      compile(
        { x: "b m", W: "e m" },
        (t) => einsum("b m, e m -> b e", t.x, t.W),
        { b: 4, e: 64, m: 1 << 14 },
        { backend: "gpu", matmul: { gemvStage: true } },
      ),
    /gemv: staging 4×16384 activations needs \d+ bytes of workgroup memory; the device allows/,
  );
});

Deno.test("matrix-vector kernel whose prologue also reads the weight (tied embedding)", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { E: "v m", ids: { axes: "b", dtype: "i32" } },
    (t) => einsum("b m, v m -> b v", gather(t.E, t.ids, "v"), t.E),
    { b: 2, v: 300, m: 72 },
    { backend: "gpu" },
  );
  assert.match(prog.kernels[prog.kernels.length - 1].wgsl, /matrix-vector/);
  const inputs = randomInputs(prog.graph, rng(seed), 300);
  assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `seed ${seed}`);
  prog.destroy();
});

Deno.test("a decode RMSNorm's reduction runs inside the matrix-vector kernel", async () => {
  const seed = freshSeed();
  // A prologue norm (in_proj), a max-shifted prologue, and a norm whose kernel has too many
  // workgroups to repeat the reduction in each (it keeps its own reduction kernel).
  const cases = [
    {
      name: "prologue",
      sizes: { b: 3, e: 130, m: 96 },
      fn: (t: Record<string, Tensor>) => einsum("b m, e m -> b e", rmsnorm(t.x, "m", t.g), t.W),
      kernels: 1,
      // 1/rms has no summed axis: it scales the row's sum, not every staged element.
      scaledAfter: true,
    },
    {
      name: "max",
      sizes: { b: 2, e: 100, m: 77 },
      fn: (t: Record<string, Tensor>) =>
        einsum("b m, e m -> b e", mul(sub(t.x, max(t.x, "m")), t.g), t.W),
      kernels: 1,
    },
    {
      name: "many workgroups",
      sizes: { b: 1, e: 9000, m: 40 },
      fn: (t: Record<string, Tensor>) => einsum("b m, e m -> b e", rmsnorm(t.x, "m", t.g), t.W),
      kernels: 2,
    },
  ];
  for (const c of cases) {
    const prog = await compile({ x: "b m", W: "e m", g: "m" }, c.fn, c.sizes, { backend: "gpu" });
    assert.equal(prog.kernels.length, c.kernels, `${c.name}: ${prog.kernels.map((k) => k.name)}`);
    if ("scaledAfter" in c) {
      const wgsl = prog.kernels[0].wgsl;
      assert.doesNotMatch(wgsl.split("fn load_a")[1].split("\n}")[0], /gemv_red/, c.name);
      assert.match(wgsl.split("fn store_c")[1].split("\n}")[0], /gemv_red0/, c.name);
    }
    const inputs = randomInputs(prog.graph, rng(seed));
    assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `${c.name} seed ${seed}`);
    prog.destroy();
  }
});

Deno.test("matrix-vector kernel: threads per column are a tuning point; each choice is right", async () => {
  const seed = freshSeed();
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const inputs = { x: "b m", W: "e m", g: "m" } as const;
  const fn = (t: { x: Tensor<"b m">; W: Tensor<"e m">; g: Tensor<"m"> }) =>
    silu(einsum("b m, e m -> b e", rmsnorm(t.x, "m", t.g), t.W));
  const sizes = { b: 2, e: 333, m: 768 };
  try {
    const tuned = await compile(inputs, fn, sizes, {
      backend: "gpu",
      autotune: { cacheFile, iterations: 2 },
    });
    tuned.destroy();
    type Cache = {
      adapters: Record<string, Record<string, { choice: string; ns: Record<string, number> }>>;
    };
    const cache = JSON.parse(await Deno.readTextFile(cacheFile)) as Cache;
    const [entries] = Object.values(cache.adapters);
    const key = "gemv m2 n333 k768 w:f32 r1";
    assert.ok(entries[key], `no entry "${key}": ${Object.keys(entries)}`);
    assert.deepEqual(Object.keys(entries[key].ns).sort(), ["t128", "t32", "t64"]);
    // Each candidate planted in turn is the kernel the program runs, and agrees with the oracle.
    for (const choice of ["t32", "t64", "t128"]) {
      entries[key].choice = choice;
      await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
      const prog = await compile(inputs, fn, sizes, { backend: "gpu", autotune: { cacheFile } });
      const wgsl = prog.kernels[prog.kernels.length - 1].wgsl;
      assert.match(wgsl, new RegExp(`\\(${choice.slice(1)} threads per column\\)`));
      const data = randomInputs(prog.graph, rng(seed));
      assertClose(await prog.run(data), prog.interpret(data), 1e-4, `${choice} seed ${seed}`);
      prog.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
