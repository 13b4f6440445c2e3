/**
 * ssmkit: a functional tensor DSL with named axes whose compiler turns state-space models into
 * fused WGSL kernels for WebGPU.
 *
 * ```ts
 * import { compile, einsum, mul, silu } from "@ssmkit/ssmkit";
 *
 * const prog = await compile(
 *   { x: "b l d", W: "d e" },
 *   ({ x, W }) => silu(einsum("b l d, d e -> b l e", x, W)),
 *   { b: 2, l: 7, d: 16, e: 8 },
 * );
 * const y = await prog.run({ x: new Float32Array(2 * 7 * 16), W: new Float32Array(16 * 8) });
 * ```
 *
 * @module
 */

export { Tensor, type TensorLike } from "./dsl/tensor.ts";
export type { Broadcast, Canon } from "./dsl/axes.ts";
export { einsum, type EinsumOperands, type EinsumResult } from "./dsl/einsum.ts";
export {
  abs,
  add,
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
  sub,
  tanh,
  where,
} from "./dsl/elementwise.ts";
export { max, mean, min, rmsnorm, softmax, sum } from "./dsl/reduce.ts";
export { concat, conv1d, flip, gather, rearrange, slice, transpose } from "./dsl/views.ts";
export { finalState, pick, scan, type ScanOptions } from "./dsl/scan.ts";
export {
  type InputDecl,
  type InputSpec,
  type Sizes,
  type TensorsOf,
  trace,
  type TraceResult,
} from "./dsl/trace.ts";
export type { DType, Graph, Node } from "./dsl/ir.ts";
export { defineProgram, isProgramDef, type ProgramDef } from "./dsl/define.ts";
export { interpret } from "./runtime/interpreter.ts";
export {
  type Backend,
  compile,
  type CompileOptions,
  type HostResult,
  type Program,
} from "./runtime/compile.ts";
export type { RunOptions } from "./runtime/program.ts";
export type { KernelArtifact } from "./codegen/artifact.ts";
export { generateKernels } from "./codegen/compile_graph.ts";
export { DEFAULT_LIMITS, type DeviceLimits } from "./codegen/limits.ts";
export {
  acquireGpu,
  getGpu,
  type GpuContext,
  NoAdapterError,
  preferVulkanOnLinux,
} from "./runtime/gpu_device.ts";
export {
  type GenerateOptions,
  LanguageModel,
  loadModel,
  type LoadOptions,
  maxNewTokens,
  type ModelCacheStats,
} from "./models/language_model.ts";
export type { SamplingOptions } from "./models/sampler.ts";
export { type ModelDefinition, modelDefinitionFor } from "./models/definitions.ts";
export { mambaMixer, type MambaMixerDims, type MambaMixerParams } from "./models/mamba_mixer.ts";
export {
  mamba2Mixer,
  type Mamba2MixerDims,
  type Mamba2MixerParams,
} from "./models/mamba2_mixer.ts";
export { SELECTIVE_SCAN_INPUTS, selectiveScan } from "./models/selective_scan.ts";

// Types that appear in the signatures above (exported so their documentation is reachable).
export type { AtLeastAsLong, Join, Minus, Trim, Without, Words } from "./dsl/axes.ts";
export type { EinsumInputs, EinsumOutput, SplitOperands, TensorTuple } from "./dsl/einsum.ts";
export type { Bcast, BinaryFn, UnaryFn } from "./dsl/elementwise.ts";
export type { Reduced } from "./dsl/reduce.ts";
export type { ScanResult } from "./dsl/scan.ts";
export type { AxesOf, IsAny } from "./dsl/tensor.ts";
export type {
  Base,
  BinaryNode,
  BinaryOp,
  ConcatNode,
  ConstNode,
  ContractNode,
  Conv1dNode,
  FlipNode,
  GatherNode,
  InputNode,
  PermuteNode,
  PickNode,
  ReduceNode,
  ReduceOp,
  RegroupNode,
  ScanNode,
  SliceNode,
  UnaryNode,
  UnaryOp,
  WhereNode,
} from "./dsl/ir.ts";
export type { HostResult64 } from "./runtime/compile.ts";
export type { HostArray } from "./runtime/interpreter.ts";
export type { KernelTiming } from "./runtime/gpu_submit.ts";
export type { AcquireOptions } from "./runtime/gpu_device.ts";
export type { BufferKey, ScratchBuffer } from "./codegen/artifact.ts";
export type {
  CoreNode,
  FusionPlan,
  KernelGroup,
  ScanGroup,
  SimpleGroup,
} from "./codegen/fusion.ts";
export type { ScanUse } from "./codegen/scan_plan.ts";
export type { CodegenOptions, KernelProgram } from "./codegen/compile_graph.ts";
export type { MatmulStrategy } from "./codegen/matmul_lowering.ts";
export type { ScanStrategy, TileReduce } from "./codegen/scan_strategy.ts";
export type { ScanMath, ScanPrefetch, ScanStateLoads, VectorIndex } from "./codegen/scan_loop.ts";
export type { MambaMixerCache } from "./models/mamba_mixer.ts";
export type { Mamba2MixerCache } from "./models/mamba2_mixer.ts";
