// The vision layers of models/layers/ (Vim's bidirectional mixer, SS2D's four routes, VSSD's
// non-causal SSD, EfficientViM's hidden-state mixer, LBMamba's locally bidirectional scan)
// against float64 loops written from their papers, compiled for the GPU at awkward sizes.
import type { Tensor } from "../dsl/tensor.ts";
import { hsmSsd } from "../models/layers/efficientvim.ts";
import { lbScan } from "../models/layers/lbmamba.ts";
import type { S6Params } from "../models/layers/s6.ts";
import { ss2d, ss2dBlock } from "../models/layers/ss2d.ts";
import { vimBlock, vimMixer } from "../models/layers/vim.ts";
import { vssd } from "../models/layers/vssd.ts";
import { checkLayer } from "./layers_util.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

const sig = (x: number) => 1 / (1 + Math.exp(-x));
const silu = (x: number) => x * sig(x);
const softplus = (x: number) => Math.log1p(Math.exp(x));
type F = Float32Array;

/** S6 parameters' arrays: xProj (e d), dtProj (d r), dtBias (d), Alog (d n), D (d). */
type S6Arrays = { xProj: F; dtProj: F; dtBias: F; Alog: F; D: F };

/**
 * One S6 direction in float64 over the tokens of one batch row taken in `order` (x at
 * `x(pos, c)`), adding its outputs into y[pos·d + c].
 */
function s6Loop(
  x: (pos: number, c: number) => number,
  order: number[],
  p: S6Arrays,
  dims: { d: number; n: number; r: number },
  y: Float64Array,
) {
  const { d, n, r } = dims, e = r + 2 * n;
  const h = new Float64Array(d * n);
  for (const pos of order) {
    const proj = new Float64Array(e);
    for (let a = 0; a < e; a++) {
      for (let c = 0; c < d; c++) proj[a] += p.xProj[a * d + c] * x(pos, c);
    }
    for (let c = 0; c < d; c++) {
      let dt = p.dtBias[c];
      for (let k = 0; k < r; k++) dt += proj[k] * p.dtProj[c * r + k];
      const delta = softplus(dt);
      let acc = p.D[c] * x(pos, c);
      for (let s = 0; s < n; s++) {
        const A = -Math.exp(p.Alog[c * n + s]);
        h[c * n + s] = Math.exp(delta * A) * h[c * n + s] + delta * proj[r + s] * x(pos, c);
        acc += proj[r + n + s] * h[c * n + s];
      }
      y[pos * d + c] += acc;
    }
  }
}

function s6Arrays(next: () => number, d: number, n: number, r: number): S6Arrays {
  return {
    xProj: randomArray((r + 2 * n) * d, next, -0.5, 0.5),
    dtProj: randomArray(d * r, next, -0.5, 0.5),
    dtBias: randomArray(d, next, -2, 0),
    Alog: randomArray(d * n, next, -1, 1),
    D: randomArray(d, next),
  };
}
const S6_SPEC = (k: string) => ({
  [`${k}xProj`]: "e d",
  [`${k}dtProj`]: "d r",
  [`${k}dtBias`]: "d",
  [`${k}Alog`]: "d n",
  [`${k}D`]: "d",
});
const s6Of = (t: Record<string, Tensor>, k: string): S6Params => ({
  xProj: t[`${k}xProj`],
  dtProj: t[`${k}dtProj`],
  dtBias: t[`${k}dtBias`],
  Alog: t[`${k}Alog`],
  D: t[`${k}D`],
});
const prefixed = (p: S6Arrays, k: string) =>
  Object.fromEntries(Object.entries(p).map(([name, v]) => [`${k}${name}`, v]));
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

Deno.test("layers: Vim's bidirectional mixer matches its float64 loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 2, l: 13, d: 6, n: 3, r: 2, k: 4, e: 8 };
  const { b: B, l: L, d: D, k: K } = s;
  const data: Record<string, F> = {
    x: randomArray(B * L * D, next),
    z: randomArray(B * L * D, next),
    fconv: randomArray(D * K, next),
    fconvBias: randomArray(D, next),
    bconv: randomArray(D * K, next),
    bconvBias: randomArray(D, next),
  };
  const fw = s6Arrays(next, D, s.n, s.r), bw = s6Arrays(next, D, s.n, s.r);
  Object.assign(data, prefixed(fw, "f"), prefixed(bw, "b"));
  const mixerLoop = (x: ArrayLike<number>, z: ArrayLike<number>) => {
    const y = new Float64Array(B * L * D);
    for (let b = 0; b < B; b++) {
      const xv = (t: number, c: number) => t < 0 || t >= L ? 0 : x[(b * L + t) * D + c];
      // Causal conv forward (taps on t−K+1 … t); the backward one is causal in flipped order.
      const conv = (w: F, bias: F, dir: number) => (t: number, c: number) => {
        let acc = bias[c];
        for (let k = 0; k < K; k++) acc += w[c * K + k] * xv(t + dir * (K - 1 - k), c);
        return silu(acc);
      };
      const yb = new Float64Array(L * D);
      s6Loop(conv(data.fconv, data.fconvBias, -1), range(L), fw, s, yb);
      s6Loop(conv(data.bconv, data.bconvBias, 1), range(L).reverse(), bw, s, yb);
      for (let i = 0; i < L * D; i++) y[b * L * D + i] = 0.5 * yb[i] * silu(z[b * L * D + i]);
    }
    return y;
  };
  const y = mixerLoop(data.x, data.z);
  const spec = {
    x: "b l d",
    z: "b l d",
    fconv: "d k",
    fconvBias: "d",
    bconv: "d k",
    bconvBias: "d",
    ...S6_SPEC("f"),
    ...S6_SPEC("b"),
  };
  await checkLayer(
    `Vim, seed ${seed}`,
    spec,
    (t) => ({
      y: vimMixer(t.x, t.z, { ...s6Of(t, "f"), conv: t.fconv, convBias: t.fconvBias }, {
        ...s6Of(t, "b"),
        conv: t.bconv,
        convBias: t.bconvBias,
      }),
    }),
    s,
    data,
    { y },
  );
  // The whole mixer: u (b l m) → in_proj → (x, z) → both directions → out_proj.
  const M = 3, Cc = 2 * D;
  const extra = {
    u: randomArray(B * L * M, next),
    inProj: randomArray(Cc * M, next),
    outProj: randomArray(M * D, next),
  };
  const xz = new Float64Array(B * L * Cc);
  for (let i = 0; i < B * L; i++) {
    for (let r = 0; r < Cc; r++) {
      for (let j = 0; j < M; j++) xz[i * Cc + r] += extra.u[i * M + j] * extra.inProj[r * M + j];
    }
  }
  const part = (from: number) =>
    Float64Array.from({ length: B * L * D }, (_, q) => xz[Math.floor(q / D) * Cc + from + (q % D)]);
  const mixed = mixerLoop(part(0), part(D));
  const yBlock = new Float64Array(B * L * M);
  for (let i = 0; i < B * L; i++) {
    for (let o = 0; o < M; o++) {
      for (let j = 0; j < D; j++) {
        yBlock[i * M + o] += mixed[i * D + j] * extra.outProj[o * D + j];
      }
    }
  }
  const { x: _x, z: _z, ...blockSpec } = spec;
  const { x: _dx, z: _dz, ...weights } = data;
  await checkLayer(
    `Vim block, seed ${seed}`,
    { ...blockSpec, u: "b l m", inProj: "c m", outProj: "m d" },
    (t) => ({
      y: vimBlock(t.u, {
        inProj: t.inProj,
        outProj: t.outProj,
        fwd: { ...s6Of(t, "f"), conv: t.fconv, convBias: t.fconvBias },
        bwd: { ...s6Of(t, "b"), conv: t.bconv, convBias: t.bconvBias },
      }),
    }),
    { ...s, m: M, c: Cc },
    { ...weights, ...extra },
    { y: yBlock },
  );
});

Deno.test("layers: SS2D's four routes match their float64 loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 2, i: 3, j: 5, d: 4, n: 3, r: 2, e: 8 };
  const { b: B, i: I, j: J, d: D } = s;
  const data: Record<string, F> = { x: randomArray(B * I * J * D, next) };
  const routes = range(4).map(() => s6Arrays(next, D, s.n, s.r));
  routes.forEach((p, k) => Object.assign(data, prefixed(p, `r${k}`)));
  const rowMajor = range(I * J),
    colMajor = range(I * J).map((q) => (q % I) * J + Math.floor(q / I));
  const orders = [rowMajor, colMajor, [...rowMajor].reverse(), [...colMajor].reverse()];
  const y = new Float64Array(B * I * J * D);
  for (let b = 0; b < B; b++) {
    const yb = new Float64Array(I * J * D);
    const xv = (pos: number, c: number) => data.x[(b * I * J + pos) * D + c];
    routes.forEach((p, k) => s6Loop(xv, orders[k], p, s, yb));
    y.set(yb, b * I * J * D);
  }
  const spec = {
    x: "b i j d",
    ...S6_SPEC("r0"),
    ...S6_SPEC("r1"),
    ...S6_SPEC("r2"),
    ...S6_SPEC("r3"),
  };
  await checkLayer(
    `SS2D, seed ${seed}`,
    spec,
    (t) => ({
      y: ss2d(t.x, [s6Of(t, "r0"), s6Of(t, "r1"), s6Of(t, "r2"), s6Of(t, "r3")]),
    }),
    s,
    data,
    { y },
  );
});

Deno.test("layers: VSSD's non-causal SSD matches its float64 loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 2, l: 11, h: 3, p: 5, n: 4 };
  const { b: B, l: L, h: H, p: P, n: Nn } = s;
  const data = {
    x: randomArray(B * L * H * P, next),
    B: randomArray(B * L * Nn, next),
    C: randomArray(B * L * Nn, next),
    dt: randomArray(B * L * H, next, -3, 1),
    dtBias: randomArray(H, next, -1, 1),
    Alog: randomArray(H, next, -1, 1),
    D: randomArray(H, next),
  };
  const y = new Float64Array(B * L * H * P);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const state = new Float64Array(Nn * P); // H = Σ_j w_j B_j x_jᵀ
      for (let j = 0; j < L; j++) {
        const g = (b * L + j) * H + h;
        const w = -softplus(data.dt[g] + data.dtBias[h]) * -Math.exp(data.Alog[h]); // −Δ·A
        for (let a = 0; a < Nn; a++) {
          for (let c = 0; c < P; c++) {
            state[a * P + c] += w * data.B[(b * L + j) * Nn + a] * data.x[g * P + c];
          }
        }
      }
      for (let i = 0; i < L; i++) {
        const g = (b * L + i) * H + h;
        for (let c = 0; c < P; c++) {
          let acc = data.D[h] * data.x[g * P + c];
          for (let a = 0; a < Nn; a++) acc += state[a * P + c] * data.C[(b * L + i) * Nn + a];
          y[g * P + c] = acc;
        }
      }
    }
  }
  const spec = {
    x: "b l h p",
    B: "b l n",
    C: "b l n",
    dt: "b l h",
    dtBias: "h",
    Alog: "h",
    D: "h",
  } as const;
  await checkLayer(`VSSD, seed ${seed}`, spec, (t) => ({ y: vssd(t, t) }), s, data, { y });
});

Deno.test("layers: EfficientViM's hidden-state mixer matches its float64 loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 2, l: 13, d: 6, n: 5, e: 12, o: 6 };
  const { b: B, l: L, d: D, n: Nn } = s;
  const data = {
    x: randomArray(B * L * D, next),
    dt: randomArray(B * L * Nn, next, -2, 2),
    B: randomArray(B * L * Nn, next),
    C: randomArray(B * L * Nn, next),
    A: randomArray(Nn, next),
    whz: randomArray(2 * D * D, next, -0.5, 0.5),
    wo: randomArray(D * D, next, -0.5, 0.5),
    D: randomArray(D, next),
  };
  const y = new Float64Array(B * L * D);
  for (let b = 0; b < B; b++) {
    const at = (l: number, a: number) => (b * L + l) * Nn + a;
    const h = new Float64Array(D * Nn); // h = X (B ⊙ softmax_l(Δ + A))ᵀ
    for (let a = 0; a < Nn; a++) {
      let mx = -Infinity, sum = 0;
      for (let l = 0; l < L; l++) mx = Math.max(mx, data.dt[at(l, a)] + data.A[a]);
      for (let l = 0; l < L; l++) sum += Math.exp(data.dt[at(l, a)] + data.A[a] - mx);
      for (let l = 0; l < L; l++) {
        const w = Math.exp(data.dt[at(l, a)] + data.A[a] - mx) / sum * data.B[at(l, a)];
        for (let c = 0; c < D; c++) h[c * Nn + a] += data.x[(b * L + l) * D + c] * w;
      }
    }
    const mixed = new Float64Array(D * Nn), out = new Float64Array(D * Nn);
    for (let c = 0; c < D; c++) {
      for (let a = 0; a < Nn; a++) {
        let hh = 0, z = 0;
        for (let k = 0; k < D; k++) {
          hh += data.whz[c * D + k] * h[k * Nn + a];
          z += data.whz[(D + c) * D + k] * h[k * Nn + a];
        }
        mixed[c * Nn + a] = hh * silu(z) + data.D[c] * hh;
      }
    }
    for (let o = 0; o < D; o++) {
      for (let a = 0; a < Nn; a++) {
        for (let c = 0; c < D; c++) out[o * Nn + a] += data.wo[o * D + c] * mixed[c * Nn + a];
      }
    }
    for (let l = 0; l < L; l++) {
      for (let c = 0; c < D; c++) {
        let acc = 0;
        for (let a = 0; a < Nn; a++) acc += out[c * Nn + a] * data.C[at(l, a)];
        y[(b * L + l) * D + c] = acc;
      }
    }
  }
  const spec = {
    x: "b l d",
    dt: "b l n",
    B: "b l n",
    C: "b l n",
    A: "n",
    whz: "e d",
    wo: "o d",
    D: "d",
  } as const;
  await checkLayer(
    `EfficientViM HSM-SSD, seed ${seed}`,
    spec,
    (t) => ({ y: hsmSsd(t, t) }),
    s,
    data,
    { y },
  );
});

Deno.test("layers: LBMamba's locally bidirectional scan matches its float64 loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 2, l: 21, d: 5, n: 3 };
  const { b: B, l: L, d: D, n: Nn } = s;
  const M = 4;
  const data = {
    x: randomArray(B * L * D, next),
    dt: randomArray(B * L * D, next, -3, 0.5),
    B: randomArray(B * L * Nn, next),
    C: randomArray(B * L * Nn, next),
    A: randomArray(D * Nn, next, -2, -0.2),
    D: randomArray(D, next),
    dtBias: randomArray(D, next, -0.5, 0.5),
  };
  const y = new Float64Array(B * L * D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < D; c++) {
      for (let a = 0; a < Nn; a++) {
        const abar = new Float64Array(L), bx = new Float64Array(L);
        for (let t = 0; t < L; t++) {
          const delta = softplus(data.dt[(b * L + t) * D + c] + data.dtBias[c]);
          abar[t] = Math.exp(delta * data.A[c * Nn + a]);
          bx[t] = delta * data.B[(b * L + t) * Nn + a] * data.x[(b * L + t) * D + c];
        }
        const hf = new Float64Array(L), hb = new Float64Array(L);
        for (let t = 0; t < L; t++) hf[t] = (t > 0 ? abar[t] * hf[t - 1] : 0) + bx[t];
        for (let t = L - 1; t >= 0; t--) {
          const restart = (t + 1) % M === 0 || t === L - 1; // each window of M ends here
          hb[t] = (restart ? 0 : abar[t] * hb[t + 1]) + bx[t];
        }
        for (let t = 0; t < L; t++) {
          y[(b * L + t) * D + c] += data.C[(b * L + t) * Nn + a] * (hf[t] + hb[t] - bx[t]);
        }
      }
      for (let t = 0; t < L; t++) y[(b * L + t) * D + c] += data.D[c] * data.x[(b * L + t) * D + c];
    }
  }
  const spec = {
    x: "b l d",
    dt: "b l d",
    B: "b l n",
    C: "b l n",
    A: "d n",
    D: "d",
    dtBias: "d",
  } as const;
  await checkLayer(`LBMamba, seed ${seed}`, spec, (t) => ({ y: lbScan(t, t, M) }), s, data, { y });
});

Deno.test("layers: the SS2D block (in_proj, 3×3 dwconv, routes, LayerNorm, gate) matches its loop", async () => {
  const seed = freshSeed(), next = rng(seed);
  const s = { b: 1, i: 3, j: 4, m: 5, d: 4, c: 8, e: 6, n: 2, r: 2, ki: 3, kj: 3 };
  const { b: B, i: I, j: J, m: Mm, d: D } = s;
  const data: Record<string, F> = {
    u: randomArray(B * I * J * Mm, next),
    inProj: randomArray(2 * D * Mm, next, -0.5, 0.5),
    conv: randomArray(D * 9, next, -0.5, 0.5),
    convBias: randomArray(D, next),
    normW: randomArray(D, next, 0.5, 1.5),
    normB: randomArray(D, next),
    outProj: randomArray(Mm * D, next),
  };
  const routes = range(4).map(() => s6Arrays(next, D, s.n, s.r));
  routes.forEach((p, k) => Object.assign(data, prefixed(p, `r${k}`)));
  const rowMajor = range(I * J),
    colMajor = range(I * J).map((q) => (q % I) * J + Math.floor(q / I));
  const orders = [rowMajor, colMajor, [...rowMajor].reverse(), [...colMajor].reverse()];
  const y = new Float64Array(B * I * J * Mm);
  for (let b = 0; b < B; b++) {
    const proj = (pos: number, e: number) => {
      let acc = 0;
      for (let c = 0; c < Mm; c++) {
        acc += data.u[(b * I * J + pos) * Mm + c] * data.inProj[e * Mm + c];
      }
      return acc;
    };
    const xc = new Float64Array(I * J * D); // silu(dwconv3×3(x) + bias), zero padding
    for (let i = 0; i < I; i++) {
      for (let j = 0; j < J; j++) {
        for (let c = 0; c < D; c++) {
          let acc = data.convBias[c];
          for (let a = 0; a < 3; a++) {
            for (let bb = 0; bb < 3; bb++) {
              const ii = i + a - 1, jj = j + bb - 1;
              if (ii >= 0 && ii < I && jj >= 0 && jj < J) {
                acc += data.conv[c * 9 + a * 3 + bb] * proj(ii * J + jj, c);
              }
            }
          }
          xc[(i * J + j) * D + c] = silu(acc);
        }
      }
    }
    const ys = new Float64Array(I * J * D);
    routes.forEach((p, k) => s6Loop((pos, c) => xc[pos * D + c], orders[k], p, s, ys));
    for (let pos = 0; pos < I * J; pos++) {
      const row = ys.subarray(pos * D, (pos + 1) * D);
      const mu = row.reduce((a, v) => a + v, 0) / D;
      const va = row.reduce((a, v) => a + (v - mu) ** 2, 0) / D;
      const g = Array.from(
        row,
        (v, c) =>
          ((v - mu) / Math.sqrt(va + 1e-5) * data.normW[c] + data.normB[c]) *
          silu(proj(pos, D + c)),
      );
      for (let o = 0; o < Mm; o++) {
        y[(b * I * J + pos) * Mm + o] = g.reduce((a, v, c) => a + v * data.outProj[o * D + c], 0);
      }
    }
  }
  const spec = {
    u: "b i j m",
    inProj: "c m",
    conv: "d ki kj",
    convBias: "d",
    normW: "d",
    normB: "d",
    outProj: "m d",
    ...S6_SPEC("r0"),
    ...S6_SPEC("r1"),
    ...S6_SPEC("r2"),
    ...S6_SPEC("r3"),
  };
  await checkLayer(
    `SS2D block, seed ${seed}`,
    spec,
    (t) => ({
      y: ss2dBlock(t.u, {
        inProj: t.inProj,
        conv: t.conv,
        convBias: t.convBias,
        normW: t.normW,
        normB: t.normB,
        outProj: t.outProj,
        routes: [s6Of(t, "r0"), s6Of(t, "r1"), s6Of(t, "r2"), s6Of(t, "r3")],
      }),
    }),
    s,
    data,
    { y },
  );
});
