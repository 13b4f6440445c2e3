/**
 * WGSL spellings of constants and elementwise ops. Each must compute the same function as
 * `runtime/scalar_math.ts` (the float64 oracle) to f32 accuracy.
 *
 * Subnormal f32 values (0 < |v| < 2⁻¹²⁶ ≈ 1.18e-38): WGSL lets a GPU flush them to zero, as an
 * operand or as a result, and most GPUs do. A result whose exact value is subnormal may
 * therefore come back as ±0 (an absolute error below 2⁻¹²⁶): on lavapipe, `exp` and `softplus`
 * of x < −87.34 give 0 (float64: down to 1.4e-45 at x = −103.28), while +, −, ×, ÷, sqrt and
 * sigmoid keep subnormals. `log` reads a subnormal operand from its bits (`sk_log`), so it is
 * exact on every GPU. Softplus is max(x, 0) + log1p(exp(−|x|)) with log1p from a short series
 * (`sk_softplus`), so its tail is exp(x) to f32 rounding wherever exp(x) is a normal f32.
 *
 * @module
 */

import type { BinaryOp, UnaryOp } from "../dsl/ir.ts";
import { PRIMITIVES_PRELUDE } from "./wgsl_primitives.ts";

/** A WGSL f32 expression for a number, including infinities and NaN. */
export function f32Literal(v: number): string {
  if (Number.isNaN(v)) return "bitcast<f32>(0x7fc00000u)";
  if (v === Infinity) return "bitcast<f32>(0x7f800000u)";
  if (v === -Infinity) return "bitcast<f32>(0xff800000u)";
  const f = Math.fround(v);
  if (f !== 0 && Math.abs(f) < 1.1754943508222875e-38) return `bitcast<f32>(${bitsOf(f)}u)`;
  if (!Number.isFinite(f)) return f > 0 ? "bitcast<f32>(0x7f800000u)" : "bitcast<f32>(0xff800000u)";
  let s = f.toPrecision(9);
  if (!/[.e]/.test(s)) s += ".0";
  return `f32(${s})`;
}

function bitsOf(f: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setFloat32(0, f);
  return buf.getUint32(0);
}

/** A WGSL u32 literal. */
export function u32Literal(v: number): string {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new Error(`internal: ${v} does not fit a u32 index`);
  }
  return `${v}u`;
}

/** Helper functions some ops need; included once per shader that uses them. */
export const MATH_PRELUDE = `
fn sk_softplus(x: f32) -> f32 {
  // max(x, 0) + log1p(e), e = exp(-|x|) <= 1, log1p(e) = 2 atanh(u) by its series in u <= 1/3
  // (no log near 1, where WGSL's log is only accurate to 2^-21 absolute).
  // t = 2u is kept normal wherever e is: u itself is subnormal for e < 2^-125, and GPUs that
  // flush subnormals (NVIDIA) then returned 0 for softplus(-87) = 1.6e-38.
  let e = exp(-abs(x));
  let t = e * (2.0 / (2.0 + e));
  let v = 0.25 * t * t;
  let s = 1.0 + v * (0.333333333 + v * (0.2 + v * (0.142857143 + v * (0.111111111
    + v * (0.0909090909 + v * 0.0769230769)))));
  return max(x, 0.0) + t * s;
}
fn sk_tanh(x: f32) -> f32 {
  // Some drivers compute tanh from exp and return NaN for large |x|: clamp first.
  return tanh(clamp(x, -15.0, 15.0));
}
fn sk_log(x: f32) -> f32 {
  // A subnormal x = m * 2^-149 is read from its bits (GPUs may flush or misread it).
  let bits = bitcast<u32>(x);
  return select(log(x), log(f32(bits)) - 103.278929903, bits != 0u && bits < 0x00800000u);
}
fn sk_round_f16(x: f32) -> f32 {
  // x rounded to the nearest f16 (ties to even), on the bits: on an H100 (driver 580) neither
  // f32(f16(x)) nor pack2x16float rounded anything.
  let b = bitcast<u32>(x);
  if ((b & 0x7f800000u) == 0x7f800000u) { return x; } // Inf and NaN stay
  if (abs(x) < 6.103515625e-5) { return round(x * 16777216.0) * 5.9604644775390625e-8; } // f16 subnormals: multiples of 2^-24
  let r = bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
  return select(r, bitcast<f32>((b & 0x80000000u) | 0x7f800000u), abs(r) > 65504.0);
}
${PRIMITIVES_PRELUDE}`;

/** WGSL expression for a unary op applied to expression `x`. */
export function unaryWgsl(op: UnaryOp, x: string): string {
  switch (op) {
    case "neg":
      return `(-${x})`;
    case "exp":
      return `exp(${x})`;
    case "log":
      return `sk_log(${x})`;
    case "sqrt":
      return `sqrt(${x})`;
    case "rsqrt":
      return `inverseSqrt(${x})`;
    case "abs":
      return `abs(${x})`;
    case "sigmoid":
      return `(1.0 / (1.0 + exp(-${x})))`;
    case "silu":
      return `(${x} / (1.0 + exp(-${x})))`;
    case "softplus":
      return `sk_softplus(${x})`;
    case "tanh":
      return `sk_tanh(${x})`;
    case "relu":
      return `max(${x}, 0.0)`;
    case "sin":
      return `sk_sincos(${x}).x`;
    case "cos":
      return `sk_sincos(${x}).y`;
    case "tan":
      return `sk_tan(${x})`;
    case "floor":
      return `floor(${x})`;
    case "ceil":
      return `ceil(${x})`;
    case "round":
      // WGSL's round breaks ties to even (2.5 → 2), as the interpreter does.
      return `round(${x})`;
    case "sign":
      return `sign(${x})`;
    case "erf":
      return `sk_erf(${x})`;
    case "stop_gradient":
      return x;
    case "round_f16":
      return `sk_round_f16(${x})`;
    case "round_bf16": {
      // Ties to even on the bits: adding 0x7fff plus the lowest kept bit carries exactly when
      // rounding goes up (overflow reaches infinity's pattern, as IEEE rounding does).
      const bits = `bitcast<u32>(${x})`;
      return `bitcast<f32>((${bits} + 0x7fffu + ((${bits} >> 16u) & 1u)) & 0xffff0000u)`;
    }
  }
}

/** WGSL expression for a binary op; `bConst` is b's value when it is a constant. */
export function binaryWgsl(op: BinaryOp, a: string, b: string, bConst?: number): string {
  switch (op) {
    case "add":
      return `(${a} + ${b})`;
    case "sub":
      return `(${a} - ${b})`;
    case "mul":
      return `(${a} * ${b})`;
    case "div":
      return `(${a} / ${b})`;
    case "pow":
      if (bConst === 2) return `(${a} * ${a})`;
      if (bConst === 1) return a;
      if (bConst === 0.5) return `sqrt(${a})`;
      if (bConst === -1) return `(1.0 / ${a})`;
      return `pow(${a}, ${b})`;
    case "max":
      return `max(${a}, ${b})`;
    case "min":
      return `min(${a}, ${b})`;
    case "lt":
      return `select(0.0, 1.0, ${a} < ${b})`;
    case "le":
      return `select(0.0, 1.0, ${a} <= ${b})`;
    case "gt":
      return `select(0.0, 1.0, ${a} > ${b})`;
    case "ge":
      return `select(0.0, 1.0, ${a} >= ${b})`;
    case "eq":
      return `select(0.0, 1.0, ${a} == ${b})`;
    case "ne":
      return `select(0.0, 1.0, ${a} != ${b})`;
    case "mod":
      return `sk_mod(${a}, ${b})`;
  }
}
