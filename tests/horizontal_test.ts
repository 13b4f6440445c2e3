// Horizontal fusion (codegen/horizontal_plan.ts, horizontal_kernel.ts): independent elementwise
// kernels merged into segmented dispatches, and scalars of several full sums computed from
// partial sums. AdamW over many parameters compiles to 3 kernels where the device binds enough
// buffers (as few as its limit allows otherwise), and runs on the adapter within f32 rounding
// of the float64 interpreter; so do generic programs of awkward sizes (segments and partial
// sums that do not divide the workgroups).
import assert from "node:assert/strict";
import type { KernelArtifact } from "../codegen/artifact.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import { add, exp, mul, sub, tanh } from "../dsl/elementwise.ts";
import type { Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import {
  adamw,
  adamwInputs,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
  adamwStateOf,
} from "../models/train/adamw.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

/** `count` parameters of varied shapes (a scalar, vectors, matrices). */
function shapes(count: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < count; i++) out[`p${i}`] = ["", "d", "d e", "e"][i % 4];
  return out;
}

function adamwGraph(params: Record<string, string>, sizes: Record<string, number>) {
  const names = Object.keys(params);
  return trace(adamwInputs(params), (t: Record<string, Tensor>) =>
    adamwOutputs(
      adamw(
        adamwStateOf(t, names),
        { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs,
        { maxGradNorm: 1, weightDecay: 0.1 },
      ),
    ), sizes);
}

function stateAliases(graph: ReturnType<typeof trace>, names: readonly string[]) {
  const aliases = new Map<Node, Node>();
  for (const [out, inp] of Object.entries(adamwState(names))) {
    aliases.set(graph.inputs.find((i) => i.name === inp)!, graph.outputs[out]);
  }
  return aliases;
}

const kinds = (ks: readonly KernelArtifact[]) => ks.map((k) => k.name.replace(/^k\d+_/, ""));

Deno.test("horizontal: AdamW over many parameters is 3 kernels, or as few as the limit allows", () => {
  for (const count of [9, 40]) {
    const params = shapes(count);
    const names = Object.keys(params);
    const graph = adamwGraph(params, { d: 7, e: 3 });
    const aliases = stateAliases(graph, names);
    // Unmerged: m, v and θ of each parameter, the partial sums, the sum.
    const plain = generateKernels(graph, DEFAULT_LIMITS, { aliases }).kernels;
    assert.ok(plain.length >= 3 * count, kinds(plain).join(" "));
    // A device binding every buffer: the partial sums, their sum, one update of everything.
    const wide = { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 4 * count + 8 };
    const all = generateKernels(graph, wide, { aliases, horizontal: true }).kernels;
    assert.deepEqual(kinds(all), ["hsum_part0", "hsum_finish", "hmap"]);
    // 32 buffers: 4 shared (lr, bc1, bc2, the norm) and 4 per parameter (θ, m, v, g), so 7
    // parameters per update; 31 gradients per partial-sum kernel.
    const some =
      generateKernels(graph, { ...DEFAULT_LIMITS, maxStorageBuffersPerShaderStage: 32 }, {
        aliases,
        horizontal: true,
      }).kernels;
    const updates = some.filter((k) => k.name.endsWith("hmap") || k.name.includes("_map_"));
    assert.equal(updates.length, Math.ceil(count / 7), kinds(some).join(" "));
    const gradients = count - Math.ceil(count / 4); // the scalars' squares need no sum
    assert.equal(some.length - updates.length, Math.ceil(gradients / 31) + 1);
    for (const k of [...all, ...some]) {
      assert.ok(k.reads.length + k.writes.length <= 32 || all.includes(k), k.name);
    }
  }
});

Deno.test("horizontal: AdamW on the adapter, 11 parameters in place, three steps", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  // Sizes over one workgroup (256) and one partial-sum block (4096), not multiples of either.
  const params = { ...shapes(10), big: "f d" };
  const names = Object.keys(params);
  const sizes = { d: 7, e: 300, f: 701 };
  const graph = adamwGraph(params, sizes);
  const inputs = adamwInputs(params);
  const step = (t: Record<string, Tensor>) =>
    adamwOutputs(
      adamw(
        adamwStateOf(t, names),
        { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs,
        { maxGradNorm: 1, weightDecay: 0.1 },
      ),
    );
  const prog = await ResidentProgram.create(inputs, step, sizes, { state: adamwState(names) });
  try {
    const ks = kinds(prog.kernels);
    assert.ok(ks.includes("hmap") && ks.includes("hsum_finish"), ks.join(" "));
    const state: Record<string, Float64Array> = {};
    for (const inp of graph.inputs) {
      if (!(inp.name in adamwState(names))) continue;
      const moment = inp.name.startsWith("m.") || inp.name.startsWith("v.");
      const data = moment ? new Float32Array(numel(inp)) : randomArray(numel(inp), next);
      prog.write(inp.name, data);
      state[inp.name] = Float64Array.from(data);
    }
    let norm = 0;
    for (let t = 1; t <= 3; t++) {
      // Step 2's gradients are large: clipped.
      const host: Record<string, Float32Array> = { ...adamwScalars(t, 0.01 * t) };
      for (const k of names) {
        const n = numel(graph.inputs.find((i) => i.name === k)!);
        host[`grad.${k}`] = randomArray(n, next, t === 2 ? -3 : -0.01, t === 2 ? 3 : 0.01);
      }
      await prog.step(host);
      const out = interpret(graph, { ...host, ...state });
      for (const k of Object.keys(state)) state[k] = out[k] as Float64Array;
      norm = out.gradNorm[0];
    }
    const got = await prog.read([...Object.keys(state), "gradNorm"]);
    for (const k of Object.keys(state)) assertClose(got[k], state[k], 1e-4, `${k} (seed ${seed})`);
    assertClose(got.gradNorm, [norm], 1e-5, `gradNorm (seed ${seed})`);
  } finally {
    prog.destroy();
  }
});

Deno.test("horizontal: independent kernels and sums of full reductions match the interpreter", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const inputs = { x: "a b", y: "c", z: "a b", u: "c" } as const;
  const sizes = { a: 37, b: 131, c: 9001 };
  const fn = (t: Record<string, Tensor>) => {
    // p and q (one index space, q reads p at its element) form one segment, r another.
    const p = exp(mul(t.x, 0.5));
    const q = sub(mul(p, t.z), t.x);
    const r = tanh(add(t.y, t.u));
    // Three full sums of different sizes (one of an input as is) in one scalar.
    const total = add(mul(sum(mul(t.x, t.z), "a b"), 2), add(sum(t.u, "c"), sum(exp(t.y), "c")));
    return { p, q, r, total };
  };
  const prog = await compile(inputs, fn, sizes, { backend: "gpu", horizontal: true });
  try {
    const ks = kinds(prog.kernels);
    assert.deepEqual(ks.filter((k) => k.startsWith("h")).sort(), [
      "hmap",
      "hsum_finish",
      "hsum_part0",
    ]);
    assert.equal(prog.kernels.length, 3, ks.join(" "));
    const data: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) data[inp.name] = randomArray(numel(inp), next);
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of ["p", "q", "r", "total"]) {
      assertClose(got[k], want[k], 1e-4, `${k} (seed ${seed})`);
    }
  } finally {
    prog.destroy();
  }
});
