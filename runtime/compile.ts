/**
 * `compile`: trace a user function, generate kernels, and bind them to the GPU (or, when no
 * adapter exists and the caller allows it, to the float64 CPU interpreter).
 *
 * @module
 */

import type { Graph } from "../dsl/ir.ts";
import type { Tensor } from "../dsl/tensor.ts";
import {
  type InputSpec,
  type Sizes,
  type TensorsOf,
  trace,
  type TraceResult,
} from "../dsl/trace.ts";
import type { KernelArtifact } from "../codegen/artifact.ts";
import {
  type CodegenOptions,
  generateKernels,
  type KernelProgram,
} from "../codegen/compile_graph.ts";
import { autotune, type AutotuneOptions } from "./autotune.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import type { ScanBackwardStrategy } from "../codegen/scan_backward_kernel.ts";
import type { SsdBackwardStrategy } from "../codegen/ssd_backward.ts";
import type { MatmulStrategy } from "../codegen/matmul_lowering.ts";
import type { AssocScanStrategy } from "../codegen/assoc_scan_kernel.ts";
import type { AttentionStrategy } from "../codegen/attention_shapes.ts";
import { collectNodes, type Node, nodeInputs } from "../dsl/ir.ts";
import { showAxes } from "../dsl/axes.ts";
import { DEFAULT_LIMITS, type DeviceLimits, limitsFrom } from "../codegen/limits.ts";
import { getGpu, type GpuContext, NoAdapterError } from "./gpu_device.ts";
import { type HostArray, interpret } from "./interpreter.ts";
import { GpuProgram, type ProgramBenchmark, type RunOptions } from "./program.ts";
import type { KernelTiming } from "./gpu_submit.ts";

/** Where a program runs. */
export type Backend = "gpu" | "cpu";

/** Options of {@link compile}. */
export interface CompileOptions {
  /** `"auto"` (default): the GPU when an adapter exists, else the CPU with a notice. */
  backend?: "auto" | Backend;
  /** Use this GPU context instead of the shared one. */
  gpu?: GpuContext;
  /** Force a scan strategy: `{ chunks }` along the scan axis, `{ lanes }` per channel. */
  scan?: ScanStrategy;
  /** Force the associative-scan lowering: `{ mode: "chunked" }`, tile sizes. */
  assocScan?: AssocScanStrategy;
  /** Force contraction-kernel choices (matrix-vector staging). */
  matmul?: MatmulStrategy;
  /** Force the attention kernels' key splits and tiles (tests, benchmarks). */
  attention?: AttentionStrategy;
  /**
   * The fused scan backward (on by default): force its kernels' chunk and workgroup (tests),
   * or `false` to materialize a scan and its adjoint instead.
   */
  scanBackward?: ScanBackwardStrategy | false;
  /** Materialize a scan and its adjoint instead of fusing them (as `scanBackward: false`). */
  noScanBackward?: boolean;
  /** Merge independent elementwise kernels into segmented dispatches (default false). */
  horizontal?: boolean;
  /**
   * Let an elementwise kernel join a later kernel's dispatch when nothing in between depends on
   * it (default false; `CodegenOptions.rideAlong`).
   */
  rideAlong?: boolean;
  /**
   * Scalar-decay (SSD) scans' backward in chunked, state-free form (codegen/ssd_backward.ts):
   * on by default; these knobs tune it, `false` keeps the fused scan-backward walk.
   */
  ssdBackward?: SsdBackwardStrategy | false;
  /**
   * In-place state updates, output name → input name: the output is written into the input's
   * buffer. Allowed for the final state of a scan whose `init` is that input (decode steps).
   */
  inPlace?: Record<string, string>;
  /**
   * Time the candidate strategies of the program's tunable kernels (matmul tiles, scans with
   * the SSD form, the delta rule's state pass) on this adapter and use the fastest, cached on disk per adapter and
   * shape (runtime/autotune.ts). Default off: every kernel takes its default strategy.
   */
  autotune?: boolean | AutotuneOptions;
}

/** What `run` returns: one array for a single-tensor program, else a record. */
export type HostResult<R> = R extends Tensor ? Float32Array
  : { [K in keyof R]: Float32Array };

/** What `interpret` returns: like {@link HostResult}, in float64. */
export type HostResult64<R> = R extends Tensor ? Float64Array
  : { [K in keyof R]: Float64Array };

/** A compiled program. */
export interface Program<R extends TraceResult = TraceResult> {
  /** Where `run` executes. */
  readonly backend: Backend;
  /** The traced IR. */
  readonly graph: Graph;
  /** The generated kernels (for the CPU backend: what the GPU would run, with default limits). */
  readonly kernels: readonly KernelArtifact[];
  /** Runs on the program's backend. */
  run(inputs: Record<string, HostArray>, options?: RunOptions): Promise<HostResult<R>>;
  /** Runs the float64 CPU interpreter (the oracle) on the same inputs. */
  interpret(inputs: Record<string, HostArray>): HostResult64<R>;
  /** Per-kernel GPU times of the last run made with `{ profile: true }`. */
  readonly lastTimings?: readonly KernelTiming[];
  /**
   * Bytes of the GPU buffers the program allocated (inputs, outputs and intermediates, the
   * latter sharing buffers where their lifetimes allow); 0 on the CPU backend.
   */
  readonly bufferBytes: number;
  /**
   * Times the GPU kernels with timestamp queries (median per kernel after warm-up, each in its
   * own pass, and their sum), then the whole program in one pass as `run` submits it
   * (`sequenceNs`); the CPU backend has nothing to time and throws.
   */
  benchmark(
    inputs: Record<string, HostArray>,
    options?: { warmup?: number; iterations?: number },
  ): Promise<ProgramBenchmark>;
  /**
   * Frees GPU resources (once the calls already made have finished). Every later call of
   * `run`, `interpret` or `benchmark` throws; calling `destroy` again does nothing.
   */
  destroy(): void;
}

let warnedCpu = false;

function shape<R>(graph: Graph, out: Record<string, Float32Array | Float64Array | Int32Array>) {
  return (graph.single ? out["out"] : out) as HostResult<R>;
}

/** The codegen limits of a GPU context. */
export function deviceLimits(ctx: GpuContext): DeviceLimits {
  return limitsFrom(ctx.limits, ctx.features);
}

/**
 * `program` regenerated with the autotuner's choices for its tuning points (measured now or
 * read from the cache); `program` itself when every choice is its default.
 */
export async function tunedProgram(
  ctx: GpuContext,
  graph: Graph,
  limits: DeviceLimits,
  codegenOptions: CodegenOptions,
  program: KernelProgram,
  autotuneOption: true | AutotuneOptions,
): Promise<KernelProgram> {
  const { choices: tuned, nested } = await autotune(
    ctx,
    program.kernels,
    autotuneOption === true ? {} : autotuneOption,
  );
  // Nested points' choices (tuned inside another point's candidate, so always cached) apply
  // wherever that candidate is emitted: regenerating picks them up.
  const changed = nested.size > 0 ||
    program.kernels.some((k) =>
      k.tuning && tuned.has(k.tuning.key) && tuned.get(k.tuning.key) !== k.tuning.chosen
    );
  return changed ? generateKernels(graph, { ...limits, tuned }, codegenOptions) : program;
}

/**
 * Compiles `fn` for the given inputs and axis sizes:
 * ```ts
 * const prog = await compile({ x: "b l d", A: "d n" }, ({ x, A }) => einsum("b l d, d n -> b l n", x, A),
 *   { b: 2, l: 7, d: 5, n: 3 });
 * const y = await prog.run({ x: new Float32Array(70), A: new Float32Array(15) });
 * ```
 */
export async function compile<const S extends InputSpec, R extends TraceResult>(
  inputs: S,
  fn: (tensors: TensorsOf<S>) => R,
  sizes: Sizes,
  options: CompileOptions = {},
): Promise<Program<R>> {
  const graph = trace(inputs, fn, sizes);
  const want = options.backend ?? "auto";
  let ctx: GpuContext | undefined = options.gpu;
  if (!ctx && want !== "cpu") {
    try {
      ctx = await getGpu();
    } catch (e) {
      if (!(e instanceof NoAdapterError) || want === "gpu") throw e;
      if (!warnedCpu) {
        console.error(
          "ssmkit: no WebGPU adapter found; running on the float64 CPU interpreter (slow). " +
            "On Linux without a GPU, install Mesa's Vulkan drivers (mesa-vulkan-drivers).",
        );
        warnedCpu = true;
      }
    }
  }
  const aliases = resolveInPlace(graph, options.inPlace ?? {});
  const codegenOptions = {
    scan: options.scan,
    matmul: options.matmul,
    assocScan: options.assocScan,
    attention: options.attention,
    scanBackward: options.scanBackward,
    noScanBackward: options.noScanBackward,
    horizontal: options.horizontal,
    rideAlong: options.rideAlong,
    ssdBackward: options.ssdBackward,
    aliases,
  };
  const limits = ctx ? deviceLimits(ctx) : DEFAULT_LIMITS;
  let program = generateKernels(graph, limits, codegenOptions);
  if (ctx && options.autotune) {
    program = await tunedProgram(ctx, graph, limits, codegenOptions, program, options.autotune);
  }
  let destroyed = false;
  const checkAlive = (method: string) => {
    if (destroyed) {
      const names = program.kernels.map((k) => k.name);
      const shown = names.length > 3 ? [...names.slice(0, 3), "…"] : names;
      throw new Error(
        `${method}: this program (kernel${names.length === 1 ? "" : "s"} ${shown.join(", ")}) ` +
          "was destroyed; compile it again to use it",
      );
    }
  };
  const cpuRun = (data: Record<string, HostArray>) => {
    checkAlive("interpret");
    return shape<R>(graph, interpret(graph, data)) as unknown as HostResult64<R>;
  };
  if (!ctx) {
    return {
      backend: "cpu",
      graph,
      kernels: program.kernels,
      run: (data) =>
        settle(() => {
          checkAlive("run");
          const out = interpret(graph, data);
          const f32: Record<string, Float32Array> = {};
          for (const [k, v] of Object.entries(out)) f32[k] = Float32Array.from(v);
          return shape<R>(graph, f32);
        }),
      interpret: cpuRun,
      bufferBytes: 0,
      benchmark: () =>
        settle(() => {
          checkAlive("benchmark");
          throw new Error("benchmark needs the GPU backend");
        }),
      destroy: () => {
        destroyed = true;
      },
    };
  }
  const gpu = await GpuProgram.create(ctx, program, program.aliases ?? aliases);
  return {
    backend: "gpu",
    graph,
    kernels: program.kernels,
    run: async (data, runOptions) => shape<R>(graph, await gpu.run(data, runOptions)),
    interpret: cpuRun,
    get lastTimings() {
      return gpu.lastTimings;
    },
    bufferBytes: gpu.bufferBytes,
    benchmark: (data, benchOptions) => gpu.benchmark(data, benchOptions),
    destroy: () => {
      destroyed = true;
      gpu.destroy();
    },
  };
}

/** Runs `f` now; its result or exception as a promise. */
function settle<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** Checks `inPlace` pairs and returns input node → output node. */
function resolveInPlace(graph: Graph, pairs: Record<string, string>): Map<Node, Node> {
  const aliases = new Map<Node, Node>();
  const nodes = collectNodes(Object.values(graph.outputs));
  for (const [outName, inName] of Object.entries(pairs)) {
    const out = graph.outputs[outName];
    const input = graph.inputs.find((i) => i.name === inName);
    if (!out) throw new Error(`inPlace: no output named "${outName}"`);
    if (!input) throw new Error(`inPlace: no input named "${inName}"`);
    const same = out.axes.length === input.axes.length &&
      out.axes.every((a, i) => a === input.axes[i] && out.shape[i] === input.shape[i]);
    if (!same) {
      throw new Error(
        `inPlace: output "${outName}" ${showAxes(out.axes)} (${out.shape.join("×")}) and input ` +
          `"${inName}" ${showAxes(input.axes)} (${input.shape.join("×")}) differ in layout`,
      );
    }
    // Safe only when each element is read before it is overwritten by the same thread: the
    // input must be nothing but the init of the scan whose final state is the output.
    const readers = nodes.filter((n) => nodeInputs(n).includes(input));
    const scanNode = out.kind === "pick" ? out.x : undefined;
    const scanOk = out.kind === "pick" && scanNode?.kind === "scan" && scanNode.init === input &&
      readers.length === 1 && readers[0] === scanNode &&
      out.index ===
        (scanNode.reverse ? 0 : scanNode.shape[scanNode.axes.indexOf(scanNode.axis)] - 1);
    // The delta kernels read each state element once, before the thread that read it writes it.
    const deltaOk = out.kind === "delta_state" && out.x.init === input && readers.length === 1 &&
      readers[0] === out.x;
    if (!scanOk && !deltaOk) {
      throw new Error(
        `inPlace: output "${outName}" must be finalState() of a scan (or deltaRule's state) ` +
          `whose init is input ` +
          `"${inName}", and nothing else may read "${inName}"`,
      );
    }
    aliases.set(input, out);
  }
  return aliases;
}
