/**
 * safetensors reading for ssmkit models: header parsing ({@link readSafetensorsHeader}), the
 * model-directory weights reader ({@link Checkpoint}, single file or sharded), and the checks of
 * a checkpoint against a model before anything is read ({@link openModelCheckpoint}).
 *
 * @module
 */

export {
  dtypeByteSize,
  formatShape,
  type HeaderOptions,
  MAX_HEADER_BYTES,
  MAX_TENSORS,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  type SafetensorsHeader,
  type TensorInfo,
} from "./header.ts";
export {
  Checkpoint,
  type CheckpointOptions,
  FLOAT_DTYPES,
  INDEX_FILE,
  MAX_INDEX_BYTES,
  similarNames,
  SINGLE_FILE,
} from "./checkpoint.ts";
export {
  checkModelWeights,
  type ModelCheckpointOptions,
  type ModelWeights,
  openModelCheckpoint,
  type WeightLimits,
} from "./model_weights.ts";
export { bfloat16ToFloat32, bfloat16ToNumber, halfToFloat32, halfToNumber } from "./float16.ts";
