// LoRA fine-tuning through Trainer: only the adapters change (the base weights are frozen
// constants), the loss falls, and the merged checkpoint reloads through loadModel with the
// adapted model's logits (base + (alpha/r)·B·A computed by the float64 interpreter).
import assert from "node:assert/strict";
import { crossEntropy } from "../dsl/losses.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { loadModel } from "../models/language_model.ts";
import { modelDefinitionFor } from "../models/definitions.ts";
import { type ParamRecord, Random } from "../models/train/init.ts";
import { LoraPlan } from "../models/train/lora.ts";
import { loadParams } from "../models/train/save.ts";
import { Trainer } from "../models/train/trainer.ts";
import { assertClose, freshSeed } from "./util.ts";

const FIXTURE = new URL("./fixtures/models/mamba_tied_n8", import.meta.url).pathname;
const B = 2, L = 7, STEPS = 12;
const LORA = { targets: /mixer\.(in_proj|out_proj)\.weight$/, rank: 3, alpha: 6 };

/** Rows that repeat a random 3-token motif: learnable, unlike the fixture's random weights. */
function motifBatch(rand: Random, vocab: number) {
  const ids = new Int32Array(B * L), targets = new Int32Array(B * L);
  for (let r = 0; r < B; r++) {
    const motif = [rand.int(1, vocab), rand.int(1, vocab), rand.int(1, vocab)];
    for (let i = 0; i < L; i++) {
      ids[r * L + i] = motif[i % 3];
      targets[r * L + i] = motif[(i + 1) % 3];
    }
  }
  return { ids, targets };
}

/** Logits and loss of base weights plus adapters, in float64 through the DSL's LoRA update. */
function adaptedReference(
  config: Record<string, unknown>,
  base: ParamRecord,
  adapters: ParamRecord,
  ids: Int32Array,
  targets: Int32Array,
) {
  const def = modelDefinitionFor(config, "test");
  const plan = new LoraPlan(def.weightInputs(), def.sizes(B, L), LORA);
  const inputs = {
    ...def.weightInputs(),
    ...plan.adapterInputs(),
    ids: { axes: "b l", dtype: "i32" as const },
    targets: { axes: "b l", dtype: "i32" as const },
  };
  const graph = trace(inputs, (t: Record<string, Tensor>) => {
    const w = { ...t, ...plan.effectiveWeights(t, t) };
    const { logits } = def.forward(w, { cached: false });
    return { logits, loss: crossEntropy(logits, t.targets, "v" as never) };
  }, { ...def.sizes(B, L), ...plan.sizes() });
  // Missing adapters are zeros: the base model (B = 0 whatever A is).
  const zeros = Object.fromEntries(
    graph.inputs.filter((i) => i.name.includes(".lora_")).map((i) => [
      i.name,
      new Float32Array(i.shape.reduce((p, s) => p * s, 1)),
    ]),
  );
  const out = interpret(graph, { ...base, ...zeros, ...adapters, ids, targets });
  return { logits: out.logits, loss: out.loss[0] };
}

Deno.test("LoRA: only adapters train, the loss falls, the merged save reloads", async () => {
  const seed = freshSeed();
  const { config, params } = await loadParams(FIXTURE);
  const vocab = modelDefinitionFor(config, "test").vocab;
  const trainer = await Trainer.create({
    config,
    params,
    batch: B,
    length: L,
    lr: 2e-2,
    lora: { ...LORA, seed },
    blockSize: 4,
    onProgress: () => {},
  });
  const dir = await Deno.makeTempDir({ prefix: "ssmkit_lora_" });
  try {
    assert.ok(trainer.trainedNames.every((k) => /\.lora_[AB]$/.test(k)), "only adapters train");
    assert.equal(trainer.trainedNames.length, 2 * 2 * 2, "in_proj and out_proj of two layers");
    const rand = new Random(seed);
    const fixed = motifBatch(rand, vocab);
    const losses: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      losses.push(...(await trainer.step(fixed.ids, fixed.targets)) ?? []);
    }
    const initial = adaptedReference(config, params, {}, fixed.ids, fixed.targets);
    assert.ok(
      Math.abs(losses[0] - initial.loss) <= 1e-4 * initial.loss,
      `B = 0: the first loss ${losses[0]} is the base model's ${initial.loss} (seed ${seed})`,
    );
    assert.ok(losses[STEPS - 1] < 0.9 * losses[0], `loss ${losses[0]} → ${losses[STEPS - 1]}`);

    const base = await trainer.program.read(Object.keys(params));
    for (const [k, v] of Object.entries(params)) assert.deepEqual(base[k], v, `${k} is frozen`);
    const adapters = await trainer.trainedParams();
    for (const [k, v] of Object.entries(adapters)) {
      if (k.endsWith("lora_B")) assert.ok(v.some((x) => x !== 0), `${k} moved from zero`);
    }

    await trainer.save(dir);
    const { ids, targets } = motifBatch(new Random(seed + 1), vocab);
    const want = adaptedReference(config, params, adapters, ids, targets).logits;
    const base0 = adaptedReference(config, params, {}, ids, targets).logits;
    const model = await loadModel(dir, { progress: false });
    try {
      const rows = [0, 1].map((r) => [...ids.subarray(r * L, (r + 1) * L)]);
      const got = await model.logits(rows);
      assertClose(got, want, 1e-4, `merged checkpoint vs adapted model (seed ${seed})`);
      assert.ok(
        Math.max(...got.map((x, i) => Math.abs(x - base0[i]))) > 1e-3,
        "the adapters changed the logits",
      );
    } finally {
      model.destroy();
    }
  } finally {
    trainer.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LoRA: bad options are one-line errors", () => {
  const def = modelDefinitionFor({
    model_type: "mamba",
    hidden_size: 8,
    num_hidden_layers: 1,
    vocab_size: 5,
  }, "test");
  const sizes = def.sizes(1, 1);
  assert.throws(
    () => new LoraPlan(def.weightInputs(), sizes, { targets: /nothing/ }),
    /lora: no weight name matches \/nothing\//,
  );
  assert.throws(
    () => new LoraPlan(def.weightInputs(), sizes, { targets: /A_log|D$|conv1d\.bias/ }),
    /adapters need a 2-axis weight/,
  );
  assert.throws(
    () => new LoraPlan(def.weightInputs(), sizes, { targets: /in_proj/, rank: 0 }),
    /rank must be an integer ≥ 1/,
  );
});
