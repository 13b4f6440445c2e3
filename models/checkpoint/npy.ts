/**
 * NumPy `.npy` encoding and decoding, for test fixtures and oracle dumps. The encoder writes
 * exactly what `numpy.save` writes for a C-order float32 array (format 1.0, `<f4`, header padded
 * with spaces so data starts at a multiple of 64 bytes, newline-terminated, including NumPy's
 * spare header space for growing the first axis), so files compare byte for byte.
 *
 * @module
 */

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ALIGN = 64;
/** NumPy reserves header room so the first axis can grow to this many digits in place. */
const GROWTH_AXIS_MAX_DIGITS = 21;
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Array element storage returned by {@link decodeNpy}, by dtype. */
export type NpyData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Uint32Array
  | number[];

/** A decoded `.npy` array. */
export interface NpyArray {
  /**
   * Elements in C order: `<f4` Float32Array, `<f8` Float64Array, `<i4` Int32Array, `<i8`/`<u8`
   * number[] (values must be safe integers), `|b1`/`|u1` Uint8Array, `|i1` Int8Array,
   * `<i2` Int16Array, `<u2` Uint16Array, `<u4` Uint32Array, `<f2` Float32Array (widened).
   */
  data: NpyData;
  /** Shape (`[]` for a 0-d array). */
  shape: number[];
  /** The NumPy dtype descriptor as stored, e.g. `<f4`. */
  descr: string;
}

function shapeRepr(shape: readonly number[]): string {
  if (shape.length === 0) return "()";
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(", ")})`;
}

/**
 * Encodes a float32 array as `.npy` (format 1.0, `<f4`, C order), byte-identical to `numpy.save`.
 *
 * @param data Elements in C order.
 * @param shape Shape; its product must equal `data.length` (`[]` for a scalar).
 * @throws Error when the shape is invalid or does not match the data length.
 */
export function encodeNpy(data: Float32Array, shape: readonly number[]): Uint8Array {
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`encodeNpy: invalid shape [${shape.join(", ")}]`);
  }
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel !== data.length) {
    throw new Error(
      `encodeNpy: shape [${shape.join(", ")}] has ${numel} elements but data has ${data.length}`,
    );
  }
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) dict += " ".repeat(GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length);
  // NumPy: padlen = 64 - ((10 + len + 1) % 64), which is 64 (not 0) when already aligned.
  const hlen = dict.length + 1;
  const pad = ALIGN - ((MAGIC.length + 4 + hlen) % ALIGN);
  const header = dict + " ".repeat(pad) + "\n";
  if (header.length > 0xffff) throw new Error("encodeNpy: header too long for format 1.0");
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  if (LITTLE_ENDIAN_HOST) {
    // Byte copy keeps every bit, NaN payloads included.
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  } else {
    const body = new DataView(out.buffer, 10 + header.length);
    for (let i = 0; i < data.length; i++) body.setFloat32(i * 4, data[i], true);
  }
  return out;
}

interface Kind {
  size: number;
  read: (v: DataView, n: number, le: boolean) => NpyData;
}

function typed<T extends NpyData>(
  size: number,
  make: (n: number) => T,
  get: (v: DataView, off: number, le: boolean) => number,
): Kind {
  return {
    size,
    read: (v, n, le) => {
      const out = make(n);
      for (let i = 0; i < n; i++) out[i] = get(v, i * size, le);
      return out;
    },
  };
}

const KINDS: Record<string, Kind> = {
  f4: typed(4, (n) => new Float32Array(n), (v, o, le) => v.getFloat32(o, le)),
  f8: typed(8, (n) => new Float64Array(n), (v, o, le) => v.getFloat64(o, le)),
  f2: typed(2, (n) => new Float32Array(n), (v, o, le) => v.getFloat16(o, le)),
  i4: typed(4, (n) => new Int32Array(n), (v, o, le) => v.getInt32(o, le)),
  u4: typed(4, (n) => new Uint32Array(n), (v, o, le) => v.getUint32(o, le)),
  i2: typed(2, (n) => new Int16Array(n), (v, o, le) => v.getInt16(o, le)),
  u2: typed(2, (n) => new Uint16Array(n), (v, o, le) => v.getUint16(o, le)),
  i1: typed(1, (n) => new Int8Array(n), (v, o) => v.getInt8(o)),
  u1: typed(1, (n) => new Uint8Array(n), (v, o) => v.getUint8(o)),
  b1: typed(1, (n) => new Uint8Array(n), (v, o) => v.getUint8(o)),
  i8: { size: 8, read: (v, n, le) => int64s(v, n, le, true) },
  u8: { size: 8, read: (v, n, le) => int64s(v, n, le, false) },
};

function int64s(v: DataView, n: number, le: boolean, signed: boolean): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const big = signed ? v.getBigInt64(i * 8, le) : v.getBigUint64(i * 8, le);
    const x = Number(big);
    if (!Number.isSafeInteger(x)) {
      throw new Error(`decodeNpy: 64-bit integer ${big} at index ${i} is not a safe JS integer`);
    }
    out[i] = x;
  }
  return out;
}

/**
 * Decodes a `.npy` file (format 1.0, 2.0 or 3.0). Fortran-order arrays are returned in C order.
 *
 * @param bytes The whole file.
 * @returns Elements, shape and dtype descriptor.
 * @throws Error naming the problem: bad magic, unsupported version or dtype, malformed header,
 *   or a data size that does not match the shape.
 */
export function decodeNpy(bytes: Uint8Array): NpyArray {
  const fail = (msg: string): never => {
    throw new Error(`decodeNpy: ${msg}`);
  };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    fail("not a .npy file (missing \\x93NUMPY magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  if (major < 1 || major > 3) fail(`unsupported .npy format version ${major}.${bytes[7]}`);
  const lenBytes = major === 1 ? 2 : 4;
  if (bytes.length < 8 + lenBytes) fail("file too short for its header length");
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const dataStart = 8 + lenBytes + hlen;
  if (dataStart > bytes.length) fail(`header length ${hlen} runs past the end of the file`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(8 + lenBytes, dataStart),
  );

  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    fail(`malformed header ${JSON.stringify(header.trim())}`);
  }
  const shape = shapeText!.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    const d = Number(s.replace(/L$/, ""));
    if (!Number.isSafeInteger(d) || d < 0) fail(`bad shape entry ${JSON.stringify(s)}`);
    return d;
  });
  const m = /^([<>|=])([a-z])(\d+)$/.exec(descr!);
  const kind = m && KINDS[m[2] + m[3]];
  if (!m || !kind) {
    return fail(
      `unsupported dtype ${JSON.stringify(descr)} (supported: f2, f4, f8, i1, i2, i4, i8, u1, ` +
        `u2, u4, u8, b1)`,
    );
  }
  // "=" means native order, which NumPy only writes on the host that made the file.
  const le = m[1] !== ">";
  const numel = shape.reduce((a, b) => a * b, 1);
  const need = numel * kind.size;
  const have = bytes.length - dataStart;
  if (have !== need) {
    fail(
      `shape [${shape.join(", ")}] of ${descr} needs ${need} data bytes but the file has ${have}`,
    );
  }
  const data = kind.read(new DataView(bytes.buffer, bytes.byteOffset + dataStart, need), numel, le);
  return { data: fortran === "True" ? fortranToC(data, shape) : data, shape, descr: descr! };
}

/** Reorders column-major elements into row-major order. */
function fortranToC(data: NpyData, shape: number[]): NpyData {
  if (shape.length < 2) return data;
  const out = data.slice() as NpyData;
  const n = shape.length;
  const idx = new Array<number>(n).fill(0);
  for (let c = 0; c < data.length; c++) {
    // idx is the multi-index of C position c; its Fortran position has axis 0 fastest.
    let f = 0;
    for (let a = n - 1; a >= 0; a--) f = f * shape[a] + idx[a];
    out[c] = data[f];
    for (let a = n - 1; a >= 0; a--) {
      if (++idx[a] < shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}
