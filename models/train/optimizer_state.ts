/**
 * AdamW's state saved next to a trained model, so that a later run continues where this one
 * stopped: the step count (bias correction and learning-rate schedule go on from it) and both
 * moments of every trained tensor. It lives in `DIR/optimizer/model.safetensors` (tensors
 * `m.<name>` and `v.<name>`, flat; `__metadata__` holds the step), beside the HF files that
 * `loadModel(DIR)` reads and ignores it.
 *
 * @module
 */

import { platform } from "../../platform/current.ts";
import { Checkpoint } from "../checkpoint/checkpoint.ts";
import { writeSafetensors } from "../checkpoint/safetensors_write.ts";
import type { ParamRecord } from "./init.ts";

/** AdamW's state after `step` steps: first and second moments by trained tensor name. */
export interface OptimizerState {
  /** Optimizer steps taken (the next step is `step + 1`). */
  step: number;
  /** First moments. */
  m: ParamRecord;
  /** Second moments. */
  v: ParamRecord;
}

/** The subdirectory of a saved model that holds its optimizer state. */
export const OPTIMIZER_DIR = "optimizer";

/** Writes `state` to `dir/optimizer/model.safetensors` (atomically, creating the folder). */
export async function saveOptimizerState(dir: string, state: OptimizerState): Promise<void> {
  checkState(state, "saveOptimizerState");
  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const [k, data] of Object.entries(state.m)) {
    tensors[`m.${k}`] = { data, shape: [data.length] };
  }
  for (const [k, data] of Object.entries(state.v)) {
    tensors[`v.${k}`] = { data, shape: [data.length] };
  }
  await platform.makeDir(`${dir}/${OPTIMIZER_DIR}`);
  await writeSafetensors(`${dir}/${OPTIMIZER_DIR}/model.safetensors`, tensors, {
    metadata: { format: "ssmkit-adamw", step: String(state.step) },
  });
}

/**
 * Reads the optimizer state saved in `dir`, or undefined when `dir` has none (a model saved
 * without it). A state that is there but malformed is an error.
 */
export async function loadOptimizerState(dir: string): Promise<OptimizerState | undefined> {
  const where = `${dir}/${OPTIMIZER_DIR}`;
  let source;
  try {
    source = await platform.modelSource(where);
  } catch (e) {
    if (/not found/.test((e as Error).message)) return undefined;
    throw e;
  }
  const file = await source.open("model.safetensors");
  if (!file) return undefined;
  file.close();
  const ckpt = await Checkpoint.open(source);
  try {
    const step = Number(ckpt.metadata.step);
    if (ckpt.metadata.format !== "ssmkit-adamw" || !Number.isInteger(step) || step < 0) {
      throw new Error(
        `${where}: not an ssmkit AdamW state (format ${ckpt.metadata.format}, step ${ckpt.metadata.step})`,
      );
    }
    const state: OptimizerState = { step, m: {}, v: {} };
    for (const name of ckpt.names()) {
      const [kind, key] = [name.slice(0, 2), name.slice(2)];
      if (kind !== "m." && kind !== "v.") throw new Error(`${where}: unexpected tensor "${name}"`);
      state[kind === "m." ? "m" : "v"][key] = await ckpt.getF32(name);
    }
    checkState(state, where);
    return state;
  } finally {
    ckpt.close();
  }
}

/** Both moments of every tensor, of one length each; a whole step count. */
function checkState(state: OptimizerState, where: string): void {
  if (!Number.isInteger(state.step) || state.step < 0) {
    throw new Error(`${where}: step must be an integer ≥ 0, got ${state.step}`);
  }
  const names = new Set([...Object.keys(state.m), ...Object.keys(state.v)]);
  for (const k of names) {
    const m = state.m[k], v = state.v[k];
    if (!m || !v) throw new Error(`${where}: "${k}" has only its ${m ? "first" : "second"} moment`);
    if (m.length !== v.length) {
      throw new Error(`${where}: "${k}" has moments of ${m.length} and ${v.length} values`);
    }
  }
}
