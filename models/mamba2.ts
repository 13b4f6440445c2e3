/**
 * The Mamba-2 language model (HF `Mamba2ForCausalLM`) in the DSL: embedding, residual blocks
 * x + mixer(RMSNorm(x)) with the SSD mixer, final RMSNorm, LM head. Prefill and decode share
 * this definition; the compiler picks the chunked SSD or the recurrent kernel per shape.
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
  MAMBA2_MIXER_PARAMS,
  mamba2Mixer,
  type Mamba2MixerDims,
  mamba2MixerParams,
  mamba2MixerSizes,
} from "./mamba2_mixer.ts";
import {
  ConfigFields,
  CONV_KERNEL_BOUNDS,
  innerWidth,
  LAYER_BOUNDS,
} from "./checkpoint/config_fields.ts";

/** A Mamba-2 model's configuration (from HF config.json). */
export interface Mamba2Config extends Mamba2MixerDims {
  modelType: "mamba2";
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
 * Reads HF's config.json fields into a {@link Mamba2Config}, refusing any value that would run
 * a different model than HF's (see {@link ConfigFields}).
 *
 * @param c The parsed config.json.
 * @param source The file's name for error messages.
 * @throws Error naming the file and the field on a missing, mistyped or out-of-range value.
 */
export function mamba2ConfigFromHF(
  c: Record<string, unknown>,
  source = "config.json",
): Mamba2Config {
  const f = new ConfigFields(c, source);
  if (f.flag("use_bias", false)) f.error("use_bias=true is not supported");
  if (!f.flag("use_conv_bias", true)) f.error("use_conv_bias=false is not supported");
  if (!f.flag("rms_norm", true)) f.error("rms_norm=false is not supported");
  if (f.flag("norm_before_gate", false)) f.error("norm_before_gate=true is not supported");
  f.choice("hidden_act", ["silu"], "silu");
  checkTimeStepLimit(f);
  const hidden = f.size("hidden_size");
  const heads = f.size("num_heads");
  const headDim = f.size("head_dim", 64);
  const groups = f.size("n_groups", 1);
  const inner = innerWidth(f, hidden);
  if (heads * headDim !== inner) {
    f.error(
      `num_heads × head_dim = ${heads * headDim} differs from expand × hidden_size = ${inner}`,
    );
  }
  if (heads % groups !== 0) f.error(`n_groups = ${groups} does not divide num_heads = ${heads}`);
  const vocab = f.size("vocab_size");
  const eosTokenIds = f.tokenIds("eos_token_id", vocab);
  return {
    modelType: "mamba2",
    hidden,
    heads,
    headDim,
    state: f.size("state_size", 128),
    groups,
    convKernel: f.size("conv_kernel", 4, CONV_KERNEL_BOUNDS),
    eps: f.positive("layer_norm_epsilon", 1e-5),
    layers: f.size("num_hidden_layers", undefined, LAYER_BOUNDS),
    vocab,
    tied: f.flag("tie_word_embeddings", false),
    eosTokenIds,
    eosTokenId: eosTokenIds[0],
  };
}

/**
 * `time_step_limit` clamps dt in HF; only the default `[0, Infinity]` (no clamp) is supported.
 * HF configs spell the infinity as a bare `Infinity` or `{"__float__": "Infinity"}`; both parse
 * to the number.
 */
function checkTimeStepLimit(f: ConfigFields): void {
  if (!f.has("time_step_limit")) return;
  const limit = f.raw("time_step_limit");
  const pair = Array.isArray(limit) && limit.length === 2 &&
    limit.every((v) => typeof v === "number" && !Number.isNaN(v));
  if (!pair) f.fail("time_step_limit", "a pair [min, max] of numbers");
  const [lo, hi] = limit as number[];
  if (lo !== 0 || hi !== Infinity) {
    f.error(
      `time_step_limit [${lo}, ${hi}] is not supported (only [0, Infinity]: dt is not clamped)`,
    );
  }
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
  return withLogits(mamba2Trunk(t, cfg, options));
}

/** {@link mamba2Forward} up to the LM head: the final-norm features, the head and the caches. */
export function mamba2Trunk(
  t: Record<string, Tensor>,
  cfg: Mamba2Config,
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
  const last = options.lastOnly ? pick(x, "l", -1) : x;
  const features = rmsnorm(last, "m", w("backbone.norm_f.weight"), cfg.eps);
  return { caches: out, features, head };
}
