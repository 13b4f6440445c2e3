// The checkpoint against the model, from the headers alone: it must hold exactly the tensors the
// model reads (HF-ignored ones are a warning), and weights larger than the device can bind are
// refused before any tensor is read; loadModel runs these checks before uploading anything.
import assert from "node:assert/strict";
import { parseConfigJson } from "../models/checkpoint/config.ts";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { checkModelWeights, openModelCheckpoint } from "../models/checkpoint/model_weights.ts";
import { modelDefinitionFor } from "../models/definitions.ts";
import { loadModel } from "../models/language_model.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { withTempDir } from "./safetensors_writer.ts";

const MODELS = new URL("./fixtures/models/", import.meta.url).pathname;

async function fixtureConfig(name: string): Promise<Record<string, unknown>> {
  return parseConfigJson(await Deno.readTextFile(`${MODELS}${name}/config.json`)) as Record<
    string,
    unknown
  >;
}

/** A model directory: a fixture's weights (copied) with its config.json edited. */
async function editedFixture(
  dir: string,
  name: string,
  edit: Record<string, unknown>,
): Promise<string> {
  const config = { ...await fixtureConfig(name), ...edit };
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await Deno.copyFile(`${MODELS}${name}/model.safetensors`, `${dir}/model.safetensors`);
  return dir;
}

const LIMITS = { maxStorageBufferBindingSize: 1 << 27, maxBufferSize: 1 << 28 };

Deno.test("tensors the model does not read are an error; a tied lm_head.weight is a warning", async () => {
  await withTempDir(async (dir) => {
    // The fixture has two layers; a config with one would silently drop the second.
    await editedFixture(dir, "mamba_untied_n16", { num_hidden_layers: 1 });
    const def = modelDefinitionFor(await fixtureConfig("mamba_untied_n16"), dir);
    const oneLayer = modelDefinitionFor({
      ...await fixtureConfig("mamba_untied_n16"),
      num_hidden_layers: 1,
    }, dir);
    assert.equal(def.weightShapes().length, oneLayer.weightShapes().length + 10);
    await assert.rejects(
      openModelCheckpoint(dir, oneLayer, LIMITS),
      new RegExp(
        `^Error: checkpoint ${dir} holds 10 tensors the model does not read: ` +
          `backbone\\.layers\\.1\\.mixer\\.A_log, .* and 5 more \\(does config\\.json describe`,
      ),
    );
    // Tied: the stored head is ignored, as HF does, with a warning.
    const tied = modelDefinitionFor(
      { ...await fixtureConfig("mamba_untied_n16"), tie_word_embeddings: true },
      dir,
    );
    const warnings: string[] = [];
    const ckpt = await openModelCheckpoint(dir, tied, LIMITS, {
      onWarning: (w) => warnings.push(w),
    });
    ckpt.close();
    assert.deepEqual(warnings, [
      `checkpoint ${dir}: ignoring tensor lm_head.weight, as HF does: tie_word_embeddings is ` +
      `true, so the LM head is backbone.embeddings.weight`,
    ]);
    // Untied without lm_head.weight: missing, with a hint.
    await editedFixture(dir, "mamba_tied_n8", {});
    const untied = modelDefinitionFor(
      { ...await fixtureConfig("mamba_tied_n8"), tie_word_embeddings: false },
      dir,
    );
    await assert.rejects(
      openModelCheckpoint(dir, untied, LIMITS),
      /lacks 1 of the 23 tensors the model reads: lm_head\.weight$/,
    );
  });
});

Deno.test("a weight over the device's binding limit is refused before any tensor is read", async () => {
  await withTempDir(async (dir) => {
    // F16 on disk (6400 bytes), float32 on the GPU (12800 bytes): the GPU size is what counts.
    await editedFixture(dir, "mamba_f16", {});
    const def = modelDefinitionFor(await fixtureConfig("mamba_f16"), dir);
    using ckpt = await Checkpoint.open(dir);
    assert.equal(ckpt.info("backbone.embeddings.weight")!.byteLength, 6400);
    assert.throws(
      () =>
        checkModelWeights(def, ckpt, { maxStorageBufferBindingSize: 10000, maxBufferSize: 1e9 }),
      /^Error: tensor backbone\.embeddings\.weight \[100, 32\] needs 12800 bytes as float32 on the GPU; the device binds at most 10000 bytes \(maxStorageBufferBindingSize\)$/,
    );
    assert.throws(
      () =>
        checkModelWeights(def, ckpt, { maxStorageBufferBindingSize: 1e9, maxBufferSize: 12799 }),
      /at most 12799 bytes \(maxBufferSize\)/,
    );
    assert.equal(ckpt.loadedBytes, 0, "nothing was read");
    assert.deepEqual(checkModelWeights(def, ckpt, LIMITS), []);
  });
});

Deno.test("a checkpoint header with far more entries than the model reads fails while parsing", async () => {
  await withTempDir(async (dir) => {
    const config = await fixtureConfig("mamba_tied_n8");
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    const entries = Array.from(
      { length: 5000 },
      (_, i) => `"junk.${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`,
    );
    const json = new TextEncoder().encode(`{${entries.join(",")},"broken": nope}`);
    const bytes = new Uint8Array(8 + json.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
    bytes.set(json, 8);
    await Deno.writeFile(`${dir}/model.safetensors`, bytes);
    // 22 tensors read, 1 ignorable: the header may list 2 × 23 + 64 = 110; the broken last entry is never
    // reached.
    await assert.rejects(
      openModelCheckpoint(dir, modelDefinitionFor(config, dir), LIMITS),
      /model\.safetensors: invalid safetensors header: header lists more than 110 tensors/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// loadModel: the same checks on the way to the GPU.

Deno.test("loadModel refuses wrong configs, extra tensors and oversized weights before upload", async () => {
  const gpu = await getGpu();
  await withTempDir(async (dir) => {
    await editedFixture(dir, "mamba_untied_n16", { num_hidden_layers: 1e6 });
    await assert.rejects(loadModel(dir, { progress: false, gpu }), /"num_hidden_layers" must be/);
    await editedFixture(dir, "mamba_untied_n16", { tie_word_embeddings: "false" });
    await assert.rejects(loadModel(dir, { progress: false, gpu }), /"tie_word_embeddings"/);
    await editedFixture(dir, "mamba_untied_n16", { num_hidden_layers: 1 });
    await assert.rejects(
      loadModel(dir, { progress: false, gpu }),
      /holds 10 tensors the model does not read/,
    );
    // A device that binds less than the embedding needs (as a 256 MiB embedding on a 128 MiB
    // device): refused by name, though the real device here could hold it.
    await editedFixture(dir, "mamba_untied_n16", {});
    const small = { ...gpu, limits: { ...gpu.limits, maxStorageBufferBindingSize: 8192 } };
    await assert.rejects(
      loadModel(dir, { progress: false, gpu: small }),
      /^Error: tensor backbone\.embeddings\.weight \[100, 32\] needs 12800 bytes as float32 on the GPU; the device binds at most 8192 bytes/,
    );
    const model = await loadModel(dir, { progress: false, gpu });
    model.destroy();
    // A file instead of a directory.
    await assert.rejects(
      loadModel(`${dir}/config.json`, { progress: false, gpu }),
      /config\.json is a file, not a model directory/,
    );
  });
});
