// Gradients of the named associative scans against central finite differences (float64
// interpreter), both directions, and the GPU's backward kernels against the interpreter.
import assert from "node:assert/strict";
import { valueAndGrad } from "../dsl/autodiff.ts";
import {
  associativeScan,
  cummax,
  cummin,
  cumprod,
  cumsum,
  logcumsumexp,
} from "../dsl/assoc_scan.ts";
import { add, exp, log, maximum, mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { checkGradients, gradFn, randomData, weighted } from "./grad_check.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const OPS: [string, (x: Tensor, reverse: boolean) => Tensor, [number, number]][] = [
  ["cumsum", (x, reverse) => cumsum(x, "l", { reverse }), [-1, 1]],
  ["cumprod", (x, reverse) => cumprod(x, "l", { reverse }), [0.5, 1.5]],
  ["cummax", (x, reverse) => cummax(x, "l", { reverse }), [-1, 1]],
  ["cummin", (x, reverse) => cummin(x, "l", { reverse }), [-1, 1]],
  ["logcumsumexp", (x, reverse) => logcumsumexp(x, "l", { reverse }), [-30, 30]],
];

const SIZES = { b: 2, l: 13, d: 3 };
const INPUTS = { x: "b l d", w: "b l d" } as const;

Deno.test("assocScan grad: every named scan against finite differences", () => {
  for (const [name, op, range] of OPS) {
    for (const reverse of [false, true]) {
      const seed = freshSeed();
      // The scanned value goes through an elementwise map first, so the element is a tree.
      const loss = (t: Record<string, Tensor>) => weighted(op(mul(t.x, 1.5), reverse), t.w);
      const data = randomData(INPUTS, SIZES, rng(seed), { x: range });
      try {
        checkGradients(INPUTS, loss, ["x"], SIZES, data, {
          skipKinks: name === "cummax" || name === "cummin",
          step: name === "logcumsumexp" ? 1e-4 : 1e-5,
        });
      } catch (e) {
        throw new Error(`${name} reverse=${reverse} seed ${seed}: ${(e as Error).message}`);
      }
    }
  }
});

Deno.test("assocScan grad: cumsum and cumprod on the chunked kernels", () => {
  // 66001 steps of one channel: the associative scan, not the linear one.
  const sizes = { b: 1, l: 66001 };
  const inputs = { x: "b l", w: "b l" } as const;
  for (const [name, op, range] of OPS.slice(0, 2)) {
    for (const reverse of [false, true]) {
      const seed = freshSeed();
      const loss = (t: Record<string, Tensor>) => weighted(op(t.x, reverse), t.w);
      const kinds = trace(inputs, (t) => op(t.x, reverse), sizes).outputs["out"].kind;
      assert.equal(kinds, "assocScan");
      const data = randomData(inputs, sizes, rng(seed), {
        x: name === "cumprod" ? [0.99999, 1.00001] : range,
      });
      try {
        checkGradients(inputs, loss, ["x"], sizes, data, { maxElements: 12 });
      } catch (e) {
        throw new Error(`${name} reverse=${reverse} seed ${seed}: ${(e as Error).message}`);
      }
    }
  }
});

Deno.test("assocScan grad: ties send the cotangent to the first extreme", () => {
  // x = [1, 3, 3, 2, 3]: the running max is 1 3 3 3 3; position 1 attains it first.
  const g = trace({ x: "l" }, ({ x }) => {
    const [, grads] = valueAndGrad((p: { x: Tensor<"l"> }) => sum(cummax(p.x, "l"), "l"))({ x });
    return grads.x;
  }, { l: 5 });
  const x = Float64Array.from([1, 3, 3, 2, 3]);
  assert.deepEqual([...interpret(g, { x })["out"]], [1, 4, 0, 0, 0]);
  // Reverse: "first" in scan order is the largest index. x = [3, 2, 3, 3, 1]: position 3 attains
  // the running max 3 before positions 2 and 0 tie it.
  const r = trace({ x: "l" }, ({ x }) => {
    const [, grads] = valueAndGrad((p: { x: Tensor<"l"> }) =>
      sum(cummax(p.x, "l", { reverse: true }), "l")
    )({ x });
    return grads.x;
  }, { l: 5 });
  const xr = Float64Array.from([3, 2, 3, 3, 1]);
  assert.deepEqual([...interpret(r, { x: xr })["out"]], [0, 0, 0, 4, 1]);
});

/** Users' combines over records of 1, 2 and 4 components (sum, max, log-add, (s, m), 2×2). */
const USER_COMBINES: {
  name: string;
  scan: (t: Record<string, Tensor>, reverse: boolean) => Tensor;
  kinks?: boolean;
}[] = [
  {
    name: "sum",
    scan: (t, reverse) =>
      associativeScan("l", (a, b) => ({ x: add(a.x, b.x) }), { x: t.x }, { reverse }).x,
  },
  {
    name: "max",
    kinks: true,
    scan: (t, reverse) =>
      associativeScan("l", (a, b) => ({ x: maximum(a.x, b.x) }), { x: t.x }, { reverse }).x,
  },
  {
    name: "logaddexp",
    scan: (t, reverse) =>
      associativeScan("l", (a, b) => ({ x: log(add(exp(a.x), exp(b.x))) }), { x: t.x }, {
        reverse,
      }).x,
  },
  {
    // mLSTM's stabilizer: (s, m) ⊕ (s', m') = (s + s', max(m + s', m')); both components used.
    name: "stabilizer",
    kinks: true,
    scan: (t, reverse) => {
      const r = associativeScan(
        "l",
        (a, b) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) }),
        { s: mul(t.x, 0.5), m: t.y },
        { reverse },
      );
      return add(r.m, mul(r.s, t.w));
    },
  },
  {
    // 2×2 matrix products, the (1, 0) entry used.
    name: "matrix",
    scan: (t, reverse) =>
      associativeScan(
        "l",
        (a, b) => ({
          p: add(mul(a.p, b.p), mul(a.q, b.r)),
          q: add(mul(a.p, b.q), mul(a.q, b.s)),
          r: add(mul(a.r, b.p), mul(a.s, b.r)),
          s: add(mul(a.r, b.q), mul(a.s, b.s)),
        }),
        { p: t.x, q: mul(t.y, 0.5), r: mul(t.w, 0.5), s: t.y },
        { reverse },
      ).r,
  },
];

Deno.test("assocScan grad: users' combines against finite differences", () => {
  const inputs = { x: "b l d", y: "b l d", w: "b l d", v: "b l d" } as const;
  for (const c of USER_COMBINES) {
    for (const reverse of [false, true]) {
      const seed = freshSeed();
      const loss = (t: Record<string, Tensor>) => weighted(c.scan(t, reverse), t.v);
      const data = randomData(inputs, SIZES, rng(seed), { x: [-1, 1], y: [-1, 1], w: [-1, 1] });
      try {
        checkGradients(inputs, loss, ["x", "y", "w"], SIZES, data, { skipKinks: c.kinks });
      } catch (e) {
        throw new Error(`${c.name} reverse=${reverse} seed ${seed}: ${(e as Error).message}`);
      }
    }
  }
});

Deno.test("assocScan grad: users' combines on the GPU match the interpreter", async () => {
  const inputs = { x: "b l d", y: "b l d", w: "b l d", v: "b l d" } as const;
  for (const c of USER_COMBINES) {
    const seed = freshSeed();
    const reverse = c.name.length % 2 === 0; // both directions over the five
    const prog = await compile(
      inputs,
      gradFn((t) => weighted(c.scan(t, reverse), t.v), ["x", "y", "w"]),
      // Long enough for the chunked kernels (totals, carries, outputs) on one channel's axis.
      { b: 1, l: 2500, d: 2 },
      { backend: "gpu" },
    );
    try {
      const data = Object.fromEntries(
        Object.keys(inputs).map((k) => [k, randomArray(2 * 2500, rng(seed + k.length))]),
      );
      assert.ok(prog.kernels.some((k) => k.name.endsWith("_carries")), `${c.name}: chunked`);
      const got = await prog.run(data);
      const want = prog.interpret(data);
      for (const key of Object.keys(want)) {
        assertClose(got[key], want[key], 1e-4, `${c.name} ${key} seed ${seed}`);
      }
    } finally {
      prog.destroy();
    }
  }
});

Deno.test("assocScan grad: the backward kernels match the interpreter", async () => {
  for (const [name, op, range] of OPS.slice(2)) {
    for (const reverse of [false, true]) {
      const seed = freshSeed();
      const fn = (t: Record<string, Tensor>) => {
        const [value, grads] = valueAndGrad((p: { x: Tensor }) => weighted(op(p.x, reverse), t.w))({
          x: t.x,
        });
        return { value, dx: grads.x };
      };
      const prog = await compile(INPUTS, fn, { b: 2, l: 41, d: 3 }, { backend: "gpu" });
      const next = rng(seed);
      const n = 2 * 41 * 3;
      const data = { x: randomArray(n, next, ...range), w: randomArray(n, next) };
      const got = await prog.run(data);
      const want = prog.interpret(data);
      assertClose(got.dx, want.dx, 1e-4, `${name} reverse=${reverse} seed ${seed}: dx`);
      prog.destroy();
    }
  }
});
