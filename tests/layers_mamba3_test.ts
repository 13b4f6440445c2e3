// Mamba-3 of models/layers/ (SISO, and MIMO of rank 2) against float64 loops written from the
// paper's equations with the conventions of mamba_ssm's kernels, compiled for the GPU from a
// given state at awkward sizes, and prefill against step-by-step decode.
import type { Tensor } from "../dsl/tensor.ts";
import { mamba3Siso } from "../models/layers/mamba3.ts";
import { mamba3Mimo } from "../models/layers/mamba3_mimo.ts";
import { checkDecode, checkLayer } from "./layers_util.ts";
import { freshSeed, randomArray, rng } from "./util.ts";

const sig = (x: number) => 1 / (1 + Math.exp(-x));
const softplus = (x: number) => Math.log1p(Math.exp(x));

const M3 = {
  x: "b t h p",
  z: "b t h p",
  B: "b t n",
  C: "b t n",
  dt: "b t h",
  a: "b t h",
  trap: "b t h",
  theta: "b t m",
  dtBias: "h",
  D: "h",
  normB: "n",
  normC: "n",
  biasB: "h n",
  biasC: "h n",
  ssm0: "b h p n",
  angle0: "b h m",
  x0: "b h p",
  B0: "b h n",
} as const;
const M3S = { b: 2, t: 11, h: 3, p: 5, n: 8, m: 3 }; // pairs 0–2 rotated, pair 3 not

/**
 * Mamba-3 SISO from the paper's equations (conventions of mamba_ssm's step kernel): trapezoid,
 * rotary B/C on adjacent pairs, B/C RMSNorm and bias, heavy-tail A.
 */
function mamba3Loop(d: Record<keyof typeof M3, Float32Array>) {
  const { b: Bt, t: T, h: H, p: P, n: Nn, m: M } = M3S;
  const y = new Float64Array(Bt * T * H * P);
  const ssm = Float64Array.from(d.ssm0), ang = Float64Array.from(d.angle0);
  const xl = Float64Array.from(d.x0), bl = Float64Array.from(d.B0);
  const normed = (
    v: Float32Array,
    at: number,
    w: Float32Array,
    bias: Float32Array,
    h: number,
    th: number[],
  ) => {
    let ms = 0;
    for (let j = 0; j < Nn; j++) ms += v[at + j] ** 2 / Nn;
    const u = Array.from(
      { length: Nn },
      (_, j) => v[at + j] / Math.sqrt(ms + 1e-5) * w[j] + bias[h * Nn + j],
    );
    const r = [...u];
    for (let i = 0; i < M; i++) {
      r[2 * i] = u[2 * i] * Math.cos(th[i]) - u[2 * i + 1] * Math.sin(th[i]);
      r[2 * i + 1] = u[2 * i] * Math.sin(th[i]) + u[2 * i + 1] * Math.cos(th[i]);
    }
    return r;
  };
  for (let b = 0; b < Bt; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h, st = ssm.subarray(bh * P * Nn, (bh + 1) * P * Nn);
      for (let t = 0; t < T; t++) {
        const g = (b * T + t) * H + h, bt = b * T + t;
        const delta = softplus(d.dt[g] + d.dtBias[h]);
        const a = d.a[g], phi = a >= 0 ? 1 + a : 1 / (1 - a); // the heavy-tail activation
        const alpha = Math.exp(-delta * Math.max(phi, 1e-4)), lam = sig(d.trap[g]);
        const th: number[] = [];
        for (let i = 0; i < M; i++) {
          ang[bh * M + i] += Math.PI * Math.tanh(d.theta[bt * M + i]) * delta;
          th.push(ang[bh * M + i]);
        }
        const Bv = normed(d.B, bt * Nn, d.normB, d.biasB, h, th);
        const Cv = normed(d.C, bt * Nn, d.normC, d.biasC, h, th);
        for (let p = 0; p < P; p++) {
          const x = d.x[g * P + p];
          let acc = 0;
          for (let j = 0; j < Nn; j++) {
            const prev = (1 - lam) * delta * alpha * xl[bh * P + p] * bl[bh * Nn + j];
            st[p * Nn + j] = alpha * st[p * Nn + j] + prev + lam * delta * x * Bv[j];
            acc += st[p * Nn + j] * Cv[j];
          }
          const z = d.z[g * P + p];
          y[g * P + p] = (acc + d.D[h] * x) * z * sig(z);
        }
        for (let p = 0; p < P; p++) xl[bh * P + p] = d.x[g * P + p];
        for (let j = 0; j < Nn; j++) bl[bh * Nn + j] = Bv[j];
      }
    }
  }
  const angle = ang.map((v) => v - 2 * Math.PI * Math.floor(v / (2 * Math.PI)));
  return { y, ssm, angle, xl, Bl: bl };
}

Deno.test("layers: Mamba-3 SISO matches its float64 loop; prefill = decode", async () => {
  const seed = freshSeed(), next = rng(seed);
  const { b, t, h, p, n, m } = M3S;
  const r = (len: number, lo = -1, hi = 1) => randomArray(len, next, lo, hi);
  const data = {
    x: r(b * t * h * p),
    z: r(b * t * h * p),
    B: r(b * t * n),
    C: r(b * t * n),
    dt: r(b * t * h, -3, 0.5),
    a: r(b * t * h, -3, 3),
    trap: r(b * t * h, -2, 2),
    theta: r(b * t * m, -2, 2),
    dtBias: r(h, -0.5, 0.5),
    D: r(h),
    normB: r(n, 0.5, 1.5),
    normC: r(n, 0.5, 1.5),
    biasB: r(h * n, 0.5, 1.5),
    biasC: r(h * n, 0.5, 1.5),
    ssm0: r(b * h * p * n),
    angle0: r(b * h * m, -3, 3),
    x0: r(b * h * p),
    B0: r(b * h * n),
  };
  const want = mamba3Loop(data);
  const fn = (x: { [K in keyof typeof M3]: Tensor<(typeof M3)[K]> }) => {
    const init = { ssm: x.ssm0, angle: x.angle0, x: x.x0, B: x.B0 };
    const o = mamba3Siso(x, x, init);
    return { y: o.y, ssm: o.state.ssm, angle: o.state.angle, xl: o.state.x, Bl: o.state.B };
  };
  const what = `Mamba-3 SISO, seed ${seed}`;
  const kernels = await checkLayer(what, M3, fn, M3S, data, want);
  console.log(`Mamba-3 SISO: ${kernels.length} kernels: ${kernels.join(", ")}`);
  const timed = ["x", "z", "B", "C", "dt", "a", "trap", "theta"];
  const state = { ssm: "ssm0", angle: "angle0", xl: "x0", Bl: "B0" };
  await checkDecode(what, M3, fn, M3S, data, timed, state, "y", want.y, 7);
});

const MIMO = {
  x: "b t h p",
  z: "b t h p",
  B: "b t r n",
  C: "b t r n",
  dt: "b t h",
  a: "b t h",
  trap: "b t h",
  theta: "b t m",
  dtBias: "h",
  D: "h",
  normB: "n",
  normC: "n",
  biasB: "h r n",
  biasC: "h r n",
  mimoV: "h r p",
  mimoZ: "h r p",
  mimoO: "h r p",
  ssm0: "b h p n",
  angle0: "b h m",
  x0: "b h p",
  B0: "b h r n",
} as const;
const MS = { b: 2, t: 9, h: 2, p: 3, n: 8, m: 3, r: 2 };

/** Mamba-3 MIMO of rank r from the equations: rank-r update, rotation of (n_i, n_{i+n/2}). */
function mimoLoop(d: Record<keyof typeof MIMO, Float32Array>) {
  const { b: Bt, t: T, h: H, p: P, n: Nn, m: M, r: R } = MS;
  const y = new Float64Array(Bt * T * H * P);
  const ssm = Float64Array.from(d.ssm0), ang = Float64Array.from(d.angle0);
  const xl = Float64Array.from(d.x0), bl = Float64Array.from(d.B0);
  const normed = (
    v: Float32Array,
    at: number,
    w: Float32Array,
    bias: Float32Array,
    hr: number,
    th: number[],
  ) => {
    let ms = 0;
    for (let j = 0; j < Nn; j++) ms += v[at + j] ** 2 / Nn;
    const u = Array.from(
      { length: Nn },
      (_, j) => v[at + j] / Math.sqrt(ms + 1e-5) * w[j] + bias[hr * Nn + j],
    );
    const o = [...u], half = Nn / 2;
    for (let i = 0; i < M; i++) {
      o[i] = u[i] * Math.cos(th[i]) - u[i + half] * Math.sin(th[i]);
      o[i + half] = u[i] * Math.sin(th[i]) + u[i + half] * Math.cos(th[i]);
    }
    return o;
  };
  for (let b = 0; b < Bt; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h, st = ssm.subarray(bh * P * Nn, (bh + 1) * P * Nn);
      for (let t = 0; t < T; t++) {
        const g = (b * T + t) * H + h, bt = b * T + t;
        const delta = softplus(d.dt[g] + d.dtBias[h]);
        const a = d.a[g], phi = a >= 0 ? 1 + a : 1 / (1 - a);
        const alpha = Math.exp(-delta * Math.max(phi, 1e-4)), lam = sig(d.trap[g]);
        const th: number[] = [];
        for (let i = 0; i < M; i++) {
          ang[bh * M + i] += Math.PI * Math.tanh(d.theta[bt * M + i]) * delta;
          th.push(ang[bh * M + i]);
        }
        const Bv: number[][] = [], Cv: number[][] = [];
        for (let r = 0; r < R; r++) {
          Bv.push(normed(d.B, (bt * R + r) * Nn, d.normB, d.biasB, h * R + r, th));
          Cv.push(normed(d.C, (bt * R + r) * Nn, d.normC, d.biasC, h * R + r, th));
        }
        const X = (xs: ArrayLike<number>, at: number, r: number, pp: number) =>
          xs[at + pp] * d.mimoV[(h * R + r) * P + pp];
        for (let pp = 0; pp < P; pp++) {
          for (let j = 0; j < Nn; j++) {
            let u = 0;
            for (let r = 0; r < R; r++) {
              u += (1 - lam) * delta * alpha * X(xl, bh * P, r, pp) * bl[(bh * R + r) * Nn + j];
              u += lam * delta * X(d.x, g * P, r, pp) * Bv[r][j];
            }
            st[pp * Nn + j] = alpha * st[pp * Nn + j] + u;
          }
        }
        for (let pp = 0; pp < P; pp++) {
          let out = 0;
          for (let r = 0; r < R; r++) {
            let yr = d.D[h] * X(d.x, g * P, r, pp);
            for (let j = 0; j < Nn; j++) yr += st[pp * Nn + j] * Cv[r][j];
            const zr = d.z[g * P + pp] * d.mimoZ[(h * R + r) * P + pp];
            out += yr * d.mimoO[(h * R + r) * P + pp] * zr * sig(zr);
          }
          y[g * P + pp] = out;
        }
        for (let pp = 0; pp < P; pp++) xl[bh * P + pp] = d.x[g * P + pp];
        for (let r = 0; r < R; r++) {
          for (let j = 0; j < Nn; j++) bl[(bh * R + r) * Nn + j] = Bv[r][j];
        }
      }
    }
  }
  const angle = ang.map((v) => v - 2 * Math.PI * Math.floor(v / (2 * Math.PI)));
  return { y, ssm, angle, xl, Bl: bl };
}

Deno.test("layers: Mamba-3 MIMO (rank 2) matches its float64 loop; prefill = decode", async () => {
  const seed = freshSeed(), next = rng(seed);
  const { b, t, h, p, n, m, r: R } = MS;
  const r = (len: number, lo = -1, hi = 1) => randomArray(len, next, lo, hi);
  const data = {
    x: r(b * t * h * p),
    z: r(b * t * h * p),
    B: r(b * t * R * n),
    C: r(b * t * R * n),
    dt: r(b * t * h, -3, 0.5),
    a: r(b * t * h, -3, 3),
    trap: r(b * t * h, -2, 2),
    theta: r(b * t * m, -2, 2),
    dtBias: r(h, -0.5, 0.5),
    D: r(h),
    normB: r(n, 0.5, 1.5),
    normC: r(n, 0.5, 1.5),
    biasB: r(h * R * n, 0.5, 1.5),
    biasC: r(h * R * n, 0.5, 1.5),
    mimoV: r(h * R * p),
    mimoZ: r(h * R * p),
    mimoO: r(h * R * p),
    ssm0: r(b * h * p * n),
    angle0: r(b * h * m, -3, 3),
    x0: r(b * h * p),
    B0: r(b * h * R * n),
  };
  const want = mimoLoop(data);
  const fn = (x: { [K in keyof typeof MIMO]: Tensor<(typeof MIMO)[K]> }) => {
    const init = { ssm: x.ssm0, angle: x.angle0, x: x.x0, B: x.B0 };
    const o = mamba3Mimo(x, x, init);
    return { y: o.y, ssm: o.state.ssm, angle: o.state.angle, xl: o.state.x, Bl: o.state.B };
  };
  const what = `Mamba-3 MIMO, seed ${seed}`;
  const kernels = await checkLayer(what, MIMO, fn, MS, data, want);
  console.log(`Mamba-3 MIMO: ${kernels.length} kernels: ${kernels.join(", ")}`);
  const timed = ["x", "z", "B", "C", "dt", "a", "trap", "theta"];
  const state = { ssm: "ssm0", angle: "angle0", xl: "x0", Bl: "B0" };
  await checkDecode(what, MIMO, fn, MS, data, timed, state, "y", want.y, 5);
});
