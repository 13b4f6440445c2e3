/**
 * The Mamba-1 mixer (HF `MambaMixer`) in the DSL: in_proj → causal depthwise conv + SiLU →
 * x_proj (dt, B, C) → dt_proj → fused selective scan with D skip and SiLU gate → out_proj.
 * The same definition serves prefill (a whole sequence, conv over it) and decode (one token,
 * conv over a cached window of the last k − 1 inputs).
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
import { add, exp, neg, silu } from "../dsl/elementwise.ts";
import { expectAxes, type Tensor } from "../dsl/tensor.ts";
import { slice } from "../dsl/views.ts";
import { causalConv } from "./causal_conv.ts";
import { selectiveScan } from "./selective_scan.ts";

/** Sizes of one Mamba-1 mixer. */
export interface MambaMixerDims {
  /** Model width (hidden_size). */
  hidden: number;
  /** Inner width d (intermediate_size). */
  inner: number;
  /** State size n. */
  state: number;
  /** Rank of the dt projection (time_step_rank). */
  dtRank: number;
  /** Taps of the causal conv (conv_kernel). */
  convKernel: number;
}

/** Axes of one mixer's parameters (m hidden, e 2·inner, d inner, n state, q rank, k taps). */
export const MAMBA_MIXER_PARAMS = {
  in_proj: "e m",
  conv_w: "d k",
  conv_b: "d",
  x_proj: "r d",
  dt_proj_w: "d q",
  dt_proj_b: "d",
  A_log: "d n",
  D: "d",
  out_proj: "m d",
} as const;

/** One mixer's parameter tensors. */
export interface MambaMixerParams {
  /** Input projection [2·d_inner, d_model]: x and the gate z. */
  in_proj: Tensor<"e m">;
  /** Depthwise causal convolution weights [d_inner, kernel]. */
  conv_w: Tensor<"d k">;
  /** Convolution bias [d_inner]. */
  conv_b: Tensor<"d">;
  /** Projection of x to Δ (rank r), B and C [r + 2n, d_inner]. */
  x_proj: Tensor<"r d">;
  /** Δ's up-projection [d_inner, dt_rank]. */
  dt_proj_w: Tensor<"d q">;
  /** Δ's bias [d_inner] (added before softplus). */
  dt_proj_b: Tensor<"d">;
  /** log(−A) [d_inner, n]: the decay is exp(Δ·A) with A = −exp(A_log). */
  A_log: Tensor<"d n">;
  /** Skip connection D [d_inner]. */
  D: Tensor<"d">;
  /** Output projection [d_model, d_inner]. */
  out_proj: Tensor<"m d">;
}

/**
 * Gathers one mixer's parameters from `get` (a lookup by parameter name), checking at trace
 * time that each has the axes {@link MAMBA_MIXER_PARAMS} gives it.
 */
export function mambaMixerParams(get: (name: keyof MambaMixerParams) => Tensor): MambaMixerParams {
  const param = <K extends keyof MambaMixerParams>(name: K) =>
    expectAxes(get(name), MAMBA_MIXER_PARAMS[name]);
  return {
    in_proj: param("in_proj"),
    conv_w: param("conv_w"),
    conv_b: param("conv_b"),
    x_proj: param("x_proj"),
    dt_proj_w: param("dt_proj_w"),
    dt_proj_b: param("dt_proj_b"),
    A_log: param("A_log"),
    D: param("D"),
    out_proj: param("out_proj"),
  };
}

/** Axis sizes a mixer's inputs need, for `compile` (s: the k − 1 cached conv inputs). */
export function mambaMixerSizes(dims: MambaMixerDims): Record<string, number> {
  return {
    m: dims.hidden,
    e: 2 * dims.inner,
    d: dims.inner,
    n: dims.state,
    q: dims.dtRank,
    r: dims.dtRank + 2 * dims.state,
    k: dims.convKernel,
    s: dims.convKernel - 1,
  };
}

/** Recurrent state entering a mixer: the conv window and the SSM state. */
export interface MambaMixerCache {
  /** The last k − 1 conv inputs (b s d), oldest first. */
  conv: Tensor<"b s d">;
  /** The SSM state (b d n). */
  ssm: Tensor<"b d n">;
}

/**
 * The mixer on hidden states `hs` (b l m). Without `cache`, a sequence starting from zero
 * state; with it, a continuation (decode when l = 1). Returns the output and the new cache.
 */
export function mambaMixer(
  hs: Tensor<"b l m">,
  p: MambaMixerParams,
  dims: MambaMixerDims,
  cache?: MambaMixerCache,
): { out: Tensor<"b l m">; cache: { conv: Tensor; ssm: Tensor } } {
  const { inner: d, state: n, dtRank: q } = dims;
  const xz = einsum("b l m, e m -> b l e", hs, p.in_proj);
  const x0 = slice(xz, "e", 0, d, "d");
  const z = slice(xz, "e", d, 2 * d, "d");
  const conv = causalConv(x0, p.conv_w, "d", cache?.conv);
  const x = silu(add(conv.conv, p.conv_b));
  const params = einsum("b l d, r d -> b l r", x, p.x_proj);
  const dtLow = slice(params, "r", 0, q, "q");
  const B = slice(params, "r", q, q + n, "n");
  const C = slice(params, "r", q + n, q + 2 * n, "n");
  const dt = einsum("b l q, d q -> b l d", dtLow, p.dt_proj_w);
  const A = neg(exp(p.A_log));
  const { y, state } = selectiveScan(
    { x, dt, z, B, C, A, D: p.D, dtBias: p.dt_proj_b },
    { init: cache?.ssm },
  );
  return {
    out: einsum("b l d, m d -> b l m", y, p.out_proj),
    cache: { conv: conv.cache, ssm: state },
  };
}
