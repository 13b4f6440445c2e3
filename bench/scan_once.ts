/**
 * Runs the selective-scan benchmark shape a few times (for external profilers such as ncu).
 *
 *   deno run -A bench/scan_once.ts [lanes] [transpose 0|1]
 *
 * @module
 */

import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { scanBenchInputs } from "./scan_inputs.ts";

const s = { b: 8, l: 4096, d: 1536, n: 16 };
const lanes = Number(Deno.args[0] ?? 16);
const transpose = (Deno.args[1] ?? "0") === "1";
const prog = await compile(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, s, {
  scan: { lanes, transpose },
});
const inputs = scanBenchInputs(s);
for (let i = 0; i < 3; i++) await prog.run(inputs);
console.log(prog.kernels[0].wgsl.split("\n")[0]);
