/**
 * Model directories for training: {@link saveModel} writes an HF-format directory
 * (config.json and model.safetensors, float32) that `loadModel` and HF transformers read;
 * {@link loadParams} reads one back as a config and a parameter record, the start of a
 * fine-tuning run.
 *
 * @module
 */

import { platform } from "../../platform/current.ts";
import { Checkpoint } from "../checkpoint/checkpoint.ts";
import { readConfig } from "../checkpoint/config.ts";
import { type F32Tensor, writeSafetensors } from "../checkpoint/safetensors_write.ts";
import { type ModelDefinition, modelDefinitionFor } from "../definitions.ts";
import type { ParamRecord } from "./init.ts";

/**
 * Writes `dir/config.json` (the config as given) and `dir/model.safetensors` (every weight in
 * its HF shape, F32, metadata `format: pt`). The directory is created if needed.
 */
export async function saveModel(
  dir: string,
  config: Record<string, unknown>,
  definition: ModelDefinition,
  params: ParamRecord,
): Promise<void> {
  const tensors: Record<string, F32Tensor> = {};
  for (const [name, shape] of definition.weightShapes()) {
    const data = params[name];
    if (!data) throw new Error(`saveModel: no values for "${name}"`);
    tensors[name] = { data, shape };
  }
  await platform.writeTextFile(dir, "config.json", JSON.stringify(config, null, 1) + "\n");
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { metadata: { format: "pt" } });
}

/**
 * Reads an HF model directory's config.json and every weight the model reads (as float32,
 * from F32, F16 or BF16 tensors), for fine-tuning with `Trainer`.
 *
 * @throws Error naming the file and tensor when a weight is missing or misshapen.
 */
export async function loadParams(
  dir: string,
): Promise<{ config: Record<string, unknown>; definition: ModelDefinition; params: ParamRecord }> {
  const config = await readConfig(dir);
  const definition = modelDefinitionFor(config, dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    const params: ParamRecord = {};
    for (const [name, shape] of definition.weightShapes()) {
      if (!ckpt.info(name)) throw new Error(`checkpoint ${dir} lacks the tensor ${name}`);
      params[name] = await ckpt.getF32(name, shape);
    }
    return { config, definition, params };
  } finally {
    ckpt.close();
  }
}
