// f16 and bf16 in the DSL: 16-bit program inputs (stored in 16 bits, widened in the kernels
// that read them) and `cast`, checked against the float64 interpreter, which rounds where the
// program rounds. Sizes are awkward (odd, not multiples of tiles or vec4s).
import assert from "node:assert/strict";
import { cast } from "../dsl/cast.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, neg, sigmoid, softplus, sub } from "../dsl/elementwise.ts";
import { deltaRule } from "../dsl/delta.ts";
import { attention } from "../dsl/attention.ts";
import { sum } from "../dsl/reduce.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { gather } from "../dsl/views.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import {
  bf16Bits,
  bf16Value,
  f16Bits,
  f16Value,
  roundToBf16,
  roundToF16,
} from "../runtime/half.ts";
import { assertClose, freshSeed, randomArray, randomInputs, relativeError, rng } from "./util.ts";

const f16round = (Math as unknown as { f16round: (x: number) => number }).f16round;

Deno.test("f16 and bf16 rounding: nearest-even, subnormals, overflow (host conversions)", () => {
  const next = rng(freshSeed());
  const edges = [
    0,
    -0,
    1,
    65504,
    65519.99,
    65520,
    -70000,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    2 ** -14,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    Infinity,
    -Infinity,
  ];
  const values = [
    ...edges,
    ...Array.from({ length: 5000 }, () => (next() - 0.5) * 2 ** (next() * 40 - 28)),
  ];
  for (const x of values) {
    // V8's Math.f16round is an independent reference for binary16.
    assert.ok(
      Object.is(roundToF16(x), f16round(x)),
      `f16 of ${x}: ${roundToF16(x)} vs ${f16round(x)}`,
    );
    assert.ok(Object.is(f16Value(f16Bits(x)), roundToF16(x)));
  }
  assert.ok(Number.isNaN(roundToF16(NaN)) && Number.isNaN(roundToBf16(NaN)));
  // bf16: 8 significant bits; ties go to the even pattern.
  assert.equal(roundToBf16(1 + 2 ** -8), 1);
  assert.equal(roundToBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);
  assert.equal(roundToBf16(1 + 2 ** -8 + 2 ** -20), 1 + 2 ** -7);
  assert.equal(roundToBf16(3.4e38), Infinity);
  for (let h = 0; h < 0x10000; h += 37) {
    const v = bf16Value(h);
    if (!Number.isNaN(v)) assert.equal(bf16Bits(v), h, `bf16 pattern ${h}`);
  }
});

Deno.test("the kernels' f16 cast rounds exactly as the host: ties, subnormals, overflow", async () => {
  // Checked bit for bit: on an H100 the WGSL conversion pair rounded nothing.
  const edges = [
    1 + 2 ** -11, // a tie: to even (1)
    1 + 3 * 2 ** -11, // a tie: up
    -(1 + 2 ** -10 + 2 ** -12),
    65504, // f16's largest
    65519, // rounds down to it
    65520, // rounds up to infinity
    -70000,
    2 ** -14, // smallest normal
    1e-5, // subnormal
    2 ** -25, // a subnormal tie: to 0
    3 * 2 ** -25, // a subnormal tie: up
    6.1e-5, // just under the smallest normal
    1e-8,
    0,
    -0,
    Math.PI,
  ];
  const z = new Float32Array(edges);
  const prog = await compile(
    { z: "c" },
    (t) => cast(cast(t.z, "f16"), "f32"),
    { c: z.length },
    { backend: "gpu" },
  );
  const got = await prog.run({ z });
  for (let i = 0; i < z.length; i++) {
    assert.ok(Object.is(got[i], roundToF16(z[i])), `f16 of ${z[i]}: got ${got[i]}`);
  }
  prog.destroy();
});

Deno.test("16-bit inputs and casts in elementwise kernels match the interpreter", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { x: { axes: "r c", dtype: "f16" }, y: { axes: "c", dtype: "bf16" }, z: "r c" },
    (t) => ({
      // exp of an f16 input times a bf16 input, rounded to bf16; z rounded to f16 then widened.
      a: cast(mul(exp(t.x), t.y), "bf16"),
      b: add(cast(cast(t.z, "f16"), "f32"), t.x),
      x: t.x,
    }),
    { r: 7, c: 13 },
    { backend: "gpu" },
  );
  const inputs = randomInputs(prog.graph, rng(seed));
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  for (const k of ["a", "b", "x"] as const) assertClose(got[k], want[k], 1e-3, `${k} seed ${seed}`);
  // The input returned as is comes back exactly as rounded (f16 widened on the host).
  assert.deepEqual([...got.x], [...inputs.x].map(roundToF16));
  // The rounding is real: the unrounded f32 value is further away than the tolerance allows.
  const raw = [...inputs.z].map((z, i) => z + roundToF16(inputs.x[i]));
  assert.ok(relativeError(got.b, raw) > 1e-5, "f16 rounding of z changed nothing");
  assert.ok(relativeError(got.b, raw) < 1e-3);
  assert.match(prog.kernels.map((k) => k.wgsl).join("\n"), /^enable f16;/m);
  prog.destroy();
});

Deno.test("contractions with 16-bit weights (tiled matmul and matrix-vector) accumulate in f32", async () => {
  const seed = freshSeed();
  for (const dtype of ["f16", "bf16"] as const) {
    // [l] rows × a weight stored [n k]: decode-sized rows take the GEMV kernel (eight weights
    // per load when k is a multiple of 8, four when of 4, else one; staged activations or not;
    // a long row (k = 4112, with many columns) loops), long ones the tiled matmul, and a short
    // product (k = 45, 3 rows) is inlined into an elementwise kernel.
    const shapes: [number, number, number, string, string, boolean?][] = [
      [1, 70, 96, "matrix-vector", "vec4<u32>"],
      [2, 70, 96, "matrix-vector", "vec4<u32>", false],
      [3, 67, 133, "matrix-vector", dtype === "f16" ? "f16" : "u32"],
      [2, 130, 260, "matrix-vector", dtype === "f16" ? "vec4<f16>" : "vec2<u32>"],
      [4, 130, 260, "matrix-vector", dtype === "f16" ? "vec4<f16>" : "vec2<u32>", false],
      [1, 2049, 4112, "matrix-vector", "vec4<u32>"],
      [3, 67, 45, "elementwise", ""],
      [37, 29, 133, "matmul", ""],
      [19, 64, 68, "matmul", ""],
    ];
    for (const [l, n, k, family, weights, gemvStage] of shapes) {
      const prog = await compile(
        { x: "l k", W: { axes: "n k", dtype } },
        (t) => sigmoid(einsum("l k, n k -> l n", t.x, t.W)),
        { l, n, k },
        { backend: "gpu", matmul: { gemvStage } },
      );
      const wgsl = prog.kernels.map((kk) => kk.wgsl).join("\n");
      const head = prog.kernels.map((kk) => kk.wgsl.match(/^\/\/ \w+: .*$/m)?.[0]).join(" ");
      assert.match(head, new RegExp(family), `${l}×${n}×${k}`);
      if (weights) assert.ok(wgsl.includes(`gemv_w: array<${weights}>`), `${l}×${n}×${k} loads`);
      assert.equal(/gemv_a/.test(wgsl), family === "matrix-vector" && gemvStage !== false);
      assert.equal(/for \(var i: u32 = lane;/.test(wgsl), k > 4000, `looped for k = ${k}`);
      const inputs = randomInputs(prog.graph, rng(seed));
      const got = await prog.run(inputs);
      const want = prog.interpret(inputs);
      assertClose(got, want, 1e-4, `${dtype} ${l}×${n}×${k} seed ${seed}`);
      // The kernel read the rounded weight, not the f32 one.
      const f32 = await compile(
        { x: "l k", W: "n k" },
        (t) => sigmoid(einsum("l k, n k -> l n", t.x, t.W)),
        { l, n, k },
        { backend: "cpu" },
      );
      assert.ok(relativeError(got, f32.interpret(inputs)) > 1e-6, `${dtype} weights unrounded`);
      prog.destroy();
      // The autotuner's other thread counts per column read the 16-bit rows as well.
      for (const gemvThreadsPerColumn of family === "matrix-vector" ? [32, 128] : []) {
        const other = await compile(
          { x: "l k", W: { axes: "n k", dtype } },
          (t) => sigmoid(einsum("l k, n k -> l n", t.x, t.W)),
          { l, n, k },
          { backend: "gpu", matmul: { gemvStage, gemvThreadsPerColumn } },
        );
        const what = `${dtype} ${l}×${n}×${k} ${gemvThreadsPerColumn} threads, seed ${seed}`;
        assertClose(await other.run(inputs), want, 1e-4, what);
        other.destroy();
      }
    }
  }
});

Deno.test("the tiled matmul reads 16-bit operands directly (vec4 and scalar, both layouts)", async () => {
  const seed = freshSeed();
  for (const dtype of ["f16", "bf16"] as const) {
    // x [l k] is A (k contiguous: "ok" rows); W [k n] is B with n contiguous ("ko" rows);
    // vec4 loads where the contiguous size is a multiple of 4 (k = 68, n = 64), else scalar.
    for (const [l, n, k] of [[19, 64, 68], [37, 29, 133]]) {
      const prog = await compile(
        { x: { axes: "l k", dtype }, W: { axes: "k n", dtype } },
        (t) => einsum("l k, k n -> l n", t.x, t.W),
        { l, n, k },
        { backend: "gpu" },
      );
      const wgsl = prog.kernels.map((kk) => kk.wgsl).join("\n");
      const element = { f16: ["vec4<f16>", "f16"], bf16: ["vec2<u32>", "u32"] }[dtype];
      for (const [x, size] of [["a", k], ["b", n]] as const) {
        const want = size % 4 === 0 ? element[0] : element[1];
        assert.match(wgsl, new RegExp(`mm_${x}_src: array<${want.replace(/[<>]/g, "\\$&")}>`));
      }
      const inputs = randomInputs(prog.graph, rng(seed));
      assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `${dtype} ${l}×${n}×${k}`);
      prog.destroy();
    }
  }
});

Deno.test("scans over 16-bit inputs keep f32 states; gathers from 16-bit tables", async () => {
  const seed = freshSeed();
  const prog = await compile(
    {
      a: { axes: "b l d", dtype: "f16" },
      u: { axes: "b l d n", dtype: "bf16" },
      C: { axes: "b l n", dtype: "f16" },
      E: { axes: "v d", dtype: "bf16" },
      ids: { axes: "b l", dtype: "i32" },
    },
    (t) => {
      const decay = sigmoid(t.a);
      const h = scan("l", decay, t.u);
      const y = einsum("b l d n, b l n -> b l d", h, t.C);
      return { y: cast(add(y, gather(t.E, t.ids, "v")), "f16"), h };
    },
    { b: 2, l: 23, d: 5, n: 3, v: 11 },
    { backend: "gpu" },
  );
  const inputs = randomInputs(prog.graph, rng(seed), 11);
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  assertClose(got.h, want.h, 1e-4, `h seed ${seed}`);
  assertClose(got.y, want.y, 1e-3, `y seed ${seed}`);
  prog.destroy();
});

Deno.test("every fused-scan kernel reads 16-bit inputs: tiled, lane, chunked SSD", async () => {
  const seed = freshSeed();
  const f16 = (axes: string) => ({ axes, dtype: "f16" as const });
  const bf16 = (axes: string) => ({ axes, dtype: "bf16" as const });
  // Mamba-1's selective scan (decay over the state axis): the tiled and the lane kernels.
  for (const scanOptions of [{ tileSteps: 8, lanes: 4, workgroup: 32 }, { lanes: 2 }]) {
    const prog = await compile(
      { x: f16("b l d"), dt: bf16("b l d"), B: f16("b l n"), C: bf16("b l n"), A: "d n" },
      (t) => {
        const delta = softplus(t.dt);
        const h = scan(
          "l",
          exp(einsum("b l d, d n -> b l d n", delta, t.A)),
          einsum("b l d, b l n, b l d -> b l d n", delta, t.B, t.x),
        );
        return einsum("b l d n, b l n -> b l d", h, t.C);
      },
      { b: 2, l: 21, d: 6, n: 8 },
      { backend: "gpu", scan: scanOptions },
    );
    const kind = prog.kernels[0].wgsl.match(/^\/\/ \w+: .*$/m)?.[0] ?? "";
    assert.match(kind, scanOptions.tileSteps ? /tiled/ : /^(?!.*tiled)/, kind);
    const inputs = randomInputs(prog.graph, rng(seed));
    assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `${kind} seed ${seed}`);
    prog.destroy();
  }
  // Mamba-2's scalar decay per head: the chunked (SSD) lowering and the recurrent kernel.
  for (const mode of ["chunked", "recurrent"] as const) {
    const prog = await compile(
      { a: f16("b l h"), x: bf16("b l h p"), B: f16("b l n"), C: bf16("b l n") },
      (t) => {
        const h = scan("l", sigmoid(t.a), einsum("b l h p, b l n -> b l h p n", t.x, t.B));
        return einsum("b l h p n, b l n -> b l h p", h, t.C);
      },
      { b: 2, l: 45, h: 3, p: 5, n: 6 },
      { backend: "gpu", scan: { mode, chunks: 3 } },
    );
    if (mode === "chunked") assert.equal(prog.kernels.length, 3);
    const inputs = randomInputs(prog.graph, rng(seed));
    assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `${mode} seed ${seed}`);
    prog.destroy();
  }
});

Deno.test("ResidentProgram: 16-bit constants and per-step inputs, f32 state", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const d = 13;
  const prog = await ResidentProgram.create(
    { w: "d", frozen: { axes: "d", dtype: "bf16" }, g: { axes: "d", dtype: "f16" } },
    (t) => ({ w: sub(t.w, mul(t.frozen, t.g)) }),
    { d },
    { state: { w: "w" }, constant: ["frozen"] },
  );
  try {
    const [w0, frozen, g] = [0, 1, 2].map(() => randomArray(d, next));
    prog.write("w", w0);
    prog.write("frozen", frozen);
    await prog.step({ g });
    await prog.step({ g });
    const got = await prog.read(["w", "frozen"]);
    const want = w0.map((w, i) => w - 2 * roundToBf16(frozen[i]) * roundToF16(g[i]));
    assertClose(got.w, want, 1e-6, `two steps (seed ${seed})`);
    // A 16-bit constant reads back as its rounded values (odd length: a padded last word).
    assert.deepEqual([...got.frozen], [...frozen].map(roundToBf16));
  } finally {
    prog.destroy();
  }
});

Deno.test("gradients pass through casts", async () => {
  const seed = freshSeed();
  const prog = await compile(
    { x: "r c", w: { axes: "c", dtype: "bf16" } },
    (t) => {
      const [loss, grads] = valueAndGrad((p: { x: Tensor }) =>
        sum(mul(cast(p.x, "f16"), t.w), "r c")
      )({ x: t.x });
      return { loss, dx: grads.x };
    },
    { r: 5, c: 9 },
    { backend: "gpu" },
  );
  const inputs = randomInputs(prog.graph, rng(seed));
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  assertClose(got.loss, want.loss, 1e-4, `loss seed ${seed}`);
  assertClose(got.dx, want.dx, 1e-5, `dx seed ${seed}`);
  // d/dx of cast(x)·w is w (rounded to bf16), per column.
  assert.deepEqual([...got.dx].slice(0, 9), [...inputs.w].map(roundToBf16));
  prog.destroy();
});

Deno.test("16-bit misuse is one clear error", async () => {
  await assert.rejects(
    () => compile({ x: "c" }, (t) => cast(t.x, "i32" as "f16"), { c: 3 }, { backend: "cpu" }),
    /cast: dtype "i32" is not one of f32, f16, bf16/,
  );
  await assert.rejects(
    () => compile({ x: { axes: "c", dtype: "f8" as "f16" } }, (t) => t.x, { c: 3 }),
    /input "x": dtype "f8" is not one of/,
  );
  await assert.rejects(
    () =>
      compile(
        { s: { axes: "c", dtype: "f16" }, u: "l c" },
        (t) => ({ s2: finalState(scan("l", 0.5, t.u, { init: t.s })) }),
        { c: 3, l: 4 },
        { backend: "gpu", inPlace: { s2: "s" } },
      ),
    /input "s" \[c\] is updated in place but has dtype f16; in-place state must be f32/,
  );
  // A device without shader-f16: f16 kernels are refused by name; bf16 needs no feature.
  const ctx = await getGpu();
  const noF16 = { ...ctx, features: { ...ctx.features, shaderF16: false } };
  await assert.rejects(
    () => compile({ x: { axes: "c", dtype: "f16" } }, (t) => exp(t.x), { c: 5 }, { gpu: noF16 }),
    /computes with f16 .* lacks WebGPU's "shader-f16" feature; use f32 or bf16 instead/,
  );
  const bf = await compile({ x: { axes: "c", dtype: "bf16" } }, (t) => exp(t.x), { c: 5 }, {
    gpu: noF16,
  });
  const x = Float32Array.from([0.1, -1, 2, 3.3, 0]);
  assertClose(await bf.run({ x }), bf.interpret({ x }), 1e-5, "bf16 without shader-f16");
  bf.destroy();
});

Deno.test("the delta rule reads 16-bit operands (recurrent and chunked), its state in f32", async () => {
  const seed = freshSeed();
  const sizes = { b: 1, t: 37, h: 2, dk: 12, dv: 6 };
  for (const mode of ["recurrent", "chunked"] as const) {
    const prog = await compile(
      {
        q: { axes: "b t h dk", dtype: "f16" },
        k: { axes: "b t h dk", dtype: "bf16" },
        v: { axes: "b t h dv", dtype: "f16" },
        braw: { axes: "b t h", dtype: "bf16" },
        g: "b t h",
      },
      (x) => {
        const { y, state } = deltaRule(
          { q: x.q, k: mul(x.k, 0.5), v: x.v, beta: sigmoid(x.braw), gate: neg(exp(x.g)) },
          { time: "t", key: "dk", value: "dv" },
        );
        return { y, state };
      },
      sizes,
      { backend: "gpu", scan: { mode } },
    );
    const inputs = randomInputs(prog.graph, rng(seed));
    const got = await prog.run(inputs);
    const want = prog.interpret(inputs);
    assertClose(got.y, want.y, 1e-4, `${mode} y, seed ${seed}`);
    assertClose(got.state, want.state, 1e-4, `${mode} state, seed ${seed}`);
    prog.destroy();
  }
});

Deno.test("attention reads 16-bit q, k and v (prefill, and decode with key splits)", async () => {
  const seed = freshSeed();
  for (const dtype of ["f16", "bf16"] as const) {
    // A causal prefill, and one query against 300 keys split over workgroups.
    for (const [t, s, attentionOptions] of [[9, 9, {}], [1, 300, { splits: 4 }]] as const) {
      const prog = await compile(
        {
          q: { axes: "b g r t d", dtype },
          k: { axes: "b g s d", dtype },
          v: { axes: "b g s e", dtype },
        },
        (x) => attention(x.q, x.k, x.v, { causal: true }),
        { b: 1, g: 2, r: 3, t, s, d: 16, e: 8 },
        { backend: "gpu", attention: attentionOptions },
      );
      assert.equal(prog.kernels.filter((k) => k.name.includes("attention")).length, 1);
      const inputs = randomInputs(prog.graph, rng(seed));
      const what = `${dtype} t ${t} s ${s}, seed ${seed}`;
      assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, what);
      prog.destroy();
    }
  }
});
