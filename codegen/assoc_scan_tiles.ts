/**
 * The workgroup loops of the chunked associative scan (see `assoc_scan_kernel.ts`): a
 * workgroup walks a range of items in tiles of `wg × per`; in a tile thread i holds the `per`
 * consecutive items from i·per, folds them, and the tile's thread totals are scanned across
 * the workgroup, either in workgroup memory (Hillis–Steele, two barriers per step) or with
 * subgroup shuffles inside each subgroup and one pass over the subgroup totals (two barriers
 * per tile). Each thread then rescans its items from its exclusive prefix.
 *
 * The subgroup form assumes subgroups are consecutive runs of `local_invocation_index` (lane
 * = index mod size), as the lane scan does.
 *
 * @module
 */

/** The tile geometry of the chunked kernels. */
export interface Tiling {
  /** Threads per workgroup. */
  readonly wg: number;
  /** Consecutive items per thread per tile. */
  readonly per: number;
  /** Items per tile (wg × per). */
  readonly tile: number;
  /** Items per chunk (a whole number of tiles). */
  readonly chunkLen: number;
  /** Chunks along the axis. */
  readonly chunks: number;
  /** How a tile's thread totals are scanned. */
  readonly scan: "subgroup" | "workgroup";
  /** Pass items and outputs through workgroup memory, so global accesses are coalesced. */
  readonly stage: boolean;
}

/** The builtins `main` needs for a tiling. */
export function tileBuiltins(t: Tiling): string {
  return t.scan === "subgroup"
    ? `,\n  @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) sgs: u32`
    : "";
}

/** Workgroup-memory declarations of a tiling (`Rec` must be declared). */
export function tileDeclarations(t: Tiling): string {
  return `var<workgroup> sh: array<Rec, ${t.wg}>;\nvar<workgroup> shTotal: Rec;`;
}

/** `target = comb(target, value)`, or `target = value` when `flag` is false (then set). */
export function fold(target: string, flag: string, value: string): string {
  return `if (${flag}) { ${target} = comb(${target}, ${value}); } else { ${target} = ${value}; ${flag} = true; }`;
}

function shuffled(comps: number, value: string, delta: string): string {
  const parts = Array.from(
    { length: comps },
    (_, i) => `subgroupShuffleUp(${value}.c${i}, ${delta})`,
  );
  return `Rec(${parts.join(", ")})`;
}

/**
 * Statements that leave in `pre`/`has` the exclusive prefix of this thread's items (from
 * `carry`/`hasCarry` on), given its fold `local`; n is the tile's valid item count.
 */
export function tilePrefix(t: Tiling, comps: number): string[] {
  if (t.scan === "workgroup") {
    return [
      `sh[lid] = local;`,
      `for (var d: u32 = 1u; d < ${t.wg}u; d = d << 1u) {`,
      `  workgroupBarrier();`,
      `  var s = sh[lid];`,
      `  if (lid >= d) { s = comb(sh[lid - d], s); }`,
      `  workgroupBarrier();`,
      `  sh[lid] = s;`,
      `}`,
      `workgroupBarrier();`,
      `var pre = carry;`,
      `var has = hasCarry;`,
      `if (lid > 0u && lid * ${t.per}u < n) {`,
      `  let s = sh[lid - 1u];`,
      `  ${fold("pre", "has", "s")}`,
      `}`,
    ];
  }
  return [
    `var s = local;`,
    `for (var d: u32 = 1u; d < sgs; d = d << 1u) {`,
    `  let o = ${shuffled(comps, "s", "d")};`,
    `  if (sid >= d) { s = comb(o, s); }`,
    `}`,
    `let up = ${shuffled(comps, "s", "1u")};`,
    `if (sid == sgs - 1u || lid == ${t.wg - 1}u) { sh[lid / sgs] = s; }`,
    `workgroupBarrier();`,
    `var pre = carry;`,
    `var has = hasCarry;`,
    `if (lid * ${t.per}u < n) {`,
    `  for (var g: u32 = 0u; g < lid / sgs; g++) {`,
    `    let v = sh[g];`,
    `    ${fold("pre", "has", "v")}`,
    `  }`,
    `  if (sid > 0u) { ${fold("pre", "has", "up")} }`,
    `}`,
  ];
}

/** Per-item statements of {@link tileLoop}: `value` names the item's scanned Rec. */
export type ItemWrite = (v: number, j: string, value: string) => string[];

/**
 * The tile loop over items [start, end). `item(v, j)` gives the statements loading item j
 * into `x{v}`; `write.lines` runs per item with `pre`/`has` holding the exclusive prefix
 * (`before`) or with the inclusive value (`after`). Afterwards `carry`/`hasCarry` hold the fold
 * of the whole range (and of what they held before).
 *
 * With `t.stage` (not for `before` writes), items are computed and written at coalesced
 * positions (thread i takes i, i + wg, …) and passed through workgroup memory to and from the
 * thread holding them in the scan.
 */
export function tileLoop(
  t: Tiling,
  comps: number,
  start: string,
  end: string,
  item: (v: number, j: string) => string[],
  write: { when: "before" | "after" | "none"; lines: ItemWrite },
): string {
  // Staging serves loads and "after" writes; "before" writes (the carries pass) are unstaged.
  const staged = t.stage && write.when !== "before";
  const stagedOut = staged && write.when === "after";
  const lines: string[] = [];
  const per = Array.from({ length: t.per }, (_, v) => v);
  const indent = (ls: string[], by: string) => ls.map((l) => `${by}${l}`);
  const slot = (i: string) => `stagePad(${i})`;
  lines.push(`for (var base: u32 = ${start}; base < ${end}; base += ${t.tile}u) {`);
  lines.push(`  let n = min(${end} - base, ${t.tile}u);`);
  for (const v of per) {
    lines.push(`  var x${v}: Rec;`, `  let k${v} = base + lid * ${t.per}u + ${v}u;`);
  }
  if (staged) {
    for (const v of per) {
      lines.push(`  let j${v} = base + ${v * t.wg}u + lid;`, `  if (j${v} < ${end}) {`);
      lines.push(...indent(item(v, `j${v}`), "    "));
      lines.push(`    stage[${slot(`${v * t.wg}u + lid`)}] = x${v};`, `  }`);
    }
    lines.push(`  workgroupBarrier();`);
    for (const v of per) {
      lines.push(`  x${v} = stage[${slot(`lid * ${t.per}u + ${v}u`)}];`);
    }
  }
  lines.push(`  var local: Rec;`);
  for (const v of per) {
    lines.push(`  if (k${v} < ${end}) {`);
    if (!staged) lines.push(...indent(item(v, `k${v}`), "    "));
    lines.push(v === 0 ? `    local = x0;` : `    local = comb(local, x${v});`, `  }`);
  }
  lines.push(...indent(tilePrefix(t, comps), "  "));
  for (const v of per) {
    lines.push(`  if (k${v} < ${end}) {`);
    if (write.when === "before") lines.push(...indent(write.lines(v, `k${v}`, "pre"), "    "));
    lines.push(`    ${fold("pre", "has", `x${v}`)}`);
    if (stagedOut) lines.push(`    stage[${slot(`lid * ${t.per}u + ${v}u`)}] = pre;`);
    else if (write.when === "after") {
      lines.push(...indent(write.lines(v, `k${v}`, "pre"), "    "));
    }
    lines.push(`  }`);
  }
  // The last valid item's inclusive value (carry included) is the new carry.
  lines.push(`  if (lid == (n - 1u) / ${t.per}u) { shTotal = pre; }`, `  workgroupBarrier();`);
  if (stagedOut) {
    for (const v of per) {
      lines.push(`  let j${v}w = base + ${v * t.wg}u + lid;`, `  if (j${v}w < ${end}) {`);
      lines.push(`    let y${v} = stage[${slot(`${v * t.wg}u + lid`)}];`);
      lines.push(...indent(write.lines(v, `j${v}w`, `y${v}`), "    "), `  }`);
    }
  }
  // The next tile overwrites the stage.
  if (staged) lines.push(`  workgroupBarrier();`);
  lines.push(`  carry = shTotal;`, `  hasCarry = true;`, `}`);
  return lines.join("\n  ");
}

/** Workgroup memory of the stage (`Rec`s, padded against bank conflicts), if staged. */
export function stageDeclarations(t: Tiling): string {
  if (!t.stage) return "";
  return `var<workgroup> stage: array<Rec, ${stageSlots(t.tile)}>;
fn stagePad(i: u32) -> u32 { return i + (i >> 5u); }`;
}

/** Slots of the padded stage for a tile. */
export function stageSlots(tile: number): number {
  return tile + (tile >> 5);
}

/**
 * 32-bit words of workgroup memory a tile scan's records take: `sh` (one record per thread),
 * `shTotal` and the carry, and the staged tile when `stagedTile` is given.
 */
export function tileRecordWords(comps: number, wg: number, stagedTile?: number): number {
  return comps * (wg + 2 + (stagedTile === undefined ? 0 : stageSlots(stagedTile)));
}

/**
 * The fold of items [start, end) into `carry`/`hasCarry` for a commutative combine: thread i
 * takes items i, i + wg, … (coalesced loads, no barrier per tile), then a tree in workgroup
 * memory combines the threads' folds. Every thread ends with the total.
 */
export function commutativeFold(
  t: Tiling,
  start: string,
  end: string,
  item: (v: number, j: string) => string[],
): string {
  const lines: string[] = [];
  lines.push(`for (var base: u32 = ${start}; base < ${end}; base += ${t.tile}u) {`);
  // A whole tile (every tile but a chunk's last, at most): its loads need no bounds checks, so
  // they issue back to back, and its items fold among themselves before meeting the carry.
  lines.push(`  if (base + ${t.tile}u <= ${end}) {`);
  for (let v = 0; v < t.per; v++) {
    lines.push(`    var x${v}: Rec;`, `    let j${v} = base + ${v * t.wg}u + lid;`);
    lines.push(...item(v, `j${v}`).map((l) => `    ${l}`));
  }
  lines.push(`    var whole = x0;`);
  for (let v = 1; v < t.per; v++) lines.push(`    whole = comb(whole, x${v});`);
  lines.push(`    ${fold("carry", "hasCarry", "whole")}`, `    continue;`, `  }`);
  for (let v = 0; v < t.per; v++) {
    lines.push(`  var x${v}: Rec;`, `  let j${v} = base + ${v * t.wg}u + lid;`);
    lines.push(`  if (j${v} < ${end}) {`, ...item(v, `j${v}`).map((l) => `    ${l}`));
    lines.push(`    ${fold("carry", "hasCarry", `x${v}`)}`, `  }`);
  }
  lines.push(`}`);
  let pow = 1;
  while (pow < t.wg) pow *= 2;
  lines.push(
    `sh[lid] = carry;`,
    `shHas[lid] = u32(hasCarry);`,
    `for (var s: u32 = ${pow / 2}u; s > 0u; s = s >> 1u) {`,
    `  workgroupBarrier();`,
    `  if (lid < s && lid + s < ${t.wg}u && shHas[lid + s] != 0u) {`,
    `    if (shHas[lid] != 0u) { sh[lid] = comb(sh[lid], sh[lid + s]); } else { sh[lid] = sh[lid + s]; shHas[lid] = 1u; }`,
    `  }`,
    `}`,
    `workgroupBarrier();`,
    `carry = sh[0];`,
  );
  return lines.join("\n  ");
}

/** The extra workgroup memory {@link commutativeFold} needs. */
export function commutativeDeclarations(t: Tiling): string {
  return `var<workgroup> shHas: array<u32, ${t.wg}>;`;
}
