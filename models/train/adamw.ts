/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Algorithm 2) as a DSL
 * function: one optimizer step over a record of parameters, their gradients and the two
 * moment estimates, with global gradient-norm clipping. Being ordinary traced ops, it compiles
 * into the same program as the loss and its gradients, or alone; with
 * {@link ResidentProgram} the parameters and moments stay on the device and are updated in
 * place (every new value is an elementwise function of the old one).
 *
 * The learning rate and the two bias corrections are scalar program inputs, so a schedule is
 * host data (see {@link adamwScalars}), never a recompile. With lr = α·η_t, one step is
 *
 *     c  = min(1, maxGradNorm / (‖g‖ + 1e-6))      (global clipping; c = 1 without it)
 *     m ← β₁·m + (1 − β₁)·c·g
 *     v ← β₂·v + (1 − β₂)·(c·g)²
 *     θ ← θ − lr·( m / (1 − β₁ᵗ) / (√(v / (1 − β₂ᵗ)) + ε) + λ·θ )
 *
 * the paper's update with its decay coefficient λ_paper = α·λ, i.e. PyTorch's `AdamW`
 * convention (weight decay scaled by the learning rate, applied to the old θ, outside the
 * moments: that is what "decoupled" means). ‖g‖ is the L2 norm over every gradient together.
 *
 * @module
 */

import { showAxes } from "../../dsl/axes.ts";
import { add, div, minimum, mul, sqrt, sub } from "../../dsl/elementwise.ts";
import { sum } from "../../dsl/reduce.ts";
import type { Tensor } from "../../dsl/tensor.ts";

/** Hyperparameters fixed at compile time. */
export interface AdamWOptions {
  /** Decay of the first moment (default 0.9). */
  beta1?: number;
  /** Decay of the second moment (default 0.999). */
  beta2?: number;
  /** Added to √v̂ (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay λ, multiplied by the step's learning rate (default 0.01). */
  weightDecay?: number;
  /** Which parameters are decayed (default: all; biases and norm weights are often not). */
  decays?: (name: string) => boolean;
  /** Clip the global gradient norm to this (default: no clipping). */
  maxGradNorm?: number;
}

/** A record of tensors by parameter name. */
export type TensorRecord = Record<string, Tensor>;

/** What one step reads: parameters, gradients and moments, each with the parameters' keys. */
export interface AdamWState<P extends TensorRecord> {
  /** The parameters θ. */
  params: P;
  /** Their gradients. */
  grads: P;
  /** First-moment estimates (zeros before the first step). */
  m: P;
  /** Second-moment estimates (zeros before the first step). */
  v: P;
}

/** The per-step scalars (tensors with no axes), computed on the host by {@link adamwScalars}. */
export interface AdamWScalarInputs {
  /** The learning rate of this step. */
  lr: Tensor<"">;
  /** 1 − β₁ᵗ. */
  bc1: Tensor<"">;
  /** 1 − β₂ᵗ. */
  bc2: Tensor<"">;
}

/** One step's result: the new parameters and moments, and the global gradient norm before clipping. */
export interface AdamWResult<P extends TensorRecord> {
  /** The updated parameters. */
  params: P;
  /** The updated first moments. */
  m: P;
  /** The updated second moments. */
  v: P;
  /** ‖g‖₂ over every gradient, before clipping. */
  gradNorm: Tensor<"">;
}

/** The options with their defaults, checked. */
export function adamwDefaults(options: AdamWOptions = {}): Required<AdamWOptions> {
  const o = {
    beta1: options.beta1 ?? 0.9,
    beta2: options.beta2 ?? 0.999,
    eps: options.eps ?? 1e-8,
    weightDecay: options.weightDecay ?? 0.01,
    decays: options.decays ?? (() => true),
    maxGradNorm: options.maxGradNorm ?? Infinity,
  };
  for (const k of ["beta1", "beta2"] as const) {
    if (!(o[k] >= 0 && o[k] < 1)) throw new Error(`adamw: ${k} must be in [0, 1), got ${o[k]}`);
  }
  if (!(o.eps > 0)) throw new Error(`adamw: eps must be positive, got ${o.eps}`);
  if (!(o.weightDecay >= 0 && Number.isFinite(o.weightDecay))) {
    throw new Error(`adamw: weightDecay must be a finite number ≥ 0, got ${o.weightDecay}`);
  }
  if (!(o.maxGradNorm > 0)) {
    throw new Error(
      `adamw: maxGradNorm must be positive (Infinity: no clipping), got ${o.maxGradNorm}`,
    );
  }
  return o;
}

/** One AdamW step as traced ops (see the module documentation for the formula). */
export function adamw<P extends TensorRecord>(
  state: AdamWState<P>,
  scalars: AdamWScalarInputs,
  options: AdamWOptions = {},
): AdamWResult<P> {
  const o = adamwDefaults(options);
  const names = checkState(state);
  for (const k of ["lr", "bc1", "bc2"] as const) {
    const t = scalars[k];
    if (!t || t.axes.length !== 0) {
      throw new Error(`adamw: scalar input ${k} must be a tensor with no axes, got ${t}`);
    }
  }
  const gradNorm = sqrt(sumOfSquares(names.map((k) => state.grads[k] as Tensor))) as Tensor<"">;
  const clip: Tensor | number = Number.isFinite(o.maxGradNorm)
    ? minimum(1, div(o.maxGradNorm, add(gradNorm, 1e-6)))
    : 1;
  const params: TensorRecord = {}, m: TensorRecord = {}, v: TensorRecord = {};
  for (const k of names) {
    const g = clip === 1 ? state.grads[k] as Tensor : mul(state.grads[k] as Tensor, clip);
    const m1 = add(mul(state.m[k] as Tensor, o.beta1), mul(g, 1 - o.beta1));
    const v1 = add(mul(state.v[k] as Tensor, o.beta2), mul(mul(g, g), 1 - o.beta2));
    const mHat = div(m1, scalars.bc1);
    const vHat = div(v1, scalars.bc2);
    let update: Tensor = div(mHat, add(sqrt(vHat), o.eps));
    const p: Tensor = state.params[k];
    if (o.weightDecay > 0 && o.decays(k)) update = add(update, mul(p, o.weightDecay));
    params[k] = sub(p, mul(scalars.lr, update));
    m[k] = m1;
    v[k] = v1;
  }
  return { params: params as P, m: m as P, v: v as P, gradNorm };
}

/**
 * Σ g² over every gradient: one full sum per gradient, added in a balanced tree. Code
 * generation computes such a scalar of full sums as partial sums of all the gradients (as few
 * kernels as the device's binding limit allows) and one small kernel adding them
 * (`codegen/horizontal_plan.ts`), so no kernel binds every gradient.
 */
function sumOfSquares(grads: readonly Tensor[]): Tensor {
  let terms: Tensor[] = grads.map((g) => {
    const sq: Tensor = mul(g, g);
    return g.axes.length === 0 ? sq : sum(sq, g.axes.join(" "));
  });
  while (terms.length > 1) {
    const next: Tensor[] = [];
    for (let i = 0; i < terms.length; i += 2) {
      next.push(i + 1 < terms.length ? add(terms[i], terms[i + 1]) : terms[i]);
    }
    terms = next;
  }
  return terms[0];
}

/** Checks that the four records have the same keys and each key the same axes and sizes. */
function checkState(state: AdamWState<TensorRecord>): string[] {
  const names = Object.keys(state.params);
  if (names.length === 0) throw new Error("adamw: no parameters");
  for (const part of ["grads", "m", "v"] as const) {
    const rec = state[part];
    const keys = Object.keys(rec ?? {});
    const missing = names.find((k) => !keys.includes(k));
    const extra = keys.find((k) => !names.includes(k));
    if (missing !== undefined) throw new Error(`adamw: ${part} has no "${missing}"`);
    if (extra !== undefined) throw new Error(`adamw: ${part} has "${extra}", which params lacks`);
    for (const k of names) {
      const p = state.params[k], t = rec[k];
      const same = t.axes.length === p.axes.length &&
        p.axes.every((a) => t.axes.includes(a) && t.size(a) === p.size(a));
      if (!same) {
        throw new Error(
          `adamw: ${part}["${k}"] ${showAxes(t.axes)} (${t.shape.join("×")}) does not match ` +
            `the parameter ${showAxes(p.axes)} (${p.shape.join("×")})`,
        );
      }
    }
  }
  return names;
}

/**
 * The scalar inputs of step `step` (1, 2, …) with learning rate `lr`, in float64 then rounded
 * to f32: 1 − βᵗ is computed as −expm1(t·ln β), exact where 1 − βᵗ is small (β₂ = 0.999 at
 * t = 1 gives 0.001; β₂ᵗ rounded to f32 first would be off by 6e-5 of it).
 */
export function adamwScalars(
  step: number,
  lr: number,
  options: AdamWOptions = {},
): { lr: Float32Array; bc1: Float32Array; bc2: Float32Array } {
  const o = adamwDefaults(options);
  if (!Number.isInteger(step) || step < 1) {
    throw new Error(`adamwScalars: step must be an integer ≥ 1, got ${step}`);
  }
  if (!(lr >= 0 && Number.isFinite(lr))) {
    throw new Error(`adamwScalars: lr must be a finite number ≥ 0, got ${lr}`);
  }
  const correction = (beta: number) => beta === 0 ? 1 : -Math.expm1(step * Math.log(beta));
  return {
    lr: Float32Array.of(lr),
    bc1: Float32Array.of(correction(o.beta1)),
    bc2: Float32Array.of(correction(o.beta2)),
  };
}

/**
 * Input declarations for a standalone AdamW program over parameters with the given axes:
 * each parameter `k` with `grad.k`, `m.k` and `v.k`, plus the scalars `lr`, `bc1`, `bc2`.
 */
export function adamwInputs(params: Record<string, string>): Record<string, string> {
  const spec: Record<string, string> = { lr: "", bc1: "", bc2: "" };
  for (const [k, axes] of Object.entries(params)) {
    if (k in spec) throw new Error(`adamwInputs: parameter name "${k}" is reserved`);
    spec[k] = axes;
    spec[`grad.${k}`] = axes;
    spec[`m.${k}`] = axes;
    spec[`v.${k}`] = axes;
  }
  return spec;
}

/**
 * Flattens a step's result into program outputs named like {@link adamwInputs}' inputs
 * (`k`, `m.k`, `v.k`, and `gradNorm`).
 */
export function adamwOutputs(result: AdamWResult<TensorRecord>): Record<string, Tensor> {
  const out: Record<string, Tensor> = { gradNorm: result.gradNorm };
  for (const k of Object.keys(result.params)) {
    out[k] = result.params[k];
    out[`m.${k}`] = result.m[k];
    out[`v.${k}`] = result.v[k];
  }
  return out;
}

/** The in-place pairs (output → input) of {@link adamwOutputs} for `ResidentProgram`'s `state`. */
export function adamwState(names: readonly string[]): Record<string, string> {
  const state: Record<string, string> = {};
  for (const k of names) {
    state[k] = k;
    state[`m.${k}`] = `m.${k}`;
    state[`v.${k}`] = `v.${k}`;
  }
  return state;
}

/** Reads a standalone AdamW program's inputs (see {@link adamwInputs}) as an {@link AdamWState}. */
export function adamwStateOf(
  t: Record<string, Tensor>,
  names: readonly string[],
): AdamWState<TensorRecord> {
  const pick = (prefix: string) => Object.fromEntries(names.map((k) => [k, t[prefix + k]]));
  return { params: pick(""), grads: pick("grad."), m: pick("m."), v: pick("v.") };
}
