/**
 * The recurrent scan kernel's strategy as a tuning point. Its defaults (lanes per channel, the
 * workgroup-tiled kernel for wide long scans) were measured on an H100 and an H200; on another
 * GPU they are guesses. With the autotuner on, a fused scan that the user gave no kernel knob
 * is emitted as a choice among a few strategies: the default, the lane kernel at 1–32 lanes
 * per channel, and the tiled kernel at 16 and 32 steps per tile. Candidates that the scan or
 * the device cannot run (shuffles wider than the subgroup, a tiled kernel with an output that
 * reads the state, workgroup arrays over the limit) are left out, as are candidates whose
 * decided strategy equals the default's. Without the autotuner the default is emitted, as
 * before.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";
import { emitScanKernels } from "./scan_kernel.ts";
import type { ScanSpec } from "./scan_spec.ts";
import {
  AUTO_TILED_WORKGROUP,
  chooseScanStrategy,
  type ChosenScanStrategy,
  type ScanStrategy,
} from "./scan_strategy.ts";
import { emitTuned } from "./tuning.ts";

/** Knobs that decide a strategy: giving any of them fixes it (no tuning point). */
const STRATEGY_KNOBS: readonly (keyof ScanStrategy)[] = [
  "chunks",
  "lanes",
  "unroll",
  "transpose",
  "prefetch",
  "prefetchDepth",
  "workgroup",
  "stateLoads",
  "foldLog2e",
  "broadcast",
  "math",
  "vector",
  "vectorIndex",
  "tileSteps",
  "tileReduce",
];

/** The alternatives timed beside the default, by candidate name. */
const ALTERNATIVES: readonly [string, ScanStrategy][] = [
  ...[1, 4, 8, 16, 32].map((lanes): [string, ScanStrategy] => [`lanes${lanes}`, { lanes }]),
  ["tiled16", { tileSteps: 16, workgroup: AUTO_TILED_WORKGROUP }],
  ["tiled32", { tileSteps: 32, unroll: 16, workgroup: AUTO_TILED_WORKGROUP }],
];

/** The tuning point's key: the scan's shape, direction and what it reads and writes. */
export function recurrentScanKey(spec: ScanSpec): string {
  const { scan } = spec;
  const contracted = spec.outputs.filter((o) => o.contract).length;
  return `recurrent scan ${scan.axes.join(",")}=${scan.shape.join("x")} over ${scan.axis}` +
    `${scan.reverse ? " reversed" : ""}, states ${spec.stateAxes.join(",") || "-"}, ` +
    `${spec.outputs.length} outputs (${contracted} contracted), ${spec.finals.length} finals`;
}

/**
 * The recurrent scan's kernels (scan_kernel.ts): the default strategy, as a tuning point over
 * the strategies of the module doc unless `force` fixes one.
 */
export function emitRecurrentScan(
  spec: ScanSpec,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanStrategy = {},
): KernelArtifact[] {
  const emitWith = (extra: ScanStrategy) => () =>
    emitScanKernels(spec, materialized, limits, name, aliases, { ...force, ...extra });
  if (STRATEGY_KNOBS.some((k) => force[k] !== undefined)) return emitWith({})();
  const decided = chooseScanStrategy(spec, limits, force);
  const byDefault = "default";
  const candidates = new Map<string, () => KernelArtifact[]>([[byDefault, emitWith({})]]);
  for (const [label, extra] of ALTERNATIVES) {
    let chosen: ChosenScanStrategy;
    try {
      chosen = chooseScanStrategy(spec, limits, { ...force, ...extra });
    } catch {
      continue; // not a strategy this scan or device can run
    }
    if (!sameStrategy(chosen, decided)) candidates.set(label, emitWith(extra));
  }
  return emitTuned(limits, recurrentScanKey(spec), candidates, byDefault);
}

/** Whether two decided strategies emit the same kernel (the `tiledAuto` mark aside). */
function sameStrategy(a: ChosenScanStrategy, b: ChosenScanStrategy): boolean {
  const strip = ({ tiledAuto: _, ...rest }: ChosenScanStrategy) => rest;
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}
