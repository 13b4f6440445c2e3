/**
 * Tracing: runs a user function on symbolic input tensors and captures the IR graph.
 *
 * @module
 */

import { parseAxes } from "./axes.ts";
import { type DType, type Graph, type InputNode, makeNode, type Node } from "./ir.ts";
import { Tensor, type TensorOf } from "./tensor.ts";

/**
 * One input: an axis string (f32), or axes with a dtype (`{ axes: "b l", dtype: "i32" }`;
 * `"f16"` and `"bf16"` inputs are rounded to that type when given and stored in 16 bits).
 */
export type InputDecl = string | { axes: string; dtype?: DType };

const DTYPES: readonly DType[] = ["f32", "i32", "f16", "bf16"];

/** Declares a program's inputs by name. */
export type InputSpec = Record<string, InputDecl>;

/**
 * The symbolic tensors a traced function receives for an input spec: typed from literal axis
 * strings (`{ x: "b l d" }` passed inline, or declared `as const`), untyped where the axes are
 * only known at run time (a spec held in a variable without `as const` has `string` axes; its
 * tensors are then checked at trace time only).
 */
export type TensorsOf<S extends InputSpec> = {
  [K in keyof S]: S[K] extends string ? TensorOf<S[K]>
    : S[K] extends { axes: infer A extends string } ? TensorOf<A>
    : Tensor;
};

/** What a traced function may return: one tensor or a record of named tensors. */
export type TraceResult = Tensor | Record<string, Tensor>;

/** Axis sizes by name, e.g. `{ b: 2, l: 7, d: 5 }`. */
export type Sizes = Record<string, number>;

/**
 * Traces `fn` into a graph. Every input axis must have a size in `sizes`.
 * Shape errors surface here, at trace time, never on the GPU.
 */
export function trace<const S extends InputSpec>(
  inputs: S,
  fn: (tensors: TensorsOf<S>) => TraceResult,
  sizes: Sizes,
): Graph {
  for (const [axis, size] of Object.entries(sizes)) {
    if (!Number.isInteger(size) || size < 1) {
      throw new Error(`size of axis "${axis}" must be a positive integer, got ${size}`);
    }
  }
  const inputNodes: InputNode[] = [];
  const tensors: Record<string, Tensor> = {};
  for (const [name, decl] of Object.entries(inputs)) {
    const axesText = typeof decl === "string" ? decl : decl.axes;
    const dtype = typeof decl === "string" ? "f32" : decl.dtype ?? "f32";
    if (!DTYPES.includes(dtype)) {
      throw new Error(
        `input "${name}": dtype ${JSON.stringify(dtype)} is not one of ${DTYPES.join(", ")}`,
      );
    }
    const axes = parseAxes(axesText, `input "${name}"`);
    const shape = axes.map((a) => {
      const s = sizes[a];
      if (s === undefined) {
        throw new Error(`input "${name}" ${axesText}: axis "${a}" has no size; add it to sizes`);
      }
      return s;
    });
    const node = makeNode({ kind: "input", name, axes, shape, dtype });
    inputNodes.push(node);
    tensors[name] = new Tensor(node);
  }
  const result = fn(tensors as TensorsOf<S>);
  const outputs: Record<string, Node> = {};
  let single = false;
  if (result instanceof Tensor) {
    outputs["out"] = result.node;
    single = true;
  } else if (result && typeof result === "object") {
    for (const [name, t] of Object.entries(result)) {
      if (!(t instanceof Tensor)) {
        throw new Error(`the traced function's output "${name}" is not a Tensor`);
      }
      outputs[name] = t.node;
    }
    if (Object.keys(outputs).length === 0) {
      throw new Error("the traced function returned no outputs");
    }
  } else {
    throw new Error("the traced function must return a Tensor or a record of Tensors");
  }
  return { inputs: inputNodes, outputs, single };
}
