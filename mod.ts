/**
 * ssmkit: a functional tensor DSL with named axes whose compiler turns state-space models into
 * fused WGSL kernels for WebGPU.
 *
 * ```ts
 * import { compile, einsum, silu } from "@ssmkit/ssmkit";
 *
 * const prog = await compile(
 *   { x: "b l d", W: "d e" },
 *   ({ x, W }) => silu(einsum("b l d, d e -> b l e", x, W)),
 *   { b: 2, l: 7, d: 16, e: 8 },
 * );
 * // Inputs are row-major in the order of their axis strings: x[b][l][d], W[d][e].
 * const y = await prog.run({ x: new Float32Array(2 * 7 * 16), W: new Float32Array(16 * 8) });
 * ```
 *
 * The compiler's internals (the IR, the fusion plan, kernel generation and its strategy knobs)
 * are in the second entry point, `@ssmkit/ssmkit/compiler`.
 *
 * @module
 */

// The DSL.
export { expectAxes, Tensor, type TensorLike, type TensorOf } from "./dsl/tensor.ts";
export { einsum } from "./dsl/einsum.ts";
export {
  abs,
  add,
  broadcast,
  div,
  eq,
  exp,
  full,
  ge,
  gt,
  le,
  log,
  lt,
  maximum,
  minimum,
  mul,
  ne,
  neg,
  pow,
  relu,
  rsqrt,
  sigmoid,
  silu,
  softplus,
  sqrt,
  stopGradient,
  sub,
  tanh,
  where,
} from "./dsl/elementwise.ts";
export { max, mean, min, rmsnorm, softmax, sum } from "./dsl/reduce.ts";
export {
  ceil,
  clamp,
  cos,
  erf,
  floor,
  gelu,
  type GeluOptions,
  mod,
  round,
  sign,
  sin,
  tan,
} from "./dsl/math.ts";
export {
  arange,
  ARANGE_MAX,
  causalMask,
  LITERAL_MAX_ELEMENTS,
  type MaskOptions,
  type MaskSizes,
  type NestedNumbers,
  tensor,
  tril,
  triu,
} from "./dsl/index_ops.ts";
export { pad, rename, shift } from "./dsl/axis_ops.ts";
export { concat, conv1d, flip, gather, rearrange, slice, transpose } from "./dsl/views.ts";
export { finalState, pick, scan, type ScanOptions } from "./dsl/scan.ts";
export { attention, type AttentionOptions } from "./dsl/attention.ts";
export { type DeltaOperands, type DeltaOptions, type DeltaResult, deltaRule } from "./dsl/delta.ts";
export {
  associativeScan,
  cummax,
  cummin,
  cumprod,
  cumsum,
  type CumulativeOptions,
  logcumsumexp,
} from "./dsl/assoc_scan.ts";
export { grad, type Outputs, type Params, type Scalar, valueAndGrad, vjp } from "./dsl/autodiff.ts";
export { crossEntropy, type LossOptions, mse, type Reduction } from "./dsl/losses.ts";
export { linearCrossEntropy, type LinearCrossEntropyOptions } from "./dsl/linear_cross_entropy.ts";
export type { InputDecl, InputSpec, Sizes, TensorsOf, TraceResult } from "./dsl/trace.ts";
export type { DType, FloatDType } from "./dsl/ir.ts";
export { cast } from "./dsl/cast.ts";
export { defineProgram, isProgramDef, type ProgramDef } from "./dsl/define.ts";

// Compiling and running.
export {
  type Backend,
  compile,
  type CompileOptions,
  type HostResult,
  type HostResult64,
  type Program,
} from "./runtime/compile.ts";
export type { ProgramBenchmark, RunOptions } from "./runtime/program.ts";
export type { DispatchBenchmark, KernelTiming } from "./runtime/gpu_submit.ts";
export type { AutotuneOptions } from "./runtime/autotune.ts";
export { type HostArray, interpret } from "./runtime/interpreter.ts";
export {
  acquireGpu,
  type AcquireOptions,
  getGpu,
  type GpuContext,
  NoAdapterError,
  preferVulkanOnLinux,
} from "./runtime/gpu_device.ts";

// Training: optimizer state resident on the GPU, checkpoints written as HF safetensors.
export {
  adamw,
  adamwDefaults,
  adamwInputs,
  type AdamWOptions,
  adamwOutputs,
  type AdamWResult,
  type AdamWScalarInputs,
  adamwScalars,
  type AdamWState,
  adamwState,
  adamwStateOf,
  type TensorRecord,
} from "./models/train/adamw.ts";
export { type ResidentOptions, ResidentProgram } from "./runtime/resident_program.ts";
export {
  type LossTarget,
  printProgress,
  Trainer,
  type TrainerOptions,
  type TrainProgress,
} from "./models/train/trainer.ts";
export {
  dtBias,
  type InitOptions,
  initParams,
  normal,
  ones,
  type ParamRecord,
  Random,
  uniform,
  zeros,
} from "./models/train/init.ts";
export { type LoraOptions, LoraPlan, type LoraTarget } from "./models/train/lora.ts";
export { loadParams, saveModel } from "./models/train/save.ts";
export {
  loadOptimizerState,
  OPTIMIZER_DIR,
  type OptimizerState,
  saveOptimizerState,
} from "./models/train/optimizer_state.ts";
export {
  type F32Tensor,
  f32Tensors,
  type RawTensor,
  safetensorsBytes,
  safetensorsLayout,
  type WriteOptions,
  writeRawSafetensors,
  writeSafetensors,
} from "./models/checkpoint/safetensors_write.ts";

// Models.
export {
  type GenerateOptions,
  LanguageModel,
  loadModel,
  type LoadOptions,
  maxNewTokens,
  type ModelCacheStats,
} from "./models/language_model.ts";
export type { WeightDtype } from "./models/weight_dtype.ts";
export type { SamplingOptions } from "./models/sampler.ts";
export type { ModelFile, ModelSource, SourceText } from "./models/checkpoint/source.ts";
export { blobSource, bufferSource, urlSource } from "./models/checkpoint/web_sources.ts";
export {
  type DecodeOptions,
  loadTokenizer,
  type TextTokenizer,
} from "./models/checkpoint/tokenizer.ts";
export { type ModelDefinition, modelDefinitionFor } from "./models/definitions.ts";
export type { ModelTrunk } from "./models/lm_head.ts";
export {
  mambaMixer,
  type MambaMixerCache,
  type MambaMixerDims,
  type MambaMixerParams,
} from "./models/mamba_mixer.ts";
export {
  mamba2Mixer,
  type Mamba2MixerCache,
  type Mamba2MixerDims,
  type Mamba2MixerParams,
} from "./models/mamba2_mixer.ts";
export { SELECTIVE_SCAN_INPUTS, selectiveScan } from "./models/selective_scan.ts";

// Types that appear in the signatures above (exported so their documentation is reachable).
export type {
  AtLeastAsLong,
  Broadcast,
  Canon,
  CheckAxes,
  CheckAxis,
  CheckNewAxis,
  IsLiteral,
  IsSubset,
  Join,
  KnownAxes,
  Minus,
  OuterBroadcastError,
  Rename,
  RenameWords,
  Trim,
  Without,
  Words,
} from "./dsl/axes.ts";
export type {
  AllWords,
  CheckSpec,
  EinsumInputs,
  EinsumOperands,
  EinsumOutput,
  EinsumResult,
  SplitOperands,
  TensorTuple,
} from "./dsl/einsum.ts";
export type {
  AllAxes,
  Bcast,
  BinaryFn,
  BroadcastSizes,
  CheckBroadcast,
  CheckBroadcastTo,
  CheckWhere,
  HasAllAxes,
  NewAxes,
  UnaryFn,
} from "./dsl/elementwise.ts";
export type { CheckWeight, Reduced } from "./dsl/reduce.ts";
export type { CheckPermutation, Gathered, Renamed } from "./dsl/views.ts";
export type {
  AppendToken,
  CheckCount,
  CheckElements,
  CheckPattern,
  FirstRepeated,
  IsPlainName,
  PatternSides,
  PatternTokens,
  PlainFirstToken,
  RearrangeAxes,
  TokenElements,
  TokenNames,
} from "./dsl/rearrange_types.ts";
export type { ScanResult } from "./dsl/scan.ts";
export type { AssocScanStrategy } from "./codegen/assoc_scan_kernel.ts";
export type { SsdBackwardStrategy } from "./codegen/ssd_backward.ts";
export type { AxesOf, IsAny } from "./dsl/tensor.ts";
