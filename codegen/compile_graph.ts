/**
 * The codegen driver: fusion plan → one kernel per group, each checked against the device
 * limits. A kernel that needs more storage buffers than the device has is split by
 * materializing part of its fused tree; what cannot be split is reported before any GPU call.
 *
 * @module
 */

import { splitLongContractions } from "./split_contractions.ts";
import { asReduction, hasThinShape, reduceThinContractions } from "./thin_contractions.ts";
import { emitScatterKernel, oneHotContraction } from "./scatter_kernel.ts";
import { isHalfStorage, storageBytes, withF16Directive } from "./dtypes.ts";
import { showAxes } from "../dsl/axes.ts";
import type { DeltaGradNode, Graph, InputNode, Node } from "../dsl/ir.ts";
import { nodeInputs } from "../dsl/ir.ts";
import { type KernelArtifact, TooManyBindingsError } from "./artifact.ts";
import { emitDelta } from "./delta_lowering.ts";
import { emitDeltaGrad } from "./delta_backward.ts";
import { emitAttention } from "./attention_kernel.ts";
import { emitAttentionGrad } from "./attention_backward.ts";
import { recognizeAttention } from "./attention_pattern.ts";
import { type AttentionStrategy, planAttention } from "./attention_shapes.ts";
import { emitElementwiseKernel } from "./elementwise_kernel.ts";
import { type AssocScanStrategy, emitAssocScan } from "./assoc_scan_kernel.ts";
import { fusedTree, planFusion } from "./fusion.ts";
import type { DeviceLimits } from "./limits.ts";
import { emitMatmulKernel, type MatmulStrategy } from "./matmul_lowering.ts";
import { emitReduceKernels } from "./reduce_kernel.ts";
import { emitMaterializedScan } from "./scan_kernel.ts";
import type { ScanSpec } from "./scan_spec.ts";
import type { ScanStrategy } from "./scan_strategy.ts";
import { emitScanGroup } from "./ssd_lowering.ts";
import { rewriteSsdBackward, type SsdBackwardStrategy } from "./ssd_backward.ts";
import { mergeScans } from "./scan_merge.ts";
import { emitTunedScanBackward, type ScanBackwardStrategy } from "./scan_backward_kernel.ts";
import { type BackwardPlan, fuseScanBackward, groupAccess } from "./scan_backward_plan.ts";
import { hazardOrder } from "./kernel_order.ts";
import {
  type FinalGroup,
  type FinalPlan,
  fuseHorizontally,
  sumTreeParts,
} from "./horizontal_plan.ts";
import { emitHorizontal, emitMultiReduce } from "./horizontal_kernel.ts";
import { mergeRiders } from "./dispatch_merge.ts";

/** A graph lowered to kernels. */
export interface KernelProgram {
  /** The traced program. */
  readonly graph: Graph;
  /** How its nodes were grouped into kernels (internal; its shape may change). */
  readonly plan: FinalPlan;
  /** The kernels, in dispatch order. */
  readonly kernels: readonly KernelArtifact[];
  /**
   * The in-place aliases in terms of `graph`'s nodes, when a rewrite (`ssdBackward`, thin
   * contractions) rebuilt the output nodes the caller's aliases named; absent otherwise.
   */
  readonly aliases?: ReadonlyMap<Node, Node>;
}

/** Bytes one element of a node takes on the GPU. */
export function bytesOf(node: Node): number {
  return storageBytes(node);
}

function checkBufferSizes(plan: BackwardPlan, limits: DeviceLimits): void {
  for (const n of plan.materialized) {
    const bytes = bytesOf(n);
    const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
    if (bytes > limit) {
      const what = n.kind === "input" ? `input "${n.name}"` : `tensor (node ${n.id})`;
      throw new Error(
        `program over the device limits: ${what} ${showAxes(n.axes)} ` +
          `(${n.shape.join("×")}) needs ${bytes} bytes; the device binds at most ${limit}`,
      );
    }
  }
}

function emitKernel(
  group: FinalGroup,
  plan: FinalPlan,
  limits: DeviceLimits,
  index: number,
  options: CodegenOptions,
): KernelArtifact[] {
  const aliases = options.aliases ?? new Map<Node, Node>();
  if (group.kind === "horizontal") {
    const name = `k${index}_hmap`;
    return [emitHorizontal(group.segments, plan.materialized, limits, name, aliases)];
  }
  if (group.kind === "multiReduce") {
    const { root, parts, batches } = group;
    const name = `k${index}_hsum`;
    return emitMultiReduce(root, parts, batches, plan.materialized, limits, name, aliases);
  }
  if (group.kind === "scanBackward") {
    const name = `k${index}_scanbwd`;
    const strategy = options.scanBackward || {};
    return emitTunedScanBackward(group, plan.materialized, limits, name, aliases, strategy);
  }
  if (group.kind === "scan") {
    const spec: ScanSpec = {
      scan: group.use.scan,
      stateAxes: group.use.stateAxes,
      channelAxes: group.use.channelAxes,
      outputs: group.outputs,
      finals: group.finals,
    };
    return emitScanGroup(spec, plan.materialized, limits, `k${index}_scan`, aliases, options.scan);
  }
  const { root, core } = group;
  const name = `k${index}_${core ? core.kind : "map"}_${root.axes.join("")}`;
  if (core?.kind === "delta") {
    return emitDelta(core, plan.materialized, limits, name, aliases, options.scan);
  }
  if (core?.kind === "delta_grad") {
    // Siblings (the same forward and cotangents) share one walk: the first one's kernel writes
    // them all.
    const siblings = [...plan.materialized].filter((n): n is DeltaGradNode =>
      n.kind === "delta_grad" && n.of === core.of && n.ct === core.ct &&
      n.ctState === core.ctState
    ).sort((a, b) => a.id - b.id);
    if (siblings[0] !== core) return [];
    return [emitDeltaGrad(siblings, plan.materialized, limits, name, aliases)];
  }
  if (core?.kind === "attention_grad") {
    return emitAttentionGrad(core, plan.materialized, limits, name, aliases, options.attention);
  }
  if (core?.kind === "attention") {
    const tiles = planAttention(core, limits, options.attention);
    return emitAttention(core, plan.materialized, limits, name, aliases, tiles);
  }
  // The delta kernel writes the final state too.
  if (root.kind === "delta_state") return [];
  if (core?.kind === "scan") {
    return emitMaterializedScan(root, core, plan.materialized, limits, name, aliases, options.scan);
  }
  if (core?.kind === "assocScan") {
    return emitAssocScan(root, core, plan.materialized, limits, name, aliases, options.assocScan);
  }
  if (core?.kind === "reduce") {
    return emitReduceKernels(root, core, plan.materialized, limits, name, aliases);
  }
  if (core?.kind === "contract") {
    // An embedding's gradient (a one-hot contraction) is a scatter-add, not a dense product.
    const oneHot = oneHotContraction(core);
    if (oneHot) {
      return [emitScatterKernel(root, core, oneHot, plan.materialized, limits, name, aliases)];
    }
    // A short thin contraction that fusion gave a kernel (Σ_p y·x over 393,216 outputs): the
    // reduction kernel, whose epilogue reads its result where the root reads the contraction.
    if (hasThinShape(core)) {
      const reduce = asReduction(core);
      return emitReduceKernels(root, reduce, plan.materialized, limits, name, aliases, core);
    }
    return [
      emitMatmulKernel(root, core, plan.materialized, limits, name, aliases, options.matmul),
    ];
  }
  return [emitElementwiseKernel(root, plan.materialized, limits, name, aliases)];
}

/** Picks the node to materialize so the kernel of `root` reads fewer buffers. */
function splitCandidate(root: Node, plan: { materialized: ReadonlySet<Node> }): Node | undefined {
  const tree = fusedTree(root, plan.materialized).filter((n) =>
    n !== root && n.kind !== "const" && n.kind !== "contract" && n.kind !== "reduce"
  );
  let best: { node: Node; reads: number } | undefined;
  for (const n of tree) {
    // The materialized tensors this subtree reads: they move to the new kernel.
    const reads = new Set<Node>();
    for (const m of fusedTree(n, plan.materialized)) {
      for (const child of nodeInputs(m)) if (plan.materialized.has(child)) reads.add(child);
    }
    if (reads.size >= 2 && (!best || reads.size > best.reads)) {
      best = { node: n, reads: reads.size };
    }
  }
  return best?.node;
}

/** Options of code generation. */
export interface CodegenOptions {
  /** Force a scan strategy (tests, benchmarks). */
  scan?: ScanStrategy;
  /** Force contraction-kernel choices (tests, benchmarks). */
  matmul?: MatmulStrategy;
  /** Force the attention kernels' tiles and key splits (tests, benchmarks). */
  attention?: AttentionStrategy;
  /** Force the associative-scan lowering (tests, benchmarks). */
  assocScan?: AssocScanStrategy;
  /** Input node → output node sharing one buffer (in-place state updates). */
  aliases?: ReadonlyMap<Node, Node>;
  /**
   * Knobs of the fused scan backward (scans computed with their adjoints, no b·l·d·n state in
   * memory; on by default), or `false` to keep materializing a scan and its adjoint.
   */
  scanBackward?: ScanBackwardStrategy | false;
  /**
   * Merge independent elementwise kernels into segmented dispatches (`horizontal_plan.ts`;
   * default off: on for `ResidentProgram`'s training steps, where per-parameter updates
   * dominate the dispatch count). Sums of full reductions are merged either way.
   */
  horizontal?: boolean;
  /**
   * Let an elementwise kernel join the dispatch of one of the next few kernels when nothing in
   * between depends on it (`dispatch_merge.ts`; default off: on for the resident language
   * models' programs, where a decode step is mostly a fixed cost per dispatch).
   */
  rideAlong?: boolean;
  /**
   * Keep materializing a scan and its adjoint (no scan-backward groups; tests, benchmarks);
   * the same as `scanBackward: false`.
   */
  noScanBackward?: boolean;
  /**
   * The backward of scalar-decay (SSD) scans in state-free chunked form (`ssd_backward.ts`):
   * on by default (these knobs, or `{}`), `false` keeps the fused scan-backward walk, which
   * holds every state of a channel in one thread (Mamba-2's 128·64 per head: 18 s for the
   * 130M step at b=8, l=2048 on an H100, against 2.4 s chunked).
   */
  ssdBackward?: SsdBackwardStrategy | false;
}

/** `aliases` with each output node replaced by the node of the same output in `after`. */
function renameAliases(
  aliases: ReadonlyMap<Node, Node>,
  before: Graph,
  after: Graph,
): Map<Node, Node> {
  const name = new Map(Object.entries(before.outputs).map(([k, v]) => [v, k]));
  return new Map(
    [...aliases].map(([input, out]) => {
      const k = name.get(out);
      return [input, k === undefined ? out : after.outputs[k]];
    }),
  );
}

/**
 * The plan's groups reordered so that a group overwriting an aliased input (an in-place
 * update) runs after every other group reading its old value; throws when some group needs
 * both the old and (through others) the new value.
 */
function inPlaceOrder(plan: BackwardPlan, aliases: ReadonlyMap<Node, Node>): BackwardPlan {
  if (aliases.size === 0) return plan;
  const access = plan.kernels.map((g) => groupAccess(g, plan.materialized));
  const result = hazardOrder(access, aliases);
  if ("order" in result) {
    return { materialized: plan.materialized, kernels: result.order.map((i) => plan.kernels[i]) };
  }
  const stuck = new Set(result.cycle.flatMap((i) => access[i].writes));
  const names = [...aliases]
    .filter(([, output]) => stuck.has(output))
    .map(([input]) => input.kind === "input" ? `"${input.name}"` : `node ${input.id}`);
  throw new Error(
    `in-place update of input ${names.join(", ")}: a kernel reads the old value and, through ` +
      `other kernels, the new one, so the update cannot run after every read of the old value`,
  );
}

/**
 * Throws when a kernel declares a storage binding its code never reads or writes: WebGPU derives
 * the pipeline's layout from the bindings the shader uses, so the bind group the runtime builds
 * from the kernel's buffer list would not match it (an error on every dispatch, 2026-12-07).
 */
function checkBindingsUsed(k: KernelArtifact): void {
  for (const [, name] of k.wgsl.matchAll(/var<storage[^>]*>\s+(\w+)\s*:/g)) {
    if (!new RegExp(`\\b${name}\\s*\\[|&${name}\\b`).test(k.wgsl)) {
      throw new Error(`internal: kernel ${k.name} declares binding ${name} but never uses it`);
    }
  }
}

/** Lowers a traced graph to kernels for a device with `limits`. */
export function generateKernels(
  graph: Graph,
  limits: DeviceLimits,
  options: CodegenOptions = {},
): KernelProgram {
  // The rewrites below rebuild every node downstream of what they replace, so in-place aliases
  // are renamed to the new outputs.
  let remapped: ReadonlyMap<Node, Node> | undefined;
  const rewrite = (next: Graph) => {
    if (next !== graph && options.aliases) {
      remapped = renameAliases(options.aliases, graph, next);
      options = { ...options, aliases: remapped };
    }
    graph = next;
  };
  // ∂decay of scalar-decay scans without reading both states (ssd_backward.ts).
  if (options.ssdBackward !== false) rewrite(rewriteSsdBackward(graph, options.ssdBackward ?? {}));
  for (const input of options.aliases?.keys() ?? []) {
    if (isHalfStorage(input)) {
      throw new Error(
        `input "${(input as InputNode).name}" ${showAxes(input.axes)} is updated in place but ` +
          `has dtype ${input.dtype}; in-place state must be f32 (kernel outputs are stored as f32)`,
      );
    }
  }
  const keep = new Set(options.aliases?.values() ?? []);
  // softmax(q·kᵀ)·v written by hand runs as the attention kernel (attention_pattern.ts).
  graph = recognizeAttention(graph, keep);
  // Scans sharing decay, axis and direction run as one (scan_merge.ts); in-place outputs stay.
  graph = mergeScans(graph, keep);
  // Per-channel dot products (M·N ≤ 4) run as split reductions (thin_contractions.ts).
  rewrite(reduceThinContractions(graph));
  // Few outputs summed over a long extent: split over a summed axis (split_contractions.ts).
  rewrite(splitLongContractions(graph));
  // Full sums added into one scalar get buffers, so they can be summed horizontally.
  const forced = sumTreeParts(graph);
  // Adjoint scans whose backward group needs more buffers than the device binds.
  const unfused = new Set<Node>();
  for (let attempt = 0; attempt < 64; attempt++) {
    const fused = planFusion(graph, { forceMaterialize: forced });
    const useBackward = options.scanBackward !== false && !options.noScanBackward;
    const aliases = options.aliases ?? new Map<Node, Node>();
    const planned = useBackward ? fuseScanBackward(graph, fused, forced, unfused, aliases) : fused;
    const ordered = inPlaceOrder(planned, aliases);
    checkBufferSizes(ordered, limits);
    const outputs = new Set(Object.values(graph.outputs));
    const plan = fuseHorizontally(
      ordered,
      aliases,
      limits.maxStorageBuffersPerShaderStage,
      outputs,
      options.horizontal ?? false,
    );
    // Every kernel over the binding limit is fixed in one round (a model repeats its layers:
    // one fix per planning round would plan once per layer).
    const kernels: KernelArtifact[] = [];
    let fixes = 0;
    const splitThisRound = new Set<Node>();
    for (const [i, g] of plan.kernels.entries()) {
      try {
        // A kernel that touches f16 declares it first (WGSL's `enable f16;`).
        for (const k of emitKernel(g, plan, limits, i, options)) {
          kernels.push({ ...k, wgsl: withF16Directive(k.wgsl) });
        }
      } catch (e) {
        if (!(e instanceof TooManyBindingsError)) throw e;
        fixes++;
        // A scan-backward root that needs more buffers than the device binds even alone: keep
        // that scan and its adjoint in memory instead (the materializing path).
        const root = e.root;
        const owner = plan.kernels.find((k) =>
          k.kind === "scanBackward" && k.roots.some((r) => r.root === root)
        );
        if (owner?.kind === "scanBackward") {
          unfused.add(owner.adjoint);
          continue;
        }
        // A split made this round may already have cut this kernel: plan again first.
        const tree = fusedTree(e.root, plan.materialized);
        if (tree.some((n) => splitThisRound.has(n))) continue;
        const candidate = splitCandidate(e.root, plan);
        if (!candidate) {
          throw new Error(
            `program over the device limits: ${e.message}, and it cannot be split further ` +
              `(node ${e.root.id} ${showAxes(e.root.axes)} reads that many tensors directly)`,
          );
        }
        forced.add(candidate);
        splitThisRound.add(candidate);
      }
    }
    if (fixes === 0) {
      const final = options.rideAlong
        ? mergeRiders(
          kernels,
          aliases,
          limits.maxStorageBuffersPerShaderStage,
          limits.maxComputeWorkgroupsPerDimension,
        )
        : kernels;
      for (const k of final) checkBindingsUsed(k);
      return { graph, plan, kernels: final, ...(remapped ? { aliases: remapped } : {}) };
    }
  }
  throw new Error("program over the device limits: could not split kernels to fit the device");
}
