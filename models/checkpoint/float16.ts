/**
 * Exact conversions from the two 16-bit float formats found in checkpoints (IEEE binary16 "F16"
 * and bfloat16 "BF16") to float32. Both are exact: every 16-bit value, including subnormals,
 * signed zeros, infinities and NaNs (payload kept), has a float32 with the same value.
 *
 * Conversions work on bit patterns and write float32 bit patterns, so NaN payloads and the sign
 * of zero survive (going through JS numbers would canonicalize NaNs).
 *
 * @module
 */

/** Lazily built table: float32 bits for each of the 65536 binary16 bit patterns (256 KiB). */
let halfTable: Uint32Array | undefined;

/**
 * float32 bit pattern of one IEEE binary16 bit pattern.
 *
 * @param h 16-bit pattern (only the low 16 bits are used).
 * @returns The float32 bit pattern as an unsigned 32-bit integer.
 */
export function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) {
    // Inf (mant 0) or NaN: max exponent, payload shifted into the top of the f32 mantissa.
    return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  }
  if (exp === 0) {
    if (mant === 0) return sign >>> 0; // ±0
    // Subnormal: value = mant · 2^-24. Shift until the implicit bit appears, then re-bias.
    let e = -14;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      e--;
    }
    mant &= 0x3ff;
    return (sign | ((e + 127) << 23) | (mant << 13)) >>> 0;
  }
  return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
}

/**
 * Value of one IEEE binary16 bit pattern as a JS number (NaN payloads are not representable).
 *
 * @param h 16-bit pattern.
 */
export function halfToNumber(h: number): number {
  const u = new Uint32Array([halfBitsToFloatBits(h)]);
  return new Float32Array(u.buffer)[0];
}

/**
 * Value of one bfloat16 bit pattern as a JS number. bfloat16 is the top half of a float32.
 *
 * @param h 16-bit pattern.
 */
export function bfloat16ToNumber(h: number): number {
  const u = new Uint32Array([(h & 0xffff) << 16]);
  return new Float32Array(u.buffer)[0];
}

function table(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfBitsToFloatBits(h);
  }
  return halfTable;
}

/**
 * Converts binary16 values to float32, writing `src.length` values into `dst` from `dstOffset`.
 *
 * @param src binary16 bit patterns (host byte order, i.e. little-endian on every supported host).
 * @param dst Destination float32 array.
 * @param dstOffset First element of `dst` to write.
 */
export function halfToFloat32(src: Uint16Array, dst: Float32Array, dstOffset = 0): void {
  if (dstOffset + src.length > dst.length) {
    throw new RangeError(
      `halfToFloat32: ${src.length} values do not fit in ${dst.length - dstOffset} slots`,
    );
  }
  const t = table();
  const out = new Uint32Array(dst.buffer, dst.byteOffset + dstOffset * 4, src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
}

/**
 * Converts bfloat16 values to float32, writing `src.length` values into `dst` from `dstOffset`.
 *
 * @param src bfloat16 bit patterns (host byte order).
 * @param dst Destination float32 array.
 * @param dstOffset First element of `dst` to write.
 */
export function bfloat16ToFloat32(src: Uint16Array, dst: Float32Array, dstOffset = 0): void {
  if (dstOffset + src.length > dst.length) {
    throw new RangeError(
      `bfloat16ToFloat32: ${src.length} values do not fit in ${dst.length - dstOffset} slots`,
    );
  }
  const out = new Uint32Array(dst.buffer, dst.byteOffset + dstOffset * 4, src.length);
  // Uint32Array stores modulo 2^32, so the sign bit landing in bit 31 is kept.
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
}
