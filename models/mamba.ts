/**
 * The Mamba-1 language model (HF `MambaForCausalLM`) in the DSL: embedding lookup, residual
 * blocks x + mixer(RMSNorm(x)), final RMSNorm, LM head (tied to the embedding or not).
 * One definition serves prefill (whole prompt) and decode (one token with cached state).
 *
 * @module
 */

import { type ModelTrunk, withLogits } from "./lm_head.ts";
import { add } from "../dsl/elementwise.ts";
import { rmsnorm } from "../dsl/reduce.ts";
import { pick } from "../dsl/scan.ts";
import { expectAxes, type Tensor } from "../dsl/tensor.ts";
import type { InputDecl } from "../dsl/trace.ts";
import { gather } from "../dsl/views.ts";
import {
  MAMBA_MIXER_PARAMS,
  mambaMixer,
  type MambaMixerDims,
  type MambaMixerParams,
  mambaMixerParams,
  mambaMixerSizes,
} from "./mamba_mixer.ts";
import {
  ConfigFields,
  CONV_KERNEL_BOUNDS,
  innerWidth,
  LAYER_BOUNDS,
} from "./checkpoint/config_fields.ts";

/** A Mamba-1 model's configuration (from HF config.json). */
export interface MambaConfig extends MambaMixerDims {
  modelType: "mamba";
  layers: number;
  vocab: number;
  tied: boolean;
  eps: number;
  /** End-of-sequence token ids (`eos_token_id`: one id or a list; empty when none). */
  eosTokenIds: number[];
  /** The first of {@link eosTokenIds} (kept for callers that stop at one token). */
  eosTokenId?: number;
}

/**
 * Reads HF's config.json fields into a {@link MambaConfig}, refusing any value that would run
 * a different model than HF's (see {@link ConfigFields}).
 *
 * @param c The parsed config.json.
 * @param source The file's name for error messages.
 * @throws Error naming the file and the field on a missing, mistyped or out-of-range value.
 */
export function mambaConfigFromHF(
  c: Record<string, unknown>,
  source = "config.json",
): MambaConfig {
  const f = new ConfigFields(c, source);
  if (f.flag("use_bias", false)) {
    f.error("use_bias=true (projection biases) is not supported");
  }
  if (!f.flag("use_conv_bias", true)) f.error("use_conv_bias=false is not supported");
  f.choice("hidden_act", ["silu"], "silu");
  const hidden = f.size("hidden_size");
  const rank = f.raw("time_step_rank") === "auto" || !f.has("time_step_rank")
    ? Math.ceil(hidden / 16)
    : f.size("time_step_rank", undefined, { why: 'or "auto"' });
  const vocab = f.size("vocab_size");
  const eosTokenIds = f.tokenIds("eos_token_id", vocab);
  return {
    modelType: "mamba",
    hidden,
    inner: f.has("intermediate_size") ? f.size("intermediate_size") : innerWidth(f, hidden),
    state: f.size("state_size", 16),
    dtRank: rank,
    convKernel: f.size("conv_kernel", 4, CONV_KERNEL_BOUNDS),
    layers: f.size("num_hidden_layers", undefined, LAYER_BOUNDS),
    vocab,
    tied: f.flag("tie_word_embeddings", true),
    eps: f.positive("layer_norm_epsilon", 1e-5),
    eosTokenIds,
    eosTokenId: eosTokenIds[0],
  };
}

const MIXER_HF_NAMES: Record<keyof MambaMixerParams, string> = {
  in_proj: "mixer.in_proj.weight",
  conv_w: "mixer.conv1d.weight",
  conv_b: "mixer.conv1d.bias",
  x_proj: "mixer.x_proj.weight",
  dt_proj_w: "mixer.dt_proj.weight",
  dt_proj_b: "mixer.dt_proj.bias",
  A_log: "mixer.A_log",
  D: "mixer.D",
  out_proj: "mixer.out_proj.weight",
};

/** Input declarations of all weights, named as in the HF checkpoint. */
export function mambaWeightInputs(cfg: MambaConfig): Record<string, InputDecl> {
  const inputs: Record<string, InputDecl> = {
    "backbone.embeddings.weight": "v m",
    "backbone.norm_f.weight": "m",
  };
  if (!cfg.tied) inputs["lm_head.weight"] = "v m";
  for (let i = 0; i < cfg.layers; i++) {
    inputs[`backbone.layers.${i}.norm.weight`] = "m";
    for (const [key, hf] of Object.entries(MIXER_HF_NAMES)) {
      inputs[`backbone.layers.${i}.${hf}`] = MAMBA_MIXER_PARAMS[key as keyof MambaMixerParams];
    }
  }
  return inputs;
}

/** Input declarations of the decode caches: conv window and SSM state per layer. */
export function mambaCacheInputs(cfg: MambaConfig): Record<string, InputDecl> {
  const inputs: Record<string, InputDecl> = {};
  for (let i = 0; i < cfg.layers; i++) {
    inputs[`cache.${i}.conv`] = "b s d";
    inputs[`cache.${i}.ssm`] = "b d n";
  }
  return inputs;
}

/** Axis sizes of a model run with batch `b` and `l` tokens. */
export function mambaSizes(cfg: MambaConfig, b: number, l: number): Record<string, number> {
  return { ...mambaMixerSizes(cfg), v: cfg.vocab, b, l };
}

/** What a forward pass returns. */
export interface MambaOutputs {
  /** Logits (b l v), or only the last position's (b v) with `lastOnly`. */
  logits: Tensor;
  /** The next caches, per layer: `cache.i.conv` and `cache.i.ssm`. */
  [cache: string]: Tensor;
}

/**
 * The forward pass on token ids (b l, i32). With `cached`, continues from the caches given
 * as inputs (see {@link mambaCacheInputs}); `lastOnly` keeps only the last position's logits.
 */
export function mambaForward(
  t: Record<string, Tensor>,
  cfg: MambaConfig,
  options: { cached?: boolean; lastOnly?: boolean } = {},
): MambaOutputs {
  return withLogits(mambaTrunk(t, cfg, options));
}

/** {@link mambaForward} up to the LM head: the final-norm features, the head and the caches. */
export function mambaTrunk(
  t: Record<string, Tensor>,
  cfg: MambaConfig,
  options: { cached?: boolean; lastOnly?: boolean } = {},
): ModelTrunk {
  const w = (name: string) => {
    const x = t[name];
    if (!x) throw new Error(`internal: no input ${name}`);
    return x;
  };
  const embed = w("backbone.embeddings.weight");
  let x = expectAxes(gather(embed, w("ids"), "v"), "b l m");
  const out: Record<string, Tensor> = {};
  for (let i = 0; i < cfg.layers; i++) {
    const pre = `backbone.layers.${i}.`;
    const params = mambaMixerParams((key) => w(pre + MIXER_HF_NAMES[key]));
    const cache = options.cached
      ? {
        conv: expectAxes(w(`cache.${i}.conv`), "b s d"),
        ssm: expectAxes(w(`cache.${i}.ssm`), "b d n"),
      }
      : undefined;
    const normed = rmsnorm(x, "m", w(`${pre}norm.weight`), cfg.eps);
    const mixed = mambaMixer(normed, params, cfg, cache);
    x = add(x, mixed.out);
    out[`cache.${i}.conv`] = mixed.cache.conv;
    out[`cache.${i}.ssm`] = mixed.cache.ssm;
  }
  const head = cfg.tied ? embed : w("lm_head.weight");
  const last = options.lastOnly ? pick(x, "l", -1) : x;
  const features = rmsnorm(last, "m", w("backbone.norm_f.weight"), cfg.eps);
  return { caches: out, features, head };
}
