/**
 * The float64 meaning of every elementwise op: the reference the WGSL emitter must match, to f32
 * rounding. Values are exact in float64, subnormal f32 results included; the GPU may flush a
 * result below 2⁻¹²⁶ to zero (see `codegen/wgsl_math.ts`), so a per-element comparison with
 * the GPU allows that much absolute error on top of its relative tolerance.
 *
 * @module
 */

import type { BinaryOp, UnaryOp } from "../dsl/ir.ts";
import { erf64, floorMod, roundHalfEven } from "./special_math.ts";
import { roundToBf16, roundToF16 } from "./half.ts";

/** Float64 implementation of each unary op. */
export const UNARY_F64: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  abs: Math.abs,
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  silu: (x) => x / (1 + Math.exp(-x)),
  // PyTorch's softplus: linear above the threshold 20.
  softplus: (x) => (x > 20 ? x : Math.log1p(Math.exp(x))),
  tanh: Math.tanh,
  relu: (x) => (x > 0 ? x : 0),
  sin: Math.sin,
  cos: Math.cos,
  tan: Math.tan,
  floor: Math.floor,
  ceil: Math.ceil,
  // Ties to even, like WGSL's round (and torch.round).
  round: roundHalfEven,
  // WGSL's sign: +0 for both zeros (Math.sign keeps −0).
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : x === 0 ? 0 : NaN),
  erf: erf64,
  stop_gradient: (x) => x,
  round_f16: roundToF16,
  round_bf16: roundToBf16,
};

/** Float64 implementation of each binary op. */
export const BINARY_F64: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  max: Math.max,
  min: Math.min,
  lt: (a, b) => (a < b ? 1 : 0),
  le: (a, b) => (a <= b ? 1 : 0),
  gt: (a, b) => (a > b ? 1 : 0),
  ge: (a, b) => (a >= b ? 1 : 0),
  eq: (a, b) => (a === b ? 1 : 0),
  ne: (a, b) => (a !== b ? 1 : 0),
  // The floor remainder (sign of b), like Python's % and torch.remainder.
  mod: floorMod,
};
