// The recurrent scan's default lanes per channel (codegen/scan_strategy.ts): at most 8 states a
// lane, and more lanes for short scans with few threads, decided from the shapes and a
// 32-wide-subgroup device's limits (no GPU needed); on an adapter with subgroups the chosen
// kernels are checked against the interpreter.
import assert from "node:assert/strict";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS, type DeviceLimits } from "../codegen/limits.ts";
import { trace } from "../dsl/trace.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { checkSelectiveScan } from "./scan_check.ts";

/** A large GPU's binding sizes with 32-wide subgroups (an H100-like device). */
const SUBGROUP_32: DeviceLimits = {
  ...DEFAULT_LIMITS,
  subgroups: true,
  subgroupMinSize: 32,
  maxStorageBufferBindingSize: 2 ** 31,
  maxBufferSize: 2 ** 31,
  maxStorageBuffersPerShaderStage: 16,
};
const SUBGROUP_8: DeviceLimits = { ...SUBGROUP_32, subgroupMinSize: 8 };

/** Lanes per channel of the selective scan's kernel at these sizes and limits. */
function lanesOf(sizes: { b: number; l: number; d: number; n: number }, limits: DeviceLimits) {
  const graph = trace(SELECTIVE_SCAN_INPUTS, (t) => selectiveScan(t).y, sizes);
  const heads = generateKernels(graph, limits).kernels.map((k) => k.wgsl.split("\n")[0]);
  const m = heads.map((h) => h.match(/(\d+) lane\(s\)\/channel/)).find((x) => x);
  assert.ok(m, heads.join("\n"));
  return Number(m[1]);
}

Deno.test("scan lanes: 8 by default, 16 for 128 states, more for short scans with few threads", () => {
  // Long scans with 16 states: 8 lanes (2 states each), whatever the batch.
  assert.equal(lanesOf({ b: 1, l: 2048, d: 1536, n: 16 }, SUBGROUP_32), 8);
  // Decode steps and short prompt chunks of one sequence: too few threads, 16 lanes.
  assert.equal(lanesOf({ b: 1, l: 1, d: 1536, n: 16 }, SUBGROUP_32), 16);
  assert.equal(lanesOf({ b: 1, l: 16, d: 1536, n: 16 }, SUBGROUP_32), 16);
  // Never more lanes than steps past one step (blocks stay transposed), nor than states.
  assert.equal(lanesOf({ b: 1, l: 8, d: 64, n: 16 }, SUBGROUP_32), 8);
  assert.equal(lanesOf({ b: 1, l: 1, d: 64, n: 4 }, SUBGROUP_32), 4);
  // Batch 64: threads enough, 8 lanes.
  assert.equal(lanesOf({ b: 64, l: 1, d: 1536, n: 16 }, SUBGROUP_32), 8);
  // 128 states: at most 8 a lane, so 16 lanes, at any length and batch.
  assert.equal(lanesOf({ b: 64, l: 1, d: 1536, n: 128 }, SUBGROUP_32), 16);
  assert.equal(lanesOf({ b: 1, l: 300, d: 64, n: 128 }, SUBGROUP_32), 16);
  // The subgroup bounds them all.
  assert.equal(lanesOf({ b: 1, l: 1, d: 1536, n: 128 }, SUBGROUP_8), 8);
});

const gpu = await getGpu().catch(() => undefined);
const wideSubgroups = !!gpu?.features.subgroups && gpu.features.subgroupMinSize >= 16;

Deno.test({
  name: "scan lanes: the 16-lane defaults agree with the interpreter (adapters with subgroups)",
  ignore: !wideSubgroups,
  fn: async () => {
    for (const sizes of [{ b: 1, l: 1, d: 40, n: 16 }, { b: 2, l: 13, d: 9, n: 16 }]) {
      const { wgsl } = await checkSelectiveScan(sizes, {}, { init: true });
      assert.match(wgsl, /16 lane\(s\)\/channel/, JSON.stringify(sizes));
    }
    const { wgsl } = await checkSelectiveScan({ b: 1, l: 3, d: 5, n: 128 }, {}, { reverse: true });
    assert.match(wgsl, /16 lane\(s\)\/channel/);
  },
});
