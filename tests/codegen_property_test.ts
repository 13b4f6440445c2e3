// Property tests: random einsums and random elementwise chains (with views, selects and
// reductions) over awkward sizes, compiled to WGSL, run on the adapter and compared with the
// float64 interpreter (relative error ≤ 1e-4). fast-check shrinks any failure to a small case.
import fc from "fast-check";
import { compile } from "../runtime/compile.ts";
import { einsumProgram, elementwiseProgram, type GeneratedProgram } from "./gen_programs.ts";
import { randomInputs, relativeError, rng } from "./util.ts";

const RUNS = Number(Deno.env.get("SSMKIT_PROPERTY_RUNS") ?? 25);

async function matchesOracle(p: GeneratedProgram, seed: number): Promise<boolean> {
  const prog = await compile(p.inputs, p.fn, p.sizes, { backend: "gpu" });
  try {
    const inputs = randomInputs(prog.graph, rng(seed));
    const got = await prog.run(inputs);
    const want = prog.interpret(inputs);
    const err = relativeError(got as Float32Array, want as unknown as Float64Array);
    if (!(err <= 1e-4)) {
      throw new Error(`${p.description}, input seed ${seed}: relative error ${err}`);
    }
    return true;
  } finally {
    prog.destroy();
  }
}

Deno.test("property: random einsums match the float64 interpreter", async () => {
  await fc.assert(
    fc.asyncProperty(einsumProgram, fc.integer(), matchesOracle),
    { numRuns: RUNS },
  );
});

Deno.test("property: random elementwise chains match the float64 interpreter", async () => {
  await fc.assert(
    fc.asyncProperty(elementwiseProgram, fc.integer(), matchesOracle),
    { numRuns: RUNS },
  );
});
