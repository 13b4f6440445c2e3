/**
 * The Mamba-2 language model (HF `Mamba2ForCausalLM`) in the DSL: embedding, residual blocks
 * x + mixer(RMSNorm(x)) with the SSD mixer, final RMSNorm, LM head. Prefill and decode share
 * this definition; the compiler picks the chunked SSD or the recurrent kernel per shape.
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
  MAMBA2_MIXER_PARAMS,
  mamba2Mixer,
  type Mamba2MixerDims,
  mamba2MixerParams,
  mamba2MixerSizes,
} from "./mamba2_mixer.ts";

/** A Mamba-2 model's configuration (from HF config.json). */
export interface Mamba2Config extends Mamba2MixerDims {
  modelType: "mamba2";
  layers: number;
  vocab: number;
  tied: boolean;
  eps: number;
  eosTokenId?: number;
}

/** Reads HF's config.json fields into a {@link Mamba2Config}. */
export function mamba2ConfigFromHF(c: Record<string, unknown>): Mamba2Config {
  const num = (k: string, fallback?: number): number => {
    const v = c[k] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new Error(`config.json: "${k}" must be a number, got ${JSON.stringify(c[k])}`);
    }
    return v;
  };
  if (c.use_bias === true) throw new Error("config.json: use_bias=true is not supported");
  if (c.use_conv_bias === false) {
    throw new Error("config.json: use_conv_bias=false is not supported");
  }
  if (c.rms_norm === false) throw new Error("config.json: rms_norm=false is not supported");
  if (c.norm_before_gate === true) {
    throw new Error("config.json: norm_before_gate=true is not supported");
  }
  const limit = c.time_step_limit;
  if (Array.isArray(limit) && (limit[0] !== 0 || limit[1] !== Infinity)) {
    throw new Error(`config.json: time_step_limit ${JSON.stringify(limit)} is not supported`);
  }
  const hidden = num("hidden_size");
  const heads = num("num_heads");
  const headDim = num("head_dim", 64);
  const inner = num("expand", 2) * hidden;
  if (heads * headDim !== inner) {
    throw new Error(
      `config.json: num_heads × head_dim = ${heads * headDim} differs from expand × hidden_size ` +
        `= ${inner}`,
    );
  }
  return {
    modelType: "mamba2",
    hidden,
    heads,
    headDim,
    state: num("state_size", 128),
    groups: num("n_groups", 1),
    convKernel: num("conv_kernel", 4),
    eps: num("layer_norm_epsilon", 1e-5),
    layers: num("num_hidden_layers"),
    vocab: num("vocab_size"),
    tied: c.tie_word_embeddings === true,
    eosTokenId: typeof c.eos_token_id === "number" ? c.eos_token_id : undefined,
  };
}

/** Input declarations of all weights, named as in the HF checkpoint. */
export function mamba2WeightInputs(cfg: Mamba2Config): Record<string, InputDecl> {
  const inputs: Record<string, InputDecl> = {
    "backbone.embeddings.weight": "v m",
    "backbone.norm_f.weight": "m",
  };
  if (!cfg.tied) inputs["lm_head.weight"] = "v m";
  for (let i = 0; i < cfg.layers; i++) {
    inputs[`backbone.layers.${i}.norm.weight`] = "m";
    for (const [name, axes] of Object.entries(MAMBA2_MIXER_PARAMS)) {
      inputs[`backbone.layers.${i}.mixer.${name}`] = axes;
    }
  }
  return inputs;
}

/** Decode caches: conv window over the xBC channels and the SSM state, per layer. */
export function mamba2CacheInputs(cfg: Mamba2Config): Record<string, InputDecl> {
  const inputs: Record<string, InputDecl> = {};
  for (let i = 0; i < cfg.layers; i++) {
    inputs[`cache.${i}.conv`] = "b s c";
    inputs[`cache.${i}.ssm`] = "b g r p n";
  }
  return inputs;
}

/** Axis sizes of a run with batch `b` and `l` tokens. */
export function mamba2Sizes(cfg: Mamba2Config, b: number, l: number): Record<string, number> {
  return {
    ...mamba2MixerSizes(cfg),
    v: cfg.vocab,
    b,
    l,
    s: cfg.convKernel - 1,
    g: cfg.groups,
    r: cfg.heads / cfg.groups,
    p: cfg.headDim,
    n: cfg.state,
  };
}

/** The forward pass on token ids (b l, i32); see `mambaForward` for the options. */
export function mamba2Forward(
  t: Record<string, Tensor>,
  cfg: Mamba2Config,
  options: { cached?: boolean; lastOnly?: boolean } = {},
): { logits: Tensor } & Record<string, Tensor> {
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
    const params = mamba2MixerParams((name) => w(`${pre}mixer.${name}`));
    const cache = options.cached
      ? {
        conv: expectAxes(w(`cache.${i}.conv`), "b s c"),
        ssm: expectAxes(w(`cache.${i}.ssm`), "b g r p n"),
      }
      : undefined;
    const mixed = mamba2Mixer(rmsnorm(x, "m", w(`${pre}norm.weight`), cfg.eps), params, cfg, cache);
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
