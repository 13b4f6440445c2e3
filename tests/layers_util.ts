// Shared checks of the layer tests (models/layers/): a layer compiled for the GPU against a
// float64 loop written from its paper (and the interpreter against the same loop), and its
// prefill against step-by-step decode.
import type { InputSpec, TraceResult } from "../dsl/trace.ts";
import { compile, type CompileOptions } from "../runtime/compile.ts";
import { assertClose } from "./util.ts";

type Arrays = Record<string, Float32Array>;
type Fn<S extends InputSpec> = Parameters<typeof compile<S, TraceResult>>[1];

/**
 * Compiles `fn`, checks every output of the kernels (≤ 1e-4 relative) and of the float64
 * interpreter (≤ 1e-9) against `want`, and returns the kernel names.
 */
export async function checkLayer<S extends InputSpec>(
  what: string,
  inputs: S,
  fn: Fn<S>,
  sizes: Record<string, number>,
  data: Arrays,
  want: Record<string, ArrayLike<number>>,
  options: CompileOptions = {},
): Promise<string[]> {
  const prog = await compile(inputs, fn, sizes, { backend: "gpu", ...options });
  try {
    const got = await prog.run(data) as Record<string, Float32Array>;
    const interp = prog.interpret(data) as Record<string, Float64Array>;
    for (const name of Object.keys(want)) {
      assertClose(interp[name], want[name], 1e-9, `${what}: interpreter output ${name}`);
      assertClose(got[name], want[name], 1e-4, `${what}: kernel output ${name}`);
    }
    return prog.kernels.map((k) => k.name);
  } finally {
    prog.destroy();
  }
}

/** Positions [t0, t1) of a (b, t, …) array with `inner` values per position. */
export function sliceTime(
  x: Float32Array,
  b: number,
  t: number,
  t0: number,
  t1: number,
): Float32Array {
  const inner = x.length / (b * t);
  const out = new Float32Array(b * (t1 - t0) * inner);
  for (let i = 0; i < b; i++) {
    out.set(x.subarray((i * t + t0) * inner, (i * t + t1) * inner), i * (t1 - t0) * inner);
  }
  return out;
}

/**
 * Runs `fn` as prefill over the first `split` steps, then one step at a time (t = 1), feeding
 * each call's final state back (`state` maps output names to the input names they feed), and
 * checks the concatenated `out` against `want` (the whole sequence in one call).
 */
export async function checkDecode<S extends InputSpec>(
  what: string,
  inputs: S,
  fn: Fn<S>,
  sizes: Record<string, number> & { b: number; t: number },
  data: Arrays,
  timed: string[],
  state: Record<string, string>,
  out: string,
  want: ArrayLike<number>,
  split: number,
): Promise<void> {
  const { b, t } = sizes;
  const pieces: Float32Array[] = [];
  let carried = { ...data };
  const prefill = await compile(inputs, fn, { ...sizes, t: split }, { backend: "gpu" });
  const step = await compile(inputs, fn, { ...sizes, t: 1 }, { backend: "gpu" });
  try {
    for (let t0 = 0; t0 < t;) {
      const t1 = t0 === 0 ? split : t0 + 1;
      const part = { ...carried };
      for (const name of timed) part[name] = sliceTime(data[name], b, t, t0, t1);
      const got = await (t0 === 0 ? prefill : step).run(part) as Record<string, Float32Array>;
      pieces.push(got[out]);
      carried = { ...carried };
      for (const [o, i] of Object.entries(state)) carried[i] = got[o];
      t0 = t1;
    }
  } finally {
    prefill.destroy();
    step.destroy();
  }
  // Reassemble (b, t, …) from the per-call (b, t_i, …) pieces.
  const inner = want.length / (b * t);
  const full = new Float32Array(want.length);
  let t0 = 0;
  for (const p of pieces) {
    const len = p.length / (b * inner);
    for (let i = 0; i < b; i++) {
      full.set(p.subarray(i * len * inner, (i + 1) * len * inner), (i * t + t0) * inner);
    }
    t0 += len;
  }
  assertClose(full, want, 1e-4, `${what}: prefill ${split} + decode vs one call`);
}
