// Property tests: random einsums and random elementwise chains (with views, selects and
// reductions) over awkward sizes, compiled to WGSL, run on the adapter and compared with the
// float64 interpreter (relative error ≤ 1e-4; for einsums, alternatively ≤ 1e-5 of the summed
// terms' magnitude, see `disagreement`). fast-check shrinks any failure to a small case.
import assert from "node:assert/strict";
import fc from "fast-check";
import { einsum } from "../dsl/einsum.ts";
import { compile } from "../runtime/compile.ts";
import { einsumProgram, elementwiseProgram, type GeneratedProgram } from "./gen_programs.ts";
import { randomInputs, relativeError, rng } from "./util.ts";

const RUNS = Number(Deno.env.get("SSMKIT_PROPERTY_RUNS") ?? 25);
/** Replays a failure: the `seed` fast-check printed (runs start from the same programs). */
const SEED = Deno.env.get("SSMKIT_PROPERTY_SEED");
const OPTIONS = { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: Number(SEED) }) };

/** ‖x‖₂. */
function norm(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] ** 2;
  return Math.sqrt(s);
}

/**
 * Why `got` disagrees with the float64 `want`, or undefined when it agrees: relative error
 * ≤ 1e-4, or, given `terms` (the interpreter's result on |inputs|, the magnitude of the terms
 * each output of a multilinear program sums), an error ≤ 1e-5 of ‖terms‖. A sum that cancels
 * (fast-check found `einsum("e b, e c -> ")`: 2211 terms summing to 0.0156 with Σ|terms| = 626)
 * cannot be computed to 1e-4 relative in f32 in any summation order (the sequential f32 sum is
 * off by 6.4e-4, the kernel by 1.6e-4, i.e. 3.9e-9 of the terms); dropping one term of a sum
 * of fewer than about 10⁵ similar terms still breaks the second bound.
 */
function disagreement(
  got: Float32Array,
  want: Float64Array,
  terms?: Float64Array,
): string | undefined {
  const err = relativeError(got, want);
  if (err <= 1e-4) return undefined;
  if (!terms || !Number.isFinite(err)) return `relative error ${err}`;
  const ofTerms = norm(got.map((g, i) => g - want[i])) / norm(terms);
  if (ofTerms <= 1e-5) return undefined;
  return `relative error ${err}, ${ofTerms} of the terms' magnitude`;
}

type Inputs = Record<string, Float32Array | Int32Array>;

/** The interpreter's result on the magnitudes of `inputs`. */
function termMagnitudes(prog: { interpret(i: Inputs): unknown }, inputs: Inputs): Float64Array {
  const abs = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.map(Math.abs)]));
  return prog.interpret(abs) as Float64Array;
}

/** Runs `p` on the adapter and the interpreter; `sums`: `p` is multilinear (see above). */
async function matchesOracle(p: GeneratedProgram, seed: number, sums = false): Promise<boolean> {
  const prog = await compile(p.inputs, p.fn, p.sizes, { backend: "gpu" });
  try {
    const inputs = randomInputs(prog.graph, rng(seed));
    const got = await prog.run(inputs) as Float32Array;
    const want = prog.interpret(inputs) as unknown as Float64Array;
    const why = disagreement(got, want, sums ? termMagnitudes(prog, inputs) : undefined);
    if (why) throw new Error(`${p.description}, input seed ${seed}: ${why}`);
    return true;
  } finally {
    prog.destroy();
  }
}

Deno.test("property: random einsums match the float64 interpreter", async () => {
  await fc.assert(
    fc.asyncProperty(einsumProgram, fc.integer(), (p, seed) => matchesOracle(p, seed, true)),
    OPTIONS,
  );
});

Deno.test("property: random elementwise chains match the float64 interpreter", async () => {
  await fc.assert(
    fc.asyncProperty(elementwiseProgram, fc.integer(), (p, seed) => matchesOracle(p, seed)),
    OPTIONS,
  );
});

Deno.test("oracle check: a cancelling sum passes by its terms, a dropped term fails", async () => {
  // The case fast-check found (seed 131630320, input seed -1109531368).
  const prog = await compile(
    { t0: "e b", t1: "e c" },
    (t) => einsum("e b, e c -> ", t.t0, t.t1),
    { b: 33, c: 1, e: 67 },
    { backend: "gpu" },
  );
  try {
    const inputs = randomInputs(prog.graph, rng(-1109531368));
    const got = await prog.run(inputs) as Float32Array;
    const want = prog.interpret(inputs) as unknown as Float64Array;
    const terms = termMagnitudes(prog, inputs);
    assert.ok(terms[0] > 1000 * Math.abs(want[0]), "the sum cancels");
    // Compared element by element the cancelling sum may look wrong (it did through the
    // matmul kernel; the split reduction it lowers to now sums in a tree, more exactly).
    assert.match(disagreement(got, want) ?? "relative error", /relative error/);
    assert.equal(disagreement(got, want, terms), undefined);
    // The same sum without its last term (t0[66, 32] · t1[66]) is caught.
    const t0 = (inputs.t0 as Float32Array).slice();
    t0[t0.length - 1] = 0;
    const dropped = Float32Array.from(prog.interpret({ ...inputs, t0 }) as Float64Array);
    assert.match(disagreement(dropped, want, terms) ?? "", /of the terms' magnitude/);
  } finally {
    prog.destroy();
  }
});
