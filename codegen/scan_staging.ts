/**
 * Staged per-state loads of the scan kernel (`stateLoads: "staged"`): the values that every
 * channel of a workgroup shares (B and C of a block of steps) are loaded once per workgroup,
 * one or a few vectors per thread, into double-buffered workgroup memory, instead of into
 * registers of every lane; each lane then reads its own state elements from there. And staged
 * broadcasts (`broadcast: "staged"`): the per-step values of the lane-transposed kernel go
 * through workgroup memory instead of subgroup shuffles.
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

/**
 * The per-step values of a lane-transposed block (Δ, Δ·x…: computed by the lane that owns the
 * step, needed by every lane of its group) passed through workgroup memory. Value b of a
 * thread sits in component b % 4 of vector ⌊b / 4⌋ of `sk_ph`, so a step reads all its values
 * with one vector load per four; groups of lanes are padded by one vector so that the groups
 * of a warp read distinct banks; two buffers alternate, `phc` being the current one's start.
 * The values of block i + 1 are computed and stored at the end of iteration i (block 0's
 * before the loop), so they are off the loop's critical path.
 */
export class StagedBroadcast {
  readonly #slots = new Map<string, number>();
  readonly #reads = new Map<string, string>();
  /** Vectors per group of four values, padded. */
  readonly #stride: number;

  /**
   * @param lanes     lanes per channel (one group)
   * @param workgroup threads per workgroup
   */
  constructor(readonly lanes: number, readonly workgroup: number) {
    this.#stride = workgroup + workgroup / lanes;
  }

  /** Number of distinct values broadcast. */
  get count(): number {
    return this.#slots.size;
  }

  /** Vectors per buffer (0 when nothing is broadcast). */
  get slots(): number {
    return Math.ceil(this.#slots.size / 4) * this.#stride;
  }

  /** Workgroup memory used: two buffers of 16-byte vectors. */
  get bytes(): number {
    return 2 * 16 * this.slots;
  }

  /**
   * The expression reading phase-A value `value` of step `step` (from the lane owning it);
   * the vector load is appended to `lines` once per step and group of four values.
   */
  read(value: string, step: number, lines: string[]): string {
    let b = this.#slots.get(value);
    if (b === undefined) this.#slots.set(value, b = this.#slots.size);
    const load = `sk_ph[phc + ${u32Literal(Math.floor(b / 4) * this.#stride + step)} + lane0w]`;
    let name = this.#reads.get(load);
    if (name === undefined) {
      name = `bv${this.#reads.size}`;
      lines.push(`let ${name}: vec4<f32> = ${load};`);
      this.#reads.set(load, name);
    }
    return `${name}[${b % 4}]`;
  }

  /** Per-thread constants: its slot (`phw`) and its group's first slot (`lane0w`). */
  header(): string[] {
    return [`let phw = lid + lid / ${u32Literal(this.lanes)};`, `let lane0w = phw - j;`];
  }

  /** The workgroup array. */
  declaration(): string {
    return `var<workgroup> sk_ph: array<vec4<f32>, ${2 * this.slots}>;`;
  }

  /**
   * Phase A's lines evaluated for another block (lets renamed `prefix`K; step names that
   * direct loads mention suffixed `steps`) and their values stored into the buffer at `base`.
   */
  ahead(phaseA: readonly string[], prefix: string, base: string, steps: string): string[] {
    const rename = (line: string) => line.replace(/\ba(\d+)\b/g, `${prefix}$1`);
    const values = [...this.#slots.keys()].map(rename);
    const stores = Array.from({ length: Math.ceil(values.length / 4) }, (_, g) => {
      const parts = [0, 1, 2, 3].map((c) => values[4 * g + c] ?? "0.0");
      return `sk_ph[${base} + ${u32Literal(g * this.#stride)} + phw] = ` +
        `vec4<f32>(${parts.join(", ")});`;
    });
    return [
      ...phaseA.map((l) => rename(l).replace(/\b(tta|ta)\b/g, `$1${steps}`)),
      ...stores,
    ];
  }
}
