/**
 * A workgroup-tile matrix product for the chunked SSD kernels: `acc[m, n] += Σ_k A[m, k]·B[k, n]`
 * over one `Mt × Nt` output tile, K walked in slices of `kt`. Both operands are staged in
 * workgroup memory as rows of vec4 along the tile's width (`sh[k][w / 4]`, rows padded to an
 * odd vec4 count so transposing stores do not collide on banks); each thread accumulates a
 * `tm × tn` block in named vec4 registers (rows `(r4·TY + ty)·4 + e`, columns
 * `(c4·TX + tx)·4 + e`), so every inner-loop read is one vec4 at a constant offset from a
 * per-thread base. The next slice is loaded from global memory into registers while the current
 * one is multiplied; a product whose B comes from global memory may have its first slice loaded
 * earlier still, during the work before it (`hoistB`, `thenLoads`: the delta rule's state pass
 * chains two products per chunk). The caller supplies the loads as WGSL snippets (fused
 * expressions, scratch buffers, decay scaling), so one emitter serves all three SSD products.
 *
 * @module
 */

import { u32Literal as u } from "./wgsl_math.ts";

/** One tile configuration; every field is a compile-time constant of the kernel. */
export interface TileShape {
  /** Output rows per tile (a multiple of `tm`). */
  Mt: number;
  /** Output columns per tile (a multiple of `tn`). */
  Nt: number;
  /** K slice staged per step. */
  kt: number;
  /** Rows per thread (a multiple of 4). */
  tm: number;
  /** Columns per thread (a multiple of 4). */
  tn: number;
}

/** How one operand's slice gets into workgroup memory. */
export interface Stage {
  /** The index that varies fastest across threads: the tile width (`w`) or K (`k`). Pick the
   * one that is contiguous in the source, so neighbouring threads read neighbouring words. */
  fast: "w" | "k";
  /**
   * WGSL for the vec4 at absolute K index `k` and tile vec4 column `w4` (both u32 expressions):
   * statements plus the vec4 value. Called once per staged slot; `tag` makes names unique.
   */
  load(k: string, w4: string, tag: string): { lines: string[]; value: string };
}

const COMP = ["x", "y", "z", "w"];

/** Threads along the columns and rows of a tile. */
export function tileThreads(t: TileShape): { tx: number; ty: number; threads: number } {
  const tx = t.Nt / t.tn, ty = t.Mt / t.tm;
  return { tx, ty, threads: tx * ty };
}

/** vec4 row length of a staged operand of width `w` (odd, to spread transposing stores). */
function rowLength(w: number): number {
  const w4 = w / 4;
  return w4 % 2 === 0 ? w4 + 1 : w4;
}

/** vec4 elements of workgroup memory each operand needs. */
export function stagedSizes(t: TileShape): { a: number; b: number } {
  return { a: t.kt * rowLength(t.Mt), b: t.kt * rowLength(t.Nt) };
}

/** Checks a tile's internal consistency (internal errors: shapes come from the planner). */
export function checkTile(t: TileShape): void {
  const ok = t.tm % 4 === 0 && t.tn % 4 === 0 && t.Mt % t.tm === 0 && t.Nt % t.tn === 0 &&
    t.kt >= 1;
  if (!ok) throw new Error(`internal: bad SSD tile ${JSON.stringify(t)}`);
}

/** Accumulator name of row r, column group c4. */
export function accName(tag: string, r: number, c4: number): string {
  return `${tag}acc_${r}_${c4}`;
}

/** Declares (or resets) the zeroed accumulators. */
export function accDecl(t: TileShape, tag: string, reset = false): string[] {
  const lines: string[] = [];
  for (let r = 0; r < t.tm; r++) {
    for (let c = 0; c < t.tn / 4; c++) {
      lines.push(`${reset ? "" : "var "}${accName(tag, r, c)} = vec4<f32>(0.0);`);
    }
  }
  return lines;
}

/**
 * Per-thread coordinates: `${tag}tx`, `${tag}ty` and whether the thread holds outputs
 * (`${tag}act`). With `kGroups` G > 1 the tile's threads repeat G times, each group summing
 * its share of every K slice (`${tag}grp`; `${tag}live`: in some group); after the loop
 * {@link kGroupSum} adds the groups' accumulators into group 0's, whose threads are `act`.
 */
export function threadCoords(t: TileShape, tag: string, threads: number, kGroups = 1): string[] {
  const { tx, ty, threads: used } = tileThreads(t);
  if (kGroups === 1) {
    return [
      `let ${tag}tx = lid % ${u(tx)};`,
      `let ${tag}ty = lid / ${u(tx)};`,
      `let ${tag}act = ${used < threads ? `lid < ${u(used)}` : "true"};`,
    ];
  }
  return [
    `let ${tag}tx = lid % ${u(tx)};`,
    `let ${tag}ty = (lid / ${u(tx)}) % ${u(ty)};`,
    `let ${tag}grp = lid / ${u(used)};`,
    `let ${tag}act = lid < ${u(used)};`,
    `let ${tag}live = ${used * kGroups < threads ? `lid < ${u(used * kGroups)}` : "true"};`,
  ];
}

/** vec4s of workgroup memory {@link kGroupSum} needs for `kGroups` groups. */
export function kGroupScratch(t: TileShape, kGroups: number): number {
  return kGroups > 1 ? (kGroups - 1) * tileThreads(t).threads * (t.tm * t.tn) / 4 : 0;
}

/**
 * After a {@link gemmLoop} with `kGroups` > 1: groups 1… store their accumulators in the vec4
 * array `scratch` (free again after the loop's last barrier), and group 0 adds them to its own.
 */
export function kGroupSum(t: TileShape, tag: string, kGroups: number, scratch: string): string[] {
  if (kGroups === 1) return [];
  const used = tileThreads(t).threads;
  const per = (t.tm * t.tn) / 4;
  const slot = (g: string, i: number) =>
    `((${g} - 1u) * ${u(used)} + lid % ${u(used)}) * ${u(per)} + ${u(i)}`;
  const accs: string[] = [];
  for (let r = 0; r < t.tm; r++) for (let c = 0; c < t.tn / 4; c++) accs.push(accName(tag, r, c));
  const lines = [`if (${tag}live && ${tag}grp > 0u) {`];
  accs.forEach((a, i) => lines.push(`  ${scratch}[${slot(`${tag}grp`, i)}] = ${a};`));
  lines.push("}", "workgroupBarrier();", `if (${tag}act) {`);
  for (let g = 1; g < kGroups; g++) {
    accs.forEach((a, i) => lines.push(`  ${a} = ${a} + ${scratch}[${slot(u(g), i)}];`));
  }
  lines.push("}", "workgroupBarrier();");
  return lines;
}

/** Options of {@link gemmLoop}. */
export interface GemmLoopOptions {
  tile: TileShape;
  threads: number;
  a: Stage;
  b: Stage;
  kBegin: string;
  kEnd: string;
  tag: string;
  shA: string;
  shB: string;
  /** Thread groups splitting each K slice (default 1; see {@link threadCoords}). */
  kGroups?: number;
  /**
   * B's registers are declared and its first slice loaded by the caller, earlier
   * ({@link hoistedB}): a product whose B comes from global memory can then have its first
   * slice in flight while the work before it runs (default false).
   */
  hoistB?: boolean;
  /**
   * Lines for the last slice's turn, where a next slice would be loaded: typically the next
   * product's hoisted first slice, so its loads overlap this product's last multiply.
   */
  thenLoads?: string[];
}

/** One operand's staging slots: which vec4 of the slice each thread loads and stores. */
interface SlotPlan {
  op: { x: "a" | "b"; st: Stage; width: number; sh: string };
  names: { k: string; w: string; sh: string; reg: string; guard?: string }[];
  row: number;
  /** The slots' index computations and register declarations. */
  declarations: string[];
}

function slotPlan(opts: GemmLoopOptions, x: "a" | "b"): SlotPlan {
  const { tile: t, threads, tag } = opts;
  const op = x === "a"
    ? { x, st: opts.a, width: t.Mt, sh: opts.shA }
    : { x, st: opts.b, width: t.Nt, sh: opts.shB };
  const w4 = op.width / 4;
  const slots = t.kt * w4;
  const per = Math.ceil(slots / threads);
  const row = rowLength(op.width);
  const names: SlotPlan["names"] = [];
  const declarations: string[] = [];
  for (let p = 0; p < per; p++) {
    const s = `${tag}${op.x}s${p}`;
    declarations.push(`let ${s} = lid + ${u(p * threads)};`);
    const k = `${tag}${op.x}k${p}`, w = `${tag}${op.x}w${p}`;
    if (op.st.fast === "k") {
      declarations.push(`let ${k} = ${s} % ${u(t.kt)};`, `let ${w} = ${s} / ${u(t.kt)};`);
    } else {
      declarations.push(`let ${k} = ${s} / ${u(w4)};`, `let ${w} = ${s} % ${u(w4)};`);
    }
    const sh = `${tag}${op.x}o${p}`;
    declarations.push(`let ${sh} = ${k} * ${u(row)} + ${w};`);
    const reg = `${tag}${op.x}p${p}`;
    declarations.push(`var ${reg} = vec4<f32>(0.0);`);
    const guard = (p + 1) * threads > slots ? `${s} < ${u(slots)}` : undefined;
    names.push({ k, w, sh, reg, guard });
  }
  return { op, names, row, declarations };
}

/** Lines loading the slice at K offset `k0` of `plan`'s operand into its registers. */
function slotLoads(plan: SlotPlan, k0: string, tag: string): string[] {
  const lines: string[] = [];
  plan.names.forEach((n, p) => {
    const { lines: body, value } = plan.op.st.load(
      `(${k0} + ${n.k})`,
      n.w,
      `${tag}${plan.op.x}${p}_`,
    );
    lines.push(`${n.guard ? `if (${n.guard}) ` : ""}{`);
    for (const l of body) lines.push(`  ${l}`);
    lines.push(`  ${n.reg} = ${value};`, `}`);
  });
  return lines;
}

/**
 * B's registers of a {@link gemmLoop} with `hoistB`: `declarations` go in a scope enclosing the
 * loop (before a loop over chunks, say), and `loads(k0, b)` (at the product's first K index, B
 * possibly read at another position, e.g. the next chunk's) where the first slice should start.
 */
export function hoistedB(opts: GemmLoopOptions): {
  declarations: string[];
  loads: (k0: string, b?: Stage) => string[];
} {
  const plan = slotPlan(opts, "b");
  return {
    declarations: plan.declarations,
    loads: (k0, b) =>
      slotLoads(b ? { ...plan, op: { ...plan.op, st: b } } : plan, k0, `${opts.tag}h`),
  };
}

/**
 * The K loop: stages slices [kBegin, kEnd) (uniform u32 expressions; kEnd − kBegin a positive
 * multiple of kt) of A (Mt × kt) and B (kt × Nt) into `shA`/`shB` and accumulates. Every
 * barrier is in uniform control flow.
 */
export function gemmLoop(opts: GemmLoopOptions): string[] {
  const { tile: t, tag } = opts;
  const kGroups = opts.kGroups ?? 1;
  if (t.kt % kGroups !== 0) {
    throw new Error(`internal: ${kGroups} groups over a K slice of ${t.kt}`);
  }
  const { tx, ty } = tileThreads(t);
  const lines: string[] = ["{"];
  const slotPlans = [slotPlan(opts, "a"), slotPlan(opts, "b")];
  const own = opts.hoistB ? [slotPlans[0]] : slotPlans;
  for (const plan of own) lines.push(...plan.declarations.map((l) => `  ${l}`));
  const emitLoads = (k0: string, indent: string, plans = slotPlans) => {
    for (const plan of plans) lines.push(...slotLoads(plan, k0, tag).map((l) => `${indent}${l}`));
  };
  emitLoads(opts.kBegin, "  ", own);
  lines.push(
    `  for (var ${tag}k0 = ${opts.kBegin}; ${tag}k0 < ${opts.kEnd}; ` +
      `${tag}k0 = ${tag}k0 + ${u(t.kt)}) {`,
  );
  for (const { op, names } of slotPlans) {
    for (const n of names) {
      const st = `${op.sh}[${n.sh}] = ${n.reg};`;
      lines.push(`    ${n.guard ? `if (${n.guard}) { ${st} }` : st}`);
    }
  }
  lines.push("    workgroupBarrier();");
  lines.push(`    let ${tag}kn = ${tag}k0 + ${u(t.kt)};`);
  lines.push(`    if (${tag}kn < ${opts.kEnd}) {`);
  emitLoads(`${tag}kn`, "      ");
  if (opts.thenLoads?.length) {
    lines.push("    } else {", ...opts.thenLoads.map((l) => `      ${l}`));
  }
  lines.push("    }");
  lines.push(`    if (${kGroups > 1 ? `${tag}live` : `${tag}act`}) {`);
  const rowA = slotPlans[0].row, rowB = slotPlans[1].row;
  const share = t.kt / kGroups;
  for (let kk = 0; kk < t.kt; kk++) {
    if (kGroups > 1 && kk % share === 0) {
      const g = kk / share;
      lines.push(
        `      ${g === 0 ? "" : "} else "}${g < kGroups - 1 ? `if (${tag}grp == ${u(g)}) ` : ""}{`,
      );
    }
    lines.push("      {");
    for (let r4 = 0; r4 < t.tm / 4; r4++) {
      lines.push(
        `        let ra${r4} = ${opts.shA}[${tag}ty + ${u(kk * rowA + r4 * ty)}];`,
      );
    }
    for (let c4 = 0; c4 < t.tn / 4; c4++) {
      lines.push(
        `        let rb${c4} = ${opts.shB}[${tag}tx + ${u(kk * rowB + c4 * tx)}];`,
      );
    }
    for (let r = 0; r < t.tm; r++) {
      const a = `vec4<f32>(ra${r >> 2}.${COMP[r & 3]})`;
      for (let c4 = 0; c4 < t.tn / 4; c4++) {
        const acc = accName(tag, r, c4);
        lines.push(`        ${acc} = fma(${a}, rb${c4}, ${acc});`);
      }
    }
    lines.push("      }");
  }
  if (kGroups > 1) lines.push("      }");
  lines.push("    }", "    workgroupBarrier();", "  }", "}");
  return lines;
}

/**
 * An operand already in the workgroup array `array` (f32): the vec4 of tile indices w4·4 … w4·4 + 3
 * at K index k, stored at `w·stride + k` (`kMajor` false) or `k·stride + w` (`kMajor` true).
 */
export function sharedOperand(array: string, stride: number, kMajor = false): Stage {
  return {
    fast: "k",
    load: (k, w4) => ({
      lines: [],
      value: `vec4<f32>(${
        [0, 1, 2, 3].map((i) =>
          kMajor
            ? `${array}[${k} * ${u(stride)} + ${w4} * 4u + ${u(i)}]`
            : `${array}[(${w4} * 4u + ${u(i)}) * ${u(stride)} + ${k}]`
        ).join(", ")
      })`,
    }),
  };
}

/**
 * Visits the thread's outputs: `row` is the tile row (u32 WGSL expression), `col4` the tile
 * vec4 column, `acc` the vec4 of 4 consecutive columns; `r` and `c4` number the thread's row
 * and vec4 column (0 ≤ r < tm, 0 ≤ c4 < tn / 4), for names of per-output registers.
 */
export function forEachOutput(
  t: TileShape,
  tag: string,
  visit: (row: string, col4: string, acc: string, r: number, c4: number) => string[],
): string[] {
  const { tx } = tileThreads(t);
  const lines: string[] = [];
  for (let r = 0; r < t.tm; r++) {
    const row = tileRow(t, tag, r);
    for (let c4 = 0; c4 < t.tn / 4; c4++) {
      const col4 = `(${tag}tx + ${u(c4 * tx)})`;
      lines.push(...visit(row, col4, accName(tag, r, c4), r, c4));
    }
  }
  return lines;
}

/** The tile row (a u32 WGSL expression) of the thread's row `r` (0 ≤ r < tm). */
function tileRow(t: TileShape, tag: string, r: number): string {
  return `((${tag}ty + ${u((r >> 2) * tileThreads(t).ty)}) * 4u + ${u(r & 3)})`;
}

/** Multiplies each accumulator row by `factor(row)` (row: the tile row, a u32 expression). */
export function scaleRows(t: TileShape, tag: string, factor: (row: string) => string): string[] {
  const lines: string[] = [];
  for (let r = 0; r < t.tm; r++) {
    const row = tileRow(t, tag, r);
    lines.push(`{`, `  let f = ${factor(row)};`);
    for (let c4 = 0; c4 < t.tn / 4; c4++) {
      const acc = accName(tag, r, c4);
      lines.push(`  ${acc} = ${acc} * f;`);
    }
    lines.push("}");
  }
  return lines;
}

/**
 * Picks rows and columns per thread for an `Mt × Nt` tile: the largest block (at most 8 × 8)
 * that still gives at least `minThreads` threads, within `maxThreads`; else the most threads.
 */
export function fitTile(
  Mt: number,
  Nt: number,
  kt: number,
  maxThreads: number,
  minThreads = 128,
): TileShape {
  const options: TileShape[] = [];
  for (const [tm, tn] of [[8, 8], [8, 4], [4, 8], [4, 4]]) {
    if (Mt % tm || Nt % tn) continue;
    const threads = (Mt / tm) * (Nt / tn);
    if (threads <= maxThreads) options.push({ Mt, Nt, kt, tm, tn });
  }
  if (options.length === 0) {
    throw new Error(`internal: no thread layout for an SSD tile of ${Mt} × ${Nt}`);
  }
  const enough = options.find((o) => tileThreads(o).threads >= minThreads);
  if (enough) return enough;
  return options.reduce((best, o) => tileThreads(o).threads > tileThreads(best).threads ? o : best);
}
