/**
 * Deterministic inputs for the selective-scan benchmarks, in the ranges a trained Mamba sees.
 *
 * @module
 */

/** A fast deterministic fill in [lo, hi). */
export function randomF32(n: number, lo = -1, hi = 1, seed = 12345): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = lo + (hi - lo) * (s / 2 ** 32);
  }
  return a;
}

/** Inputs of `SELECTIVE_SCAN_INPUTS` for sizes b, l, d, n. */
export function scanBenchInputs(s: { b: number; l: number; d: number; n: number }) {
  const { b, l, d, n } = s;
  return {
    x: randomF32(b * l * d),
    dt: randomF32(b * l * d, -4, -1, 7),
    z: randomF32(b * l * d, -1, 1, 11),
    B: randomF32(b * l * n, -1, 1, 13),
    C: randomF32(b * l * n, -1, 1, 17),
    A: randomF32(d * n, -2, -0.2, 19),
    D: randomF32(d, -1, 1, 23),
    dtBias: randomF32(d, -0.5, 0.5, 29),
  };
}

/**
 * Bytes the selective scan must move at sizes b, l, d, n: x, dt, z read and y written (b·l·d
 * each), B and C read (b·l·n each), A (d·n), D and the Δ bias (d) read once.
 */
export function scanBenchBytes(s: { b: number; l: number; d: number; n: number }): number {
  const { b, l, d, n } = s;
  return 4 * (4 * b * l * d + 2 * b * l * n + d * n + 2 * d);
}

/** The benchmark shape's command-line options (`parseArgs`), Mamba-130M's inner width. */
export const SCAN_SHAPE_OPTIONS = {
  b: { type: "string", default: "8" },
  l: { type: "string", default: "4096" },
  d: { type: "string", default: "1536" },
} as const;
