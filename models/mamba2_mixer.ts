/**
 * The Mamba-2 mixer (HF `Mamba2Mixer`) in the DSL: in_proj → (z, xBC, dt); causal depthwise
 * conv over xBC + bias, then SiLU; split into x, B, C; Δ = softplus(dt + dt_bias);
 * A = −exp(A_log); the SSD scan with the D skip; gated RMSNorm rmsnorm(y · silu(z)) over all of
 * d; out_proj. Heads are written as (g r): g groups of r heads sharing B and C, so the scan is
 * the same `scan` as Mamba-1's and the compiler finds the chunked SSD form by itself.
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, neg, silu, softplus } from "../dsl/elementwise.ts";
import { rmsnorm } from "../dsl/reduce.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { expectAxes, type Tensor } from "../dsl/tensor.ts";
import { rearrange, slice } from "../dsl/views.ts";
import { causalConv } from "./causal_conv.ts";

/** Sizes of one Mamba-2 mixer. */
export interface Mamba2MixerDims {
  /** Model width (hidden_size). */
  hidden: number;
  /** Heads (num_heads). */
  heads: number;
  /** Head dimension p (head_dim); inner width d = heads · headDim. */
  headDim: number;
  /** State size n (state_size). */
  state: number;
  /** Groups sharing B and C (n_groups); divides heads. */
  groups: number;
  /** Taps of the causal conv (conv_kernel). */
  convKernel: number;
  /** Epsilon of the gated RMSNorm (layer_norm_epsilon; HF's default 1e-5). */
  eps?: number;
}

/**
 * Axes of one mixer's parameters by HF name (m hidden, e in_proj rows, c conv channels,
 * k taps, h heads, d inner). `conv1d.weight` is HF's [c, 1, k] with the unit axis dropped.
 */
export const MAMBA2_MIXER_PARAMS = {
  "in_proj.weight": "e m",
  "conv1d.weight": "c k",
  "conv1d.bias": "c",
  dt_bias: "h",
  A_log: "h",
  D: "h",
  "norm.weight": "d",
  "out_proj.weight": "m d",
} as const;

/** One mixer's parameter tensors, by HF name. */
export interface Mamba2MixerParams {
  /** Input projection to z, x, B, C and dt [2·d_inner + 2·g·n + h, d_model]. */
  "in_proj.weight": Tensor<"e m">;
  /** Depthwise causal convolution weights over x, B, C [conv channels, kernel]. */
  "conv1d.weight": Tensor<"c k">;
  /** Convolution bias [conv channels]. */
  "conv1d.bias": Tensor<"c">;
  /** Δ's bias per head [h] (added before softplus). */
  dt_bias: Tensor<"h">;
  /** log(−A) per head [h]: the scalar decay is exp(Δ·A) with A = −exp(A_log). */
  A_log: Tensor<"h">;
  /** Skip connection per head [h]. */
  D: Tensor<"h">;
  /** Weight of the gated RMSNorm before the output projection [d_inner]. */
  "norm.weight": Tensor<"d">;
  /** Output projection [d_model, d_inner]. */
  "out_proj.weight": Tensor<"m d">;
}

/**
 * Gathers one mixer's parameters from `get` (a lookup by HF name), checking at trace time that
 * each has the axes {@link MAMBA2_MIXER_PARAMS} gives it.
 */
export function mamba2MixerParams(
  get: (name: keyof Mamba2MixerParams) => Tensor,
): Mamba2MixerParams {
  const param = <K extends keyof Mamba2MixerParams>(name: K) =>
    expectAxes(get(name), MAMBA2_MIXER_PARAMS[name]);
  return {
    "in_proj.weight": param("in_proj.weight"),
    "conv1d.weight": param("conv1d.weight"),
    "conv1d.bias": param("conv1d.bias"),
    dt_bias: param("dt_bias"),
    A_log: param("A_log"),
    D: param("D"),
    "norm.weight": param("norm.weight"),
    "out_proj.weight": param("out_proj.weight"),
  };
}

/** Axis sizes a mixer's inputs need, for `compile`. */
export function mamba2MixerSizes(dims: Mamba2MixerDims): Record<string, number> {
  const d = dims.heads * dims.headDim;
  const c = d + 2 * dims.groups * dims.state;
  if (dims.heads % dims.groups !== 0) {
    throw new Error(`mamba2 mixer: ${dims.groups} groups do not divide ${dims.heads} heads`);
  }
  return {
    m: dims.hidden,
    e: d + c + dims.heads,
    c,
    k: dims.convKernel,
    h: dims.heads,
    d,
  };
}

/** Recurrent state entering a Mamba-2 mixer. */
export interface Mamba2MixerCache {
  /** The last k − 1 conv inputs over the xBC channels (b s c), oldest first. */
  conv: Tensor<"b s c">;
  /** The SSM state (b g r p n). */
  ssm: Tensor<"b g r p n">;
}

/**
 * The mixer on hidden states `hs` (b l m). Without `cache`, a sequence from zero state; with
 * it, a continuation (decode when l = 1). Returns the output (b l m), the final SSM state and
 * the next cache.
 */
export function mamba2Mixer(
  hs: Tensor<"b l m">,
  p: Mamba2MixerParams,
  dims: Mamba2MixerDims,
  cache?: Mamba2MixerCache,
): { out: Tensor<"b l m">; state: Tensor; cache: { conv: Tensor; ssm: Tensor } } {
  const { heads: h, headDim: hp, state: n, groups: g } = dims;
  const d = h * hp;
  const gn = g * n;
  const zxbcdt = einsum("b l m, e m -> b l e", hs, p["in_proj.weight"]);
  const z = slice(zxbcdt, "e", 0, d, "d");
  const xbc0 = slice(zxbcdt, "e", d, 2 * d + 2 * gn, "c");
  const dtRaw = slice(zxbcdt, "e", 2 * d + 2 * gn, 2 * d + 2 * gn + h, "h");
  const conv = causalConv(xbc0, p["conv1d.weight"], "c", cache?.conv);
  const xbc = silu(add(conv.conv, p["conv1d.bias"]));
  // Heads as (g r): head index = group · r + r-th head of the group (HF's repeat_interleave).
  const x = rearrange(slice(xbc, "c", 0, d, "d"), "b l (g r p) -> b l g r p", { g, p: hp });
  const B = rearrange(slice(xbc, "c", d, d + gn, "cb"), "b l (g n) -> b l g n", { g });
  const C = rearrange(slice(xbc, "c", d + gn, d + 2 * gn, "cc"), "b l (g n) -> b l g n", { g });
  const perHead = (t: Tensor) => rearrange(t, "(g r) -> g r", { g });
  const dt = rearrange(dtRaw, "b l (g r) -> b l g r", { g });
  const delta = softplus(add(dt, perHead(p.dt_bias)));
  const A = neg(exp(perHead(p.A_log)));
  const hState = scan(
    "l",
    exp(mul(delta, A)),
    einsum("b l g r, b l g r p, b l g n -> b l g r p n", delta, x, B),
    { init: cache?.ssm },
  );
  const y = add(einsum("b l g r p n, b l g n -> b l g r p", hState, C), mul(perHead(p.D), x));
  // The gate in the heads' layout, so the scan kernel applies it in its epilogue.
  const zh = rearrange(z, "b l (g r p) -> b l g r p", { g, p: hp });
  const yd = rearrange(mul(y, silu(zh)), "b l g r p -> b l d=(g r p)");
  const normed = rmsnorm(yd, "d", p["norm.weight"], dims.eps ?? 1e-5);
  const state = finalState(hState);
  return {
    out: einsum("b l d, m d -> b l m", normed, p["out_proj.weight"]),
    state,
    cache: { conv: conv.cache, ssm: state },
  };
}
