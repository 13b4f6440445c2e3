/**
 * Writing safetensors files as Hugging Face's `safetensors` library writes them: an 8-byte
 * little-endian header length, a compact JSON header (`__metadata__` first, then the tensors in
 * data order), padded with spaces to a multiple of 8 bytes so the data section starts 8-byte
 * aligned, then the tensors back to back, sorted by dtype (largest elements first, so every
 * tensor is aligned to its element size) and then by name. Files written by the reference
 * writer are reproduced byte for byte (tested on files from `save_pretrained` and
 * `save_file`), except that metadata keys keep their insertion order where the reference
 * writer's hash map has none.
 *
 * ```ts
 * await writeSafetensors("out/model.safetensors", {
 *   "backbone.embeddings.weight": { data: embeddings, shape: [vocab, dModel] },
 * }, { metadata: { format: "pt" } });
 * ```
 *
 * The file is written atomically: to a temporary file in the same directory, synced, then
 * renamed over the destination, so a reader never sees a half-written checkpoint and a failed
 * write leaves any previous file intact. A web page has no file system: there,
 * {@link safetensorsBytes} builds the file's bytes (writing fails with a message saying so).
 *
 * @module
 */

import { platform } from "../../platform/current.ts";
import { dtypeByteSize, formatShape } from "./header.ts";

/** One tensor as raw bytes: its name, safetensors dtype, shape and little-endian data. */
export interface RawTensor {
  /** The tensor's name (a key of the header). */
  name: string;
  /** A safetensors dtype, e.g. `"F32"`, `"BF16"`, `"I64"`. */
  dtype: string;
  /** The shape (an empty array for a scalar). */
  shape: readonly number[];
  /** The data: little-endian, exactly ∏shape · (bytes per element) bytes. */
  bytes: Uint8Array;
}

/** A float32 tensor to save: its values in row-major order and its shape. */
export interface F32Tensor {
  /** ∏shape values, row-major. */
  data: Float32Array;
  /** The shape (an empty array for a scalar). */
  shape: readonly number[];
}

/** Options of {@link writeSafetensors}. */
export interface WriteOptions {
  /** String metadata stored under `__metadata__` (e.g. `{ format: "pt" }`, as PyTorch saves). */
  metadata?: Record<string, string>;
}

/**
 * The reference writer's data order sorts by its `Dtype` enum, descending, then by name: the
 * enum lists dtypes by increasing alignment, in this order, so larger elements come first.
 */
const DTYPE_ORDER: readonly string[] = [
  "BOOL",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "C64",
  "F64",
  "I64",
  "U64",
];

/** Orders strings by their UTF-8 bytes (Rust's `String` order), i.e. by code points. */
function compareUtf8(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The header bytes (length prefix included) and the tensors in data order: validates every
 * name, dtype, shape and byte length first, throwing one line that names the tensor.
 */
export function safetensorsLayout(
  tensors: readonly RawTensor[],
  metadata?: Record<string, string>,
): { header: Uint8Array; ordered: RawTensor[] } {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (typeof t.name !== "string" || t.name === "" || t.name === "__metadata__") {
      throw new Error(`safetensors: invalid tensor name ${JSON.stringify(t.name)}`);
    }
    if (seen.has(t.name)) throw new Error(`safetensors: tensor "${t.name}" appears twice`);
    seen.add(t.name);
    const size = dtypeByteSize(t.dtype);
    if (size === undefined || !DTYPE_ORDER.includes(t.dtype)) {
      throw new Error(`safetensors: tensor "${t.name}": unknown dtype ${t.dtype}`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
      throw new Error(`safetensors: tensor "${t.name}": invalid shape ${JSON.stringify(t.shape)}`);
    }
    const want = t.shape.reduce((p, s) => p * s, 1) * size;
    if (!(t.bytes instanceof Uint8Array) || t.bytes.length !== want) {
      throw new Error(
        `safetensors: tensor "${t.name}" ${t.dtype} ${formatShape(t.shape)} needs ${want} ` +
          `bytes, got ${t.bytes?.length}`,
      );
    }
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new Error(`safetensors: metadata "${k}" must be a string, got ${typeof v}`);
      }
    }
  }
  const ordered = [...tensors].sort((a, b) =>
    DTYPE_ORDER.indexOf(b.dtype) - DTYPE_ORDER.indexOf(a.dtype) || compareUtf8(a.name, b.name)
  );
  const json: Record<string, unknown> = {};
  if (metadata !== undefined) json.__metadata__ = metadata;
  let offset = 0;
  for (const t of ordered) {
    json[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.bytes.length],
    };
    offset += t.bytes.length;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  // Padded in bytes (names may be multi-byte UTF-8), with spaces, to a multiple of 8.
  const padded = Math.ceil(text.length / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + text.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(text, 8);
  return { header, ordered };
}

/** A whole safetensors file in memory (for small files and tests; see {@link writeSafetensors}). */
export function safetensorsBytes(
  tensors: readonly RawTensor[],
  metadata?: Record<string, string>,
): Uint8Array {
  const { header, ordered } = safetensorsLayout(tensors, metadata);
  const total = ordered.reduce((n, t) => n + t.bytes.length, header.length);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let offset = header.length;
  for (const t of ordered) {
    out.set(t.bytes, offset);
    offset += t.bytes.length;
  }
  return out;
}

/** Float32 tensors by name as raw F32 tensors (little-endian bytes on any host). */
export function f32Tensors(tensors: Record<string, F32Tensor>): RawTensor[] {
  return Object.entries(tensors).map(([name, t]) => {
    if (!(t?.data instanceof Float32Array)) {
      throw new Error(`safetensors: tensor "${name}": data must be a Float32Array`);
    }
    const shape = [...(t.shape ?? [])];
    const elements = shape.reduce((p, s) => p * s, 1);
    if (shape.every((s) => Number.isSafeInteger(s) && s >= 0) && elements !== t.data.length) {
      throw new Error(
        `safetensors: tensor "${name}" has shape ${formatShape(shape)} (${elements} values) ` +
          `but ${t.data.length} values`,
      );
    }
    let bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    if (!LITTLE_ENDIAN_HOST) {
      bytes = new Uint8Array(t.data.byteLength);
      const view = new DataView(bytes.buffer);
      t.data.forEach((v, i) => view.setFloat32(i * 4, v, true));
    }
    return { name, dtype: "F32", shape, bytes };
  });
}

/**
 * Writes float32 tensors to `path` as a safetensors file, atomically (temporary file in the
 * same directory, synced, renamed over `path`). Everything is validated before the temporary
 * file is created; on any failure it is removed and `path` is untouched.
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, F32Tensor>,
  options: WriteOptions = {},
): Promise<void> {
  await writeRawSafetensors(path, f32Tensors(tensors), options);
}

/** {@link writeSafetensors} for tensors of any dtype given as raw bytes. */
export async function writeRawSafetensors(
  path: string,
  tensors: readonly RawTensor[],
  options: WriteOptions = {},
): Promise<void> {
  const { header, ordered } = safetensorsLayout(tensors, options.metadata);
  try {
    await platform.writeFileAtomic(path, [header, ...ordered.map((t) => t.bytes)]);
  } catch (e) {
    throw new Error(`${path}: writing the safetensors file failed: ${(e as Error).message}`, {
      cause: e,
    });
  }
}
