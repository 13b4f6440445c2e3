/**
 * Scan strategy sweep on the selective-scan benchmark shape: lanes per channel, steps per
 * loop iteration and chunks, each checked for agreement with the default variant, then timed.
 *
 *   deno run -A bench/scan_tune.ts [--b 8 --l 4096 --d 1536 --n 16]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { scanBenchInputs } from "./scan_inputs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    b: { type: "string", default: "8" },
    l: { type: "string", default: "4096" },
    d: { type: "string", default: "1536" },
    n: { type: "string", default: "16" },
    iterations: { type: "string", default: "10" },
  },
  strict: true,
});
const s = { b: Number(values.b), l: Number(values.l), d: Number(values.d), n: Number(values.n) };
const inputs = scanBenchInputs(s);
const bytes = 4 * (4 * s.b * s.l * s.d + 2 * s.b * s.l * s.n + s.d * s.n + 2 * s.d);
let reference: Float32Array | undefined;
const variants: { lanes: number; unroll?: number; chunks: number; transpose: boolean }[] = [
  { lanes: 16, unroll: 1, chunks: 1, transpose: false },
  { lanes: 1, unroll: 2, chunks: 1, transpose: false },
];
for (const lanes of [32, 16, 8, 4, 2]) {
  for (const chunks of [1, 2, 4]) variants.push({ lanes, chunks, transpose: true });
}
for (const v of variants) {
  try {
    const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s, { scan: v });
    const y = await prog.run(inputs);
    let diff = 0, norm = 0;
    reference ??= y;
    for (let i = 0; i < y.length; i += 97) {
      diff += (y[i] - reference[i]) ** 2;
      norm += reference[i] ** 2;
    }
    const r = await prog.benchmark(inputs, { warmup: 2, iterations: Number(values.iterations) });
    const ms = r.totalNs / 1e6;
    console.log(JSON.stringify({
      bench: "scan_variant",
      ...v,
      ms,
      GBps: bytes / ms / 1e6,
      relDiffVsFirst: Math.sqrt(diff / norm),
    }));
    prog.destroy();
  } catch (e) {
    console.log(JSON.stringify({ bench: "scan_variant", ...v, error: String(e).slice(0, 300) }));
  }
}
