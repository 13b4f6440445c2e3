/**
 * Symbolic tensors: what user functions receive and return while being traced.
 *
 * @module
 */

import { type Canon, type IsLiteral, parseAxes, showAxes } from "./axes.ts";
import { makeNode, type Node } from "./ir.ts";

/** True when `T` is `any`. */
export type IsAny<T> = 0 extends (1 & T) ? true : false;

/**
 * A symbolic tensor with named axes `A` (e.g. `Tensor<"b l d">`). The type parameter is a
 * phantom: TypeScript checks it, tracing checks the real axes again.
 *
 * An untyped tensor (`Tensor` with no argument) is `Tensor<any>`: accepted anywhere, so code
 * that builds programs dynamically type-checks and relies on the trace-time checks alone.
 */
// deno-lint-ignore no-explicit-any
export class Tensor<A extends string = any> {
  /** Phantom field carrying the axis string type; never set at run time. */
  declare readonly __axes: A;
  /** The IR node this tensor stands for. */
  readonly node: Node;

  /** Wraps an IR node (library internals; users get tensors from `compile`/ops). */
  constructor(node: Node) {
    this.node = node;
  }

  /** Axis names in layout order. */
  get axes(): readonly string[] {
    return this.node.axes;
  }

  /** Sizes in layout order. */
  get shape(): readonly number[] {
    return this.node.shape;
  }

  /** The size of one axis; throws if the tensor has no such axis. */
  size(axis: string): number {
    const i = this.node.axes.indexOf(axis);
    if (i < 0) throw new Error(`tensor ${showAxes(this.node.axes)} has no axis "${axis}"`);
    return this.node.shape[i];
  }

  /** A readable description, e.g. `Tensor[b=2 l=7 d=5]`. */
  toString(): string {
    return `Tensor[${this.node.axes.map((a, i) => `${a}=${this.node.shape[i]}`).join(" ")}]`;
  }
}

/** A tensor or a plain number (a scalar constant). */
export type TensorLike = Tensor | number;

/** The axis string of a tensor-like type (`""` for numbers). */
export type AxesOf<X> = X extends Tensor<infer A>
  // deno-lint-ignore no-explicit-any
  ? (IsAny<A> extends true ? any : A)
  : "";

/**
 * The tensor type for an axis string type: `Tensor<"b l d">` for a literal (canonical
 * spacing), and an untyped `Tensor` for a plain `string` (axes only known at run time, e.g. an
 * input spec declared without `as const`), which trace-time checks alone then cover.
 */
export type TensorOf<S extends string> = IsLiteral<S> extends false ? Tensor : Tensor<Canon<S>>;

/**
 * Gives a tensor whose axes TypeScript does not know (from inputs named at run time, such as a
 * model's per-layer weights) the type `Tensor<"…">`, after checking at trace time that its axes
 * are exactly `axes`, in that order: `expectAxes(t["layers.0.in_proj"], "e m")`. Use it
 * instead of a cast (`as Tensor<"e m">`), which nothing would check.
 */
export function expectAxes<S extends string>(x: Tensor, axes: S): TensorOf<S> {
  const n = toNode(x, "expectAxes");
  const want = parseAxes(axes, "expectAxes: axes");
  if (want.join(" ") !== n.axes.join(" ")) {
    const reorder = want.length === n.axes.length && want.every((a) => n.axes.includes(a));
    throw new Error(
      `expectAxes: the tensor has axes ${showAxes(n.axes)}, expected ${showAxes(want)}` +
        (reorder ? ` (use transpose to change the order)` : ""),
    );
  }
  return x as TensorOf<S>;
}

/** The IR node of a tensor-like value; numbers become constants. */
export function toNode(x: TensorLike, context: string): Node {
  if (typeof x === "number") {
    return makeNode({ kind: "const", value: x, axes: [], shape: [], dtype: "f32" });
  }
  if (!(x instanceof Tensor)) {
    throw new Error(`${context}: expected a Tensor or a number, got ${describeValue(x)}`);
  }
  return x.node;
}

/** Wraps a node as a tensor of any axes type. */
// deno-lint-ignore no-explicit-any
export function wrap<A extends string = any>(node: Node): Tensor<A> {
  return new Tensor<A>(node);
}

function describeValue(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  if (ArrayBuffer.isView(x)) return `a ${x.constructor.name} (pass data to run(), not to ops)`;
  return typeof x;
}
