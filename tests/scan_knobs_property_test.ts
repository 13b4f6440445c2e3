// Property test of the fused scan's strategy knobs: random combinations of lanes, chunks,
// prefetch (kind and depth), workgroup size, where B and C wait (registers or staged), how the
// per-step values are broadcast, log2 e folding and vector loads, on random awkward shapes, in
// both directions with and without an initial state, all against the float64 interpreter; and
// the workgroup-tiled kernel's knobs (tile length, lanes, workgroup, folding, vector loads).
// A combination the kernel cannot honour must be refused with an error naming the knob;
// anything else must agree to 1e-4.
import fc from "fast-check";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { relativeError, rng, selectiveScanInputs } from "./util.ts";

const RUNS = Number(Deno.env.get("SSMKIT_PROPERTY_RUNS") ?? 25);
/** Replays a failure: the `seed` fast-check printed. */
const SEED = Deno.env.get("SSMKIT_PROPERTY_SEED");
const OPTIONS = { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: Number(SEED) }) };

const INPUTS = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" } as const;

/** Knob combinations (lanes ≤ 8: lavapipe's subgroups have 8 lanes). */
const laneStrategies: fc.Arbitrary<ScanStrategy> = fc.record({
  lanes: fc.constantFrom(1, 2, 4, 8),
  chunks: fc.constantFrom(1, 1, 2, 3),
  prefetch: fc.constantFrom("all", "all", "own", "none"),
  prefetchDepth: fc.constantFrom(1, 2, 3),
  workgroup: fc.constantFrom(32, 64, 128, 256),
  stateLoads: fc.constantFrom("early", "late", "staged"),
  broadcast: fc.constantFrom("shuffle", "staged"),
  foldLog2e: fc.boolean(),
  vector: fc.boolean(),
  vectorIndex: fc.constantFrom("whole", "split"),
}, { requiredKeys: ["lanes"] }) as fc.Arbitrary<ScanStrategy>;

/** The workgroup-tiled kernel's knobs. */
const tiledStrategies: fc.Arbitrary<ScanStrategy> = fc.record({
  tileSteps: fc.constantFrom(4, 8, 12, 16, 32),
  lanes: fc.constantFrom(1, 2, 4, 8),
  unroll: fc.constantFrom(1, 2, 3, 4, 8),
  workgroup: fc.constantFrom(32, 64, 128, 256),
  foldLog2e: fc.boolean(),
  vector: fc.boolean(),
  vectorIndex: fc.constantFrom("whole", "split"),
  tileReduce: fc.constantFrom("shuffle", "workgroup"),
  prefetchDepth: fc.constantFrom(1, 2, 3),
}, { requiredKeys: ["tileSteps"] }) as fc.Arbitrary<ScanStrategy>;

const strategies = fc.oneof(
  { arbitrary: laneStrategies, weight: 3 },
  { arbitrary: tiledStrategies, weight: 1 },
);

/** Shapes: channel counts that often (not always) divide a workgroup's channels. */
const shapes = fc.record({
  b: fc.constantFrom(1, 2, 3),
  l: fc.constantFrom(1, 5, 8, 17, 40, 67),
  d: fc.constantFrom(3, 8, 16, 32),
  n: fc.constantFrom(4, 12, 16),
});

/** Refusals the knobs document (a combination the kernel cannot honour). */
const REFUSAL = new RegExp(
  [
    'stateLoads "staged" needs',
    'broadcast "staged" needs',
    "no per-state load has the same value",
    "needs \\d+ bytes of workgroup memory",
    "tileSteps must be a multiple of the \\d+ lanes",
    "tiled unroll \\(steps per iteration of the tile's loop\\) must divide tileSteps",
    'tileReduce "shuffle" needs',
    "tileReduce applies to the tiled kernel only",
  ].join("|"),
);

Deno.test("property: any scan knob combination matches the interpreter or is refused", async () => {
  await fc.assert(
    fc.asyncProperty(
      strategies,
      shapes,
      fc.boolean(),
      fc.boolean(),
      fc.integer(),
      async (strategy, sizes, reverse, init, seed) => {
        let prog;
        try {
          prog = await compile(
            INPUTS,
            (t) => selectiveScan(t, { reverse, init: init ? t.h0 : undefined }),
            sizes,
            { backend: "gpu", scan: strategy },
          );
        } catch (e) {
          if (e instanceof Error && REFUSAL.test(e.message)) return true;
          throw e;
        }
        try {
          // A < 0 as in a trained Mamba (A = −exp(A_log)): decays in (0, 1).
          const inputs = selectiveScanInputs(sizes, rng(seed));
          const got = await prog.run(inputs);
          const want = prog.interpret(inputs);
          for (const k of ["y", "state"] as const) {
            const err = relativeError(got[k], want[k]);
            if (!(err <= 1e-4)) {
              throw new Error(
                `${k}: relative error ${err} (${prog.kernels[0].wgsl.split("\n")[0]})`,
              );
            }
          }
          return true;
        } finally {
          prog.destroy();
        }
      },
    ),
    OPTIONS,
  );
});
