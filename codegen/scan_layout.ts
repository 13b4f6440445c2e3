/**
 * What the scan kernels share about their thread layout: the chosen strategy with its derived
 * sizes, each lane's state elements, and guarded stores.
 *
 * @module
 */

import { decodeIndex, type Env } from "./expr.ts";
import type { ScanSpec } from "./scan_kernel.ts";
import { type ChosenScanStrategy, sizeOf } from "./scan_strategy.ts";
import { u32Literal } from "./wgsl_math.ts";

/** The chosen strategy and the sizes derived from it. */
export interface Layout extends Omit<ChosenScanStrategy, "vector"> {
  perLane: number;
  ns: number;
  nc: number;
  len: number;
  chunkLen: number;
  /** Elements per vector load of per-state operands (1: scalar loads, strided slots). */
  vectorWidth: number;
}

/**
 * The per-lane state element indices, and their decoded state axes, for the lane index
 * variable `lane` (names prefixed with `prefix`).
 */
export function stateLanes(spec: ScanSpec, layout: Layout, lane = "j", prefix = "") {
  const lines: string[] = [];
  const envs: Env[] = [];
  const owned: boolean[] = [];
  const sizes = spec.stateAxes.map((a) => sizeOf(spec.scan, a));
  // Lane j holds elements j, j + lanes, … (one load instruction covers consecutive elements
  // across the lanes), or j·R, …, j·R + R − 1 with vector loads (one load covers a lane's).
  const contiguous = layout.vectorWidth > 1;
  const { lanes, perLane } = layout;
  for (let r = 0; r < perLane; r++) {
    const raw = contiguous
      ? `(${lane} * ${u32Literal(perLane)} + ${u32Literal(r)})`
      : r === 0
      ? lane
      : `(${lane} + ${u32Literal(lanes * r)})`;
    lines.push(`let ${prefix}s${r} = min(${raw}, ${u32Literal(Math.max(layout.ns - 1, 0))});`);
    // Whether every lane's r-th element exists: then no select is needed.
    owned.push(contiguous ? (lanes - 1) * perLane + r < layout.ns : lanes * (r + 1) <= layout.ns);
    if (!owned[r]) lines.push(`let ${prefix}own${r} = ${raw} < ${u32Literal(layout.ns)};`);
    const d = decodeIndex(`${prefix}s${r}`, spec.stateAxes, sizes, `${prefix}st${r}_`);
    lines.push(...d.lines);
    envs.push(d.env);
  }
  return { lines, envs, owned };
}

/** `lines` under `if (all of guard)`, or bare when the guard is empty. */
export function guarded(guard: string[], lines: string[]): string[] {
  if (guard.length === 0) return lines;
  return [`if (${guard.join(" && ")}) {`, ...lines.map((l) => `  ${l}`), `}`];
}
