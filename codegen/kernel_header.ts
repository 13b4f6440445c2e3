/**
 * The opening every one-dimensional-grid kernel shares: bindings, the math prelude, workgroup
 * arrays and `main` up to `wid`, the flat workgroup index (workgroup counts are folded into x and
 * y under the per-dimension limit, `limits.ts`), and the lines of a tile of rows or keys that
 * `lanes` threads each work on.
 *
 * @module
 */

import type { BindingRegistry } from "./artifact.ts";
import { MATH_PRELUDE, u32Literal as u } from "./wgsl_math.ts";

/** Lines joined with an indent. */
export const indent = (ls: readonly string[], d = "  "): string => ls.map((l) => d + l).join("\n");

/** Bindings, prelude, workgroup arrays and the entry point up to `wid` (the flat workgroup). */
export function header(reg: BindingRegistry, threads: number, shared: string[] = []): string {
  return `${reg.declarations()}
${MATH_PRELUDE}
${shared.join("\n")}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let wid = wg.x + wg.y * nwg.x;`;
}

/** Names of the WGSL values {@link laneTile} defines. */
export interface LaneTileNames {
  /** The tile's first item. */
  first: string;
  /** One past its last item (clamped to the count). */
  end: string;
  /** This thread's item. */
  item: string;
  /** The item clamped into range (safe to index with when the thread is not `live`). */
  clamped: string;
}

/**
 * WGSL lines of the tile `tile` (a WGSL expression) of `size` items out of `count`, `lanes`
 * threads per item: defines `lane`, `live` (the thread has an item in range) and `names`.
 */
export function laneTile(
  tile: string,
  size: number,
  count: number,
  lanes: number,
  names: LaneTileNames,
): string[] {
  const { first, end, item, clamped } = names;
  return [
    `let ${first} = ${tile} * ${u(size)};`,
    `let ${end} = min(${first} + ${u(size)}, ${u(count)});`,
    `let lane = lid % ${u(lanes)};`,
    `let ${item} = ${first} + lid / ${u(lanes)};`,
    `let live = lid < ${u(size * lanes)} && ${item} < ${u(count)};`,
    `let ${clamped} = min(${item}, ${u(count - 1)});`,
  ];
}
