/**
 * safetensors header parsing and validation. A safetensors file is: an 8-byte little-endian
 * header length N, N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__"?: {string: string}}`, then raw little-endian tensor data; offsets are relative
 * to the start of that data. Everything that could make a later read go wrong is rejected here,
 * with the file named, so tensor reads can trust the table.
 *
 * @module
 */

import { readAt } from "./file_io.ts";

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

/**
 * Parses and validates the JSON part of a safetensors header.
 *
 * @param json The header bytes (UTF-8 JSON, possibly space-padded).
 * @param dataStart Absolute offset of the data section (8 + header length).
 * @param fileSize Total file size in bytes.
 * @param path File path, used in `TensorInfo.file` and in error messages.
 * @throws Error naming `path` and the problem when the header is malformed or inconsistent.
 */
export function parseSafetensorsHeader(
  json: Uint8Array,
  dataStart: number,
  fileSize: number,
  path: string,
): SafetensorsHeader {
  const fail = (msg: string): never => {
    throw new Error(`${path}: invalid safetensors header: ${msg}`);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return fail("header JSON is not an object");
  }
  const dataBytes = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        fail("__metadata__ is not an object");
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      fail(`entry for tensor "${name}" is not an object`);
    }
    const e = entry as Record<string, unknown>;
    for (const key of ["dtype", "shape", "data_offsets"]) {
      if (!(key in e)) fail(`tensor "${name}" is missing "${key}"`);
    }
    const { dtype, shape, data_offsets: offsets } = e;
    if (typeof dtype !== "string" || !/^[A-Z0-9_]+$/.test(dtype)) {
      fail(`tensor "${name}" has an invalid dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      fail(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
      offsets[0] > offsets[1]
    ) {
      fail(`tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
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
    tensors.set(name, {
      name,
      dtype: dtype as string,
      shape: dims.slice(),
      byteOffset: dataStart + begin,
      byteLength: end - begin,
      file: path,
    });
    if (end > begin) ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1], cur = ranges[i];
    if (cur.begin < prev.end) {
      fail(
        `tensors "${prev.name}" [${prev.begin}, ${prev.end}] and "${cur.name}" ` +
          `[${cur.begin}, ${cur.end}] overlap`,
      );
    }
  }
  return { tensors, metadata, dataStart };
}

/**
 * Reads and validates the header of a safetensors file (only the header bytes are read).
 *
 * @param path Path of the `.safetensors` file.
 * @returns Tensor table, metadata, and the absolute offset of the data section.
 * @throws Error naming the file when it is missing, too short, or its header is malformed.
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${path}: file not found`);
    throw new Error(`${path}: cannot open (${(e as Error).message})`);
  }
  try {
    const fileSize = (await file.stat()).size;
    if (fileSize < 8) {
      throw new Error(
        `${path}: not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`,
      );
    }
    const prefix = new Uint8Array(8);
    await readAt(file, 0, prefix, path, "the header length");
    const len = new DataView(prefix.buffer).getBigUint64(0, true);
    if (len > BigInt(MAX_HEADER_BYTES)) {
      throw new Error(
        `${path}: not a safetensors file: header length ${len} is absurd ` +
          `(limit ${MAX_HEADER_BYTES} bytes)`,
      );
    }
    const headerLen = Number(len);
    if (8 + headerLen > fileSize) {
      throw new Error(
        `${path}: not a safetensors file or truncated: header length ${headerLen} is larger ` +
          `than the ${fileSize - 8} bytes that follow it`,
      );
    }
    const json = new Uint8Array(headerLen);
    await readAt(file, 8, json, path, "the header");
    return parseSafetensorsHeader(json, 8 + headerLen, fileSize, path);
  } finally {
    file.close();
  }
}
