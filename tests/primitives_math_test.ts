// The elementwise primitives of dsl/math.ts: GPU kernels against the float64 interpreter (with
// each op's documented accuracy as the bound), and the interpreter against independent float64
// computations (Math.*, tabulated erf values, numerical integration).
import assert from "node:assert/strict";
import { ceil, clamp, cos, erf, floor, gelu, mod, round, sign, sin, tan } from "../dsl/math.ts";
import { add, mul } from "../dsl/elementwise.ts";
import { trace } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { interpret } from "../runtime/interpreter.ts";
import { compile } from "../runtime/compile.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

/** Largest |got − want| and where. */
function maxAbsError(got: ArrayLike<number>, want: ArrayLike<number>) {
  assert.equal(got.length, want.length);
  let worst = 0, at = 0;
  for (let i = 0; i < got.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= worst)) [worst, at] = [Number.isNaN(e) ? Infinity : e, i];
  }
  return { worst, at };
}

function assertAbs(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  context: string,
  x?: ArrayLike<number>,
): void {
  const { worst, at } = maxAbsError(got, want);
  assert.ok(
    worst <= tol,
    `${context}: max |error| ${worst.toExponential(3)} > ${tol} at ${at}` +
      (x ? ` (x = ${x[at]}: got ${got[at]}, want ${want[at]})` : ""),
  );
}

/** Random f32 values in [lo, hi) with a few awkward ones mixed in (ties, zeros, integers). */
function awkward(n: number, next: () => number, lo: number, hi: number): Float32Array {
  const x = randomArray(n, next, lo, hi);
  const specials = [0, -0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1, -1, 3, -7, lo, hi * 0.999];
  for (let i = 0; i < n; i += 7) x[i] = specials[(i / 7) % specials.length];
  return x;
}

/** Evaluates `fn` on the interpreter with float64 input `x` (axis "i"). */
function interpret1(fn: (x: Tensor<"i">) => Tensor, x: Float64Array): Float64Array {
  const g = trace({ x: "i" }, ({ x }) => fn(x), { i: x.length });
  return interpret(g, { x }).out;
}

Deno.test("sin, cos on the GPU: |error| ≤ 5e-7 for |x| up to 1e5 (rotary positions)", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  // Small, medium and large magnitudes; f32 inputs, so both sides see the same argument.
  const x = new Float32Array(3001);
  for (let i = 0; i < x.length; i++) {
    const scale = [1, 100, 1e4, 1e5][i % 4];
    x[i] = (2 * next() - 1) * scale;
  }
  x[0] = 0;
  x[1] = Math.fround(Math.PI / 2);
  x[2] = Math.fround(-Math.PI);
  x[3] = 1e-20; // flushes to zero or not: both are within the bound
  const prog = await compile({ x: "i" }, ({ x }) => ({ s: sin(x), c: cos(x) }), { i: x.length }, {
    backend: "gpu",
  });
  assert.equal(prog.kernels.length, 2);
  const got = await prog.run({ x });
  const want = prog.interpret({ x });
  assertAbs(got.s, want.s, 5e-7, `sin, seed ${seed}`, x);
  assertAbs(got.c, want.c, 5e-7, `cos, seed ${seed}`, x);
  prog.destroy();
});

Deno.test("tan on the GPU: error ≤ 1e-6·(1 + tan²) away from the poles", async () => {
  const seed = freshSeed();
  const x = awkward(1001, rng(seed), -40, 40);
  // Keep |cos x| ≥ 0.05: near a pole no f32 tangent is meaningful.
  for (let i = 0; i < x.length; i++) if (Math.abs(Math.cos(x[i])) < 0.05) x[i] = 0.25;
  const prog = await compile({ x: "i" }, ({ x }) => tan(x), { i: x.length }, { backend: "gpu" });
  const got = await prog.run({ x });
  const want = prog.interpret({ x });
  for (let i = 0; i < x.length; i++) {
    const tol = 1e-6 * (1 + want[i] * want[i]);
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `tan(${x[i]}): ${got[i]} vs ${want[i]}`);
  }
  prog.destroy();
});

Deno.test("floor, ceil, round (ties to even), sign, clamp on the GPU equal the interpreter exactly", async () => {
  const seed = freshSeed();
  const x = awkward(2 * 517, rng(seed), -20, 20);
  // Every tie from −10.5 to 10.5, where round's tie rule shows.
  for (let k = -11; k <= 10; k++) x[3 + 2 * (k + 11)] = k + 0.5;
  const lo = randomArray(517, rng(seed + 1), -6, 0);
  const prog = await compile(
    { x: "a i", lo: "i" },
    ({ x, lo }) => ({
      floor: floor(x),
      ceil: ceil(x),
      round: round(x),
      sign: sign(x),
      clamp: clamp(x, lo, 2.5),
    }),
    { a: 2, i: 517 },
    { backend: "gpu" },
  );
  const got = await prog.run({ x, lo });
  const want = prog.interpret({ x, lo });
  for (const name of ["floor", "ceil", "round", "sign", "clamp"] as const) {
    assert.deepEqual(Array.from(got[name]), Array.from(want[name]), name);
  }
  // The tie rule itself, on the GPU: 0.5 → 0, 1.5 → 2, 2.5 → 2, −2.5 → −2, −3.5 → −4.
  const ties = Array.from({ length: 22 }, (_, j) => got.round[3 + 2 * j]);
  const even = Array.from({ length: 22 }, (_, j) => {
    const k = j - 11; // the tie k + 0.5 lies between k and k + 1: pick the even one
    return k % 2 === 0 ? k : k + 1;
  });
  assert.deepEqual(ties.map((v) => v + 0), even);
  prog.destroy();
});

Deno.test("erf and gelu (exact and tanh) on the GPU: within the documented bounds", async () => {
  const seed = freshSeed();
  const x = awkward(1999, rng(seed), -6, 6);
  const prog = await compile(
    { x: "i" },
    ({ x }) => ({ erf: erf(x), gelu: gelu(x), geluTanh: gelu(x, { approximate: "tanh" }) }),
    { i: x.length },
    { backend: "gpu" },
  );
  assert.equal(prog.kernels.length, 3);
  const got = await prog.run({ x });
  const want = prog.interpret({ x });
  assertAbs(got.erf, want.erf, 4e-7, `erf, seed ${seed}`, x);
  // gelu's erf argument is x/√2 rounded to f32: an extra relative error of 2⁻²⁴ in it.
  assertAbs(got.gelu, want.gelu, 2e-6, `gelu, seed ${seed}`, x);
  assertAbs(got.geluTanh, want.geluTanh, 2e-6, `gelu tanh, seed ${seed}`, x);
  // Small arguments keep their relative accuracy (the series branch).
  for (let i = 0; i < x.length; i++) {
    if (Math.abs(x[i]) < 0.5 && x[i] !== 0) {
      assert.ok(Math.abs(got.erf[i] / want.erf[i] - 1) < 1e-6, `erf(${x[i]}) relative`);
    }
  }
  prog.destroy();
});

Deno.test("mod on the GPU: exact on integers, within an ulp (mod b) on floats, in [0, b)", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const n = 1003;
  const a = awkward(n, next, -60, 60);
  const b = new Float32Array(n);
  for (let i = 0; i < n; i++) b[i] = (next() < 0.5 ? -1 : 1) * (0.5 + 4 * next());
  // Integer positions modulo integer periods, as rotary and chunking code uses them.
  const ia = Float32Array.from({ length: n }, (_, i) => i - 500);
  const ib = Float32Array.from({ length: n }, (_, i) => [3, 4, -5, 7, 64][i % 5]);
  const prog = await compile(
    { a: "i", b: "i", ia: "i", ib: "i" },
    ({ a, b, ia, ib }) => ({ float: mod(a, b), int: mod(ia, ib) }),
    { i: n },
    { backend: "gpu" },
  );
  const got = await prog.run({ a, b, ia, ib });
  const want = prog.interpret({ a, b, ia, ib });
  // (The sign of a zero remainder is not specified: compare values.)
  assert.deepEqual(Array.from(got.int, (v) => v + 0), Array.from(want.int, (v) => v + 0));
  for (let i = 0; i < n; i++) {
    const r = got.float[i];
    assert.ok(b[i] > 0 ? r >= 0 && r < b[i] : r <= 0 && r > b[i], `mod(${a[i]}, ${b[i]}) = ${r}`);
    // Circular distance: a result just below b and one just above 0 are neighbours.
    const d = Math.abs(r - want.float[i]);
    const circular = Math.min(d, Math.abs(Math.abs(b[i]) - d));
    assert.ok(circular <= 1e-5, `mod(${a[i]}, ${b[i]}): ${r} vs ${want.float[i]}`);
  }
  prog.destroy();
});

Deno.test("interpreter: sin, cos, tan, floor, ceil, sign, clamp match Math in float64", () => {
  const next = rng(7);
  const x = Float64Array.from({ length: 501 }, () => (2 * next() - 1) * 10 ** (4 * next()));
  const cases: [(x: Tensor<"i">) => Tensor, (v: number) => number][] = [
    [sin, Math.sin],
    [cos, Math.cos],
    [tan, Math.tan],
    [floor, Math.floor],
    [ceil, Math.ceil],
    [sign, Math.sign],
    [(x) => clamp(x, -3, 2), (v) => Math.min(Math.max(v, -3), 2)],
  ];
  for (const [op, ref] of cases) {
    assert.deepEqual(Array.from(interpret1(op, x)), Array.from(x, ref), String(ref));
  }
});

Deno.test("interpreter: round breaks ties to even; mod is the floor remainder", () => {
  const x = Float64Array.from([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.4999, -2.5001, 7]);
  assert.deepEqual(
    Array.from(interpret1(round, x)).map((v) => v + 0),
    [-4, -2, -2, 0, 0, 2, 2, 4, 2, -3, 7],
  );
  const a = Float64Array.from([7, -7, 7, -7, 0, 6, -6, 5.5, -5.5, 1e-300]);
  const b = Float64Array.from([3, 3, -3, -3, 3, 3, 3, 2, 2, 7]);
  const g = trace({ a: "i", b: "i" }, ({ a, b }) => mod(a, b), { i: a.length });
  const got = Array.from(interpret(g, { a, b }).out).map((v) => v + 0);
  // Python: 7 % 3 = 1, -7 % 3 = 2, 7 % -3 = -2, -7 % -3 = -1, 5.5 % 2 = 1.5, -5.5 % 2 = 0.5.
  assert.deepEqual(got, [1, 2, -2, -1, 0, 0, 0, 1.5, 0.5, 1e-300]);
  // Random floats against a − b·⌊a/b⌋ (which float64 computes to ~1e-15 here).
  const next = rng(3);
  const fa = Float64Array.from({ length: 300 }, () => 100 * (2 * next() - 1));
  const fb = Float64Array.from({ length: 300 }, () => (next() < 0.5 ? -1 : 1) * (0.1 + next()));
  const fr = interpret(trace({ a: "i", b: "i" }, ({ a, b }) => mod(a, b), { i: 300 }), {
    a: fa,
    b: fb,
  }).out;
  for (let i = 0; i < 300; i++) {
    const ref = fa[i] - fb[i] * Math.floor(fa[i] / fb[i]);
    assert.ok(Math.abs(fr[i] - ref) < 1e-12, `mod(${fa[i]}, ${fb[i]})`);
  }
});

Deno.test("interpreter: erf matches tabulated values (2e-15) and a numerical integral (1e-13)", () => {
  // erf to 16+ digits (Abramowitz & Stegun table 7.1; DLMF).
  const table: [number, number][] = [
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3, 0.9999779095030014],
    [-1, -0.8427007929497149],
    [0, 0],
  ];
  const got = interpret1(erf, Float64Array.from(table, ([x]) => x));
  table.forEach(([x, want], i) => assert.ok(Math.abs(got[i] - want) < 2e-15, `erf(${x})`));
  // Composite Simpson's rule of 2/√π·e^(−t²) on [0, x]: truncation error ~1e-15 with 20000
  // intervals, rounding of the sum ~1e-14.
  const xs = Float64Array.from({ length: 41 }, (_, i) => -5 + i * 0.25 + 0.01);
  const values = interpret1(erf, xs);
  xs.forEach((x, i) => {
    const n = 20000, h = x / n;
    let s = 1 + Math.exp(-x * x);
    for (let k = 1; k < n; k++) s += (k % 2 ? 4 : 2) * Math.exp(-((k * h) ** 2));
    const integral = (2 / Math.sqrt(Math.PI)) * (h / 3) * s;
    assert.ok(Math.abs(values[i] - integral) < 1e-13, `erf(${x}): ${values[i]} vs ${integral}`);
  });
});

Deno.test("interpreter: gelu is x·Φ(x) (exact) and HF's gelu_new formula (tanh)", () => {
  // x·Φ(x) with Φ(1) = 0.8413447460685429, Φ(2) = 0.9772498680518208 (normal table).
  const x = Float64Array.from([1, -1, 2, 0]);
  const exact = interpret1((t) => gelu(t), x);
  const want = [0.8413447460685429, -(1 - 0.8413447460685429), 2 * 0.9772498680518208, 0];
  want.forEach((w, i) => assert.ok(Math.abs(exact[i] - w) < 2e-15, `gelu(${x[i]})`));
  const xs = Float64Array.from({ length: 81 }, (_, i) => -8 + i * 0.2);
  const approx = interpret1((t) => gelu(t, { approximate: "tanh" }), xs);
  xs.forEach((v, i) => {
    const ref = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    assert.ok(Math.abs(approx[i] - ref) < 1e-14, `gelu_new(${v})`);
  });
  // The two forms differ by at most ~1e-3 (the approximation's known error).
  const exactAll = interpret1((t) => gelu(t), xs);
  xs.forEach((_, i) => assert.ok(Math.abs(exactAll[i] - approx[i]) < 1e-3));
});

Deno.test("math ops fuse: sin·cos + floor(x) of one input is one kernel reading only x", async () => {
  const prog = await compile(
    { x: "b l" },
    ({ x }) => add(mul(sin(x), cos(x)), mod(floor(x), 3)),
    { b: 3, l: 11 },
    { backend: "cpu" },
  );
  assert.equal(prog.kernels.length, 1);
  assert.deepEqual(prog.kernels[0].reads.map((r) => r.kind), ["input"]);
});
