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
