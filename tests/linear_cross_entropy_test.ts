// linearCrossEntropy (dsl/linear_cross_entropy.ts): split into pieces by a small byte budget,
// its value and gradients equal the unsplit head + crossEntropy in the float64 interpreter
// (splits along the outer axis, then the inner one, with a shorter last piece), its gradients
// match central differences, no logits tensor in the program exceeds the budget, the GPU agrees
// with the interpreter, and bad arguments are one-line errors.
import assert from "node:assert/strict";
import { planFusion } from "../codegen/fusion.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { linearCrossEntropy } from "../dsl/linear_cross_entropy.ts";
import { crossEntropy } from "../dsl/losses.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { checkGradients, randomData } from "./grad_check.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const INPUTS = { x: "b l m", W: "v m", ids: { axes: "b l", dtype: "i32" as const } };
const SIZES = { b: 3, l: 7, m: 5, v: 11 };
/** Bytes of one logits row at SIZES. */
const ROW = 11 * 4;

type Params = { x: Tensor<"b l m">; W: Tensor<"v m"> };

function unsplit(t: Record<string, Tensor>, p: Params) {
  return crossEntropy(einsum("b l m, v m -> b l v", p.x, p.W), t.ids, "v");
}

function split(t: Record<string, Tensor>, p: Params, maxLogitsBytes: number) {
  return linearCrossEntropy(p.x, p.W, t.ids, "v", { maxLogitsBytes });
}

function valueAndGrads(loss: (t: Record<string, Tensor>, p: Params) => Tensor) {
  return (t: Record<string, Tensor>) => {
    const [value, g] = valueAndGrad((p: Params) => loss(t, p))({
      x: t.x as Tensor<"b l m">,
      W: t.W as Tensor<"v m">,
    });
    return { loss: value, dx: g.x, dW: g.W };
  };
}

function randomCase(seed: number) {
  const next = rng(seed);
  const ids = Int32Array.from({ length: 21 }, () => Math.floor(next() * 11));
  return randomData(INPUTS, SIZES, next, { x: [-2, 2], W: [-2, 2] }, { ids });
}

Deno.test("linearCrossEntropy: pieces give the unsplit loss and gradients (float64)", () => {
  const seed = freshSeed();
  const data = randomCase(seed);
  const want = interpret(trace(INPUTS, valueAndGrads(unsplit), SIZES), data);
  // Budgets: everything (no split); 2 of 3 batch rows (pieces 2 + 1); less than one batch row
  // (split b into rows, then l into pieces of 3, 3, 1); a single logits row.
  for (const rows of [21, 14, 3, 1]) {
    const g = trace(INPUTS, valueAndGrads((t, p) => split(t, p, rows * ROW)), SIZES);
    const got = interpret(g, data);
    for (const k of ["loss", "dx", "dW"]) {
      assertClose(got[k], want[k], 1e-12, `${k} at ${rows} rows per piece (seed ${seed})`);
    }
    // In memory: the pieces of the logits and of their gradient, none over the budget.
    const logits = [...planFusion(g).materialized].filter((n) =>
      n.axes.includes("v") && n.axes.length === 3
    );
    for (const n of logits) {
      const elements = n.shape.reduce((a, s) => a * s, 1);
      assert.ok(elements * 4 <= rows * ROW, `a logits tensor [${n.shape}] over ${rows} rows`);
    }
    assert.ok(logits.length >= Math.ceil(21 / rows), `${logits.length} logits pieces`);
  }
});

Deno.test("linearCrossEntropy: sum reduction and gradients against central differences", () => {
  const seed = freshSeed();
  const data = randomCase(seed);
  const loss = (t: Record<string, Tensor>) =>
    linearCrossEntropy(t.x, t.W, t.ids, "v", { maxLogitsBytes: 4 * ROW, reduction: "sum" });
  checkGradients(INPUTS, loss, ["x", "W"], SIZES, data);
  const sumOf = interpret(trace(INPUTS, loss, SIZES), data)["out"][0];
  const meanOf = interpret(
    trace(
      INPUTS,
      (t) => linearCrossEntropy(t.x, t.W, t.ids, "v", { maxLogitsBytes: 4 * ROW }),
      SIZES,
    ),
    data,
  )["out"][0];
  assert.ok(Math.abs(sumOf / 21 - meanOf) < 1e-12 * Math.abs(meanOf), `seed ${seed}`);
});

Deno.test("linearCrossEntropy on the GPU: split value and gradients vs the interpreter", async () => {
  const seed = freshSeed();
  const data = randomCase(seed);
  const prog = await compile(INPUTS, valueAndGrads((t, p) => split(t, p, 5 * ROW)), SIZES, {
    backend: "gpu",
  });
  try {
    const f32 = {
      x: Float32Array.from(data.x as Float64Array),
      W: Float32Array.from(data.W as Float64Array),
      ids: data.ids as Int32Array,
    };
    const got = await prog.run(f32) as Record<string, Float32Array>;
    const want = prog.interpret(f32) as Record<string, Float64Array>;
    for (const k of ["loss", "dx", "dW"]) assertClose(got[k], want[k], 1e-4, `${k} (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});

Deno.test("linearCrossEntropy: bad arguments are one-line errors", () => {
  const cases: [(t: Record<string, Tensor>) => Tensor, RegExp][] = [
    [(t) => linearCrossEntropy(t.x, t.W, t.ids, "m"), /vocabulary axis "m" must be in the head/],
    [(t) => linearCrossEntropy(t.x, t.W, t.ids, "v", { maxLogitsBytes: 40 }), /one row of 11/],
    [(t) => linearCrossEntropy(t.x, t.W, t.ids, "v", { maxLogitsBytes: 0 }), /positive number/],
    [
      (t) => linearCrossEntropy(t.x, t.W, t.ids, "v", { reduction: "max" as never }),
      /reduction must be/,
    ],
  ];
  for (const [f, pattern] of cases) {
    assert.throws(() => trace(INPUTS, f, SIZES), (e: Error) => {
      assert.match(e.message, pattern);
      assert.ok(!e.message.includes("\n"), e.message);
      return true;
    });
  }
});
