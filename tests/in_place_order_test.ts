// In-place updates and kernel order (codegen/kernel_order.ts): a kernel that overwrites an
// input's buffer (a resident parameter) runs after every other kernel that reads the old value.
// The program is a scan whose output is scaled by a weight w, with AdamW on w and on the decay's
// parameter A: w's gradient is ready early, while the fused scan backward (planned after the
// rest) reads w, so an order by reads alone put w's update before it. The steps run on the
// adapter and are compared with the float64 interpreter, step by step.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { hazardOrder } from "../codegen/kernel_order.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, sub } from "../dsl/elementwise.ts";
import type { InputNode, Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import { scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import {
  adamw,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
  adamwStateOf,
} from "../models/train/adamw.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const PARAMS = { A: "d n", w: "d" } as const;
const INPUTS: Record<string, string> = {
  x: "b l d",
  B: "b l n",
  C: "b l n",
  lr: "",
  bc1: "",
  bc2: "",
};
for (const [k, axes] of Object.entries(PARAMS)) {
  for (const prefix of ["", "m.", "v."]) INPUTS[prefix + k] = axes;
}
const SIZES = { b: 2, l: 19, d: 5, n: 3 };
const NAMES = Object.keys(PARAMS);
const STATE = adamwState(NAMES);

/** One AdamW step on A and w of Σ (w·Σ_n C·h)², h[t] = exp(x·A)·h[t−1] + x·B. */
function trainStep(t: Record<string, Tensor>): Record<string, Tensor> {
  const state = adamwStateOf(t, NAMES);
  const [loss, grads] = valueAndGrad((p: Record<string, Tensor>) => {
    const decay = exp(einsum("b l d, d n -> b l d n", t.x, p.A));
    const h = scan("l", decay, einsum("b l d, b l n -> b l d n", t.x, t.B));
    const out = mul(einsum("b l d n, b l n -> b l d", h, t.C), p.w);
    return einsum("b l d, b l d -> ", out, out);
  })(state.params);
  const scalars = { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs;
  return { ...adamwOutputs(adamw({ ...state, grads }, scalars)), loss };
}

function aliasesOf(graph: ReturnType<typeof trace>): Map<Node, Node> {
  const aliases = new Map<Node, Node>();
  for (const [out, inp] of Object.entries(STATE)) {
    aliases.set(graph.inputs.find((i) => i.name === inp)!, graph.outputs[out]);
  }
  return aliases;
}

Deno.test("in-place order: every reader of a state's old value runs before its update", () => {
  const graph = trace(INPUTS, trainStep, SIZES);
  const aliases = aliasesOf(graph);
  const limits = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 16 };
  for (const scanBackward of [{}, false] as const) {
    const program = generateKernels(graph, limits, { aliases, scanBackward });
    const kernels = program.kernels;
    const names = kernels.map((k) => k.name).join(", ");
    assert.equal(kernels.some((k) => k.name.includes("_scanbwd_bwd")), scanBackward !== false);
    // Rewrites before fusion rebuild the outputs; the program names the new ones.
    for (const [input, output] of program.aliases ?? aliases) {
      const writer = kernels.findIndex((k) => k.writes.includes(output));
      const readers = kernels.flatMap((k, i) => k.reads.includes(input) ? [i] : []);
      // A and w are read by gradient kernels too, one of them the scan backward's walk.
      const name = (input as InputNode).name;
      assert.ok(writer >= 0 && (readers.length > 1 || !NAMES.includes(name)), names);
      for (const r of readers) {
        assert.ok(r <= writer, `${name}: ${kernels[r].name} after ${names}`);
      }
    }
  }
});

Deno.test("in-place order: write-after-read edges, stable, and cycles reported", () => {
  const [a, b, c] = trace({ a: "d", b: "d", c: "d" }, (t) => ({ o: add(t.a, t.b) }), { d: 2 })
    .inputs;
  // Group 0 overwrites a (alias a → c); groups 1 and 2 read a: 0 moves after them.
  const groups = [
    { reads: new Set<Node>([a]), writes: [c] },
    { reads: new Set<Node>([a]), writes: [b] },
    { reads: new Set<Node>([a, b]), writes: [] },
  ];
  assert.deepEqual(hazardOrder(groups), { order: [0, 1, 2] });
  assert.deepEqual(hazardOrder(groups, new Map([[a, c]])), { order: [1, 2, 0] });
  // Group 1 needs the old a and the new one (c): no order.
  const cyclic = [{ reads: new Set<Node>([a]), writes: [c] }, {
    reads: new Set<Node>([a, c]),
    writes: [b],
  }];
  assert.deepEqual(hazardOrder(cyclic, new Map([[a, c]])), { cycle: [0, 1] });
});

Deno.test("in-place order: a program needing a state's old and new value is refused", async () => {
  await assert.rejects(
    ResidentProgram.create(
      { w: "d", g: "d" },
      (t) => {
        const w = sub(t.w, t.g);
        return { w, both: mul(t.w, exp(w)) };
      },
      { d: 7 },
      { state: { w: "w" } },
    ),
    /in-place update of input "w": a kernel reads the old value and, through other kernels, the new one/,
  );
});

Deno.test("in-place order: AdamW through a fused scan backward matches the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const graph = trace(INPUTS, trainStep, SIZES);
  const data: Record<string, Float32Array> = {};
  // Fresh moments (zeros), random data and parameters.
  for (const inp of graph.inputs) {
    const fresh = inp.name.startsWith("m.") || inp.name.startsWith("v.");
    data[inp.name] = fresh
      ? new Float32Array(numel(inp))
      : randomArray(numel(inp), next, -0.5, 0.5);
  }
  data.A = randomArray(SIZES.d * SIZES.n, next, -1, -0.1);
  const prog = await ResidentProgram.create(INPUTS, trainStep, SIZES, { state: STATE });
  try {
    const fused = prog.kernels.some((k) => k.name.includes("_scanbwd_bwd"));
    assert.ok(fused, prog.kernels.map((k) => k.name).join(", "));
    const want: Record<string, Float64Array> = {};
    for (const name of Object.values(STATE)) {
      prog.write(name, data[name]);
      want[name] = Float64Array.from(data[name]);
    }
    for (let step = 1; step <= 3; step++) {
      const perStep = { x: data.x, B: data.B, C: data.C, ...adamwScalars(step, 0.05) };
      await prog.step(perStep);
      // The interpreter's next state, from its own float64 previous one.
      const out = interpret(graph, { ...perStep, ...want });
      for (const name of Object.values(STATE)) want[name] = out[name] as Float64Array;
    }
    const got = await prog.read(Object.values(STATE));
    const what = `after 3 steps (seed ${seed})`;
    for (const name of Object.values(STATE)) {
      assertClose(got[name], want[name], 1e-4, `${name} ${what}`);
    }
  } finally {
    prog.destroy();
  }
});
