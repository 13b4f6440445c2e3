/**
 * safetensors reading for ssmkit models: header parsing ({@link readSafetensorsHeader}) and the
 * model-directory weights reader ({@link Checkpoint}, single file or sharded).
 *
 * @module
 */

export {
  dtypeByteSize,
  formatShape,
  MAX_HEADER_BYTES,
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
  similarNames,
  SINGLE_FILE,
} from "./checkpoint.ts";
export { bfloat16ToFloat32, bfloat16ToNumber, halfToFloat32, halfToNumber } from "./float16.ts";
