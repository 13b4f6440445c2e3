// Property tests of reverse-mode autodiff: random programs (tests/gen_programs.ts's einsums and
// elementwise chains with views, selects and reductions, plus random scans here) differentiated
// with respect to every input and checked against central differences of the float64
// interpreter; a few random chains' gradients also run on the adapter against the interpreter.
// fast-check shrinks any failure to a small program.
import fc from "fast-check";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import { finalState, pick, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import type { InputSpec, Sizes } from "../dsl/trace.ts";
import { trace } from "../dsl/trace.ts";
import { flip, slice } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { einsumProgram, elementwiseProgram, type GeneratedProgram } from "./gen_programs.ts";
import {
  checkGradients,
  gradFn,
  gradProgram,
  KinksEverywhereError,
  randomData,
  weighted,
} from "./grad_check.ts";
import { collectNodes, type Graph, type Node } from "../dsl/ir.ts";
import { randomInputs, rng } from "./util.ts";

const RUNS = Number(Deno.env.get("SSMKIT_PROPERTY_RUNS") ?? 25);
/** Replays a failure: the `seed` fast-check printed. */
const SEED = Deno.env.get("SSMKIT_PROPERTY_SEED");
const options = (runs: number) => ({
  numRuns: runs,
  ...(SEED === undefined ? {} : { seed: Number(SEED) }),
});

/**
 * The generated program at sizes of at most 5 (finite differences evaluate the interpreter
 * twice per input element): 1, 2, 3 and 5 stay, larger sizes fold onto 2–4.
 */
function small(p: GeneratedProgram): GeneratedProgram {
  const sizes = Object.fromEntries(
    Object.entries(p.sizes).map(([a, s]) => [a, ((s - 1) % 5) + 1]),
  );
  // Not `...p`: the description is a getter that reads the ops the traced function logged.
  return {
    get description() {
      return p.description;
    },
    inputs: p.inputs,
    sizes,
    fn: p.fn,
  };
}

/**
 * Throws unless every elementwise node the backward pass built (created after the loss) has
 * operands whose axes nest, outer products being einsum's (a `mul` from its lowering).
 */
function assertNestedBackward(graph: Graph): void {
  const loss = graph.outputs["value"];
  const within = (a: Node, b: Node) => a.axes.every((x) => b.axes.includes(x));
  for (const n of collectNodes(Object.values(graph.outputs))) {
    if (n.id <= loss.id || (n.kind !== "binary" && n.kind !== "where")) continue;
    if (n.kind === "binary" && n.op === "mul") continue;
    const operands = n.kind === "binary" ? [n.a, n.b] : [n.cond, n.a, n.b];
    for (const x of operands) {
      for (const y of operands) {
        if (!within(x, y) && !within(y, x)) {
          throw new Error(`backward node ${n.kind} ${n.id} has operands that do not nest`);
        }
      }
    }
  }
}

/** Checks d/d(every input) of Σ p(t)·w (w random) against central differences. */
function gradientsMatch(p: GeneratedProgram, seed: number): boolean {
  const out = trace(p.inputs, p.fn, p.sizes).outputs["out"];
  const inputs: InputSpec = { ...p.inputs, lossWeights: out.axes.join(" ") };
  const loss = (t: Record<string, Tensor>) => weighted(p.fn(t), t.lossWeights);
  const data = randomData(inputs, p.sizes, rng(seed));
  try {
    assertNestedBackward(gradProgram(inputs, loss, Object.keys(p.inputs), p.sizes));
    checkGradients(inputs, loss, Object.keys(p.inputs), p.sizes, data, {
      step: 1e-6,
      skipKinks: true,
    });
  } catch (e) {
    // A program whose loss has kinks at almost every step of some input (a scalar compared with
    // thousands of values) cannot be checked by differences: fast-check draws another.
    fc.pre(!(e instanceof KinksEverywhereError));
    throw new Error(`${p.description}, input seed ${seed}: ${(e as Error).message}`);
  }
  return true;
}

Deno.test("autodiff property: random einsums", () => {
  fc.assert(
    fc.property(einsumProgram.map(small), fc.integer(), gradientsMatch),
    options(RUNS),
  );
});

Deno.test("autodiff property: random elementwise chains with views and reductions", () => {
  fc.assert(
    fc.property(elementwiseProgram.map(small), fc.integer(), gradientsMatch),
    options(RUNS),
  );
});

/** Random scans: decay and input over random axes, reverse, init, and what reads the state. */
const scanProgram: fc.Arbitrary<GeneratedProgram> = fc
  .record({
    decayAxes: fc.subarray(["b", "d", "n"]),
    inputAxes: fc.subarray(["b", "d", "n"]),
    decayHasL: fc.boolean(),
    reverse: fc.boolean(),
    init: fc.option(fc.subarray(["b", "d", "n"]), { nil: undefined }),
    read: fc.constantFrom("state", "final", "contract n", "flip", "slice", "pick", "sum l"),
    sizes: fc.record({
      b: fc.integer({ min: 1, max: 3 }),
      l: fc.integer({ min: 1, max: 6 }),
      d: fc.integer({ min: 1, max: 3 }),
      n: fc.integer({ min: 1, max: 3 }),
    }),
  })
  .map(({ decayAxes, inputAxes, decayHasL, reverse, init, read, sizes }) => {
    const decay = [...(decayHasL ? ["l"] : []), ...decayAxes];
    const input = ["l", ...inputAxes];
    const state = ["b", "d", "n"].filter((a) => decay.includes(a) || input.includes(a));
    const initAxes = init?.filter((a) => state.includes(a));
    const inputs: InputSpec = { a: decay.join(" "), u: input.join(" "), C: "b l n" };
    if (initAxes) inputs.h0 = initAxes.join(" ");
    const readable = read === "contract n" && !state.includes("n") ? "state" : read;
    const fn = (t: Record<string, Tensor>) => {
      // Decays in (0, 1) from any input; the input through a smooth nonlinearity.
      // When decay and input each have an axis the other lacks, the input is broadcast
      // explicitly (scan, like elementwise ops, refuses the implicit outer product).
      const decayT = ew.sigmoid(t.a);
      let inputT = ew.tanh(t.u);
      const extra = decayT.axes.filter((a) => !inputT.axes.includes(a));
      if (extra.length > 0 && inputT.axes.some((a) => !decayT.axes.includes(a))) {
        const sizesOf = Object.fromEntries(extra.map((a) => [a, decayT.size(a)]));
        inputT = ew.broadcast(inputT, [...inputT.axes, ...extra].join(" "), sizesOf);
      }
      const h = scan("l", decayT, inputT, { reverse, init: t.h0 });
      switch (readable) {
        case "final":
          return finalState(h);
        case "contract n":
          return einsum(`${h.axes.join(" ")}, b l n -> b l`, h, t.C);
        case "flip":
          return ew.mul(flip(h, "l"), h);
        case "slice":
          return slice(h, "l", 0, Math.max(1, h.size("l") - 1), "m");
        case "pick":
          return pick(h, "l", Math.floor(h.size("l") / 2));
        case "sum l":
          return sum(ew.mul(h, h), "l");
        default:
          return h;
      }
    };
    const description = `scan decay [${decay}] input [${input}] init ${
      initAxes ? `[${initAxes}]` : "none"
    } reverse ${reverse} read ${readable} sizes ${JSON.stringify(sizes)}`;
    const allSizes: Sizes = { ...sizes, m: Math.max(1, sizes.l - 1) };
    return { description, inputs, sizes: allSizes, fn };
  });

Deno.test("autodiff property: random scans (reverse, init, views of the state)", () => {
  fc.assert(fc.property(scanProgram, fc.integer(), gradientsMatch), options(RUNS));
});

/** The gradient program of Σ p(t)·w on the adapter against the interpreter (≤ 1e-4). */
async function gpuGradientsMatch(p: GeneratedProgram, seed: number): Promise<boolean> {
  const out = trace(p.inputs, p.fn, p.sizes).outputs["out"];
  const inputs: InputSpec = { ...p.inputs, lossWeights: out.axes.join(" ") };
  const loss = (t: Record<string, Tensor>) => weighted(p.fn(t), t.lossWeights);
  const prog = await compile(inputs, gradFn(loss, Object.keys(p.inputs)), p.sizes, {
    backend: "gpu",
  });
  try {
    const data = randomInputs(prog.graph, rng(seed));
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    // A gradient that cancels to ~0 (softmax is unchanged by adding y along its axis, so d_y is
    // a sum of O(1) terms that is 0) is compared against 1% of the program's largest gradient:
    // f32 leaves ~1e-7 of the terms' scale there, which is no error of the rule (seen on the H200).
    const norm = (a: ArrayLike<number>) => Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0));
    const floor = 0.01 * Math.max(...Object.values(want).map(norm));
    for (const k of Object.keys(want)) {
      const diff = norm(Array.from(got[k], (v, i) => v - want[k][i]));
      const err = got[k].some(Number.isNaN)
        ? Infinity
        : diff / (Math.max(norm(want[k]), floor) || 1);
      if (!(err <= 1e-4)) {
        throw new Error(`${p.description}, input seed ${seed}: ${k} relative error ${err}`);
      }
    }
    return true;
  } finally {
    prog.destroy();
  }
}

const GPU_RUNS = Number(Deno.env.get("SSMKIT_GRAD_GPU_RUNS") ?? 6);

Deno.test("autodiff property: random chains' and scans' gradients on the GPU", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(elementwiseProgram.map(small), scanProgram),
      fc.integer(),
      gpuGradientsMatch,
    ),
    options(GPU_RUNS),
  );
});
