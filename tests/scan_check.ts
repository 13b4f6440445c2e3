// Shared by the scan strategy tests: one selective scan compiled with a forced strategy,
// run on the GPU on fresh random inputs and compared with the float64 interpreter.
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, rng, selectiveScanInputs } from "./util.ts";

const INPUTS = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" } as const;

/**
 * Checks y and the final state of a selective scan with `strategy` against the interpreter
 * (1e-4); `wide` draws dt and z far outside the usual range (softplus and silu at both
 * ends). Returns the kernels' WGSL, joined, and their count.
 */
export async function checkSelectiveScan(
  sizes: { b: number; l: number; d: number; n: number },
  strategy: ScanStrategy,
  opts: { reverse?: boolean; init?: boolean; wide?: boolean } = {},
): Promise<{ wgsl: string; kernels: number }> {
  const seed = freshSeed();
  const prog = await compile(
    INPUTS,
    (t) => selectiveScan(t, { reverse: opts.reverse, init: opts.init ? t.h0 : undefined }),
    sizes,
    { backend: "gpu", scan: strategy },
  );
  const span = opts.wide ? 60 : 1;
  const inputs = selectiveScanInputs(sizes, rng(seed), {
    dt: [-3 * span, span / 2],
    z: [-span, span],
  });
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  const what = `${JSON.stringify(sizes)} ${JSON.stringify(strategy)} ${JSON.stringify(opts)} ` +
    `seed ${seed}`;
  assertClose(got.y, want.y, 1e-4, `${what}: y`);
  assertClose(got.state, want.state, 1e-4, `${what}: final state`);
  const result = { wgsl: prog.kernels.map((k) => k.wgsl).join("\n"), kernels: prog.kernels.length };
  prog.destroy();
  return result;
}
