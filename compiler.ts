/**
 * ssmkit's compiler, for tools that inspect or drive code generation: the IR a traced program
 * becomes, the fusion plan, the kernel generator and the strategy knobs the benchmarks sweep.
 * A user of the DSL and the models needs only the main entry point (`@ssmkit/ssmkit`); this one
 * is for reading the generated WGSL without a GPU, writing tools and tuning. Its types may
 * change between minor versions.
 *
 * ```ts
 * import { einsum, silu } from "@ssmkit/ssmkit";
 * import { DEFAULT_LIMITS, generateKernels, trace } from "@ssmkit/ssmkit/compiler";
 *
 * const graph = trace(
 *   { x: "b l d", W: "d e" },
 *   ({ x, W }) => silu(einsum("b l d, d e -> b l e", x, W)),
 *   { b: 2, l: 7, d: 16, e: 8 },
 * );
 * for (const kernel of generateKernels(graph, DEFAULT_LIMITS).kernels) {
 *   console.log(kernel.name, kernel.workgroups, kernel.wgsl.length);
 * }
 * ```
 *
 * @module
 */

export { trace } from "./dsl/trace.ts";
export type {
  ArangeNode,
  AttentionGradNode,
  AttentionNode,
  Base,
  BinaryNode,
  BinaryOp,
  ConcatNode,
  ConstNode,
  ContractNode,
  Conv1dNode,
  DeltaGradNode,
  DeltaNode,
  DeltaStateNode,
  FlipNode,
  GatherNode,
  Graph,
  InputNode,
  LiteralNode,
  Node,
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
export {
  type CodegenOptions,
  generateKernels,
  type KernelProgram,
} from "./codegen/compile_graph.ts";
export type { BufferKey, KernelArtifact, ScratchBuffer } from "./codegen/artifact.ts";
export { emitTuned, tunedChoice, type TuningPoint } from "./codegen/tuning.ts";
export { DEFAULT_LIMITS, type DeviceLimits } from "./codegen/limits.ts";
export type {
  CoreNode,
  FusionPlan,
  KernelGroup,
  ScanGroup,
  SimpleGroup,
} from "./codegen/fusion.ts";
export type { ScanUse } from "./codegen/scan_plan.ts";
export type {
  BackwardPlan,
  BackwardRoot,
  PlannedGroup,
  ScanBackwardGroup,
} from "./codegen/scan_backward_plan.ts";
export type {
  FinalGroup,
  FinalPlan,
  HorizontalGroup,
  MultiReduceGroup,
} from "./codegen/horizontal_plan.ts";
export type { ScanBackwardStrategy } from "./codegen/scan_backward_kernel.ts";
export type { MatmulStrategy } from "./codegen/matmul_lowering.ts";
export type { ScanStrategy, TileReduce } from "./codegen/scan_strategy.ts";
export type { AssocScanStrategy } from "./codegen/assoc_scan_kernel.ts";
export type { AttentionStrategy } from "./codegen/attention_shapes.ts";
export type { AssocCombine, AssocScanNode } from "./dsl/ir.ts";
export type { ScanMath, ScanPrefetch, ScanStateLoads, VectorIndex } from "./codegen/scan_loop.ts";
