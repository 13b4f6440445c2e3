// Reverse-mode autodiff: every node kind's transpose rule against central finite differences of
// the float64 interpreter, at odd sizes, on fresh random inputs (the seed is in every error).
import assert from "node:assert/strict";
import { grad, valueAndGrad, vjp } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import * as math from "../dsl/math.ts";
import { max, mean, min, rmsnorm, softmax, sum } from "../dsl/reduce.ts";
import { finalState, pick, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { type InputSpec, type Sizes, trace } from "../dsl/trace.ts";
import { concat, conv1d, flip, gather, rearrange, slice, transpose } from "../dsl/views.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { interpret } from "../runtime/interpreter.ts";
import { checkGradients, type CheckOptions, randomData, weighted } from "./grad_check.ts";
import { freshSeed, rng } from "./util.ts";

type Fn = (t: Record<string, Tensor>) => Tensor;

interface OpCase {
  inputs: InputSpec;
  fn: Fn;
  sizes: Sizes;
  /** Inputs differentiated (default: every f32 input). */
  wrt?: string[];
  ranges?: Record<string, [number, number]>;
  ids?: Record<string, Int32Array>;
  /** Fixed data for some inputs (e.g. exact ties). */
  fixed?: Record<string, Float64Array>;
  options?: CheckOptions;
}

/**
 * Checks the gradients of Σ fn(t)·w (w random: the extra input `lossWeights`) — or of fn itself when it is
 * scalar — with respect to `wrt`, against central differences.
 */
function checkOp(what: string, c: OpCase): Record<string, Float64Array> {
  const seed = freshSeed();
  const probe = trace(c.inputs, c.fn, c.sizes).outputs["out"];
  const scalar = probe.axes.length === 0;
  const inputs: InputSpec = scalar ? c.inputs : { ...c.inputs, lossWeights: probe.axes.join(" ") };
  const loss: Fn = scalar ? c.fn : (t) => weighted(c.fn(t), t.lossWeights);
  const data = { ...randomData(inputs, c.sizes, rng(seed), c.ranges, c.ids), ...c.fixed };
  const probeGraph = trace(c.inputs, c.fn, c.sizes);
  const wrt = c.wrt ?? probeGraph.inputs.filter((i) => i.dtype === "f32").map((i) => i.name);
  try {
    return checkGradients(inputs, loss, wrt, c.sizes, data, c.options);
  } catch (e) {
    throw new Error(`${what} (seed ${seed}): ${(e as Error).message}`);
  }
}

const BD = { b: 3, d: 5 };

Deno.test("autodiff: unary ops", () => {
  const positive: [number, number] = [0.3, 1.7];
  const cases: [string, (x: Tensor) => Tensor, [number, number]?][] = [
    ["neg", ew.neg],
    ["exp", ew.exp],
    ["log", ew.log, positive],
    ["sqrt", ew.sqrt, positive],
    ["rsqrt", ew.rsqrt, positive],
    ["abs", ew.abs],
    ["sigmoid", ew.sigmoid],
    ["silu", ew.silu, [-4, 4]],
    ["softplus", ew.softplus, [-4, 4]],
    ["tanh", ew.tanh],
    ["relu", ew.relu],
    ["sin", math.sin, [-4, 4]],
    ["cos", math.cos, [-4, 4]],
    ["tan", math.tan, [-1.2, 1.2]],
    ["erf", math.erf, [-2.5, 2.5]],
    // Piecewise constant: zero away from their jumps.
    ["floor", math.floor, [0.1, 0.9]],
    ["ceil", math.ceil, [0.1, 0.9]],
    ["round", math.round, [0.1, 0.4]],
    ["sign", math.sign, [0.2, 1]],
  ];
  for (const [name, f, range] of cases) {
    checkOp(name, {
      inputs: { x: "b d" },
      fn: (t) => f(t.x),
      sizes: BD,
      ranges: range ? { x: range } : {},
    });
  }
  // softplus past its linear threshold (20): slope 1 on both sides.
  checkOp("softplus > 20", {
    inputs: { x: "b d" },
    fn: (t) => ew.softplus(t.x),
    sizes: BD,
    ranges: { x: [21, 25] },
  });
});

Deno.test("autodiff: binary ops with broadcasting by name", () => {
  const ops: [string, (a: Tensor, b: Tensor) => Tensor][] = [
    ["add", ew.add],
    ["sub", ew.sub],
    ["mul", ew.mul],
    ["div", ew.div],
    ["pow", ew.pow],
    ["maximum", ew.maximum],
    ["minimum", ew.minimum],
  ];
  // Same axes (another layout), and one operand's axes inside the other's.
  const layouts: [string, string][] = [["b d", "d b"], ["b l d", "d"], ["d", "b l d"], [
    "l b d",
    "b d",
  ]];
  for (const [name, f] of ops) {
    for (const [ax, bx] of layouts) {
      const positive = name === "div" || name === "pow";
      checkOp(`${name}(${ax}, ${bx})`, {
        inputs: { a: ax, b: bx },
        // deno-lint-ignore no-explicit-any
        fn: (t) => f(t.a as any, t.b as any),
        sizes: { b: 3, l: 2, d: 5 },
        ranges: positive ? { a: [0.4, 1.6], b: [0.5, 1.5] } : {},
      });
    }
  }
  // The floor remainder: slope 1 in a, −⌊a/b⌋ in b (here ⌊a/b⌋ = 1).
  checkOp("mod(a, b)", {
    inputs: { a: "b d", b: "d" },
    fn: (t) => math.mod(t.a, t.b),
    sizes: BD,
    ranges: { a: [2.2, 2.8], b: [1.6, 1.9] },
  });
  // Constant exponents (folded: a^(b−1) with b − 1 a literal), negative bases included.
  for (const p of [0, 1, 2, 3]) {
    checkOp(`pow(a, ${p})`, { inputs: { a: "b d" }, fn: (t) => ew.pow(t.a, p), sizes: BD });
  }
});

Deno.test("autodiff: comparisons have no gradient; where routes it", () => {
  const g = checkOp("gt feeds nothing", {
    inputs: { a: "b d", b: "d" },
    fn: (t) => ew.add(ew.gt(t.a, t.b), ew.mul(ew.le(t.a, t.b), 0)),
    sizes: BD,
  });
  assert.ok(g.a.every((v) => v === 0) && g.b.every((v) => v === 0));
  checkOp("where (cond over an axis a and b lack)", {
    inputs: { c: "b l d", a: "b d", b: "d" },
    fn: (t) => ew.where(ew.gt(t.c, 0), ew.exp(t.a), ew.mul(t.b, t.b)),
    sizes: { b: 3, l: 2, d: 5 },
    wrt: ["a", "b"],
  });
});

Deno.test("autodiff: contractions", () => {
  const specs: [string, InputSpec][] = [
    ["b k, k n -> b n", { x: "b k", y: "k n" }],
    ["b l d, d n -> b l d n", { x: "b l d", y: "d n" }],
    ["b l d, d e -> b e", { x: "b l d", y: "d e" }],
    ["b l d, b l n, b l d -> b l d n", { x: "b l d", y: "b l n", z: "b l d" }],
    ["b k, k -> ", { x: "b k", y: "k" }],
  ];
  for (const [spec, inputs] of specs) {
    checkOp(`einsum ${spec}`, {
      inputs,
      fn: (t) =>
        (einsum as unknown as (s: string, ...x: Tensor[]) => Tensor)(
          spec,
          ...Object.keys(inputs).map((k) => t[k]),
        ),
      sizes: { b: 3, k: 7, n: 2, l: 3, d: 5, e: 4 },
    });
  }
});

Deno.test("autodiff: reductions, softmax and rmsnorm", () => {
  const sizes = { b: 3, l: 4, d: 5 };
  const cases: [string, Fn][] = [
    ["sum l", (t) => sum(t.x, "l")],
    ["sum b d", (t) => sum(t.x, "b d")],
    ["mean d", (t) => mean(t.x, "d")],
    ["max l", (t) => max(t.x, "l")],
    ["min b d", (t) => min(t.x, "b d")],
    ["softmax d", (t) => softmax(t.x, "d")],
    ["softmax l", (t) => softmax(ew.mul(t.x, 3), "l")],
    ["rmsnorm d", (t) => rmsnorm(t.x, "d")],
    ["rmsnorm d with weight", (t) => rmsnorm(t.x, "d", t.g)],
    // The sum's cotangent reaches the add without "l"; g lacks "l" too: it gets l copies.
    ["sum l of x + g", (t) => sum(ew.add(t.x, t.g), "l")],
    ["sum l d of x − g", (t) => sum(ew.sub(t.x, t.g), "l d")],
    ["sum l of x / g", (t) => sum(ew.div(t.x, ew.add(ew.abs(t.g), 1)), "l")],
    ["max b l of x · g", (t) => max(ew.mul(t.x, t.g), "b l")],
    ["sum l of where(x > 0, g, x)", (t) => sum(ew.where(ew.gt(t.x, 0), t.g, t.x), "l")],
    ["mean b l of max(x, g)", (t) => mean(ew.maximum(t.x, t.g), "b l")],
  ];
  for (const [name, fn] of cases) {
    checkOp(name, { inputs: { x: "b l d", g: "d" }, fn, sizes });
  }
});

Deno.test("autodiff: max and min with ties split the cotangent evenly", () => {
  // Two-way exact ties: central differences see ½ on each tied position, like the rule.
  const x = Float64Array.from([0.5, -0.2, 0.5, 0.1, 0.3, -0.7, -0.7, 0.3, 0.9, 0.2, -0.1, 0.9]);
  checkOp("max with two-way ties", {
    inputs: { x: "b l" },
    fn: (t) => max(t.x, "l"),
    sizes: { b: 3, l: 4 },
    fixed: { x },
  });
  checkOp("min with two-way ties", {
    inputs: { x: "b l" },
    fn: (t) => min(t.x, "l"),
    sizes: { b: 3, l: 4 },
    fixed: { x },
  });
  checkOp("maximum and minimum of equal operands", {
    inputs: { a: "b l", b: "b l" },
    fn: (t) => ew.add(ew.maximum(t.a, t.b), ew.mul(ew.minimum(t.a, t.b), 3)),
    sizes: { b: 3, l: 4 },
    fixed: { a: x, b: Float64Array.from(x, (v, i) => (i % 2 ? v : v - 0.25)) },
  });
  // Three-way tie: each position gets ⅓ (one-sided differences would say ½ each; moving all
  // three together moves the max by exactly as much, which the split reproduces).
  const graph = trace({ x: "l" }, (t) => {
    const [, g] = valueAndGrad((p: { x: Tensor }) => max(p.x, "l"))({ x: t.x });
    return g.x;
  }, { l: 5 });
  const got = interpret(graph, { x: [0.4, 0.9, 0.9, -1, 0.9] })["out"];
  assert.deepEqual([...got], [0, 1 / 3, 1 / 3, 0, 1 / 3]);
});

Deno.test("autodiff: views", () => {
  const sizes = { b: 3, l: 5, d: 7, h: 2, p: 3, k: 4, j: 3 };
  const cases: [string, InputSpec, Fn][] = [
    ["transpose", { x: "b l d" }, (t) => ew.exp(transpose(t.x, "d b l"))],
    [
      "rearrange split",
      { x: "b l e" },
      (t) => ew.mul(rearrange(t.x, "b l (h p) -> b h l p", { p: 3 }), t.x.size("b")),
    ],
    ["rearrange merge", { x: "b h p" }, (t) => rearrange(t.x, "b h p -> e=(p h) b")],
    ["slice middle", { x: "b l d" }, (t) => ew.tanh(slice(t.x, "d", 2, 5, "m"))],
    ["slice start and end", { x: "b l d" }, (t) =>
      ew.add(
        slice(t.x, "l", 0, 2, "m"),
        slice(t.x, "l", 3, 5, "m"),
      )],
    ["slice whole axis", { x: "b l" }, (t) => slice(t.x, "l", 0, 5, "l")],
    ["flip", { x: "b l d" }, (t) => ew.mul(flip(t.x, "l"), t.x)],
    [
      "concat (one part twice)",
      { x: "b l", y: "b k" },
      (t) => ew.sigmoid(concat([t.x, t.y, t.x], ["l", "k", "l"], "c")),
    ],
    ["pick first", { x: "b l d" }, (t) => pick(t.x, "l", 0)],
    ["pick middle", { x: "b l d" }, (t) => ew.exp(pick(t.x, "d", 3))],
    ["pick last (negative)", { x: "b l d" }, (t) => pick(t.x, "b", -1)],
    [
      "sum of a view feeds a view",
      { x: "b l d" },
      (t) => flip(sum(transpose(t.x, "l d b"), "d"), "l"),
    ],
  ];
  const extra: Sizes = { e: 6, m: 3, c: 14 };
  for (const [name, inputs, fn] of cases) {
    const s = { ...sizes, ...extra, m: name === "slice start and end" ? 2 : 3 };
    checkOp(name, { inputs, fn, sizes: s });
  }
});

Deno.test("autodiff: gather with repeated indices", () => {
  // Ids repeat within and across rows; row 3 of the table is never read (zero gradient).
  const ids = Int32Array.from([4, 0, 4, 1, 4, 0, 2, 2]);
  const g = checkOp("gather", {
    inputs: { table: "v d", ids: { axes: "b l", dtype: "i32" } },
    fn: (t) => ew.mul(gather(t.table, t.ids, "v"), gather(t.table, t.ids, "v")),
    sizes: { v: 5, d: 3, b: 2, l: 4 },
    ids: { ids },
  });
  assert.ok(g.table.slice(9, 12).every((v) => v === 0), "an unread row has zero gradient");
});

Deno.test("autodiff: conv1d (x and taps; taps longer than the sequence)", () => {
  for (const [l, k] of [[7, 4], [3, 4], [1, 2], [5, 1]]) {
    checkOp(`conv1d l=${l} k=${k}`, {
      inputs: { x: "b l d", w: "d k" },
      fn: (t) => conv1d(t.x, t.w, "l", "k"),
      sizes: { b: 2, l, d: 3, k },
    });
  }
  // Taps shared by every channel (the weight lacks the channel axis).
  checkOp("conv1d shared taps", {
    inputs: { x: "b l d", w: "k" },
    fn: (t) => ew.silu(conv1d(t.x, t.w, "l", "k")),
    sizes: { b: 2, l: 6, d: 3, k: 3 },
  });
});

Deno.test("autodiff: scans (forward, reverse, init, finalState, broadcast decay)", () => {
  const sizes = { b: 2, l: 7, d: 3, n: 2 };
  const decay: [number, number] = [0.3, 1.1];
  for (const reverse of [false, true]) {
    const opts = (t: Record<string, Tensor>, init?: boolean) => ({
      reverse,
      init: init ? t.h0 : undefined,
    });
    const cases: [string, InputSpec, Fn][] = [
      ["plain", { a: "b l d", u: "b l d" }, (t) => scan("l", t.a, t.u, opts(t))],
      [
        "init",
        { a: "b l d", u: "b l d", h0: "b d" },
        (t) => scan("l", t.a, t.u, opts(t, true)),
      ],
      [
        "finalState only",
        { a: "b l d", u: "b l d", h0: "b d" },
        (t) => finalState(scan("l", t.a, t.u, opts(t, true))),
      ],
      [
        "decay without the scan axis, init broadcast over b",
        { a: "d", u: "b l d", h0: "d" },
        (t) => scan("l", t.a, t.u, opts(t, true)),
      ],
      [
        "scalar-decay state (SSD-like)",
        { a: "b l", u: "b l d n" },
        (t) => ew.mul(scan("l", t.a, t.u, opts(t)), 2),
      ],
      [
        "input without the state axis",
        { a: "b l d n", u: "b l" },
        (t) => einsum("b l d n, b l n -> b l d", scan("l", t.a, t.u, opts(t)), t.C),
      ],
    ];
    for (const [name, inputs, fn] of cases) {
      const withC = name.startsWith("input") ? { ...inputs, C: "b l n" } : inputs;
      checkOp(`${reverse ? "reverse " : ""}scan: ${name}`, {
        inputs: withC,
        fn,
        sizes,
        ranges: { a: decay },
      });
    }
  }
  checkOp("scan of length 1", {
    inputs: { a: "b l d", u: "b l d", h0: "b d" },
    fn: (t) => scan("l", t.a, t.u, { init: t.h0 }),
    sizes: { b: 2, l: 1, d: 3 },
  });
  checkOp("reverse scan of length 1 with finalState", {
    inputs: { a: "b l d", u: "b l d", h0: "b d" },
    fn: (t) => finalState(scan("l", t.a, t.u, { init: t.h0, reverse: true })),
    sizes: { b: 2, l: 1, d: 3 },
  });
  // A scan feeding a scan (the second's decay depends on the first).
  checkOp("stacked scans", {
    inputs: { a: "b l d", u: "b l d" },
    fn: (t) => scan("l", ew.sigmoid(scan("l", t.a, t.u)), t.u, { reverse: true }),
    sizes,
    ranges: { a: decay },
  });
});

Deno.test("autodiff: Mamba-1 selective scan (y and final state, with init)", () => {
  const inputs = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" } as const;
  for (const reverse of [false, true]) {
    checkOp(`selective scan${reverse ? " (reverse)" : ""}`, {
      inputs,
      fn: (t) => {
        // deno-lint-ignore no-explicit-any
        const { y, state } = selectiveScan(t as any, { reverse, init: t.h0 as any });
        return ew.add(sum(y, "l d"), ew.mul(sum(state, "d n"), 0.5));
      },
      sizes: { b: 2, l: 5, d: 3, n: 2 },
      ranges: { A: [-2, -0.2], dt: [-3, 0.5] },
    });
  }
});

Deno.test("autodiff: API semantics", () => {
  const sizes = { b: 3, d: 5 };
  const seed = freshSeed();
  const data = randomData({ x: "b d", y: "d" }, sizes, rng(seed));
  // A parameter also reached through a closure is a constant there (JAX semantics):
  // d/dp Σ p·x = x even when p is passed x itself.
  const graph = trace({ x: "b d", y: "d" }, (t) => {
    const g = grad((p: { p: Tensor }) => sum(ew.mul(p.p, t.x), "b d"))({ p: t.x });
    const unused = grad((p: { p: Tensor; q: Tensor }) => sum(p.p, "b d"))({ p: t.x, q: t.y });
    return { g: g.p, unused: unused.q, ones: unused.p };
  }, sizes);
  const out = interpret(graph, data);
  assert.deepEqual([...out.g], [...data.x], `seed ${seed}`);
  assert.ok(out.unused.length === 5 && out.unused.every((v) => v === 0));
  assert.ok(out.ones.every((v) => v === 1));

  // vjp with a record of outputs and a layout-permuted cotangent.
  const g2 = trace({ x: "b d", y: "d", cu: "d b", cv: "d" }, (t) => {
    const [outs, pullback] = vjp(
      (p: { x: Tensor; y: Tensor }) => ({ u: ew.mul(p.x, p.y), v: sum(p.x, "b") }),
      { x: t.x, y: t.y },
    );
    const g = pullback({ u: t.cu, v: t.cv });
    return { u: outs.u, dx: g.x, dy: g.y };
  }, sizes);
  const cu = Float64Array.from({ length: 15 }, (_, i) => i / 7 - 1);
  const cv = Float64Array.from({ length: 5 }, (_, i) => 1 + i);
  const r = interpret(g2, { ...data, cu, cv });
  for (let b = 0; b < 3; b++) {
    for (let d = 0; d < 5; d++) {
      const want = cu[d * 3 + b] * data.y[d] + cv[d];
      assert.ok(Math.abs(r.dx[b * 5 + d] - want) < 1e-12);
    }
  }
  for (let d = 0; d < 5; d++) {
    let want = 0;
    for (let b = 0; b < 3; b++) want += cu[d * 3 + b] * data.x[b * 5 + d];
    assert.ok(Math.abs(r.dy[d] - want) < 1e-12);
  }
});

Deno.test("autodiff: errors name the problem", () => {
  const sizes = { b: 3, d: 5 };
  assert.throws(
    () =>
      trace(
        { x: "b d" },
        (t) => valueAndGrad((p: { x: Tensor }) => ew.exp(p.x))({ x: t.x })[0],
        sizes,
      ),
    /valueAndGrad: the function must return a scalar \(a tensor with no axes\), got \[b d\]/,
  );
  assert.throws(
    () =>
      trace(
        { x: "b d", ids: { axes: "b", dtype: "i32" } },
        (t) =>
          grad((p: { ids: Tensor }) => sum(gather(t.x, p.ids, "b"), "b d"))({ ids: t.ids }).ids,
        sizes,
      ),
    /valueAndGrad: parameter "ids" \[b\] has dtype i32; only f32 tensors can be differentiated/,
  );
  assert.throws(
    () =>
      trace({ x: "b d", c: "b" }, (t) => {
        const [, pullback] = vjp((p: { x: Tensor }) => ew.exp(p.x), { x: t.x });
        return pullback(t.c).x;
      }, sizes),
    /vjp: the cotangent is Tensor\[b=3\] but the output is Tensor\[b=3 d=5\]/,
  );
  assert.throws(
    () =>
      trace({ x: "b d" }, (t) => {
        const [, pullback] = vjp((p: { x: Tensor }) => ({ u: ew.exp(p.x) }), { x: t.x });
        // deno-lint-ignore no-explicit-any
        return pullback({} as any).x;
      }, sizes),
    /vjp: the cotangent of output "u" is missing/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => trace({ x: "b d" }, (_t) => grad((p: any) => sum(p.x, "b d"))({ x: 3 } as any).x, sizes),
    /valueAndGrad: parameter "x" is not a Tensor/,
  );
});

Deno.test("autodiff: second derivatives by differentiating a gradient", () => {
  // d²/dx² Σ x³ = 6x: the backward graph is itself differentiable.
  const graph = trace({ x: "d" }, (t) => {
    const inner = (p: { x: Tensor }) => sum(ew.mul(p.x, ew.mul(p.x, p.x)), "d");
    const outer = (p: { x: Tensor }) => sum(grad(inner)(p).x, "d");
    return grad(outer)({ x: t.x }).x;
  }, { d: 5 });
  const x = [0.5, -1, 2, 0.25, -0.3];
  const got = interpret(graph, { x })["out"];
  x.forEach((v, i) => assert.ok(Math.abs(got[i] - 6 * v) < 1e-12, `${got[i]} vs ${6 * v}`));
});

/** Never called: type-checked by `deno test` (each @ts-expect-error must be a real error). */
export function autodiffTypeChecks(W: Tensor<"d e">, b: Tensor<"e">, x: Tensor<"n d">): unknown[] {
  const model = (p: { W: Tensor<"d e">; b: Tensor<"e"> }) =>
    sum(ew.add(einsum("n d, d e -> n e", x, p.W), p.b), "n e");
  const [loss, g] = valueAndGrad(model)({ W, b });
  const scalar: Tensor<""> = loss;
  const dW: Tensor<"d e"> = g.W;
  const db: Tensor<"e"> = grad(model)({ W, b }).b;
  // @ts-expect-error the gradient of W has W's axes, not [e d]
  const bad: Tensor<"e d"> = g.W;
  // @ts-expect-error the parameters must be f's record
  valueAndGrad(model)({ V: W, b });
  const [out, pullback] = vjp(
    (p: { W: Tensor<"d e"> }) => ({ y: einsum("n d, d e -> n e", x, p.W) }),
    {
      W,
    },
  );
  const y: Tensor<"n e"> = out.y;
  const dW2: Tensor<"d e"> = pullback({ y }).W;
  return [scalar, dW, db, bad, y, dW2];
}
