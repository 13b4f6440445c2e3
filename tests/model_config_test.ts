// config.json values that would run a different model than HF's are refused when the definition
// is built, each with one line naming the file and the field.
import assert from "node:assert/strict";
import { parseConfigJson } from "../models/checkpoint/config.ts";
import { modelDefinitionFor } from "../models/definitions.ts";

const MODELS = new URL("./fixtures/models/", import.meta.url).pathname;
const fixtures = [...Deno.readDirSync(MODELS)].filter((e) => e.isDirectory).map((e) => e.name);

async function fixtureConfig(name: string): Promise<Record<string, unknown>> {
  return parseConfigJson(await Deno.readTextFile(`${MODELS}${name}/config.json`)) as Record<
    string,
    unknown
  >;
}

// ---------------------------------------------------------------------------------------------
// Field validation (pure: no files, no GPU).

Deno.test("every fixture's config.json is accepted as it is", async () => {
  for (const name of fixtures) {
    const def = modelDefinitionFor(await fixtureConfig(name), name);
    assert.deepEqual(def.eosTokenIds, [0], name);
    assert.equal(def.eosTokenId, 0, name);
  }
});

Deno.test("sizes must be integers within bounds, each error naming the field", async () => {
  const mamba = await fixtureConfig("mamba_tied_n8");
  const mamba2 = await fixtureConfig("mamba2_untied_g2_n16_q4");
  const cases: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
    [
      mamba,
      { num_hidden_layers: 0 },
      /"num_hidden_layers" must be an integer from 1 to 1024, got 0$/,
    ],
    [mamba, { num_hidden_layers: -1 }, /"num_hidden_layers" must be .*, got -1$/],
    [mamba, { num_hidden_layers: 1.5 }, /"num_hidden_layers" must be .*, got 1\.5$/],
    [mamba, { num_hidden_layers: 1e6 }, /"num_hidden_layers" must be .*, got 1000000$/],
    [mamba, { num_hidden_layers: "2" }, /"num_hidden_layers" must be .*, got the string "2"$/],
    [mamba, { num_hidden_layers: undefined }, /"num_hidden_layers" is missing/],
    [mamba2, { num_hidden_layers: 1e6 }, /"num_hidden_layers" must be an integer from 1 to 1024/],
    [mamba, { hidden_size: NaN }, /"hidden_size" must be an integer from 1 to 16777216, got NaN$/],
    [mamba, { hidden_size: Infinity }, /"hidden_size" must be .*, got Infinity$/],
    [mamba, { vocab_size: 0 }, /"vocab_size" must be .*, got 0$/],
    [mamba, { vocab_size: null }, /"vocab_size" must be .*, got null$/],
    [mamba, { state_size: 2 ** 30 }, /"state_size" must be an integer from 1 to 16777216/],
    [mamba, { intermediate_size: 64.5 }, /"intermediate_size" must be .*, got 64\.5$/],
    [mamba, { time_step_rank: "big" }, /"time_step_rank" must be .* \(or "auto"\), got/],
    [mamba, { conv_kernel: 1 }, /"conv_kernel" must be an integer from 2 to 256 \(the decode/],
    [
      { ...mamba, intermediate_size: undefined },
      { expand: 1.5, hidden_size: 33 },
      /"expand" × "hidden_size" = 1\.5 × 33 = 49\.5 must be an integer/,
    ],
    [mamba2, { head_dim: 0 }, /"head_dim" must be .*, got 0$/],
    [mamba2, { n_groups: 3 }, /n_groups = 3 does not divide num_heads = 4/],
    [mamba2, { num_heads: 2.5 }, /"num_heads" must be .*, got 2\.5$/],
  ];
  for (const [base, edit, re] of cases) {
    const config = { ...base, ...edit };
    assert.throws(() => modelDefinitionFor(config, "/m"), (e: Error) => {
      assert.match(e.message, /^\/m\/config\.json: /, JSON.stringify(edit));
      assert.match(e.message, re, JSON.stringify(edit));
      return true;
    });
  }
});

Deno.test("flags must be booleans, epsilons finite and positive, activations supported", async () => {
  const mamba = await fixtureConfig("mamba_untied_n16");
  const mamba2 = await fixtureConfig("mamba2_untied_g2_n16_q4");
  const cases: [Record<string, unknown>, Record<string, unknown>, RegExp][] = [
    [
      mamba,
      { tie_word_embeddings: "false" },
      /"tie_word_embeddings" must be true or false, got the string "false"$/,
    ],
    [mamba2, { tie_word_embeddings: 0 }, /"tie_word_embeddings" must be true or false, got 0$/],
    [mamba, { use_bias: "true" }, /"use_bias" must be true or false/],
    [mamba2, { rms_norm: null }, /"rms_norm" must be true or false, got null$/],
    [
      mamba,
      { layer_norm_epsilon: -1e-5 },
      /"layer_norm_epsilon" must be a finite number greater than 0, got -0\.00001$/,
    ],
    [mamba, { layer_norm_epsilon: 0 }, /"layer_norm_epsilon" must be .*, got 0$/],
    [mamba2, { layer_norm_epsilon: NaN }, /"layer_norm_epsilon" must be .*, got NaN$/],
    [mamba2, { layer_norm_epsilon: Infinity }, /"layer_norm_epsilon" must be .*, got Infinity$/],
    [mamba, { hidden_act: "gelu" }, /"hidden_act" must be one of "silu", got the string "gelu"$/],
    [
      mamba2,
      { time_step_limit: [0.001, 0.1] },
      /time_step_limit \[0\.001, 0\.1\] is not supported/,
    ],
    [mamba2, { time_step_limit: "none" }, /"time_step_limit" must be a pair \[min, max\]/],
    [mamba2, { time_step_limit: [0, NaN] }, /"time_step_limit" must be a pair/],
    [mamba, { eos_token_id: "0" }, /"eos_token_id" must be a token id or a list of token ids/],
    [mamba, { eos_token_id: [0, 1.5] }, /"eos_token_id" must be .*, got \[0, 1\.5\]$/],
    [mamba, { eos_token_id: 100 }, /integers from 0 to 99\), got 100$/],
  ];
  for (const [base, edit, re] of cases) {
    assert.throws(() => modelDefinitionFor({ ...base, ...edit }, "/m"), re, JSON.stringify(edit));
  }
});

Deno.test("Infinity in time_step_limit loads however it is spelled", () => {
  const base = `"model_type": "mamba2", "hidden_size": 32, "num_heads": 4, "head_dim": 16,
    "num_hidden_layers": 1, "vocab_size": 10`;
  for (
    const limit of [
      `[0.0, Infinity]`,
      `[0.0, {"__float__": "Infinity"}]`,
      `[0, {"__float__": "inf"}]`,
    ]
  ) {
    const config = parseConfigJson(`{${base}, "time_step_limit": ${limit}}`);
    const def = modelDefinitionFor(config as Record<string, unknown>, "/m");
    assert.equal(def.modelType, "mamba2", limit);
  }
});

Deno.test("eos_token_id may be one id or a list; the first stays eosTokenId", async () => {
  const config = await fixtureConfig("mamba_tied_n8");
  const list = modelDefinitionFor({ ...config, eos_token_id: [7, 0, 7, 3] }, "/m");
  assert.deepEqual(list.eosTokenIds, [7, 0, 3]);
  assert.equal(list.eosTokenId, 7);
  for (const none of [null, [], undefined]) {
    const def = modelDefinitionFor({ ...config, eos_token_id: none }, "/m");
    assert.deepEqual(def.eosTokenIds, [], String(none));
    assert.equal(def.eosTokenId, undefined);
  }
  const mamba2 = await fixtureConfig("mamba2_tied_g1_n8_q8");
  assert.deepEqual(modelDefinitionFor({ ...mamba2, eos_token_id: [1, 2] }, "/m").eosTokenIds, [
    1,
    2,
  ]);
});
