/**
 * The Mamba-1 selective scan written in the DSL (models/selective_scan.ts), compiled for this
 * machine's WebGPU adapter, run on random inputs and checked against the float64 CPU oracle.
 *
 *   deno run -A examples/selective_scan_demo.ts [--batch 2] [--length 257] [--channels 48]
 *                                               [--state 16]
 *
 * The module also exports two programs made with `defineProgram`, so the CLI prints their
 * kernels without running anything:
 *
 *   deno task cli wgsl examples/selective_scan_demo.ts [--program decodeStep]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { compile, defineProgram, getGpu, SELECTIVE_SCAN_INPUTS, selectiveScan } from "../mod.ts";

/** The prompt pass at small sizes: one fused kernel (the state stays in registers). */
export const prefill = defineProgram(
  SELECTIVE_SCAN_INPUTS,
  (t) => selectiveScan(t),
  { b: 2, l: 257, d: 48, n: 16 },
);

/** One decode step: the state `h0` is read, advanced by one token and written back. */
export const decodeStep = defineProgram(
  { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" },
  (t) => selectiveScan(t, { init: t.h0 }),
  { b: 1, l: 1, d: 48, n: 16 },
);

/** Random inputs of the sizes `s`, in the ranges a trained Mamba sees (A < 0, small dt). */
function randomInputs(s: { b: number; l: number; d: number; n: number }, seed = 7) {
  // A linear congruential generator: the same inputs on every run.
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const fill = (n: number, f: () => number) => Float32Array.from({ length: n }, f);
  const { b, l, d, n } = s;
  return {
    x: fill(b * l * d, rand),
    dt: fill(b * l * d, () => rand() - 2),
    z: fill(b * l * d, rand),
    B: fill(b * l * n, rand),
    C: fill(b * l * n, rand),
    A: fill(d * n, () => -Math.exp(rand())),
    D: fill(d, rand),
    dtBias: fill(d, () => 0.1 * rand()),
  };
}

/** The command-line option of each size. */
const OPTION_OF = { b: "batch", l: "length", d: "channels", n: "state" } as const;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      batch: { type: "string", default: "2" },
      length: { type: "string", default: "257" },
      channels: { type: "string", default: "48" },
      state: { type: "string", default: "16" },
    },
    strict: true,
  });
  const sizes = {
    b: Number(values.batch),
    l: Number(values.length),
    d: Number(values.channels),
    n: Number(values.state),
  };
  for (const [name, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v < 1) {
      console.error(
        `selective_scan_demo: --${
          OPTION_OF[name as keyof typeof sizes]
        } must be a positive integer`,
      );
      return 2;
    }
  }

  const gpu = await getGpu();
  console.log(`adapter: ${gpu.adapterInfo.description}`);
  const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t), sizes);
  console.log(
    `selective scan b=${sizes.b} l=${sizes.l} d=${sizes.d} n=${sizes.n}: ` +
      `${prog.kernels.length} kernel(s): ${prog.kernels.map((k) => k.name).join(", ")}`,
  );

  const inputs = randomInputs(sizes);
  const t0 = performance.now();
  const out = await prog.run(inputs, { profile: true });
  const wall = performance.now() - t0;
  const ref = prog.interpret(inputs);
  let diff = 0, norm = 0;
  for (let i = 0; i < out.y.length; i++) {
    diff += (out.y[i] - ref.y[i]) ** 2;
    norm += ref.y[i] ** 2;
  }
  const gpuNs = (prog.lastTimings ?? []).reduce((s, t) => s + t.ns, 0);
  console.log(`GPU run: ${wall.toFixed(1)} ms wall (kernels ${(gpuNs / 1e6).toFixed(3)} ms)`);
  console.log(`relative error vs float64 CPU oracle: ${Math.sqrt(diff / norm).toExponential(2)}`);
  prog.destroy();
  return 0;
}

// Command-line code runs only when this file is the program, not when a tool imports it.
if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    // A bad command line gets one line, not a stack trace.
    if (!(e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) throw e;
    console.error(`selective_scan_demo: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
