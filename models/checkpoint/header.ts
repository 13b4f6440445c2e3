/**
 * safetensors header parsing and validation. A safetensors file is: an 8-byte little-endian
 * header length N, N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__"?: {string: string}}`, then raw little-endian tensor data; offsets are relative
 * to the start of that data. Everything that could make a later read go wrong is rejected here,
 * with the file named, so tensor reads can trust the table.
 *
 * @module
 */

import { describeValue } from "./describe.ts";
import { platform } from "../../platform/current.ts";
import type { ModelFile } from "./source.ts";
import { jsonObjectMembers, JsonShapeError } from "./json_members.ts";

/** Where one tensor lives and how it is stored. */
export interface TensorInfo {
  /** Tensor name as written in the header (e.g. `backbone.layers.0.mixer.A_log`). */
  name: string;
  /** safetensors dtype string (`F32`, `F16`, `BF16`, `I64`, ...). */
  dtype: "F32" | "F16" | "BF16" | string;
  /** Shape, outermost axis first (C order). */
  shape: number[];
  /** Absolute byte offset of the first element in the file (header already accounted for). */
  byteOffset: number;
  /** Size of the stored data in bytes. */
  byteLength: number;
  /** Path of the file that holds the data. */
  file: string;
}

/** Parsed header of one safetensors file. */
export interface SafetensorsHeader {
  /** Tensors by name. */
  tensors: Map<string, TensorInfo>;
  /** The optional `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
  /** Absolute byte offset where tensor data starts (8 + header length). */
  dataStart: number;
}

/** Header lengths above this are treated as corruption rather than read into memory. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
  C64: 8,
};

/**
 * Bytes per element of a safetensors dtype, or undefined for dtypes this module does not know
 * (their sizes are then not validated; reading them as float32 is refused later anyway).
 *
 * @param dtype safetensors dtype string.
 */
export function dtypeByteSize(dtype: string): number | undefined {
  return DTYPE_BYTES[dtype];
}

/** Formats a shape the way error messages show it: `[2, 3]`. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Options of {@link parseSafetensorsHeader} and {@link readSafetensorsHeader}. */
export interface HeaderOptions {
  /**
   * Most tensors the header may list (default {@link MAX_TENSORS}). Counting stops the parse at
   * the first entry over the limit, before the rest is looked at.
   */
  maxTensors?: number;
}

/** Default bound on the tensors of one header (ssmkit's largest models need about 11k). */
export const MAX_TENSORS = 1 << 16;

/**
 * Parses and validates the JSON part of a safetensors header, entry by entry: memory grows with
 * the entries kept, and a header over `maxTensors` entries fails at the first one too many.
 * Messages name the file and the entry but never quote bytes that are not a JSON key.
 *
 * @param json The header bytes (UTF-8 JSON, possibly space-padded).
 * @param dataStart Absolute offset of the data section (8 + header length).
 * @param fileSize Total file size in bytes.
 * @param path File path, used in `TensorInfo.file` and in error messages.
 * @param opts The tensor count limit.
 * @throws Error naming `path` and the problem when the header is malformed or inconsistent
 *   (including a tensor name that appears twice).
 */
export function parseSafetensorsHeader(
  json: Uint8Array,
  dataStart: number,
  fileSize: number,
  path: string,
  opts: HeaderOptions = {},
): SafetensorsHeader {
  const fail = (msg: string): never => {
    throw new Error(`${path}: invalid safetensors header: ${msg}`);
  };
  const maxTensors = opts.maxTensors ?? MAX_TENSORS;
  const dataBytes = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> | undefined;
  try {
    for (const { key: name, value } of jsonObjectMembers(json)) {
      if (tensors.has(name) || (name === "__metadata__" && metadata)) {
        fail(`"${name}" appears twice in the header`);
      }
      let entry: unknown;
      try {
        entry = JSON.parse(value);
      } catch {
        fail(`the entry for "${name}" is not valid JSON`);
      }
      if (name === "__metadata__") {
        metadata = readMetadata(entry, fail);
        continue;
      }
      if (tensors.size === maxTensors) {
        fail(`header lists more than ${maxTensors} tensors (the limit for this checkpoint)`);
      }
      tensors.set(name, readEntry(name, entry, dataStart, dataBytes, path, fail));
    }
  } catch (e) {
    if (e instanceof JsonShapeError) fail(`header is not valid JSON: ${e.message}`);
    throw e;
  }
  const ranges = [...tensors.values()].filter((t) => t.byteLength > 0);
  ranges.sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1], cur = ranges[i];
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      const span = (t: TensorInfo) =>
        `[${t.byteOffset - dataStart}, ${t.byteOffset - dataStart + t.byteLength}]`;
      fail(`tensors "${prev.name}" ${span(prev)} and "${cur.name}" ${span(cur)} overlap`);
    }
  }
  return { tensors, metadata: metadata ?? {}, dataStart };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function readMetadata(entry: unknown, fail: (msg: string) => never): Record<string, string> {
  if (!isObject(entry)) fail("__metadata__ is not an object");
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (typeof v !== "string") fail(`__metadata__.${k} is not a string`);
    metadata[k] = v as string;
  }
  return metadata;
}

/** Validates one tensor entry against the data section's size. */
function readEntry(
  name: string,
  entry: unknown,
  dataStart: number,
  dataBytes: number,
  path: string,
  fail: (msg: string) => never,
): TensorInfo {
  if (!isObject(entry)) fail(`entry for tensor "${name}" is not an object`);
  const e = entry as Record<string, unknown>;
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (!Object.hasOwn(e, key)) fail(`tensor "${name}" is missing "${key}"`);
  }
  const { dtype, shape, data_offsets: offsets } = e;
  if (typeof dtype !== "string" || !/^[A-Z0-9_]{1,16}$/.test(dtype)) {
    fail(`tensor "${name}" has an invalid dtype ${describeValue(dtype)}`);
  }
  if (!Array.isArray(shape) || shape.length > 64 || !shape.every(isCount)) {
    fail(`tensor "${name}" has an invalid shape ${describeValue(shape)}`);
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
    offsets[0] > offsets[1]
  ) {
    fail(`tensor "${name}" has invalid data_offsets ${describeValue(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataBytes) {
    fail(
      `tensor "${name}" data_offsets [${begin}, ${end}] run past the end of the file ` +
        `(data section is ${dataBytes} bytes)`,
    );
  }
  const dims = shape as number[];
  const size = dtypeByteSize(dtype as string);
  if (size !== undefined) {
    const expected = dims.reduce((a, b) => a * b, 1) * size;
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      fail(
        `tensor "${name}" (${dtype}, shape ${formatShape(dims)}) needs ${expected} bytes ` +
          `but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
  }
  return {
    name,
    dtype: dtype as string,
    shape: dims.slice(),
    byteOffset: dataStart + begin,
    byteLength: end - begin,
    file: path,
  };
}

/**
 * Reads and validates the header of a safetensors file (only the header bytes are read). The
 * 8-byte length field is checked against the limit and the file size before anything else is
 * read; messages never quote the file's bytes (a path pointed at the wrong file must not leak
 * what that file holds).
 *
 * @param file Path of the `.safetensors` file (a URL in a browser), or a file already open.
 * @param opts The tensor count limit.
 * @returns Tensor table, metadata, and the absolute offset of the data section.
 * @throws Error naming the file when it is missing, too short, or its header is malformed.
 */
export async function readSafetensorsHeader(
  file: string | ModelFile,
  opts: HeaderOptions = {},
): Promise<SafetensorsHeader> {
  const open = typeof file === "string" ? await platform.openFile(file) : file;
  const path = open.path;
  try {
    const fileSize = open.size;
    if (fileSize < 8) {
      throw new Error(
        `${path}: not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`,
      );
    }
    const prefix = new Uint8Array(8);
    await open.read(0, prefix, "the header length");
    const len = new DataView(prefix.buffer).getBigUint64(0, true);
    if (len > BigInt(MAX_HEADER_BYTES)) {
      throw new Error(
        `${path}: not a safetensors file: its first 8 bytes do not hold a header length of at ` +
          `most ${MAX_HEADER_BYTES} bytes`,
      );
    }
    const headerLen = Number(len);
    if (8 + headerLen > fileSize) {
      throw new Error(
        `${path}: not a safetensors file or truncated: the header length in its first 8 bytes ` +
          `is larger than the ${fileSize - 8} bytes that follow them`,
      );
    }
    const json = new Uint8Array(headerLen);
    await open.read(8, json, "the header");
    return parseSafetensorsHeader(json, 8 + headerLen, fileSize, path, opts);
  } finally {
    // A file the caller opened stays open: the caller reads its tensors next.
    if (typeof file === "string") open.close();
  }
}
