/**
 * The sizes of an `attention` node and the tile plan of its kernels (attention_kernel.ts):
 * rows, tiles of queries and keys within the device's workgroup memory, key splits across
 * workgroups (flash-decoding) when the query tiles alone leave a large GPU idle, merged inside the
 * one kernel by the last split to finish, and the ways a workgroup splits its keys among its
 * threads otherwise (flash-decoding inside one workgroup), chosen by simple cost rules.
 *
 * @module
 */

import type { AttentionNode, Node } from "../dsl/ir.ts";
import type { DeviceLimits } from "./limits.ts";

/** The sizes of an attention node. */
export interface AttentionShapes {
  /** Batch axes (k's axes but the key and feature axes), in k's order. */
  readonly batch: readonly string[];
  /** Their sizes. */
  readonly batchShape: readonly number[];
  /** Batch positions (product of the batch sizes). */
  readonly batches: number;
  /** Query heads per key/value head (1 without a group axis). */
  readonly group: number;
  /** Queries. */
  readonly queries: number;
  /** Keys. */
  readonly keys: number;
  /** Feature size of q and k. */
  readonly dk: number;
  /** Feature size of v. */
  readonly dv: number;
  /** Query rows per batch position: queries·group, ordered query-major (row = t·group + r). */
  readonly rows: number;
}

/** The sizes of `node`. */
export function attentionShapes(node: AttentionNode): AttentionShapes {
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const batch = node.k.axes.filter((a) => a !== node.keyAxis && a !== node.featureAxis);
  const batchShape = batch.map((a) => size(node.k, a));
  const group = node.groupAxis === undefined ? 1 : size(node.q, node.groupAxis);
  const queries = size(node.q, node.queryAxis);
  return {
    batch,
    batchShape,
    batches: batchShape.reduce((p, s) => p * s, 1),
    group,
    queries,
    keys: size(node.k, node.keyAxis),
    dk: size(node.k, node.featureAxis),
    dv: size(node.v, node.valueAxis),
    rows: queries * group,
  };
}

/** Knobs of the attention kernels (tests and benchmarks force them). */
export interface AttentionStrategy {
  /**
   * Key splits across workgroups: each split walks its own range of keys (more workgroups for a
   * long cache) and publishes its (m, l, acc); see `combine`. Chosen by {@link planAttention}
   * when absent.
   */
  splits?: number;
  /**
   * How key splits are merged: `"inline"` (the default), in the same kernel by the workgroup of
   * each row tile that finishes last; `"kernel"`, by a second kernel (one thread per output).
   */
  combine?: "inline" | "kernel";
  /**
   * Inline merging: polls of another split's published words before the merging workgroup
   * gives up on them and walks every key of its rows itself (default 64; 0 always does: tests).
   */
  splitSpins?: number;
  /**
   * Ways: groups of threads within a workgroup that walk disjoint keys of each staged tile
   * (key j of a tile belongs to way j mod ways), merged in workgroup memory at the end (a power
   * of two ≤ keysPerTile). Chosen by {@link planAttention} when absent.
   */
  ways?: number;
  /**
   * Load the next K/V tile into registers while the current one is walked (default: with
   * ways, i.e. decode; prefill keeps its registers for more resident workgroups).
   */
  prefetch?: boolean;
  /** Query rows per workgroup; at most 64. */
  rowsPerWorkgroup?: number;
  /**
   * Threads per query row (a power of two ≤ the subgroup size; 1 without subgroups): each holds
   * every lanes-th feature of the query and the output, and q·k is summed by subgroup shuffles.
   */
  lanes?: number;
  /** Keys per tile staged in workgroup memory (a power of two). */
  keysPerTile?: number;
  /** vec4 registers and loads (default: when both feature sizes are multiples of 4). */
  vec4?: boolean;
}

/** The tile plan of one attention node. */
export interface AttentionPlan {
  /** Query rows per workgroup. */
  readonly rowsPerWorkgroup: number;
  /** Threads per query row, sharing its features. */
  readonly lanes: number;
  /** Threads per workgroup (≥ rows·lanes·ways: the others only help stage keys and values). */
  readonly threads: number;
  /** Thread groups of rows·lanes walking disjoint keys of each tile, merged at the end. */
  readonly ways: number;
  /** The next tile's loads issued before the current tile is walked. */
  readonly prefetch: boolean;
  /** Keys per tile in workgroup memory. */
  readonly keysPerTile: number;
  /** Workgroups along the queries per batch position. */
  readonly queryTiles: number;
  /** Features held and loaded in vec4 units. */
  readonly vec4: boolean;
  /** Key splits, each walked by its own workgroups. */
  readonly splits: number;
  /** With splits: merged in the kernel (`"inline"`) or by a second kernel. */
  readonly combine: "inline" | "kernel";
  /**
   * Inline merging: thread groups of rows·lanes threads that fold disjoint splits' words, then
   * merge on chip as the ways do (1 without inline merging).
   */
  readonly mergeGroups: number;
  /** Inline merging: polls of a split's words before the fallback (walking every key). */
  readonly splitSpins: number;
  /** Keys per split (a multiple of the tile). */
  readonly splitLength: number;
}

/** The fewest threads per workgroup: enough to stage a tile with coalesced loads. */
const MIN_THREADS = 64;
/** Rows per workgroup at most (they share each staged tile of keys and values). */
const MAX_ROWS = 64;
/** Features one thread holds at most (of q and of the output each) before more lanes share a row. */
const FEATURES_PER_LANE = 32;
/** Threads a workgroup of few rows (decode) is filled to with ways. */
const WAY_THREADS = 256;
/** Workgroups a launch should have to fill a large GPU (the split rule aims at this). */
const TARGET_WORKGROUPS = 1024;
/** The fewest tiles one split walks: below this the merge's traffic outweighs the gain. */
const MIN_TILES_PER_SPLIT = 4;
/** Inline merging: polls of a split's words before the fallback. */
const DEFAULT_SPLIT_SPINS = 64;

/**
 * Plans the kernels of `node` on a device. Rows per workgroup: 64, or all rows when fewer
 * (decode). Keys per tile: the largest power of two ≤ 32 whose K and V tiles fit the
 * workgroup memory. Splits (the cost rule): when the query tiles alone give fewer workgroups
 * than a large GPU runs at once, the keys are split so that there are about
 * {@link TARGET_WORKGROUPS}, each split walking at least {@link MIN_TILES_PER_SPLIT} tiles (on an
 * H100, 2026-12-07, decode with splits ran 2.4× faster than one workgroup per key/value head in
 * ways). Ways: a workgroup whose rows·lanes threads are fewer than {@link WAY_THREADS} gets that
 * many threads by walking each tile's keys in as many ways, when the keys are not split (split
 * workgroups keep rows·lanes threads, at least 64, as timed); the ways' partial results must fit
 * the workgroup memory, where they reuse the K and V tile's array.
 */
export function planAttention(
  node: AttentionNode,
  limits: DeviceLimits,
  strategy: AttentionStrategy = {},
): AttentionPlan {
  const s = attentionShapes(node);
  const aligned = s.dk % 4 === 0 && s.dv % 4 === 0;
  if (strategy.vec4 && !aligned) {
    throw new Error(
      `attention: vec4 needs feature sizes that are multiples of 4 (${s.dk}, ${s.dv})`,
    );
  }
  const vec4 = strategy.vec4 ?? aligned;
  const lanes = attentionLanes(
    Math.max(s.dk, s.dv) / (vec4 ? 4 : 1),
    limits,
    strategy.lanes,
    vec4 ? 4 : 1,
  );
  const maxThreads = limits.maxComputeInvocationsPerWorkgroup;
  const maxRows = Math.max(1, Math.min(MAX_ROWS, Math.floor(maxThreads / lanes)));
  const rowsPerWorkgroup = strategy.rowsPerWorkgroup ?? Math.min(maxRows, s.rows);
  if (
    !Number.isInteger(rowsPerWorkgroup) || rowsPerWorkgroup < 1 || rowsPerWorkgroup > maxRows
  ) {
    throw new Error(
      `attention: rowsPerWorkgroup ${rowsPerWorkgroup} must be an integer in 1..${maxRows}`,
    );
  }
  const perKey = (s.dk + s.dv) * 4;
  let keysPerTile = strategy.keysPerTile ?? 32;
  if (strategy.keysPerTile === undefined) {
    while (keysPerTile > 1 && keysPerTile * perKey > limits.maxComputeWorkgroupStorageSize) {
      keysPerTile /= 2;
    }
  }
  if (keysPerTile * perKey > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `attention: a tile of ${keysPerTile} keys with features ${s.dk} + ${s.dv} needs ` +
        `${keysPerTile * perKey} bytes of workgroup memory; the device has ` +
        `${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
  const queryTiles = Math.ceil(s.rows / rowsPerWorkgroup);
  const tiles = Math.ceil(s.keys / keysPerTile);
  const wanted = Math.ceil(TARGET_WORKGROUPS / (s.batches * queryTiles));
  const most = Math.max(1, Math.floor(tiles / MIN_TILES_PER_SPLIT));
  let splits = strategy.splits ?? Math.max(1, Math.min(wanted, most));
  if (!Number.isInteger(splits) || splits < 1) {
    throw new Error(`attention: splits must be a positive integer, got ${splits}`);
  }
  splits = Math.min(splits, tiles);
  const splitLength = Math.ceil(tiles / splits) * keysPerTile;
  splits = Math.ceil(s.keys / splitLength);
  const combine = strategy.combine ?? "inline";
  if (combine !== "inline" && combine !== "kernel") {
    throw new Error(`attention: combine must be "inline" or "kernel", got ${String(combine)}`);
  }
  const splitSpins = strategy.splitSpins ?? DEFAULT_SPLIT_SPINS;
  if (!Number.isInteger(splitSpins) || splitSpins < 0) {
    throw new Error(`attention: splitSpins must be a whole number ≥ 0, got ${splitSpins}`);
  }
  const rowThreads = rowsPerWorkgroup * lanes;
  const fits = mergeFits(rowsPerWorkgroup, keysPerTile, s, vec4, limits);
  const ways = splits > 1 && strategy.ways === undefined
    ? 1
    : planWays(rowThreads, keysPerTile, fits, maxThreads, strategy.ways);
  const threads = Math.min(maxThreads, Math.max(MIN_THREADS, rowThreads * ways));
  // The merging workgroup folds the other splits' words in groups of rows·lanes threads.
  const mergeGroups = splits > 1 && combine === "inline"
    ? Math.max(1, Math.min(Math.floor(threads / rowThreads), fits))
    : 1;
  return {
    rowsPerWorkgroup,
    lanes,
    threads,
    ways,
    prefetch: strategy.prefetch ?? ways > 1,
    keysPerTile,
    queryTiles,
    vec4,
    splits,
    splitLength,
    combine,
    mergeGroups,
    splitSpins,
  };
}

/**
 * Workgroup bytes of the main kernel: one array holding the K and V tile (bk·(dk + dv)
 * features), reused after the key loop for the ways' (or merge groups') partial accumulators
 * (rows·ways·dv features, units rounded up), plus each way's m and l per row.
 */
export function attentionWorkgroupBytes(
  rows: number,
  bk: number,
  ways: number,
  s: AttentionShapes,
  vec4: boolean,
): number {
  const w = vec4 ? 4 : 1;
  const tile = bk * (s.dk + s.dv) / w;
  const partials = ways > 1 ? ways * rows * Math.ceil(s.dv / w) : 0;
  return 4 * w * Math.max(tile, partials) + (ways > 1 ? 8 * ways * rows : 0);
}

/** The most ways (a power of two) whose partial results fit the workgroup memory. */
function mergeFits(
  rows: number,
  bk: number,
  s: AttentionShapes,
  vec4: boolean,
  limits: DeviceLimits,
): number {
  let ways = 1;
  while (
    attentionWorkgroupBytes(rows, bk, ways * 2, s, vec4) <= limits.maxComputeWorkgroupStorageSize
  ) ways *= 2;
  return ways;
}

/** Ways per workgroup: forced (checked), else the most powers of two up to WAY_THREADS threads. */
function planWays(
  rowThreads: number,
  bk: number,
  fits: number,
  maxThreads: number,
  forced?: number,
): number {
  const most = Math.min(bk, fits, Math.floor(maxThreads / rowThreads));
  if (forced !== undefined) {
    if (!Number.isInteger(forced) || forced < 1 || (forced & (forced - 1)) !== 0 || forced > most) {
      throw new Error(
        `attention: ways ${forced} must be a power of two ≤ ${most} here (keys per tile ${bk}, ` +
          `${rowThreads} threads a way, partial results within the tile's workgroup memory)`,
      );
    }
    return forced;
  }
  let ways = 1;
  while (ways * 2 <= most && rowThreads * ways * 2 <= WAY_THREADS) ways *= 2;
  return ways;
}

/**
 * Threads per query row: the fewest (a power of two) that leave each at most
 * {@link FEATURES_PER_LANE} features (`units` of `width` features), within the subgroup; 1
 * without subgroups.
 */
export function attentionLanes(
  units: number,
  limits: DeviceLimits,
  forced?: number,
  width = 1,
): number {
  const most = limits.subgroups && limits.subgroupMinSize >= 2
    ? Math.min(limits.subgroupMinSize, 32)
    : 1;
  if (forced !== undefined) {
    if (!Number.isInteger(forced) || forced < 1 || (forced & (forced - 1)) !== 0 || forced > most) {
      throw new Error(
        `attention: lanes ${forced} must be a power of two ≤ ${most} on this device ` +
          `(${limits.subgroups ? `subgroups of ${limits.subgroupMinSize}` : "no subgroups"})`,
      );
    }
    return forced;
  }
  let lanes = 1;
  while (lanes < most && Math.ceil(units / lanes) * width > FEATURES_PER_LANE) lanes *= 2;
  return lanes;
}
