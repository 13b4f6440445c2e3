/**
 * Staged per-state loads of the scan kernel (`stateLoads: "staged"`): the values that every
 * channel of a workgroup shares (B and C of a block of steps) are loaded once per workgroup,
 * one or a few vectors per thread, into double-buffered workgroup memory, instead of into
 * registers of every lane; each lane then reads its own state elements from there.
 *
 * @module
 */

import type { Prefetcher } from "./scan_loop.ts";
import { u32Literal } from "./wgsl_math.ts";

/** The WGSL pieces of staging, or an empty plan (tile 0) when nothing is staged. */
export interface StagingCode {
  /** Elements per block's tile (staged loads × lanes). */
  readonly tile: number;
  /** Workgroup memory used (two tiles). */
  readonly bytes: number;
  /** The workgroup array's declaration. */
  readonly declaration?: string;
  /** Per-thread constants, before the loop: its tile elements and their lanes' state indices. */
  readonly invariant: string[];
  /** Loads of the thread's tile elements for the block whose step names end in `suffix`. */
  readonly fill: (suffix: string, name: string) => string[];
  /** Stores of those values into the buffer starting at `base`. */
  readonly store: (name: string, base: string) => string[];
}

/**
 * The cooperative loads of staged per-state values: thread e of the workgroup loads element
 * e (and e + workgroup, …) of a block's tile, which holds staged load k for lane jj at
 * k·lanes + jj; the tile is double-buffered in `sk_stage`.
 */
export function stagingCode(
  layout: { lanes: number; workgroup: number },
  prefetch: Prefetcher,
  laneStates: (lane: string, prefix: string) => string[],
): StagingCode {
  const staged = prefetch.staged;
  const { lanes, workgroup } = layout;
  const tile = staged.length * lanes;
  if (tile === 0) return { tile, bytes: 0, invariant: [], fill: () => [], store: () => [] };
  const dtype = staged[0].dtype;
  const slots = Math.ceil(tile / workgroup);
  const invariant: string[] = [];
  const lanesOf: string[] = [];
  for (let sl = 0; sl < slots; sl++) {
    invariant.push(
      `let ske${sl} = lid + ${u32Literal(sl * workgroup)};`,
      `let skk${sl} = min(ske${sl} / ${u32Literal(lanes)}, ${u32Literal(staged.length - 1)});`,
      `let skj${sl} = ske${sl} % ${u32Literal(lanes)};`,
    );
    const prefix = `sk${sl}_`;
    invariant.push(...laneStates(`skj${sl}`, prefix));
    lanesOf.push(prefix);
  }
  // A staged load read for lane skj: its state names get that lane's prefix.
  const forLane = (load: string, prefix: string) =>
    load.replace(/\b(st\d+_\w+|s\d+)\b/g, (m) => `${prefix}${m}`);
  const fill = (suffix: string, name: string) =>
    lanesOf.flatMap((prefix, sl) => [
      `var ${name}${sl}: ${dtype};`,
      `switch skk${sl} {`,
      ...staged.map((l, k) =>
        `  case ${u32Literal(k)}: { ${name}${sl} = ${
          forLane(prefetch.renamed(l.load, suffix), prefix)
        }; }`
      ),
      `  default: {}`,
      `}`,
    ]);
  const store = (name: string, base: string) =>
    lanesOf.map((_, sl) =>
      `if (ske${sl} < ${u32Literal(tile)}) { sk_stage[${base} + ske${sl}] = ${name}${sl}; }`
    );
  const width = dtype === "f32" ? 1 : Number(dtype.match(/vec(\d)/)?.[1] ?? 1);
  return {
    tile,
    bytes: 2 * tile * 4 * width,
    declaration: `var<workgroup> sk_stage: array<${dtype}, ${2 * tile}>;`,
    invariant,
    fill,
    store,
  };
}
