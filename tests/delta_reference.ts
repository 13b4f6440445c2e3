// A float64 delta rule written straight from the papers' equation, independent of the
// interpreter: S_t = S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, y_t = scale·S_t q_t, on
// arrays laid out [b, t, h, ·] (FLA's layout) with the state [b, h, dv, dk].

/** Sizes of a delta-rule test case. */
export type DeltaSizes = { b: number; t: number; h: number; dk: number; dv: number };

/** The inputs, FLA's layout: q, k [b t h dk], v [b t h dv], beta, gate [b t h], init [b h dv dk]. */
export interface DeltaArrays {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  beta: Float32Array | Float64Array;
  gate?: Float32Array;
  init?: Float32Array;
}

/** Random inputs: k L2-normalized per (b, t, h), β in (0, 1), gate = log α in [−1, 0). */
export function deltaArrays(s: DeltaSizes, next: () => number, gated: boolean, withInit: boolean) {
  const rand = (n: number, lo = -1, hi = 1) =>
    Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
  const { b, t, h, dk, dv } = s;
  const k = rand(b * t * h * dk);
  for (let r = 0; r < b * t * h; r++) {
    let n = 0;
    for (let j = 0; j < dk; j++) n += k[r * dk + j] ** 2;
    for (let j = 0; j < dk; j++) k[r * dk + j] /= Math.sqrt(n);
  }
  const out: DeltaArrays = {
    q: rand(b * t * h * dk),
    k,
    v: rand(b * t * h * dv),
    beta: rand(b * t * h, 0.05, 0.95),
  };
  if (gated) out.gate = rand(b * t * h, -1, -0.01);
  if (withInit) out.init = rand(b * h * dv * dk, -0.5, 0.5);
  return out;
}

/** y [b t h dv] and the final state [b h dv dk] by the matrix equation, in float64. */
export function referenceDelta(s: DeltaSizes, x: DeltaArrays, scale: number) {
  const { b, t, h, dk, dv } = s;
  const y = new Float64Array(b * t * h * dv);
  const final = new Float64Array(b * h * dv * dk);
  for (let bb = 0; bb < b; bb++) {
    for (let hh = 0; hh < h; hh++) {
      // S as dv rows of dk.
      let S = Array.from(
        { length: dv },
        (_, i) =>
          Array.from(
            { length: dk },
            (_, j) => x.init ? x.init[((bb * h + hh) * dv + i) * dk + j] : 0,
          ),
      );
      for (let tt = 0; tt < t; tt++) {
        const r = (bb * t + tt) * h + hh;
        const kt = Array.from(x.k.subarray(r * dk, r * dk + dk));
        const qt = Array.from(x.q.subarray(r * dk, r * dk + dk));
        const vt = Array.from(x.v.subarray(r * dv, r * dv + dv));
        const beta = x.beta[r];
        const alpha = x.gate ? Math.exp(x.gate[r]) : 1;
        // P = I − β k kᵀ; S ← α·S·P + β v kᵀ.
        const P = kt.map((ki, a) => kt.map((kj, c) => (a === c ? 1 : 0) - beta * ki * kj));
        S = S.map((row, i) =>
          kt.map((kj, c) => {
            let sp = 0;
            for (let a = 0; a < dk; a++) sp += row[a] * P[a][c];
            return alpha * sp + beta * vt[i] * kj;
          })
        );
        for (let i = 0; i < dv; i++) {
          let acc = 0;
          for (let j = 0; j < dk; j++) acc += S[i][j] * qt[j];
          y[r * dv + i] = scale * acc;
        }
      }
      S.forEach((row, i) => final.set(row, ((bb * h + hh) * dv + i) * dk));
    }
  }
  return { y, state: final };
}
