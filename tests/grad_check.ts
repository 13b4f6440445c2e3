// Gradient checking for the autodiff tests: the gradients a traced valueAndGrad program computes
// in the float64 interpreter against central finite differences of the forward program, also
// evaluated by the interpreter.
import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import { numel } from "../dsl/ir.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { type InputSpec, type Sizes, trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { relativeError } from "./util.ts";

/** Input data by name (f32 inputs as float64; i32 inputs as Int32Array). */
export type Data = Record<string, Float64Array | Int32Array>;

/**
 * Thrown when most of an input's elements sit on kinks of the loss (a step moves some compared
 * value across another): central differences cannot measure the gradient there at all.
 */
export class KinksEverywhereError extends Error {}

/** A scalar loss of the inputs. */
export type Loss = (t: Record<string, Tensor>) => Tensor;

/** Σ out·w over every axis: a scalar loss with random weights for a non-scalar output. */
export function weighted(out: Tensor, w: Tensor): Tensor {
  const axes = out.axes.join(" ");
  return (einsum as unknown as (s: string, ...x: Tensor[]) => Tensor)(
    `${axes}, ${w.axes.join(" ")} -> `,
    out,
    w,
  );
}

/** A traced function returning the loss and the gradients of `wrt` (as `d_<name>`). */
export function gradFn(loss: Loss, wrt: readonly string[]) {
  return (t: Record<string, Tensor>): Record<string, Tensor> => {
    const params = Object.fromEntries(wrt.map((k) => [k, t[k]]));
    const [value, grads] = valueAndGrad((p: Record<string, Tensor>) => loss({ ...t, ...p }))(
      params,
    );
    const out: Record<string, Tensor> = { value };
    for (const k of wrt) out[`d_${k}`] = grads[k];
    return out;
  };
}

/** The traced program of {@link gradFn}. */
export function gradProgram(inputs: InputSpec, loss: Loss, wrt: readonly string[], sizes: Sizes) {
  return trace(inputs, gradFn(loss, wrt), sizes);
}

/** Options of {@link checkGradients}. */
export interface CheckOptions {
  /** Finite-difference step (default 1e-5). */
  step?: number;
  /** Largest accepted relative L2 error per gradient (default 1e-6). */
  tol?: number;
  /** Check at most this many elements per input, spread evenly (default: all). */
  maxElements?: number;
  /**
   * Skip elements where f is not smooth at the step's scale (a kink of relu, abs, max or a
   * comparison within one step): there central differences at `step` and `step / 2` disagree
   * (by more than 1e-5 relative), whatever the gradient. Checks the smaller step's difference;
   * throws when more than a tenth of the elements are skipped. For random programs.
   */
  skipKinks?: boolean;
}

/**
 * Checks the interpreter's gradients of `loss` with respect to `wrt` against central
 * differences; throws naming the input and the error. Returns the analytic gradients.
 */
export function checkGradients(
  inputs: InputSpec,
  loss: Loss,
  wrt: readonly string[],
  sizes: Sizes,
  data: Data,
  options: CheckOptions = {},
): Record<string, Float64Array> {
  const { step = 1e-5, tol = 1e-6, maxElements = Infinity, skipKinks = false } = options;
  const forward = trace(inputs, loss, sizes);
  const f = (d: Data) => {
    const out = interpret(forward, d)["out"];
    if (out.length !== 1) throw new Error(`the loss has ${out.length} elements, not 1`);
    return out[0];
  };
  const analytic = interpret(gradProgram(inputs, loss, wrt, sizes), data);
  const value = analytic["value"][0];
  if (Math.abs(value - f(data)) > 1e-12 * Math.max(1, Math.abs(value))) {
    throw new Error(`valueAndGrad's value ${value} differs from the loss ${f(data)}`);
  }
  const result: Record<string, Float64Array> = {};
  for (const name of wrt) {
    const x = data[name] as Float64Array;
    const g = analytic[`d_${name}`];
    const node = forward.inputs.find((i) => i.name === name)!;
    if (g.length !== numel(node)) throw new Error(`d_${name} has ${g.length} elements`);
    const every = Math.max(1, Math.floor(x.length / Math.min(x.length, maxElements)));
    const central = (i: number, h: number) => {
      const saved = x[i];
      x[i] = saved + h;
      const up = f(data);
      x[i] = saved - h;
      const down = f(data);
      x[i] = saved;
      return (up - down) / (2 * h);
    };
    const got: number[] = [], want: number[] = [], at: number[] = [];
    let skipped = 0, checked = 0;
    for (let i = 0; i < x.length; i += every) {
      checked++;
      let fd = central(i, step);
      if (skipKinks) {
        const half = central(i, step / 2);
        if (Math.abs(fd - half) > 1e-5 * Math.max(1, Math.abs(half))) {
          skipped++;
          continue;
        }
        fd = half;
      }
      got.push(g[i]);
      want.push(fd);
      at.push(i);
    }
    if (skipped * 10 > checked) {
      throw new KinksEverywhereError(
        `"${name}": ${skipped} of ${checked} elements sit on kinks; check elsewhere`,
      );
    }
    let err = relativeError(got, want);
    if (!(err <= tol) && !skipKinks) {
      // Central differences carry an O(step²) truncation error, above 1e-6 relative where the
      // loss curves sharply (Mamba-2's D through the gated norm: 1.3e-6 at one seed, 2026-12-07):
      // before failing, Richardson's extrapolation (4·D(step/2) − D(step)) / 3, O(step⁴), decides.
      at.forEach((i, k) => want[k] = (4 * central(i, step / 2) - want[k]) / 3);
      err = relativeError(got, want);
    }
    // A gradient that is zero (a softmax's input shift) has differences of pure rounding noise,
    // about 1e-16·|f| / step each (allowed: 100 times that): those pass at any relative error.
    const noise = 1e-14 * Math.max(1, Math.abs(value)) / step * Math.sqrt(got.length);
    if (!(err <= tol) && !(distance(got, want) <= noise)) {
      let worst = 0;
      got.forEach((v, i) => {
        if (Math.abs(v - want[i]) > Math.abs(got[worst] - want[worst])) worst = i;
      });
      throw new Error(
        `gradient of "${name}": relative error ${err.toExponential(2)} > ${tol} against ` +
          `finite differences (worst at element ${at[worst]}: ${got[worst]} vs ${want[worst]})`,
      );
    }
    result[name] = g;
  }
  return result;
}

/** ‖a − b‖₂. */
function distance(a: readonly number[], b: readonly number[]): number {
  return Math.sqrt(a.reduce((acc, v, i) => acc + (v - b[i]) ** 2, 0));
}

/** Random float64 data in [lo, hi) for every f32 input (seeded); i32 inputs from `ids`. */
export function randomData(
  inputs: InputSpec,
  sizes: Sizes,
  next: () => number,
  ranges: Record<string, [number, number]> = {},
  ids: Record<string, Int32Array> = {},
): Data {
  const graph = trace(inputs, (t) => Object.values(t)[0], sizes);
  const out: Data = {};
  for (const inp of graph.inputs) {
    if (inp.dtype === "i32") {
      if (!ids[inp.name]) throw new Error(`randomData: give the ids of "${inp.name}"`);
      out[inp.name] = ids[inp.name];
      continue;
    }
    const [lo, hi] = ranges[inp.name] ?? [-1, 1];
    out[inp.name] = Float64Array.from({ length: numel(inp) }, () => lo + (hi - lo) * next());
  }
  return out;
}
