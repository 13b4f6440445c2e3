/**
 * Float64 reference implementations of the elementwise functions JavaScript's `Math` lacks
 * (erf, round half to even, floor remainder): the oracle's meaning of those ops.
 *
 * @module
 */

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/**
 * The error function, to about 1e-15 absolute. For |x| < 6 it sums the series
 * erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)), whose terms are all positive (no
 * cancellation, unlike the Maclaurin series); beyond, erf(x) = ±1 to within erfc(6) ≈ 2e-17.
 */
export function erf64(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const a = Math.abs(x);
  if (a >= 6) return Math.sign(x);
  let term = a;
  let sum = a;
  for (let n = 1; term > sum * 1e-17; n++) {
    term *= (2 * a * a) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * TWO_OVER_SQRT_PI * Math.exp(-a * a) * sum;
}

/**
 * Rounds to the nearest integer, ties to the even one (WGSL's `round`, IEEE roundTiesToEven);
 * a zero result keeps the sign of x (round(−0.3) = −0), as IEEE's does.
 */
export function roundHalfEven(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  const d = x - f; // exact: x and its floor are close
  const r = d < 0.5 ? f : d > 0.5 ? f + 1 : f % 2 === 0 ? f : f + 1;
  return r === 0 && x < 0 ? -0 : r;
}

/**
 * The floor remainder a − b·⌊a/b⌋: the sign of b, like Python's `%` and `torch.remainder`
 * (not C's `fmod`). Computed exactly from JavaScript's truncated `%`.
 */
export function floorMod(a: number, b: number): number {
  const r = a % b;
  return r !== 0 && (r < 0) !== (b < 0) ? r + b : r;
}
