/**
 * `compile`: trace a user function, generate kernels, and bind them to the GPU (or, when no
 * adapter exists and the caller allows it, to the float64 CPU interpreter).
 *
 * @module
 */

import type { Graph } from "../dsl/ir.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { type InputSpec, type Sizes, trace, type TensorsOf, type TraceResult } from "../dsl/trace.ts";
import type { KernelArtifact } from "../codegen/artifact.ts";
import { generateKernels } from "../codegen/compile_graph.ts";
import { DEFAULT_LIMITS, type DeviceLimits, limitsFrom } from "../codegen/limits.ts";
import { getGpu, type GpuContext, NoAdapterError } from "./gpu_device.ts";
import { type HostArray, interpret } from "./interpreter.ts";
import { GpuProgram, type RunOptions } from "./program.ts";
import type { KernelTiming } from "./gpu_submit.ts";

/** Where a program runs. */
export type Backend = "gpu" | "cpu";

/** Options of {@link compile}. */
export interface CompileOptions {
  /** `"auto"` (default): the GPU when an adapter exists, else the CPU with a notice. */
  backend?: "auto" | Backend;
  /** Use this GPU context instead of the shared one. */
  gpu?: GpuContext;
}

/** What `run` returns: one array for a single-tensor program, else a record. */
export type HostResult<R> = R extends Tensor ? Float32Array
  : { [K in keyof R]: Float32Array };

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
  interpret(inputs: Record<string, HostArray>): HostResult<R> & Record<string, Float64Array>;
  /** Per-kernel GPU times of the last run made with `{ profile: true }`. */
  readonly lastTimings?: readonly KernelTiming[];
  /** Frees GPU resources. */
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
 * Compiles `fn` for the given inputs and axis sizes:
 * ```ts
 * const prog = await compile({ x: "b l d", A: "d n" }, ({ x, A }) => einsum("b l d, d n -> b l n", x, A),
 *   { b: 2, l: 7, d: 5, n: 3 });
 * const y = await prog.run({ x: new Float32Array(70), A: new Float32Array(15) });
 * ```
 */
export async function compile<S extends InputSpec, R extends TraceResult>(
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
  const program = generateKernels(graph, ctx ? deviceLimits(ctx) : DEFAULT_LIMITS);
  const cpuRun = (data: Record<string, HostArray>) => shape<R>(graph, interpret(graph, data));
  if (!ctx) {
    return {
      backend: "cpu",
      graph,
      kernels: program.kernels,
      run: (data) => {
        const out = interpret(graph, data);
        const f32: Record<string, Float32Array> = {};
        for (const [k, v] of Object.entries(out)) f32[k] = Float32Array.from(v);
        return Promise.resolve(shape<R>(graph, f32));
      },
      interpret: cpuRun as Program<R>["interpret"],
      destroy: () => {},
    };
  }
  const gpu = await GpuProgram.create(ctx, program);
  return {
    backend: "gpu",
    graph,
    kernels: program.kernels,
    run: async (data, runOptions) => shape<R>(graph, await gpu.run(data, runOptions)),
    interpret: cpuRun as Program<R>["interpret"],
    get lastTimings() {
      return gpu.lastTimings;
    },
    destroy: () => gpu.destroy(),
  };
}
