/**
 * The Mamba-1 language model (HF `MambaForCausalLM`) in the DSL: embedding lookup, residual
 * blocks x + mixer(RMSNorm(x)), final RMSNorm, LM head (tied to the embedding or not).
 * One definition serves prefill (whole prompt) and decode (one token with cached state).
 *
 * @module
 */

import { einsum } from "../dsl/einsum.ts";
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

/** A Mamba-1 model's configuration (from HF config.json). */
export interface MambaConfig extends MambaMixerDims {
  modelType: "mamba";
  layers: number;
  vocab: number;
  tied: boolean;
  eps: number;
  eosTokenId?: number;
}

/** Reads HF's config.json fields into a {@link MambaConfig}. */
export function mambaConfigFromHF(c: Record<string, unknown>): MambaConfig {
  const num = (k: string, fallback?: number): number => {
    const v = c[k] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new Error(`config.json: "${k}" must be a number, got ${JSON.stringify(c[k])}`);
    }
    return v;
  };
  if (c.use_bias === true) {
    throw new Error("config.json: use_bias=true (projection biases) is not supported");
  }
  if (c.use_conv_bias === false) {
    throw new Error("config.json: use_conv_bias=false is not supported");
  }
  const hidden = num("hidden_size");
  const rank = c.time_step_rank === "auto" || c.time_step_rank === undefined
    ? Math.ceil(hidden / 16)
    : num("time_step_rank");
  return {
    modelType: "mamba",
    hidden,
    inner: num("intermediate_size", num("expand", 2) * hidden),
    state: num("state_size", 16),
    dtRank: rank,
    convKernel: num("conv_kernel", 4),
    layers: num("num_hidden_layers"),
    vocab: num("vocab_size"),
    tied: c.tie_word_embeddings !== false,
    eps: num("layer_norm_epsilon", 1e-5),
    eosTokenId: typeof c.eos_token_id === "number" ? c.eos_token_id : undefined,
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
  const normF = w("backbone.norm_f.weight");
  const logits = options.lastOnly
    ? einsum("b m, v m -> b v", rmsnorm(pick(x, "l", -1), "m", normF, cfg.eps), head)
    : einsum("b l m, v m -> b l v", rmsnorm(x, "m", normF, cfg.eps), head);
  return { ...out, logits };
}
