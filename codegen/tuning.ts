/**
 * Tuning points: where a kernel's strategy is a choice among a few candidates (a matmul's tile
 * config, the chunked delta rule's state-pass lanes and threads), the kernel records the
 * decision's key (the shapes it depends on) and how to emit every candidate. The runtime's
 * autotuner (runtime/autotune.ts) times the candidates on the user's adapter and hands the
 * winners back as {@link DeviceLimits.tuned}; without it every point takes its default (the cost
 * model's choice), so code generation stays deterministic.
 *
 * @module
 */

import type { KernelArtifact } from "./artifact.ts";
import type { DeviceLimits } from "./limits.ts";

export type { TuningPoint } from "./artifact.ts";

/**
 * The candidate the autotuner chose for `key` on this device, if it is one of `candidates`;
 * otherwise undefined (the caller's default applies).
 */
export function tunedChoice(
  limits: Pick<DeviceLimits, "tuned">,
  key: string,
  candidates: Iterable<string>,
): string | undefined {
  const chosen = limits.tuned?.get(key);
  if (chosen === undefined) return undefined;
  for (const c of candidates) if (c === chosen) return chosen;
  return undefined;
}

/**
 * A tuning point's kernels: the candidate the autotuner chose for `key` (else `byDefault`),
 * emitted by its entry in `candidates`, with the point recorded on the first kernel. Emitting
 * the alternatives leaves out candidates whose emitter throws (they do not fit the device). A
 * single candidate is no choice: its kernels carry no point.
 */
export function emitTuned(
  limits: Pick<DeviceLimits, "tuned">,
  key: string,
  candidates: ReadonlyMap<string, () => KernelArtifact[]>,
  byDefault: string,
): KernelArtifact[] {
  const chosen = tunedChoice(limits, key, candidates.keys()) ?? byDefault;
  const emit = candidates.get(chosen);
  if (!emit) throw new Error(`internal: tuning point "${key}" has no candidate "${chosen}"`);
  const kernels = emit();
  if (candidates.size < 2 || kernels.length === 0) return kernels;
  const alternatives = (): [string, KernelArtifact[]][] => {
    const out: [string, KernelArtifact[]][] = [];
    for (const [name, emitOne] of candidates) {
      try {
        out.push([name, emitOne()]);
      } catch {
        // A candidate over the device's limits is not a choice.
      }
    }
    return out;
  };
  return [{ ...kernels[0], tuning: { key, chosen, alternatives } }, ...kernels.slice(1)];
}
