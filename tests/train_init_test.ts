// initParams: every weight a config declares, keyed by checkpoint name, with the documented
// initialisation (HF _init_weights / mamba_ssm): exact values where they are fixed (A_log, D,
// norms), ranges and moments where they are drawn, the same values for the same seed.
import assert from "node:assert/strict";
import { modelDefinitionFor } from "../models/definitions.ts";
import { dtBias, initParams, normal, Random } from "../models/train/init.ts";

const MAMBA = {
  model_type: "mamba",
  hidden_size: 48,
  intermediate_size: 96,
  state_size: 6,
  num_hidden_layers: 3,
  vocab_size: 37,
  time_step_rank: 5,
  conv_kernel: 4,
  tie_word_embeddings: false,
};
const MAMBA2 = {
  model_type: "mamba2",
  hidden_size: 32,
  expand: 2,
  num_heads: 8,
  head_dim: 8,
  state_size: 16,
  n_groups: 2,
  num_hidden_layers: 2,
  vocab_size: 29,
  conv_kernel: 4,
};

const softplus = (x: number) => Math.log1p(Math.exp(x));
const within = (a: Float32Array, lo: number, hi: number) => a.every((x) => x >= lo && x <= hi);
const std = (a: Float32Array) => {
  const m = a.reduce((s, x) => s + x, 0) / a.length;
  return Math.sqrt(a.reduce((s, x) => s + (x - m) ** 2, 0) / a.length);
};

Deno.test("initParams (mamba): names, shapes and the documented values", () => {
  const p = initParams(MAMBA, { seed: 5 });
  const def = modelDefinitionFor(MAMBA, "test");
  assert.deepEqual(Object.keys(p).sort(), def.weightShapes().map(([n]) => n).sort());
  for (const [name, shape] of def.weightShapes()) {
    assert.equal(p[name].length, shape.reduce((a, b) => a * b, 1), name);
  }
  const layer = "backbone.layers.1.";
  const aLog = p[`${layer}mixer.A_log`];
  for (let c = 0; c < 96; c++) {
    for (let s = 0; s < 6; s++) assert.equal(aLog[c * 6 + s], Math.fround(Math.log(s + 1)));
  }
  assert.ok(p[`${layer}mixer.D`].every((x) => x === 1));
  assert.ok(p[`${layer}norm.weight`].every((x) => x === 1));
  assert.ok(p["backbone.norm_f.weight"].every((x) => x === 1));
  const dt = [...p[`${layer}mixer.dt_proj.bias`]].map(softplus);
  assert.ok(dt.every((x) => x >= 1e-3 * 0.999 && x <= 0.1 * 1.001), "softplus(dt bias) in range");
  assert.ok(within(p[`${layer}mixer.dt_proj.weight`], -1 / Math.sqrt(5), 1 / Math.sqrt(5)));
  assert.ok(within(p[`${layer}mixer.in_proj.weight`], -1 / Math.sqrt(48), 1 / Math.sqrt(48)));
  assert.ok(within(p[`${layer}mixer.x_proj.weight`], -1 / Math.sqrt(96), 1 / Math.sqrt(96)));
  assert.ok(within(p[`${layer}mixer.conv1d.weight`], -0.5, 0.5), "1/√taps");
  assert.ok(within(p[`${layer}mixer.conv1d.bias`], -0.5, 0.5));
  const outBound = 1 / Math.sqrt(96) / Math.sqrt(3);
  const out = p[`${layer}mixer.out_proj.weight`];
  assert.ok(within(out, -outBound, outBound), "out_proj rescaled by 1/√layers");
  assert.ok(Math.max(...out.map(Math.abs)) > 0.9 * outBound, "and fills its range");
  const emb = std(p["backbone.embeddings.weight"]);
  assert.ok(Math.abs(emb - 0.02) < 0.002, `embedding std ${emb}`);
  assert.ok(within(p["lm_head.weight"], -1 / Math.sqrt(48), 1 / Math.sqrt(48)), "untied head");
  assert.deepEqual(initParams(MAMBA, { seed: 5 }), p, "same seed, same values");
  assert.notDeepEqual(
    initParams(MAMBA, { seed: 6 })[`${layer}mixer.in_proj.weight`],
    p[`${layer}mixer.in_proj.weight`],
  );
});

Deno.test("initParams (mamba2): per-head A_log, D, dt bias; names and shapes", () => {
  const p = initParams(MAMBA2, { seed: 1, dtMin: 0.01, dtMax: 0.05 });
  const def = modelDefinitionFor(MAMBA2, "test");
  assert.deepEqual(Object.keys(p).sort(), def.weightShapes().map(([n]) => n).sort());
  for (const [name, shape] of def.weightShapes()) {
    assert.equal(p[name].length, shape.reduce((a, b) => a * b, 1), name);
  }
  const m = "backbone.layers.0.mixer.";
  assert.deepEqual(
    [...p[`${m}A_log`]],
    [1, 2, 3, 4, 5, 6, 7, 8].map((h) => Math.fround(Math.log(h))),
  );
  assert.ok(p[`${m}D`].every((x) => x === 1));
  assert.ok(p[`${m}norm.weight`].every((x) => x === 1));
  const dt = [...p[`${m}dt_bias`]].map(softplus);
  assert.ok(dt.every((x) => x >= 0.01 * 0.999 && x <= 0.05 * 1.001), `dt ${dt}`);
});

Deno.test("init helpers: dtBias inverts softplus, normal has its moments, bad types fail", () => {
  const r = new Random(3);
  const bias = dtBias(1000, r, 1e-3, 0.1);
  const dt = [...bias].map(softplus);
  assert.ok(Math.min(...dt) < 2e-3 && Math.max(...dt) > 0.05, "log-uniform spread over the range");
  const x = normal(20000, new Random(9), 2, 1);
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  assert.ok(Math.abs(mean - 1) < 0.05 && Math.abs(std(x) - 2) < 0.05, `${mean} ${std(x)}`);
  assert.throws(
    () => initParams({ model_type: "gpt2" }),
    /initParams: unsupported model_type "gpt2"/,
  );
});
