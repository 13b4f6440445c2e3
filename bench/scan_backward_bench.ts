/**
 * The selective scan's gradient program (every gradient of Mamba-1's scan: x, Δ, z, B, C, A, D,
 * the Δ bias, init; output and final state in the loss) on the GPU, f32, with the scan and its
 * adjoint fused (`codegen/scan_backward_*.ts`) and, where it fits the device, materialized (the
 * path before). Prints the device limit on storage buffers, the kernels with their median
 * timestamp-query times, the largest buffer of each program, and the fused gradients' relative
 * error against the materialized ones.
 *
 *     deno run -A bench/scan_backward_bench.ts [--b 8] [--l 2048] [--d 1536] [--n 16]
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { KernelArtifact } from "../codegen/artifact.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import { numel } from "../dsl/ir.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { deviceLimits } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { GpuProgram } from "../runtime/program.ts";
import { gradProgram } from "../tests/grad_check.ts";
import { randomF32, scanBenchInputs } from "./scan_inputs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    b: { type: "string", default: "8" },
    l: { type: "string", default: "2048" },
    d: { type: "string", default: "1536" },
    n: { type: "string", default: "16" },
  },
});
const sizes = { b: +values.b!, l: +values.l!, d: +values.d!, n: +values.n! };
const inputs = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n", wy: "b l d", ws: "b d n" } as const;
const wrt = ["x", "dt", "z", "B", "C", "A", "D", "dtBias", "h0"];
const loss = (t: Record<string, Tensor>) => {
  // deno-lint-ignore no-explicit-any
  const { y, state } = selectiveScan(t as any, { init: t.h0 as any });
  return ew.add(einsum("b l d, b l d -> ", y, t.wy), einsum("b d n, b d n -> ", state, t.ws));
};
const graph = gradProgram(inputs, loss, wrt, sizes);
const ctx = await getGpu();
const limits = deviceLimits(ctx);
console.log(`sizes ${JSON.stringify(sizes)}`);
console.log(`device binds ${limits.maxStorageBuffersPerShaderStage} storage buffers per kernel`);

const { b, l, d, n } = sizes;
const data = {
  ...scanBenchInputs(sizes),
  h0: randomF32(b * d * n, -1, 1, 31),
  wy: randomF32(b * l * d, -1, 1, 37),
  ws: randomF32(b * d * n, -1, 1, 41),
};
const largest = (ks: readonly KernelArtifact[]) =>
  Math.max(
    ...ks.flatMap((k) =>
      [...k.reads, ...k.writes].map((x) => x.kind === "scratch" ? x.elements : numel(x))
    ),
  );

const results: Record<string, Record<string, Float32Array>> = {};
for (const noScanBackward of [false, true]) {
  const label = noScanBackward ? "materialized" : "fused";
  let program: GpuProgram;
  try {
    const kp = generateKernels(graph, limits, { noScanBackward });
    program = await GpuProgram.create(ctx, kp);
    console.log(
      `\n${label}: ${kp.kernels.length} kernels, largest buffer ${largest(kp.kernels)} elements ` +
        `(b·l·d·n = ${b * l * d * n})`,
    );
  } catch (e) {
    console.log(`\n${label}: does not fit the device: ${(e as Error).message}`);
    continue;
  }
  try {
    const bench = await program.benchmark(data, { warmup: 2, iterations: 5 });
    for (const k of bench.kernels) {
      console.log(`  ${k.name.padEnd(28)} ${(k.medianNs / 1e6).toFixed(3)} ms`);
    }
    console.log(`  total ${(bench.totalNs / 1e6).toFixed(3)} ms`);
    results[label] = await program.run(data) as Record<string, Float32Array>;
  } finally {
    program.destroy();
  }
}
if (results.fused && results.materialized) {
  for (const k of Object.keys(results.fused)) {
    const a = results.fused[k], r = results.materialized[k];
    let num = 0, den = 0;
    for (let i = 0; i < a.length; i++) {
      num += (a[i] - r[i]) ** 2;
      den += r[i] ** 2;
    }
    console.log(
      `${k}: fused vs materialized relative L2 ${(Math.sqrt(num / (den || 1))).toExponential(2)}`,
    );
  }
}
