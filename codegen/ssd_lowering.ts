/**
 * Strategy choice for a fused scan group: the chunked SSD lowering (ssd_kernel.ts) when the
 * scan has the SSD form and the cost model (or the user) picks it, else the recurrent kernel
 * (scan_kernel.ts). Forcing the chunked lowering on a scan without the form is an error that
 * says why the form is missing.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import type { KernelArtifact } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";
import { emitRecurrentScan } from "./scan_tuning.ts";
import type { ScanSpec } from "./scan_spec.ts";
import type { ScanStrategy } from "./scan_strategy.ts";
import { defaultSsdChunk, emitSsdKernels } from "./ssd_kernel.ts";
import { chooseScanLowering, chunkLengths, explainSsd, SSD_CHUNKS, ssdSizes } from "./ssd_plan.ts";
import { emitTuned } from "./tuning.ts";

/**
 * The chunk length for a forced chunk count: the smallest supported power of two with at most
 * `chunks` chunks over `len` steps (clamped to the supported range).
 */
export function chunkLengthFor(
  len: number,
  chunks: number,
  lengths: readonly number[] = SSD_CHUNKS,
): number {
  if (!Number.isInteger(chunks) || chunks < 1) throw new Error(`scan: bad chunk count ${chunks}`);
  const want = Math.ceil(len / chunks);
  return lengths.find((q) => q >= want) ?? lengths[lengths.length - 1];
}

/**
 * Emits the kernels of one fused scan group, chunked or recurrent (see the module doc). Unless
 * the strategy forces the mode or the chunks, the choice is a tuning point: the recurrent kernels
 * and, where the SSD form exists, the chunked ones at each supported chunk length (the cost
 * model's pick is the default). The recurrent kernels' own strategy is a tuning point too
 * (scan_tuning.ts), nested in this one where both exist.
 */
export function emitScanGroup(
  spec: ScanSpec,
  materialized: ReadonlySet<Node>,
  limits: DeviceLimits,
  name: string,
  aliases: ReadonlyMap<Node, Node>,
  force: ScanStrategy = {},
): KernelArtifact[] {
  if (force.mode !== undefined && force.mode !== "chunked" && force.mode !== "recurrent") {
    throw new Error(
      `scan: mode must be "chunked" or "recurrent", got ${JSON.stringify(force.mode)}`,
    );
  }
  const len = spec.scan.shape[spec.scan.axes.indexOf(spec.scan.axis)];
  const recurrent = () => emitRecurrentScan(spec, materialized, limits, name, aliases, force);
  if (force.mode === "recurrent") return recurrent();
  const ssd = explainSsd(spec, materialized);
  if (force.mode === "chunked" && !ssd.form) {
    throw new Error(
      `scan over "${spec.scan.axis}" (node ${spec.scan.id}): the chunked (SSD) lowering does ` +
        `not apply: ${ssd.reason}; use mode "recurrent"`,
    );
  }
  const form = ssd.form;
  const chunked = (chunk?: number) =>
    emitSsdKernels(spec, form!, materialized, limits, name, aliases, { chunk });
  if (force.mode === "chunked" || force.chunks !== undefined) {
    if (
      !form || (force.mode !== "chunked" && chooseScanLowering(spec, form, limits) !== "chunked")
    ) {
      return recurrent();
    }
    const lengths = chunkLengths(ssdSizes(form));
    return chunked(
      force.chunks === undefined ? undefined : chunkLengthFor(len, force.chunks, lengths),
    );
  }
  if (!form) return recurrent();
  const byDefault = chooseScanLowering(spec, form, limits) === "chunked"
    ? `chunked${defaultSsdChunk(form, limits)}`
    : "recurrent";
  const candidates = new Map<string, () => KernelArtifact[]>([["recurrent", recurrent]]);
  for (const q of chunkLengths(ssdSizes(form))) {
    if ((q >= 16 && q / 2 < len) || `chunked${q}` === byDefault) {
      candidates.set(`chunked${q}`, () => chunked(q));
    }
  }
  // The decay's axes are part of the key: GLA (a decay per key) and simple GLA (one per head)
  // have scans of the same shape and different kernels.
  const key = `scan ${spec.scan.axes.join(",")}=${spec.scan.shape.join("x")} over ` +
    `${spec.scan.axis}, decay ${spec.scan.decay.axes.join(",")}, ${spec.outputs.length} ` +
    `outputs, ${spec.finals.length} finals`;
  return emitTuned(limits, key, candidates, byDefault);
}
