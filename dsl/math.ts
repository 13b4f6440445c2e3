/**
 * More elementwise math: trigonometry, rounding, the floor remainder, clamp, sign, erf and
 * GELU. Like the ops of `elementwise.ts` they broadcast by axis name and fuse into the kernels
 * that read them. Accuracy on the GPU (f32) is stated per op; the float64 interpreter computes
 * each exactly (to float64 rounding). GPUs may flush subnormal values (below 1.2e-38 in
 * magnitude) to zero, which WGSL allows: `sin(1e-40)` may be 0 there.
 *
 * @module
 */

import { requireFloat } from "./build.ts";
import {
  add,
  type Bcast,
  type BinaryFn,
  type CheckBroadcast,
  checkedBinary,
  mul,
  tanh,
  type UnaryFn,
  unaryOp,
} from "./elementwise.ts";
import { type Tensor, type TensorLike, toNode } from "./tensor.ts";

/**
 * Sine. On the GPU the argument is reduced to [−π/4, π/4] by the kernel itself (WGSL's `sin`
 * is only specified on [−π, π]): absolute error about 1e-7 for |x| ≤ 1e5 (measured on Mesa's
 * lavapipe; the tests bound it by 5e-7), so rotary angles `position · frequency` keep their
 * accuracy at long positions. Beyond 1e5 the error grows like |x|·2⁻²⁴, the spacing of f32
 * arguments there.
 *
 * ```ts
 * const angle = mul(arange("l", 4096), invFreq); // l, f
 * const rotated = sub(mul(x1, cos(angle)), mul(x2, sin(angle)));
 * ```
 */
export const sin: UnaryFn = unaryOp("sin");
/** Cosine; accuracy as {@link sin}. `cos(mul(arange("l", 8), 0.5))` is `cos(0), cos(0.5), …`. */
export const cos: UnaryFn = unaryOp("cos");
/**
 * Tangent, sin x / cos x from the same argument reduction as {@link sin}: absolute error about
 * 1e-7·(1 + tan² x) (large near the poles, as for any f32 tangent). `tan(x)`.
 */
export const tan: UnaryFn = unaryOp("tan");
/** Largest integer ≤ x: `floor(x)` maps −1.5 to −2. */
export const floor: UnaryFn = unaryOp("floor");
/** Smallest integer ≥ x: `ceil(x)` maps −1.5 to −1. */
export const ceil: UnaryFn = unaryOp("ceil");
/**
 * Nearest integer, ties to even (IEEE and WGSL `round`, like `torch.round`): 0.5 → 0,
 * 1.5 → 2, 2.5 → 2, −2.5 → −2. `round(mul(x, 100))`.
 */
export const round: UnaryFn = unaryOp("round");
/** −1, 0 or 1 by the sign of x (0 at ±0): `sign(x)`. */
export const sign: UnaryFn = unaryOp("sign");
/**
 * The error function erf(x) = 2/√π ∫₀ˣ e^(−t²) dt. On the GPU: a Maclaurin polynomial for
 * |x| < 0.5 (relative error below 1e-9) and Abramowitz & Stegun 7.1.26 beyond (absolute error
 * ≤ 1.5e-7 from the formula; ≤ 4e-7 with f32 rounding, tested). `erf(x)`.
 */
export const erf: UnaryFn = unaryOp("erf");

/**
 * The floor remainder a − b·⌊a/b⌋, which has the sign of b (Python's `%`, `torch.remainder`;
 * not C's `fmod`): `mod(-1, 3)` is 2, `mod(arange("l", 10), 4)` is 0 1 2 3 0 1 2 3 0 1. On the
 * GPU it is exact for integer-valued operands below 2²⁴; otherwise within about one f32 ulp
 * of a, always in [0, b) (or (b, 0] for b < 0), so a value within that error of a multiple of
 * b may come out as b − ε where float64 gives ≈ 0. b = 0 gives NaN; b must be finite.
 */
export const mod: BinaryFn<"mod"> = <X extends TensorLike, Y extends TensorLike>(
  a: X,
  b: CheckBroadcast<X, Y, "mod">,
): Bcast<X, Y> => checkedBinary("mod", "mod", a, b as TensorLike) as Bcast<X, Y>;

/**
 * Limits x to [lo, hi] (each bound a number or a tensor, broadcast by axis name), like
 * `torch.clamp`: `clamp(x, -1, 1)`, `clamp(logits, lower, 30)`. Number bounds must satisfy
 * lo ≤ hi.
 */
export function clamp<X extends TensorLike, L extends TensorLike, H extends TensorLike>(
  x: X,
  lo: L,
  hi: H,
): Bcast<Bcast<X, L>, H> {
  for (const [name, v] of [["lo", lo], ["hi", hi]] as const) {
    if (typeof v === "number" && Number.isNaN(v)) throw new Error(`clamp: ${name} is NaN`);
  }
  if (typeof lo === "number" && typeof hi === "number" && lo > hi) {
    throw new Error(`clamp: lo (${lo}) is above hi (${hi})`);
  }
  const low = checkedBinary("max", "clamp", x, lo);
  return checkedBinary("min", "clamp", low, hi) as Bcast<Bcast<X, L>, H>;
}

/** Options of {@link gelu}. */
export interface GeluOptions {
  /**
   * `"none"` (default): the exact 0.5·x·(1 + erf(x/√2)) (PyTorch's `nn.GELU()`, HF's `gelu`).
   * `"tanh"`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (`nn.GELU(approximate="tanh")`, HF's
   * `gelu_new` and `gelu_pytorch_tanh`).
   */
  approximate?: "none" | "tanh";
}

/**
 * The Gaussian error linear unit x·Φ(x): `gelu(h)` (exact, through {@link erf}) or
 * `gelu(h, { approximate: "tanh" })`. Built from other ops, so it fuses like them; on the GPU
 * both forms are within 1e-6 (absolute) of float64 for |x| ≤ 6 (tested to 2e-6).
 */
export function gelu<X extends Tensor>(x: X, options: GeluOptions = {}): X {
  const approximate = options.approximate ?? "none";
  if (approximate !== "none" && approximate !== "tanh") {
    throw new Error(`gelu: approximate must be "none" or "tanh", got ${String(approximate)}`);
  }
  requireFloat(toNode(x, "gelu"), "gelu");
  const t: Tensor = x; // untyped inside: every op below keeps x's axes
  const half = mul(t, 0.5);
  if (approximate === "none") return mul(half, add(erf(mul(t, Math.SQRT1_2)), 1)) as Tensor as X;
  const cube = mul(mul(t, t), t);
  const inner = mul(add(t, mul(cube, 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(half, add(tanh(inner), 1)) as Tensor as X;
}
