/**
 * The checks between a model's definition and its checkpoint, run on the headers before any
 * tensor is read: every tensor the model reads is present, float, of the right shape and small
 * enough for the device to bind as float32; every tensor the checkpoint holds is read (except
 * those HF itself ignores, which are warned about). A bad checkpoint thus costs a header read,
 * not gigabytes of reading and uploading.
 *
 * @module
 */

import { Checkpoint, type CheckpointOptions, FLOAT_DTYPES, similarNames } from "./checkpoint.ts";
import { formatShape, type TensorInfo } from "./header.ts";
import type { ModelSource } from "./source.ts";

/** What the checks need to know of a model (a `ModelDefinition` has it). */
export interface ModelWeights {
  /** Each weight the model reads, with the shape its checkpoint tensor must have. */
  weightShapes(): [string, number[]][];
  /**
   * Tensors HF ignores for this model, each with the reason: warned about when present, not an
   * error.
   */
  readonly ignoredWeights?: Readonly<Record<string, string>>;
}

/** The device limits a weight must fit (as in WebGPU's `GPUSupportedLimits`). */
export interface WeightLimits {
  /** Largest storage-buffer binding in bytes. */
  maxStorageBufferBindingSize: number;
  /** Largest buffer in bytes. */
  maxBufferSize: number;
}

/** Options of {@link openModelCheckpoint}. */
export interface ModelCheckpointOptions extends CheckpointOptions {
  /** Where warnings go (one line each). Default: `console.warn`. */
  onWarning?: (message: string) => void;
}

/**
 * Opens a model directory's checkpoint and checks it against the model with
 * {@link checkModelWeights} before returning it. The headers may list at most about twice the
 * tensors the model reads, so a header with a million entries fails while being parsed.
 *
 * @param dir The model directory (a URL in a browser), or any {@link ModelSource}.
 * @param model The model's definition.
 * @param limits The device's buffer limits.
 * @param opts Checkpoint options and where warnings go.
 * @throws Error (one line) from opening the checkpoint or from the checks; the checkpoint is
 *   closed then.
 */
export async function openModelCheckpoint(
  dir: string | ModelSource,
  model: ModelWeights,
  limits: WeightLimits,
  opts: ModelCheckpointOptions = {},
): Promise<Checkpoint> {
  const reads = model.weightShapes().length + Object.keys(model.ignoredWeights ?? {}).length;
  const ckpt = await Checkpoint.open(dir, { ...opts, maxTensors: 2 * reads + 64 });
  try {
    for (const warning of checkModelWeights(model, ckpt, limits)) {
      (opts.onWarning ?? console.warn)(warning);
    }
  } catch (e) {
    ckpt.close();
    throw e;
  }
  return ckpt;
}

/**
 * Checks a checkpoint's tensor table against what a model reads, without reading any tensor.
 *
 * @param model The model's definition.
 * @param ckpt The opened checkpoint (headers only are consulted).
 * @param limits The device's buffer limits; each weight is uploaded as float32.
 * @returns Warnings, one line each: tensors present that HF also ignores.
 * @throws Error (one line) naming the first problem: tensors missing, tensors the model would not
 *   read, a shape or dtype the model cannot use, or a weight larger than the device can bind.
 */
export function checkModelWeights(
  model: ModelWeights,
  ckpt: Checkpoint,
  limits: WeightLimits,
): string[] {
  const needed = model.weightShapes();
  const neededNames = new Set(needed.map(([name]) => name));
  const where = `checkpoint ${ckpt.dir}`;
  const missing = needed.filter(([name]) => !ckpt.info(name)).map(([name]) => name);
  if (missing.length) {
    const similar = similarNames(missing[0], ckpt.names(), 3);
    const hint = similar.length ? ` (similar names in the checkpoint: ${similar.join(", ")})` : "";
    throw new Error(
      `${where} lacks ${missing.length} of the ${needed.length} tensors the model reads: ` +
        `${listSome(missing)}${hint}`,
    );
  }
  const ignorable = model.ignoredWeights ?? {};
  const unused = ckpt.names().filter((name) => !neededNames.has(name));
  const unexpected = unused.filter((name) => !Object.hasOwn(ignorable, name));
  if (unexpected.length) {
    throw new Error(
      `${where} holds ${unexpected.length} tensors the model does not read: ` +
        `${listSome(unexpected)} (does config.json describe these weights?)`,
    );
  }
  const bindable = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const limitName = limits.maxStorageBufferBindingSize <= limits.maxBufferSize
    ? "maxStorageBufferBindingSize"
    : "maxBufferSize";
  for (const [name, shape] of needed) {
    const t = ckpt.info(name) as TensorInfo;
    if (!sameShape(t.shape, shape)) {
      throw new Error(
        `tensor ${name} has shape ${formatShape(t.shape)} but the model needs ` +
          `${formatShape(shape)} (in ${t.file})`,
      );
    }
    if (!FLOAT_DTYPES.includes(t.dtype)) {
      throw new Error(
        `tensor ${name} has dtype ${t.dtype}, which cannot be read as float32 ` +
          `(supported: ${FLOAT_DTYPES.join(", ")}; in ${t.file})`,
      );
    }
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    if (bytes > bindable) {
      throw new Error(
        `tensor ${name} ${formatShape(shape)} needs ${bytes} bytes as float32 on the GPU; ` +
          `the device binds at most ${bindable} bytes (${limitName})`,
      );
    }
  }
  return unused.map((name) => `${where}: ignoring tensor ${name}, as HF does: ${ignorable[name]}`);
}

/** The first few names, then how many more. */
function listSome(names: readonly string[], k = 5): string {
  const shown = names.slice(0, k).join(", ");
  return names.length > k ? `${shown} and ${names.length - k} more` : shown;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
