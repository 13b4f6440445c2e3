/**
 * The single-pass chained scan of the associative scan (see `assoc_scan_kernel.ts`): one
 * workgroup per tile scans its tile, publishes the tile's aggregate, looks back over its
 * predecessors' published aggregates and inclusive prefixes (decoupled look-back, Merrill &
 * Garland 2016) and, where a predecessor has published nothing within a bounded number of
 * polls, computes that tile's reduction itself from the input (decoupled fallback, Smith,
 * Levien & Owens 2025). The input is read once and the output written once.
 *
 * **Tile order.** Tiles are numbered by an atomic counter, not `workgroup_id`, so a tile's
 * predecessors were all taken by workgroups that had started. The counter word also carries
 * the run's parity in its top bit: the workgroup taking the last tile adds 2³¹ − T, which
 * zeroes the count and flips the parity (one location, so every add is ordered), and the next
 * dispatch starts from there. Nothing needs clearing between runs.
 *
 * **Publishing without cross-location ordering.** WGSL's atomics are relaxed and its barriers
 * order memory within a workgroup only, so a "value, then flag" protocol across two locations
 * has no guarantee between workgroups. Instead every 32-bit word published is self-describing:
 * each f32 component is split into two 16-bit halves, each stored by one `atomicStore` with the
 * run's tag (1 or 2, from the parity) in the upper 16 bits. A reader accepts a record only when
 * every word it loads carries this run's tag; since each slot is written exactly once per run
 * (aggregates and inclusive prefixes in separate slots), such words are the published value,
 * whatever the order in which they became visible. Stale words (last run, other tag) and the
 * zeroed buffer (tag 0) read as "not yet". Visibility itself has no time bound in WGSL, and
 * workgroups have no forward-progress guarantee: the poll count bounds the wait and the
 * fallback makes progress alone, so the kernel is correct under any scheduling, including
 * workgroups run one after another.
 *
 * @module
 */

import { u32Literal } from "./wgsl_math.ts";
import { fold, type ItemWrite, tilePrefix, type Tiling } from "./assoc_scan_tiles.ts";

/**
 * Predecessors one look-back step examines in parallel, one thread each (at most the
 * workgroup). The inclusive prefixes advance by at most a window per step (a round trip to L2
 * and a few barriers). On an H100 (2026-12-07) the single pass over 64M f32 read 2.23 ms with
 * 32 and 1.95 ms with 256 in the same kind of call: the window was not what bounded it.
 */
export const LOOKBACK_WINDOW = 256;

/** Polls of a predecessor's words before computing its reduction instead (the default). */
export const DEFAULT_LOOKBACK_SPINS = 64;

/** The geometry of one single-pass kernel. */
export interface SinglePassLayout {
  /** Length of the scanned axis. */
  readonly len: number;
  /** Tiles along the axis, per channel. */
  readonly tiles: number;
  /** Tiles in all (channels × tiles): workgroups dispatched. */
  readonly slots: number;
  /** Components of the scanned record. */
  readonly comps: number;
  /** Polls per predecessor before the fallback; 0 never reads a flag (tests). */
  readonly spins: number;
  /**
   * Tests: tiles k with k mod n = n − 1 publish nothing, those with k mod n = n − 2 only their
   * aggregate (0: all publish).
   */
  readonly withhold: number;
  /** Name of the read_write `array<atomic<u32>>` binding holding the counter and the words. */
  readonly state: string;
}

/** Words of the state buffer: the counter, then aggregates, then inclusive prefixes. */
export function stateWords(layout: { slots: number; comps: number }): number {
  return 1 + 2 * 2 * layout.comps * layout.slots;
}

/**
 * WGSL of one published f32 (see the module doc) over the `state` binding
 * (`array<atomic<u32>>`): `publishWord(i, tag, v)` stores its two tagged 16-bit halves at words
 * i and i + 1; `readWord(i, tag)` loads them, `ok` when both carry `tag`. Also used by the
 * attention kernel's inline split merge.
 */
export function taggedWordFunctions(state: string): string {
  return `struct TaggedWord { ok: bool, v: f32 }
fn publishWord(i: u32, tag: u32, v: f32) {
  let b = bitcast<u32>(v);
  atomicStore(&${state}[i], (tag << 16u) | (b & 0xffffu));
  atomicStore(&${state}[i + 1u], (tag << 16u) | (b >> 16u));
}
fn readWord(i: u32, tag: u32) -> TaggedWord {
  let a = atomicLoad(&${state}[i]);
  let b = atomicLoad(&${state}[i + 1u]);
  return TaggedWord((a >> 16u) == tag && (b >> 16u) == tag, bitcast<f32>((a & 0xffffu) | (b << 16u)));
}`;
}

/** Helper functions (`Rec` and `comb` declared) and workgroup memory of the kernel. */
export function singlePassDeclarations(t: Tiling, l: SinglePassLayout): string {
  const wordsPer = 2 * l.comps;
  const cs = Array.from({ length: l.comps }, (_, c) => c);
  const loads = cs.map((c) => `let w${c} = readWord(i + ${2 * c}u, tag);`);
  const tagged = cs.map((c) => `w${c}.ok`).join(" && ");
  const value = cs.map((c) => `w${c}.v`).join(", ");
  const stores = cs.map((c) => `publishWord(i + ${2 * c}u, tag, v.c${c});`);
  const window = Math.min(LOOKBACK_WINDOW, t.wg);
  return `${taggedWordFunctions(l.state)}
struct Look { ok: bool, v: Rec }
// The record published at word offset i (one tagged word pair per component).
fn lookAt(i: u32, tag: u32) -> Look {
  ${loads.join("\n  ")}
  return Look(${tagged}, Rec(${value}));
}
fn publishAt(i: u32, tag: u32, v: Rec) {
  ${stores.join("\n  ")}
}
// Word offsets of slot w's aggregate and inclusive prefix.
fn aggregateWord(w: u32) -> u32 { return 1u + w * ${wordsPer}u; }
fn inclusiveWord(w: u32) -> u32 { return ${u32Literal(1 + wordsPer * l.slots)} + w * ${wordsPer}u; }
var<workgroup> shTicket: u32;
var<workgroup> shStatus: array<u32, ${window}>;
var<workgroup> shControl: u32;
var<workgroup> shNext: u32;
var<workgroup> shCarry: Rec;`;
}

/**
 * Statements taking a tile: `w` (its slot), `tag` (this run's word tag), `ch`/`k` (its channel
 * and its tile within the channel). Workgroups past `slots` (`dispatchIndex`, a WGSL
 * expression of `workgroup_id`) return first: exactly `slots` workgroups take a ticket.
 */
export function takeTile(l: SinglePassLayout, dispatchIndex: string): string[] {
  return [
    `if (${dispatchIndex} >= ${u32Literal(l.slots)}) { return; }`,
    `if (lid == 0u) {`,
    `  let ticket = atomicAdd(&${l.state}[0], 1u);`,
    // The last tile taken: zero the count and flip the parity for the next run.
    `  if ((ticket & 0x7fffffffu) == ${u32Literal(l.slots - 1)}) {`,
    `    atomicAdd(&${l.state}[0], ${u32Literal(2 ** 31 - l.slots)});`,
    `  }`,
    `  shTicket = ticket;`,
    `}`,
    `let ticket = workgroupUniformLoad(&shTicket);`,
    `let w = ticket & 0x7fffffffu;`,
    `let tag = 1u + (ticket >> 31u);`,
    `let ch = w / ${u32Literal(l.tiles)};`,
    `let k = w % ${u32Literal(l.tiles)};`,
  ];
}

/**
 * The body after {@link takeTile} and the channel decode: the tile [start, end) scanned,
 * published, carried in by look-back and written. `item(v, j)` loads item j into `x{v}`
 * (indices v ≥ t.per are the fallback's); `write(v, j, value)` writes item j's output.
 */
export function singlePassBody(
  t: Tiling,
  l: SinglePassLayout,
  item: (v: number, j: string) => string[],
  write: ItemWrite,
): string {
  const per = Array.from({ length: t.per }, (_, v) => v);
  const slot = (i: string) => `stagePad(${i})`;
  const lines: string[] = [
    `let start = k * ${t.tile}u;`,
    `let end = min(start + ${t.tile}u, ${u32Literal(l.len)});`,
  ];
  // The tile's items, into registers (through the stage: coalesced loads).
  lines.push(`let base = start;`, `let n = end - base;`);
  for (const v of per) lines.push(`var x${v}: Rec;`, `let k${v} = base + lid * ${t.per}u + ${v}u;`);
  if (t.stage) {
    for (const v of per) {
      lines.push(`let j${v} = base + ${v * t.wg}u + lid;`, `if (j${v} < end) {`);
      lines.push(...item(v, `j${v}`).map((s) => `  ${s}`));
      lines.push(`  stage[${slot(`${v * t.wg}u + lid`)}] = x${v};`, `}`);
    }
    lines.push(`workgroupBarrier();`);
    for (const v of per) lines.push(`x${v} = stage[${slot(`lid * ${t.per}u + ${v}u`)}];`);
  }
  lines.push(`var local: Rec;`);
  for (const v of per) {
    lines.push(`if (k${v} < end) {`);
    if (!t.stage) lines.push(...item(v, `k${v}`).map((s) => `  ${s}`));
    lines.push(v === 0 ? `  local = x0;` : `  local = comb(local, x${v});`, `}`);
  }
  // In-tile exclusive prefixes (no carry yet) and the tile's aggregate.
  lines.push(`var carry: Rec;`, `let hasCarry = false;`);
  lines.push(...tilePrefix(t, l.comps));
  lines.push(...aggregateLines(t));
  lines.push(`let aggregate = shTotal;`);
  lines.push(...publishAggregate(l));
  lines.push(...lookBack(t, l, fallback(t, l, item)));
  // Every thread's exclusive prefix, the carry first; then its items, written.
  lines.push(
    `if (k > 0u) {`,
    `  let c = workgroupUniformLoad(&shCarry);`,
    `  if (has) { pre = comb(c, pre); } else { pre = c; has = true; }`,
    `}`,
  );
  for (const v of per) {
    lines.push(`if (k${v} < end) {`, `  ${fold("pre", "has", `x${v}`)}`);
    if (t.stage) lines.push(`  stage[${slot(`lid * ${t.per}u + ${v}u`)}] = pre;`);
    else lines.push(...write(v, `k${v}`, "pre").map((s) => `  ${s}`));
    lines.push(`}`);
  }
  if (t.stage) {
    lines.push(`workgroupBarrier();`);
    for (const v of per) {
      lines.push(`let j${v}w = base + ${v * t.wg}u + lid;`, `if (j${v}w < end) {`);
      lines.push(`  let y${v} = stage[${slot(`${v * t.wg}u + lid`)}];`);
      lines.push(...write(v, `j${v}w`, `y${v}`).map((s) => `  ${s}`), `}`);
    }
  }
  return lines.join("\n  ");
}

/**
 * The guard of a tile's publishing, or "": with `withhold` n, tiles k with k mod n = n − 1
 * publish nothing and (`inclusive`) those with k mod n = n − 2 no inclusive prefix (tests).
 */
function publishIf(l: SinglePassLayout, inclusive = false): string {
  const n = l.withhold;
  if (n === 0) return "";
  return inclusive ? `if (k % ${n}u + 2u < ${n}u) ` : `if (k % ${n}u + 1u < ${n}u) `;
}

/** After {@link tilePrefix}: the inclusive value of the tile's last item into `shTotal`. */
function aggregateLines(t: Tiling): string[] {
  return [
    `if (lid == (n - 1u) / ${t.per}u) {`,
    `  var total = pre;`,
    `  var hasTotal = has;`,
    `  ${fold("total", "hasTotal", "local")}`,
    `  shTotal = total;`,
    `}`,
    `workgroupBarrier();`,
  ];
}

/**
 * Statements publishing slot w's `aggregate` (tile or chunk 0 of a channel: its inclusive
 * prefix), by thread 0.
 */
export function publishAggregate(l: SinglePassLayout): string[] {
  return [
    `if (lid == 0u) {`,
    `  ${publishIf(l)}{`,
    `    if (k == 0u) { publishAt(inclusiveWord(w), tag, aggregate); }`,
    `    else { publishAt(aggregateWord(w), tag, aggregate); }`,
    `  }`,
    `}`,
  ];
}

/**
 * The look-back of slot k > 0 (a tile, or a chunk of tiles), leaving the fold of slots
 * 0..k−1 of the channel in `shCarry` and publishing k's inclusive prefix (`aggregate` folded
 * in). `j` counts the predecessors not yet folded in (the next is slot j − 1). Each step,
 * thread i of the window polls slot j − 1 − i (its inclusive prefix and its aggregate in one
 * round trip); the answers are folded nearest first (`carry = v ⊕ carry`: the combine need
 * not commute) up to the first inclusive prefix (done) or the first slot with nothing
 * published, whose reduction the workgroup then computes from the input (`fallbackLines`:
 * slot j's reduction into `shTotal`, then a barrier). The fold is a tree over the window
 * (log₂ window barriers, not one thread walking it): each node holds the fold of its range up
 * to the range's first stop, how many slots that consumed, and how it stopped.
 */
export function lookBack(t: Tiling, l: SinglePassLayout, fallbackLines: string[]): string[] {
  const window = Math.min(LOOKBACK_WINDOW, t.wg);
  const into = (v: string) =>
    `if (hasAcc) { acc = comb(${v}, acc); } else { acc = ${v}; hasAcc = true; }`;
  const poll = l.spins === 0 ? [] : [
    `  for (var s: u32 = 0u; s < ${l.spins}u; s++) {`,
    `    let inc = lookAt(inclusiveWord(p), tag);`,
    `    let agg = lookAt(aggregateWord(p), tag);`,
    `    if (inc.ok) { st = 2u; got = inc.v; break; }`,
    `    if (agg.ok) { st = 1u; got = agg.v; break; }`,
    `  }`,
  ];
  // A node's word: slots consumed (bits 0–15), stop (16–17: 0 none, 1 inclusive, 2 nothing
  // published), whether it holds a value (bit 18).
  return [
    `if (k > 0u) {`,
    `  var acc: Rec;`,
    `  var hasAcc = false;`,
    `  var j = k;`,
    `  loop {`,
    `    let count = min(j, ${window}u);`,
    `    if (lid < count) {`,
    `      let p = w - k + j - 1u - lid;`,
    `      var st = 0u;`,
    `      var got: Rec;`,
    ...poll.map((s) => `    ${s}`),
    `      shStatus[lid] = select(2u << 16u, 1u | ((st - 1u) << 16u) | (1u << 18u), st != 0u);`,
    `      sh[lid] = got;`,
    `    }`,
    // Node lid (near) absorbs node lid + d (far) unless its own range already stopped.
    `    for (var d = 1u; d < ${window}u; d = d << 1u) {`,
    `      workgroupBarrier();`,
    `      if (lid % (2u * d) == 0u && lid + d < count) {`,
    `        let near = shStatus[lid];`,
    `        if (((near >> 16u) & 3u) == 0u) {`,
    `          let far = shStatus[lid + d];`,
    `          if ((near >> 18u) == 0u) {`,
    `            sh[lid] = sh[lid + d];`,
    `          } else if ((far >> 18u) != 0u) {`,
    `            sh[lid] = comb(sh[lid + d], sh[lid]);`,
    `          }`,
    `          shStatus[lid] = ((near & 0xffffu) + (far & 0xffffu)) | (far & 0x30000u) |` +
    ` ((near | far) & 0x40000u);`,
    `        }`,
    `      }`,
    `    }`,
    `    workgroupBarrier();`,
    `    if (lid == 0u) {`,
    `      let root = shStatus[0];`,
    `      if ((root >> 18u) != 0u) {`,
    `        let v = sh[0];`,
    `        ${into("v")}`,
    `      }`,
    `      shControl = (root >> 16u) & 3u;`,
    `      shNext = j - (root & 0xffffu);`,
    `    }`,
    // 0: the window was all aggregates; 1: an inclusive prefix ended it; 2: a stall.
    `    let control = workgroupUniformLoad(&shControl);`,
    `    j = workgroupUniformLoad(&shNext);`,
    `    if (control == 1u) { break; }`,
    `    if (control == 2u) {`,
    `      j = j - 1u;`,
    ...fallbackLines.map((s) => `      ${s}`),
    `      if (lid == 0u) {`,
    `        let v = shTotal;`,
    `        ${into("v")}`,
    `      }`,
    `    }`,
    `    if (j == 0u) { break; }`,
    `  }`,
    // The inclusive prefix, published as soon as it is known; then shared.
    `  if (lid == 0u) {`,
    `    shCarry = acc;`,
    `    ${publishIf(l, true)}{ publishAt(inclusiveWord(w), tag, comb(acc, aggregate)); }`,
    `  }`,
    `}`,
  ];
}

/** The reduction of tile j of this channel into `shTotal`, computed from the input. */
function fallback(
  t: Tiling,
  l: SinglePassLayout,
  item: (v: number, j: string) => string[],
): string[] {
  const lines = [
    `{`,
    `  let start = j * ${t.tile}u;`,
    `  let end = min(start + ${t.tile}u, ${u32Literal(l.len)});`,
    `  let n = end - start;`,
    `  var local: Rec;`,
  ];
  for (let v = 0; v < t.per; v++) {
    const f = t.per + v;
    lines.push(
      `  var x${f}: Rec;`,
      `  let k${f} = start + lid * ${t.per}u + ${v}u;`,
      `  if (k${f} < end) {`,
      ...item(f, `k${f}`).map((s) => `    ${s}`),
      v === 0 ? `    local = x${f};` : `    local = comb(local, x${f});`,
      `  }`,
    );
  }
  lines.push(`  var carry: Rec;`, `  let hasCarry = false;`);
  lines.push(...tilePrefix(t, l.comps).map((s) => `  ${s}`));
  // sh is read by the prefix; the next look-back step writes it after this barrier.
  lines.push(...aggregateLines(t).map((s) => `  ${s}`), `}`);
  return lines;
}
