/**
 * A plain, JSON-able description of a GPU context (what `ssmkit info` prints).
 *
 * @module
 */

import type { GpuContext } from "./gpu_device.ts";

/** The adapter, granted features and limits of a context, as plain data. */
export interface GpuDescription {
  /** Adapter identity (`isFallback`: a software adapter). */
  adapter: GpuContext["adapterInfo"];
  /** Features ssmkit uses and the subgroup sizes. */
  features: GpuContext["features"];
  /** Every numeric device limit, sorted by name. */
  limits: Record<string, number>;
}

/** Describes `ctx` as a plain object (copies: safe to serialize or mutate). */
export function describeGpu(ctx: GpuContext): GpuDescription {
  const limits: Record<string, number> = {};
  for (const key of Object.keys(ctx.limits).sort()) limits[key] = ctx.limits[key];
  return { adapter: { ...ctx.adapterInfo }, features: { ...ctx.features }, limits };
}
