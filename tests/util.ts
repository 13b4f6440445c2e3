// Shared test helpers: seeded random inputs and the error metric every kernel test uses.
import type { Graph } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";

/** A small seeded PRNG (mulberry32), so failures can be replayed from the printed seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fresh seed per run (printed by the tests that use it). */
export function freshSeed(): number {
  return (Math.random() * 2 ** 31) | 0;
}

/** Uniform random values in [lo, hi). */
export function randomArray(n: number, next: () => number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * next();
  return out;
}

/**
 * Inputs of the selective scan with an initial state (`SELECTIVE_SCAN_INPUTS` plus `h0`) in
 * the ranges a trained Mamba sees: A < 0 (A = −exp(A_log)), so every decay is in (0, 1). `dt`
 * and `z` ranges can be widened to push softplus and silu to their extremes.
 */
export function selectiveScanInputs(
  s: { b: number; l: number; d: number; n: number },
  next: () => number,
  ranges: { dt?: [number, number]; z?: [number, number] } = {},
) {
  const { b, l, d, n } = s;
  const [dtLo, dtHi] = ranges.dt ?? [-3, 0.5];
  const [zLo, zHi] = ranges.z ?? [-1, 1];
  return {
    x: randomArray(b * l * d, next),
    dt: randomArray(b * l * d, next, dtLo, dtHi),
    z: randomArray(b * l * d, next, zLo, zHi),
    B: randomArray(b * l * n, next),
    C: randomArray(b * l * n, next),
    A: randomArray(d * n, next, -2, -0.2),
    D: randomArray(d, next),
    dtBias: randomArray(d, next, -0.5, 0.5),
    h0: randomArray(b * d * n, next),
  };
}

/** Random inputs for every f32 input of a graph (i32 inputs get ids in [0, maxId)). */
export function randomInputs(
  graph: Graph,
  next: () => number,
  maxId = 2,
): Record<string, Float32Array | Int32Array> {
  const out: Record<string, Float32Array | Int32Array> = {};
  for (const inp of graph.inputs) {
    if (inp.dtype === "i32") {
      out[inp.name] = Int32Array.from({ length: numel(inp) }, () => Math.floor(next() * maxId));
    } else {
      out[inp.name] = randomArray(numel(inp), next);
    }
  }
  return out;
}

/** ‖got − want‖₂ / ‖want‖₂ (absolute norm when `want` is all zeros); NaN anywhere gives Infinity. */
export function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) {
    throw new Error(`length mismatch: got ${got.length}, want ${want.length}`);
  }
  let diff = 0, norm = 0;
  for (let i = 0; i < got.length; i++) {
    if (Number.isNaN(got[i]) || Number.isNaN(want[i])) return Infinity;
    diff += (got[i] - want[i]) ** 2;
    norm += want[i] ** 2;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

/** Throws with context when the relative error exceeds `tol`. */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  context: string,
): void {
  const err = relativeError(got, want);
  if (!(err <= tol)) {
    let worst = 0;
    for (let i = 0; i < got.length; i++) {
      if (Math.abs(got[i] - want[i]) > Math.abs(got[worst] - want[worst])) worst = i;
    }
    throw new Error(
      `${context}: relative error ${err.toExponential(3)} > ${tol} ` +
        `(worst at ${worst}: got ${got[worst]}, want ${want[worst]})`,
    );
  }
}
