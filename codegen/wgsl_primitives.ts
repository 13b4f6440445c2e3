/**
 * WGSL for the elementwise functions WGSL lacks or specifies loosely — sin/cos/tan with an
 * argument reduction of their own, erf, the floor remainder — and for literal tensors.
 *
 * Why not WGSL's `sin`/`cos`: the WGSL spec only bounds their error on [−π, π] (absolute 2⁻¹¹),
 * and rotary embeddings evaluate them at positions × frequencies up to ~1e4, where some drivers
 * are poor. `sk_sincos` reduces x to r ∈ [−π/4, π/4] with x = k·π/2 + r, subtracting k·π/2 in
 * four parts of π/2 (Cody–Waite): the first three have 8 significant bits, so k·part is exact
 * for |k| < 2¹⁶ and the subtraction loses nothing. Taylor polynomials of sin and cos on r (to
 * r⁹ and r¹⁰: truncation below 2e-9) and the quadrant k mod 4 give both values. Absolute error
 * about 1e-7 for |x| ≤ 1e5 (measured on lavapipe: 9.7e-8 over 4e5 random arguments; the tests
 * in `tests/primitives_math_test.ts` bound it by 5e-7); beyond that it grows like |x|·2⁻²⁴ (3e-2
 * at 1e6), the spacing of f32 arguments there, which carry no more phase than that.
 *
 * @module
 */

/**
 * A WGSL literal of the f32 nearest to `v` (finite, normal: the constants below). Nine
 * significant digits identify an f32 exactly. Not `f32Literal`: that module includes this
 * prelude, and an import cycle would leave one of them uninitialized.
 */
function lit(v: number): string {
  const s = Math.fround(v).toPrecision(9);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** `v` rounded to `bits` significant bits (so that k·v is exact in f32 for small integers k). */
function roundToBits(v: number, bits: number): number {
  const scale = 2 ** (bits - 1 - Math.floor(Math.log2(Math.abs(v))));
  return Math.round(v * scale) / scale;
}

/** π/2 as four f32 parts: three of 8 significant bits, then the rest rounded to f32. */
function halfPiParts(): number[] {
  const p1 = roundToBits(Math.PI / 2, 8);
  const p2 = roundToBits(Math.PI / 2 - p1, 8);
  const p3 = roundToBits(Math.PI / 2 - p1 - p2, 8);
  const p4 = Math.fround(Math.PI / 2 - p1 - p2 - p3);
  return [p1, p2, p3, p4];
}

/** Taylor coefficients (−1)ⁿ/(2n+1)! of sin (n ≥ 1) and (−1)ⁿ/(2n)! of cos (n ≥ 1). */
function taylor(first: number, count: number): number[] {
  const out: number[] = [];
  for (let n = 1; n <= count; n++) {
    let fact = 1;
    for (let i = 2; i <= 2 * n + first; i++) fact *= i;
    out.push((n % 2 ? -1 : 1) / fact);
  }
  return out;
}

/** Horner form of Σ cᵢ·zⁱ (i from 0) as a WGSL expression. */
function horner(coefficients: readonly number[], z: string): string {
  let expr = lit(coefficients[coefficients.length - 1]);
  for (let i = coefficients.length - 2; i >= 0; i--) {
    expr = `${lit(coefficients[i])} + ${z} * (${expr})`;
  }
  return expr;
}

/** Maclaurin coefficients of erf(x)/x in powers of x²: 2/√π · (−1)ⁿ / (n!·(2n+1)), n = 0…6. */
function erfSeries(): number[] {
  const out: number[] = [];
  let fact = 1;
  for (let n = 0; n <= 6; n++) {
    if (n > 0) fact *= n;
    out.push(((2 / Math.sqrt(Math.PI)) * (n % 2 ? -1 : 1)) / (fact * (2 * n + 1)));
  }
  return out;
}

/** Abramowitz & Stegun 7.1.26: erf(x) ≈ 1 − t·P(t)·e^(−x²), t = 1/(1 + p·x), |error| ≤ 1.5e-7. */
const AS_P = 0.3275911;
const AS_A = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];

const [P1, P2, P3, P4] = halfPiParts().map(lit);

/**
 * Helper functions of the ops above, appended to every shader's math prelude (WGSL compilers
 * drop the ones a kernel does not call).
 */
export const PRIMITIVES_PRELUDE = `
fn sk_sincos(x: f32) -> vec2<f32> {
  // (sin x, cos x): x = k·π/2 + r, |r| ≤ π/4, π/2 subtracted in four parts.
  let k = round(x * ${lit(2 / Math.PI)});
  var r = x - k * ${P1};
  r = r - k * ${P2};
  r = r - k * ${P3};
  r = r - k * ${P4};
  let z = r * r;
  let s = r + r * z * (${horner(taylor(1, 4), "z")});
  let c = 1.0 + z * (${horner(taylor(0, 5), "z")});
  let q = i32(k) & 3;
  if (q == 1) { return vec2<f32>(c, -s); }
  if (q == 2) { return vec2<f32>(-s, -c); }
  if (q == 3) { return vec2<f32>(-c, s); }
  return vec2<f32>(s, c);
}
fn sk_tan(x: f32) -> f32 {
  let sc = sk_sincos(x);
  return sc.x / sc.y;
}
fn sk_erf(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.5) {
    // Maclaurin series to x¹³: relative error below 1e-9 for |x| < 0.5.
    let z = x * x;
    return x * (${horner(erfSeries(), "z")});
  }
  // Abramowitz & Stegun 7.1.26: absolute error ≤ 1.5e-7 (plus f32 rounding).
  let t = 1.0 / (1.0 + ${lit(AS_P)} * a);
  let p = t * (${horner(AS_A, "t")});
  return sign(x) * (1.0 - p * exp(-a * a));
}
fn sk_mod(a: f32, b: f32) -> f32 {
  // The floor remainder (sign of b). a / b rounded across an integer leaves r one b outside
  // [0, b): fold it back, so the result always lies in [0, b) (or (b, 0]).
  var r = a - b * floor(a / b);
  if (r != 0.0 && (r < 0.0) != (b < 0.0)) { r = r + b; }
  if (abs(r) >= abs(b)) { r = r - b; }
  return r;
}
`;
