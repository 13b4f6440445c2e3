/**
 * `deno task demo`: compiles the Mamba-1 selective scan written in the DSL, runs it on the
 * WebGPU adapter this machine has, and checks it against the float64 CPU oracle.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { compile } from "../runtime/compile.ts";
import { describeGpu } from "../runtime/gpu_info.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";

const { values } = parseArgs({
  args: Deno.args,
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

const gpu = await getGpu();
console.log(`adapter: ${describeGpu(gpu).adapter.description}`);
const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t), sizes);
console.log(
  `selective scan b=${sizes.b} l=${sizes.l} d=${sizes.d} n=${sizes.n}: ` +
    `${prog.kernels.length} kernel(s): ${prog.kernels.map((k) => k.name).join(", ")}`,
);

// Random inputs in the ranges a trained Mamba sees (A < 0, small dt).
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
const fill = (n: number, f: () => number) => Float32Array.from({ length: n }, f);
const { b, l, d, n } = sizes;
const inputs = {
  x: fill(b * l * d, rand),
  dt: fill(b * l * d, () => rand() - 2),
  z: fill(b * l * d, rand),
  B: fill(b * l * n, rand),
  C: fill(b * l * n, rand),
  A: fill(d * n, () => -Math.exp(rand())),
  D: fill(d, rand),
  dtBias: fill(d, () => 0.1 * rand()),
};

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
