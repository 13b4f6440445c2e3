/**
 * Half-precision weights for a loaded model (`loadModel(dir, { dtype })`). The weight matrices
 * (embedding, projections, LM head: nearly all of a model's bytes, and what a decode step
 * streams) are stored on the GPU in f16 or bf16 and widened to f32 in the kernels that read
 * them; the small per-channel tensors (norm weights, biases, D, dt bias, A_log, conv taps) stay
 * f32, as do activations and the SSM states, so the recurrences and exponentials run in f32.
 *
 * @module
 */

import type { InputDecl } from "../dsl/trace.ts";
import type { ModelDefinition } from "./definitions.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";

/** The element type of a loaded model's weight matrices on the GPU. */
export type WeightDtype = "f32" | "f16" | "bf16";

const WEIGHT_DTYPES: readonly WeightDtype[] = ["f32", "f16", "bf16"];

/** Whether a weight input is a matrix stored in the model's 16-bit dtype. */
export function isHalfWeight(name: string, decl: InputDecl): boolean {
  const axes = (typeof decl === "string" ? decl : decl.axes).trim().split(/\s+/);
  // Conv taps and A_log are matrices too, but tiny, and feed the state's recurrence.
  return axes.length === 2 && !/conv|A_log/.test(name);
}

/**
 * Checks a `dtype` option against the device: one line naming the problem. f16 needs WebGPU's
 * `shader-f16` feature; bf16 is widened with integer operations and runs everywhere.
 */
export function checkWeightDtype(dtype: unknown, ctx: GpuContext): asserts dtype is WeightDtype {
  if (!WEIGHT_DTYPES.includes(dtype as WeightDtype)) {
    throw new Error(
      `loadModel: dtype ${JSON.stringify(dtype)} is not one of ${WEIGHT_DTYPES.join(", ")}`,
    );
  }
  if (dtype === "f16" && !ctx.features.shaderF16) {
    throw new Error(
      `loadModel: dtype "f16" needs WebGPU's "shader-f16" feature, which this adapter ` +
        `(${ctx.adapterInfo.description || ctx.adapterInfo.vendor || "unknown"}) lacks; ` +
        `use dtype "bf16" or "f32"`,
    );
  }
}

/** `def` with its weight matrices declared as `dtype` inputs (unchanged for f32). */
export function withWeightDtype(def: ModelDefinition, dtype: WeightDtype): ModelDefinition {
  if (dtype === "f32") return def;
  return {
    ...def,
    weightInputs: () =>
      Object.fromEntries(
        Object.entries(def.weightInputs()).map(([name, decl]): [string, InputDecl] => [
          name,
          isHalfWeight(name, decl)
            ? { axes: typeof decl === "string" ? decl : decl.axes, dtype }
            : decl,
        ]),
      ),
  };
}
