/**
 * A model's weights: `model.safetensors`, or shards listed by `model.safetensors.index.json`,
 * from any {@link ModelSource} (a directory, a URL, dropped files, buffers). Opening reads only
 * headers; each tensor is read on demand from its byte range in bounded steps, so multi-GB files
 * are never held in memory whole: {@link Checkpoint.streamF32} hands each step to the caller
 * (loadModel writes it into a GPU buffer). F16 and BF16 tensors are widened to float32 exactly.
 *
 * @module
 */

import { bfloat16ToFloat32, halfToFloat32 } from "./float16.ts";
import { parseConfigJson } from "./config.ts";
import {
  formatShape,
  type HeaderOptions,
  MAX_TENSORS,
  readSafetensorsHeader,
  type TensorInfo,
} from "./header.ts";
import type { ModelFile, ModelSource } from "./source.ts";
import { platform } from "../../platform/current.ts";

/** Options of {@link Checkpoint.open}. */
export interface CheckpointOptions {
  /**
   * Called after every chunk read with the bytes read so far (over all tensors, clamped to the
   * total) and the total bytes of all tensors in the checkpoint.
   */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
  /**
   * Bytes per read step, which also bounds the scratch buffer for F16/BF16 conversion. Default
   * 16 MiB; rounded down to a multiple of 4 (tests use tiny values to exercise the loop).
   */
  chunkBytes?: number;
  /**
   * Most tensors the checkpoint may hold (default {@link MAX_TENSORS}); a header or index that
   * lists more fails as soon as the count is passed, before the rest is parsed.
   */
  maxTensors?: number;
}

/** Single-file weights name. */
export const SINGLE_FILE = "model.safetensors";
/** Sharded weights index name. */
export const INDEX_FILE = "model.safetensors.index.json";

/** Largest `model.safetensors.index.json` read (real ones are a few MB at most). */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/** Default bytes per `read` loop step (and the scratch size for 16-bit conversion). */
const CHUNK_BYTES = 16 * 1024 * 1024;

/** dtypes {@link Checkpoint.getF32} can widen to float32. */
export const FLOAT_DTYPES: readonly string[] = ["F32", "F16", "BF16"];

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The weights of one model directory, read tensor by tensor. */
export class Checkpoint {
  /** The model's source, as messages name it (the directory, the URL). */
  readonly dir: string;
  /** Paths (or URLs) of the safetensors files backing this checkpoint. */
  readonly files: readonly string[];
  /** Total bytes of all tensors (what `onProgress` counts towards). */
  readonly totalBytes: number;
  /** `__metadata__` of the first safetensors file (e.g. `{format: "pt"}`). */
  readonly metadata: Record<string, string>;
  #tensors: Map<string, TensorInfo>;
  #onProgress?: (loadedBytes: number, totalBytes: number) => void;
  #chunk: number;
  #handles: Map<string, ModelFile>;
  #locks = new Map<string, Promise<void>>();
  #loaded = 0;
  #closed = false;

  private constructor(
    dir: string,
    files: ModelFile[],
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    opts: CheckpointOptions,
  ) {
    this.dir = dir;
    this.files = files.map((f) => f.path);
    this.#handles = new Map(files.map((f) => [f.path, f]));
    this.#tensors = tensors;
    this.metadata = metadata;
    this.#onProgress = opts.onProgress;
    const chunk = opts.chunkBytes ?? CHUNK_BYTES;
    if (!Number.isSafeInteger(chunk) || chunk < 4) {
      throw new Error(`chunkBytes must be an integer >= 4, got ${chunk}`);
    }
    // A multiple of 4 keeps every chunk boundary on an element boundary for all float dtypes.
    this.#chunk = chunk - (chunk % 4);
    let total = 0;
    for (const t of tensors.values()) total += t.byteLength;
    this.totalBytes = total;
  }

  /**
   * Opens the weights of a model (reads and validates headers only). Every file read must be a
   * file of the model: shard names in the index that leave it (by `..` or an absolute path; in a
   * directory also by a symbolic link) are refused, and a directory or FIFO named like a weights
   * file is reported as such, never opened.
   *
   * @param dir Model directory (a URL in a browser), or any {@link ModelSource}, holding
   *   `model.safetensors` or `model.safetensors.index.json`.
   * @param opts Progress callback, read step, tensor count limit.
   * @throws Error when the directory, the weights file or a shard is missing, or a header is bad.
   */
  static async open(dir: string | ModelSource, opts: CheckpointOptions = {}): Promise<Checkpoint> {
    const source = typeof dir === "string" ? await platform.modelSource(dir) : dir;
    const limits: HeaderOptions = { maxTensors: opts.maxTensors ?? MAX_TENSORS };
    const single = await source.open(SINGLE_FILE);
    if (single) {
      try {
        const h = await readSafetensorsHeader(single, limits);
        return new Checkpoint(source.name, [single], h.tensors, h.metadata, opts);
      } catch (e) {
        single.close();
        throw e;
      }
    }
    const index = await source.readText(INDEX_FILE, MAX_INDEX_BYTES, "shard index");
    if (index) {
      const t = await readShardedTable(source, index.path, index.text, limits);
      return new Checkpoint(source.name, t.files, t.tensors, t.metadata, opts);
    }

    const found = await source.list();
    const hint = found.some((f) => f.endsWith(".bin") || f.endsWith(".pt"))
      ? "; PyTorch .bin/.pt weights are not supported, convert them to safetensors"
      : "";
    throw new Error(
      `no ${SINGLE_FILE} or ${INDEX_FILE} in ${source.name} (found: ` +
        `${found.length ? found.join(", ") : "nothing"})${hint}`,
    );
  }

  /** Names of all tensors, sorted. */
  names(): string[] {
    return [...this.#tensors.keys()].sort();
  }

  /**
   * Where a tensor lives, or undefined when the checkpoint has no tensor of that name.
   *
   * @param name Tensor name.
   */
  info(name: string): TensorInfo | undefined {
    const t = this.#tensors.get(name);
    return t && { ...t, shape: t.shape.slice() };
  }

  /** Bytes read so far by {@link getF32} (may exceed totalBytes if tensors are read twice). */
  get loadedBytes(): number {
    return this.#loaded;
  }

  /**
   * Reads a tensor as float32, reading only its byte range. F16/BF16 are converted exactly.
   *
   * @param name Tensor name.
   * @param expectedShape When given, the tensor's shape must equal it exactly.
   * @returns A fresh array of the tensor's elements in C order.
   * @throws Error when the tensor is missing (with similar names), has another shape, has a
   *   dtype other than F32/F16/BF16, or the file is truncated; also after {@link close}.
   */
  async getF32(name: string, expectedShape?: readonly number[]): Promise<Float32Array> {
    const t = this.#checked(name, expectedShape);
    const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
    await this.#stream(t, (chunk, at) => out.set(chunk, at), out);
    return out;
  }

  /**
   * Reads a tensor as float32 in steps of at most `chunkBytes`, handing each step to `sink`
   * (then reusing its storage): the tensor is never held whole, so it can go straight into a
   * GPU buffer. Checks and errors as {@link getF32}.
   *
   * @param name Tensor name.
   * @param expectedShape When given, the tensor's shape must equal it exactly.
   * @param sink Gets each step's values and the index of its first element; the array is valid
   *   only until `sink` returns (or its promise settles).
   */
  async streamF32(
    name: string,
    expectedShape: readonly number[] | undefined,
    sink: (values: Float32Array, elementOffset: number) => void | Promise<void>,
  ): Promise<void> {
    await this.#stream(this.#checked(name, expectedShape), sink);
  }

  /** The tensor's entry, after the checks every read makes. */
  #checked(name: string, expectedShape?: readonly number[]): TensorInfo {
    if (this.#closed) throw new Error(`checkpoint ${this.dir} is closed; cannot read ${name}`);
    const t = this.#tensors.get(name);
    if (!t) throw new Error(this.#missingMessage(name));
    if (expectedShape && !sameShape(t.shape, expectedShape)) {
      throw new Error(
        `tensor ${name} has shape ${formatShape(t.shape)} but the model needs ` +
          `${formatShape(expectedShape)} (in ${t.file})`,
      );
    }
    if (!FLOAT_DTYPES.includes(t.dtype)) {
      throw new Error(
        `tensor ${name} has dtype ${t.dtype}, which cannot be read as float32 ` +
          `(supported: ${FLOAT_DTYPES.join(", ")}; in ${t.file})`,
      );
    }
    if (!LITTLE_ENDIAN_HOST) throw new Error("reading safetensors needs a little-endian host");
    return t;
  }

  /**
   * Reads `t` step by step into `sink`. An F32 tensor with a `target` is read straight into the
   * target's storage (no scratch copy); otherwise through one scratch step.
   */
  async #stream(
    t: TensorInfo,
    sink: (values: Float32Array, elementOffset: number) => void | Promise<void>,
    target?: Float32Array,
  ): Promise<void> {
    if (t.byteLength === 0) return;
    const step = this.#chunk;
    const what = `tensor ${t.name}`;
    await this.#withFile(t.file, async (file) => {
      if (t.dtype === "F32" && target) {
        const bytes = new Uint8Array(target.buffer, target.byteOffset, target.byteLength);
        for (let off = 0; off < t.byteLength; off += step) {
          const end = Math.min(off + step, t.byteLength);
          await file.read(t.byteOffset + off, bytes.subarray(off, end), what);
          this.#progress(end - off);
        }
        return;
      }
      const scratch = new Uint8Array(Math.min(step, t.byteLength));
      const widened = t.dtype === "F32" ? undefined : new Float32Array(scratch.length / 2);
      const convert = t.dtype === "F16" ? halfToFloat32 : bfloat16ToFloat32;
      for (let off = 0; off < t.byteLength; off += step) {
        const n = Math.min(step, t.byteLength - off);
        await file.read(t.byteOffset + off, scratch.subarray(0, n), what);
        if (widened) {
          convert(new Uint16Array(scratch.buffer, 0, n / 2), widened, 0);
          await sink(widened.subarray(0, n / 2), off / 2);
        } else {
          await sink(new Float32Array(scratch.buffer, 0, n / 4), off / 4);
        }
        this.#progress(n);
      }
    });
  }

  /** Closes all open files. Later {@link getF32} calls fail. Safe to call twice. */
  close(): void {
    this.#closed = true;
    for (const f of this.#handles.values()) {
      try {
        f.close();
      } catch {
        // Already closed: nothing to release.
      }
    }
    this.#handles.clear();
  }

  /** Same as {@link close}, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }

  #progress(n: number): void {
    this.#loaded += n;
    this.#onProgress?.(Math.min(this.#loaded, this.totalBytes), this.totalBytes);
  }

  /** Runs `fn` with the file's handle while no other read uses it (seek + read is stateful). */
  async #withFile(path: string, fn: (file: ModelFile) => Promise<void>): Promise<void> {
    const prev = this.#locks.get(path) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    this.#locks.set(path, prev.then(() => mine));
    await prev;
    try {
      if (this.#closed) throw new Error(`checkpoint ${this.dir} is closed`);
      await fn(this.#handles.get(path)!);
    } finally {
      release();
    }
  }

  #missingMessage(name: string): string {
    const close = similarNames(name, this.#tensors.keys(), 5);
    const list = close.length
      ? `similar names: ${close.join(", ")}`
      : `e.g. ${[...this.#tensors.keys()].slice(0, 5).join(", ")}`;
    return `tensor ${name} not found in checkpoint ${this.dir} (${this.#tensors.size} tensors; ${list})`;
  }
}

/** Tensor table of a sharded checkpoint: each weight_map entry resolved in its shard's header. */
async function readShardedTable(
  source: ModelSource,
  index: string,
  text: string,
  limits: HeaderOptions,
): Promise<{
  files: ModelFile[];
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // The engine's message quotes the text; this parser's gives the line and column instead.
    parsed = parseConfigJson(text, index);
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== "object" || Array.isArray(weightMap)) {
    throw new Error(`${index}: missing "weight_map" object (tensor name → shard file)`);
  }
  const maxTensors = limits.maxTensors ?? MAX_TENSORS;
  const byShard = new Map<string, string[]>();
  let count = 0;
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard === "") {
      throw new Error(`${index}: weight_map entry for ${name} is not a file name`);
    }
    if (++count > maxTensors) {
      throw new Error(`${index}: weight_map lists more than ${maxTensors} tensors (the limit)`);
    }
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  if (byShard.size === 0) throw new Error(`${index}: weight_map is empty`);
  const missing: string[] = [];
  const opened = new Map<string, ModelFile>();
  try {
    for (const [shard, names] of byShard) {
      let file: ModelFile | undefined;
      try {
        file = await source.open(shard);
      } catch (e) {
        throw new Error(`${index}: shard of tensor ${names[0]}: ${(e as Error).message}`);
      }
      if (file) opened.set(shard, file);
      else missing.push(`${shard} (holds ${names.length} tensors, e.g. ${names[0]})`);
    }
    if (missing.length) {
      throw new Error(
        `${index} references shard files missing from ${source.name}: ${missing.join("; ")}`,
      );
    }
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    let first = true;
    for (const [shard, names] of byShard) {
      const h = await readSafetensorsHeader(opened.get(shard)!, limits);
      if (first) metadata = h.metadata;
      first = false;
      for (const name of names) {
        const t = h.tensors.get(name);
        if (!t) {
          throw new Error(
            `${index} says tensor ${name} is in ${shard}, but that file has no such tensor`,
          );
        }
        tensors.set(name, t);
      }
      // A tensor the index does not list would be silently skipped: the two files disagree.
      if (h.tensors.size > names.length) {
        const listed = new Set(names);
        const extra = [...h.tensors.keys()].find((name) => !listed.has(name));
        throw new Error(
          `${shard} holds ${h.tensors.size - names.length} tensors that ${index} does not list ` +
            `(e.g. ${extra})`,
        );
      }
    }
    return { files: [...opened.values()], tensors, metadata };
  } catch (e) {
    for (const f of opened.values()) f.close();
    throw e;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Up to `k` names closest to `name` by edit distance (only reasonably close ones). The work is
 * bounded: candidates whose length differs by more than the cutoff are skipped, and a distance
 * computation stops as soon as it must exceed the cutoff.
 *
 * @param name The name that was not found.
 * @param candidates Names that exist.
 * @param k How many to return at most.
 */
export function similarNames(name: string, candidates: Iterable<string>, k: number): string[] {
  const limit = Math.max(3, Math.floor(name.length / 2));
  const close: { c: string; d: number }[] = [];
  const rows = [new Array<number>(name.length + 1), new Array<number>(name.length + 1)];
  for (const c of candidates) {
    if (Math.abs(c.length - name.length) > limit) continue;
    const d = boundedEditDistance(name, c, limit, rows);
    if (d <= limit) close.push({ c, d });
  }
  return close
    .sort((a, b) => a.d - b.d || (a.c < b.c ? -1 : 1))
    .slice(0, k)
    .map((x) => x.c);
}

/** Edit distance of `a` and `b`, or `limit + 1` as soon as it is sure to exceed `limit`. */
function boundedEditDistance(a: string, b: string, limit: number, rows: number[][]): number {
  // Rows run over `a` (columns j), one per character of `b`.
  let [prev, cur] = rows;
  for (let j = 0; j <= a.length; j++) prev[j] = j;
  for (let i = 1; i <= b.length; i++) {
    cur[0] = i;
    let best = i;
    for (let j = 1; j <= a.length; j++) {
      const sub = prev[j - 1] + (a[j - 1] === b[i - 1] ? 0 : 1);
      cur[j] = Math.min(sub, prev[j] + 1, cur[j - 1] + 1);
      if (cur[j] < best) best = cur[j];
    }
    if (best > limit) return limit + 1;
    [prev, cur] = [cur, prev];
  }
  return prev[a.length];
}
