/**
 * The autotuner: for each tuning point of a program (codegen/tuning.ts: a matmul's tile config,
 * the chunked delta rule's state-pass lanes and threads), every candidate kernel is timed alone
 * on the user's adapter, on zero-filled buffers of its bindings' sizes, and the fastest wins. The
 * choices are cached on disk per adapter and key, so a shape is tuned once per machine, as
 * Triton's `autotune` and tinygrad's BEAM do. Without timestamp queries the defaults stay (with
 * a notice); programs compiled without `autotune` never time anything, so their code is
 * deterministic.
 *
 * The cache is one JSON file (default `$XDG_CACHE_HOME/ssmkit/autotune.json`, else
 * `~/.cache/ssmkit/autotune.json`):
 *
 * ```json
 * { "version": 1,
 *   "adapters": { "nvidia / hopper / NVIDIA H100 80GB HBM3": {
 *     "matmul b1 m16384 n768 k1536 a:direct b:direct":
 *       { "choice": "t128x128k16", "ns": { "t64x128k8": 412000, "t128x128k16": 371000 } } } } }
 * ```
 *
 * An entry whose candidates hold points of their own (a lowering's choice among kernels that
 * have tuning points too) also lists their keys as `"nested": [...]`; they have entries of their
 * own, tuned before it. Deleting the file (or an adapter's entry) makes the next compile measure
 * again. Where there is no file system (a web page) or no cache directory, choices are kept in
 * memory for the page's or process's lifetime.
 *
 * @module
 */

import type { BufferKey, KernelArtifact } from "../codegen/artifact.ts";
import { storageBytes } from "../codegen/dtypes.ts";
import type { GpuContext } from "./gpu_device.ts";
import { pipelineCacheFor } from "./program.ts";
import { type Dispatch, timeDispatches } from "./gpu_submit.ts";
import { platform } from "../platform/current.ts";

/** Options of the autotuner (`compile(…, { autotune })`). */
export interface AutotuneOptions {
  /** The cache file (default: see the module documentation). */
  cacheFile?: string;
  /** Timed runs per candidate after 3 warm-up runs (default 10). */
  iterations?: number;
}

/** One cached decision: the winner and every candidate's median time. */
export interface TunedEntry {
  /** The fastest candidate. */
  choice: string;
  /**
   * Median GPU time per candidate, in ns (candidates that failed to compile are absent); a
   * candidate with nested points is timed with their choices.
   */
  ns: Record<string, number>;
  /** Keys of the tuning points nested in the candidates (tuned with this one), if any. */
  nested?: string[];
}

/** What {@link autotune} returns. */
export interface TunedChoices {
  /** Every cached choice of this adapter: tuning-point key → chosen candidate. */
  choices: Map<string, string>;
  /**
   * Keys of points nested in the candidates of the given kernels' points (a lowering's
   * candidate whose kernels have points of their own): regenerating the program applies them.
   */
  nested: Set<string>;
}

interface CacheFile {
  version: 1;
  adapters: Record<string, Record<string, TunedEntry>>;
}

/** The adapter's cache key: vendor, architecture and description. */
export function adapterKey(ctx: GpuContext): string {
  const a = ctx.adapterInfo;
  return [a.vendor, a.architecture, a.description].map((s) => s || "?").join(" / ");
}

/** The default cache file path, or undefined where there is no cache directory. */
export function defaultCacheFile(): string | undefined {
  const dir = platform.cacheDir();
  return dir === undefined ? undefined : `${dir}/ssmkit/autotune.json`;
}

/** The cache where no file can hold it (a web page). */
const inMemory: CacheFile = { version: 1, adapters: {} };

let warnedNoTimer = false;

/**
 * The tuned choices for `kernels`' tuning points on `ctx`: cached ones, and new ones measured
 * now (then written to the cache), with the keys of the points nested in theirs.
 *
 * @throws Error naming the cache file when it exists but is not an ssmkit autotune cache.
 */
export async function autotune(
  ctx: GpuContext,
  kernels: readonly KernelArtifact[],
  options: AutotuneOptions = {},
): Promise<TunedChoices> {
  const file = options.cacheFile ?? defaultCacheFile();
  const cache = file === undefined ? inMemory : await readCache(file);
  const adapter = adapterKey(ctx);
  const entries = cache.adapters[adapter] ??= {};
  const pending = new Map<string, KernelArtifact>();
  for (const k of kernels) {
    if (k.tuning && !entries[k.tuning.key] && !pending.has(k.tuning.key)) {
      pending.set(k.tuning.key, k);
    }
  }
  if (pending.size > 0 && !ctx.features.timestampQuery) {
    if (!warnedNoTimer) {
      console.error(
        "ssmkit autotune: this adapter has no timestamp queries, so nothing is timed; " +
          "every kernel keeps its default strategy",
      );
      warnedNoTimer = true;
    }
    pending.clear();
  }
  for (const [key, kernel] of pending) {
    // A nested point (inside another's candidate) may have been tuned on the way already.
    entries[key] ??= await timeCandidates(ctx, kernel, options.iterations ?? 10, entries);
  }
  if (pending.size > 0 && file !== undefined) await writeCache(file, cache);
  const nested = new Set<string>();
  const collect = (key: string) => {
    for (const inner of entries[key]?.nested ?? []) {
      if (nested.has(inner)) continue;
      nested.add(inner);
      collect(inner);
    }
  };
  for (const k of kernels) if (k.tuning) collect(k.tuning.key);
  return { choices: new Map(Object.entries(entries).map(([k, e]) => [k, e.choice])), nested };
}

/**
 * Times every candidate of `kernel`'s tuning point alone (a group's kernels one after another,
 * their medians added); the fastest is the choice. The candidates are timed twice, in one order
 * and then the reverse, and each keeps its faster round: a GPU idle before tuning (compiling on
 * the host) may run its first kernels at low clocks, the likely reason the first candidate, the
 * recurrent GLA scan, lost on an H100 to chunks of 16 that ran 3× slower in the program. In the
 * second round each candidate first runs for about {@link WARMUP_NS} of GPU time (sized from its
 * first-round time), so short kernels are timed at working clocks too.
 */
async function timeCandidates(
  ctx: GpuContext,
  kernel: KernelArtifact,
  iterations: number,
  entries: Record<string, TunedEntry>,
  depth = 0,
  alternatives = kernel.tuning!.alternatives(),
): Promise<TunedEntry> {
  const point = kernel.tuning!;
  const buffers = new Map<BufferKey, GPUBuffer>();
  const bufferOf = (key: BufferKey) => {
    let b = buffers.get(key);
    if (!b) {
      b = ctx.device.createBuffer({
        size: Math.max(16, Math.ceil(storageBytes(key) / 16) * 16),
        usage: GPUBufferUsage.STORAGE,
      });
      buffers.set(key, b);
    }
    return b;
  };
  const ns: Record<string, number> = {};
  const nested = new Set<string>();
  try {
    const prepared: [string, Dispatch[]][] = [];
    for (const [name, raw] of alternatives) {
      const group = await withNestedChoices(ctx, raw, iterations, entries, depth, nested);
      ctx.device.pushErrorScope("validation");
      let dispatches: Dispatch[] | undefined = [];
      try {
        for (const artifact of group) {
          const source = { name: artifact.name, wgsl: artifact.wgsl };
          dispatches.push({
            kernel: source,
            pipeline: await pipelineCacheFor(ctx).get(source),
            buffers: [...artifact.reads, ...artifact.writes].map(bufferOf),
            workgroups: [...artifact.workgroups] as [number, number, number],
          });
        }
      } catch {
        dispatches = undefined; // A candidate the device rejects is not a choice.
      }
      const error = await ctx.device.popErrorScope();
      if (!error && dispatches) prepared.push([name, dispatches]);
    }
    const failed = new Set<string>();
    for (const [round, order] of [prepared, [...prepared].reverse()].entries()) {
      for (const [name, dispatches] of order) {
        ctx.device.pushErrorScope("validation");
        let total: number | undefined;
        try {
          const warmup = round === 0 ? 3 : warmupRuns(ns[name]);
          const timings = await timeDispatches(ctx, dispatches, { warmup, iterations });
          total = timings.reduce((sum, t) => sum + t.medianNs, 0);
        } catch {
          // As above: not a choice.
        }
        const error = await ctx.device.popErrorScope();
        if (!error && total !== undefined) ns[name] = Math.min(ns[name] ?? Infinity, total);
        else failed.add(name);
      }
    }
    for (const name of failed) delete ns[name];
  } finally {
    for (const b of buffers.values()) b.destroy();
  }
  const ranked = Object.entries(ns).sort((a, b) => a[1] - b[1]);
  const entry: TunedEntry = { choice: ranked.length > 0 ? ranked[0][0] : point.chosen, ns };
  if (nested.size > 0) entry.nested = [...nested];
  return entry;
}

/**
 * GPU work run just before a candidate's timed runs in the second round: a kernel of a few µs
 * timed a dozen times between readbacks keeps the GPU near its idle clocks (on an H100,
 * 2026-12-07, the tuner's times read about 3× the same kernels' times inside a decode step).
 */
const WARMUP_NS = 10e6;
/** Most warm-up runs of one candidate. */
const MAX_WARMUP_RUNS = 2000;

/** Warm-up runs worth {@link WARMUP_NS} of a candidate that took `ns` in the first round. */
function warmupRuns(ns: number | undefined): number {
  if (ns === undefined || !(ns > 0)) return 3;
  return Math.min(MAX_WARMUP_RUNS, Math.max(3, Math.ceil(WARMUP_NS / ns)));
}

/** Tuning points nest at most this deep (a lowering's choice among kernels with their own). */
const MAX_NESTING = 3;

/**
 * A candidate's kernels with each nested tuning point (a kernel of the candidate that carries
 * its own point, such as the chunked delta rule's state pass inside the delta lowering's
 * "chunked" candidate) replaced by that point's choice, tuned now (into `entries`, so the
 * program regenerated afterwards uses it too) unless already chosen. Without this a lowering
 * would weigh its other candidates against this one's defaults.
 */
async function withNestedChoices(
  ctx: GpuContext,
  group: readonly KernelArtifact[],
  iterations: number,
  entries: Record<string, TunedEntry>,
  depth: number,
  nested: Set<string>,
): Promise<KernelArtifact[]> {
  if (depth >= MAX_NESTING) return [...group];
  const out: KernelArtifact[] = [];
  for (let i = 0; i < group.length;) {
    const inner = group[i].tuning;
    if (!inner) {
      out.push(group[i++]);
      continue;
    }
    nested.add(inner.key);
    const options = inner.alternatives();
    // The kernels this point's default spans in the group.
    const span = options.find(([name]) => name === inner.chosen)?.[1].length ?? 1;
    entries[inner.key] ??= await timeCandidates(
      ctx,
      group[i],
      iterations,
      entries,
      depth + 1,
      options,
    );
    const chosen = options.find(([name]) => name === entries[inner.key].choice)?.[1];
    if (chosen) {
      out.push(...await withNestedChoices(ctx, chosen, iterations, entries, depth + 1, nested));
    } else out.push(...group.slice(i, i + span));
    i += span;
  }
  return out;
}

async function readCache(file: string): Promise<CacheFile> {
  let text: string | undefined;
  try {
    text = await platform.readTextFile(file);
  } catch (e) {
    throw new Error(`autotune: cannot read the cache ${file}: ${(e as Error).message}`);
  }
  if (text === undefined) return { version: 1, adapters: {} };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`autotune: ${file} is not JSON (delete it to measure again)`);
  }
  const c = parsed as CacheFile;
  if (c?.version !== 1 || typeof c.adapters !== "object" || c.adapters === null) {
    throw new Error(`autotune: ${file} is not an ssmkit autotune cache (version 1)`);
  }
  return c;
}

/** Writes the cache atomically (a temporary file renamed over it): a reader never sees half. */
async function writeCache(file: string, cache: CacheFile): Promise<void> {
  const cut = file.lastIndexOf("/");
  if (cut > 0) await platform.makeDir(file.slice(0, cut));
  await platform.writeFileAtomic(file, [
    new TextEncoder().encode(JSON.stringify(cache, null, 1) + "\n"),
  ]);
}
