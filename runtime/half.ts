/**
 * Rounding to the two 16-bit float formats, round-to-nearest-even, on the host: what an f16 or
 * bf16 program input holds on the GPU, and what the float64 interpreter does where a program
 * rounds (`cast`). IEEE binary16 ("f16") keeps 11 significant bits and subnormals down to 2⁻²⁴;
 * bfloat16 ("bf16") is the top half of a float32 (8 significant bits, f32's range). Values past
 * the largest finite one round to ±Infinity, as IEEE rounding does.
 *
 * @module
 */

import { roundHalfEven } from "./special_math.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The binary16 bit pattern nearest `x` (ties to even); NaN gives the quiet NaN 0x7e00. */
export function f16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // 65504 is the largest finite half; 65520 lies halfway to 2^16 and ties to even: Infinity.
  if (a >= 65520) return sign | 0x7c00;
  // Subnormal (and the smallest normal, which m = 1024 reaches): units of 2^-24, exact in f64.
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e) * 1024);
  if (m === 2048) {
    m = 1024;
    e++;
  }
  return sign | ((e + 15) << 10) | (m - 1024);
}

/** The value of a binary16 bit pattern. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1024 + m) * 2 ** (e - 25);
}

/**
 * The bfloat16 bit pattern nearest `x` (ties to even) after rounding `x` to float32 (the GPU
 * rounds f32 values, so the host does the same); NaN gives 0x7fc0.
 */
export function bf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  f32[0] = x;
  const u = u32[0];
  // Adding 0x7fff plus the lowest kept bit carries into the kept half exactly when RNE rounds up.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The value of a bfloat16 bit pattern. */
export function bf16Value(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** `x` rounded to the nearest binary16 value (ties to even). */
export function roundToF16(x: number): number {
  return f16Value(f16Bits(x));
}

/** `x` rounded to float32, then to the nearest bfloat16 value (ties to even). */
export function roundToBf16(x: number): number {
  return Number.isNaN(x) ? NaN : bf16Value(bf16Bits(x));
}

/** The 16-bit patterns of `data` in a 16-bit format: what an f16 or bf16 buffer holds. */
export function halfWords(data: ArrayLike<number>, dtype: "f16" | "bf16"): Uint16Array {
  const out = new Uint16Array(data.length);
  const bits = dtype === "f16" ? f16Bits : bf16Bits;
  for (let i = 0; i < data.length; i++) out[i] = bits(data[i]);
  return out;
}

/** Values of 16-bit patterns in a 16-bit format (the inverse of {@link halfWords}). */
export function halfValues(words: Uint16Array, dtype: "f16" | "bf16"): Float32Array {
  const out = new Float32Array(words.length);
  const value = dtype === "f16" ? f16Value : bf16Value;
  for (let i = 0; i < words.length; i++) out[i] = value(words[i]);
  return out;
}
