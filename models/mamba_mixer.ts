/**
 * The Mamba-1 mixer (HF `MambaMixer`) in the DSL: in_proj → causal depthwise conv + SiLU →
 * x_proj (dt, B, C) → dt_proj → fused selective scan with D skip and SiLU gate → out_proj.
 * Parameter names follow HF under `backbone.layers.i.mixer.`.
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
import { add, exp, neg, silu } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { conv1d, slice } from "../dsl/views.ts";
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

/** Input declarations of one mixer's parameters (axes: m hidden, d inner, n state, q rank, k taps). */
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
  in_proj: Tensor<"e m">;
  conv_w: Tensor<"d k">;
  conv_b: Tensor<"d">;
  x_proj: Tensor<"r d">;
  dt_proj_w: Tensor<"d q">;
  dt_proj_b: Tensor<"d">;
  A_log: Tensor<"d n">;
  D: Tensor<"d">;
  out_proj: Tensor<"m d">;
}

/** Axis sizes the mixer's inputs need, for `compile`. */
export function mambaMixerSizes(dims: MambaMixerDims): Record<string, number> {
  return {
    m: dims.hidden,
    e: 2 * dims.inner,
    d: dims.inner,
    n: dims.state,
    q: dims.dtRank,
    r: dims.dtRank + 2 * dims.state,
    k: dims.convKernel,
  };
}

/**
 * The mixer on hidden states `hs` (b l m). With `state`, the scan continues from it and the
 * final SSM state is returned (the conv cache is the caller's: see the model definitions).
 */
export function mambaMixer(
  hs: Tensor<"b l m">,
  p: MambaMixerParams,
  dims: MambaMixerDims,
  options: { init?: Tensor<"b d n"> } = {},
): { out: Tensor<"b l m">; state: Tensor } {
  const { inner: d, state: n, dtRank: q } = dims;
  const xz = einsum("b l m, e m -> b l e", hs, p.in_proj);
  const x0 = slice(xz, "e", 0, d, "d") as Tensor<"b l d">;
  const z = slice(xz, "e", d, 2 * d, "d") as Tensor<"b l d">;
  const x = silu(add(conv1d(x0, p.conv_w, "l", "k"), p.conv_b));
  const params = einsum("b l d, r d -> b l r", x, p.x_proj);
  const dtLow = slice(params, "r", 0, q, "q") as Tensor<"b l q">;
  const B = slice(params, "r", q, q + n, "n") as Tensor<"b l n">;
  const C = slice(params, "r", q + n, q + 2 * n, "n") as Tensor<"b l n">;
  const dt = einsum("b l q, d q -> b l d", dtLow, p.dt_proj_w);
  const A = neg(exp(p.A_log));
  const { y, state } = selectiveScan(
    { x, dt, z, B, C, A, D: p.D, dtBias: p.dt_proj_b },
    { init: options.init },
  );
  return { out: einsum("b l d, m d -> b l m", y, p.out_proj), state };
}
