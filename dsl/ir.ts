/**
 * The IR: a DAG of nodes with named axes and concrete sizes. Every node's `axes` order is also
 * its memory layout (row-major) whenever it is materialized. Values are addressed by axis name,
 * so broadcasting and permutation need no index arithmetic: a node evaluated "at" an
 * environment (axis name → index) just ignores the axes it does not have.
 *
 * @module
 */

/** Element types. `i32` is used for token ids / gather indices; all math is `f32`. */
export type DType = "f32" | "i32";

/** Elementwise functions of one argument. */
export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "abs"
  | "sigmoid"
  | "silu"
  | "softplus"
  | "tanh"
  | "relu";

/** Elementwise functions of two arguments; comparisons give 1 or 0. */
export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "pow"
  | "max"
  | "min"
  | "lt"
  | "le"
  | "gt"
  | "ge"
  | "eq"
  | "ne";

/** Reductions over named axes. */
export type ReduceOp = "sum" | "max" | "min";

interface Base {
  /** Unique, increasing in creation order (so creation order is a topological order). */
  readonly id: number;
  /** Axis names, in layout order. */
  readonly axes: readonly string[];
  /** Sizes matching `axes`. */
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** A program input (activations or weights). */
export interface InputNode extends Base {
  readonly kind: "input";
  readonly name: string;
}
/** A scalar constant. */
export interface ConstNode extends Base {
  readonly kind: "const";
  readonly value: number;
}
/** `op(x)` elementwise. */
export interface UnaryNode extends Base {
  readonly kind: "unary";
  readonly op: UnaryOp;
  readonly x: Node;
}
/** `op(a, b)` elementwise with broadcasting by axis name. */
export interface BinaryNode extends Base {
  readonly kind: "binary";
  readonly op: BinaryOp;
  readonly a: Node;
  readonly b: Node;
}
/** `cond != 0 ? a : b` elementwise. */
export interface WhereNode extends Base {
  readonly kind: "where";
  readonly cond: Node;
  readonly a: Node;
  readonly b: Node;
}
/** Same values, another layout order of the same axes. */
export interface PermuteNode extends Base {
  readonly kind: "permute";
  readonly x: Node;
}
/**
 * Binary contraction: out[axes] = Σ over `summed` of a·b. Summed axes appear in both operands;
 * n-ary einsums are split into these by the front end.
 */
export interface ContractNode extends Base {
  readonly kind: "contract";
  readonly a: Node;
  readonly b: Node;
  readonly summed: readonly string[];
}
/** Reduction of `x` over `over`. */
export interface ReduceNode extends Base {
  readonly kind: "reduce";
  readonly op: ReduceOp;
  readonly x: Node;
  readonly over: readonly string[];
}
/**
 * Regrouping of axes (einops rearrange): each input axis is a product of elementary axes
 * (`inGroups`), each output axis too (`outGroups`); `sizes` gives every elementary size.
 */
export interface RegroupNode extends Base {
  readonly kind: "regroup";
  readonly x: Node;
  readonly inGroups: readonly (readonly string[])[];
  readonly outGroups: readonly (readonly string[])[];
  readonly sizes: Readonly<Record<string, number>>;
}
/** out[newAxis = i] = x[axis = i + start]. */
export interface SliceNode extends Base {
  readonly kind: "slice";
  readonly x: Node;
  readonly axis: string;
  readonly newAxis: string;
  readonly start: number;
}
/** Reverses `axis`. */
export interface FlipNode extends Base {
  readonly kind: "flip";
  readonly x: Node;
  readonly axis: string;
}
/** Concatenation: part i supplies `newAxis` indices [offsets[i], offsets[i] + size of its axis). */
export interface ConcatNode extends Base {
  readonly kind: "concat";
  readonly parts: readonly Node[];
  readonly partAxes: readonly string[];
  readonly newAxis: string;
  readonly offsets: readonly number[];
}
/** out[idx axes, table axes except `axis`] = table[axis = indices[idx axes]]. */
export interface GatherNode extends Base {
  readonly kind: "gather";
  readonly table: Node;
  readonly indices: Node;
  readonly axis: string;
}
/**
 * Causal depthwise convolution along `axis`:
 * out[t] = Σ_j w[j] · x[t − (K − 1) + j], taps j over `tapAxis` (size K), zero before t = 0.
 */
export interface Conv1dNode extends Base {
  readonly kind: "conv1d";
  readonly x: Node;
  readonly w: Node;
  readonly axis: string;
  readonly tapAxis: string;
}

/** out[...] = x[axis = index]: one position of `axis`, which the result no longer has. */
export interface PickNode extends Base {
  readonly kind: "pick";
  readonly x: Node;
  readonly axis: string;
  readonly index: number;
}
/**
 * Linear recurrence along `axis`, elementwise over every other axis:
 * h[t] = decay[t] · h[t − 1] + input[t], with h[−1] = init (or 0). With `reverse`, t runs
 * from the end. `axes` is the broadcast of decay and input.
 */
export interface ScanNode extends Base {
  readonly kind: "scan";
  readonly axis: string;
  readonly decay: Node;
  readonly input: Node;
  readonly init?: Node;
  readonly reverse: boolean;
}

/** Any IR node. */
export type Node =
  | InputNode
  | ConstNode
  | UnaryNode
  | BinaryNode
  | WhereNode
  | PermuteNode
  | ContractNode
  | ReduceNode
  | RegroupNode
  | SliceNode
  | FlipNode
  | ConcatNode
  | GatherNode
  | Conv1dNode
  | PickNode
  | ScanNode;

/** The node kinds. */
export type NodeKind = Node["kind"];

let nextId = 0;

/** Distributive omit, so `NewNode` keeps the union's discrimination. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** A node description without its id. */
export type NewNode = DistributiveOmit<Node, "id">;

/** Creates a node with a fresh id. */
export function makeNode<T extends NewNode>(fields: T): T & { id: number } {
  return { ...fields, id: nextId++ };
}

/** The direct inputs of a node. */
export function nodeInputs(node: Node): Node[] {
  switch (node.kind) {
    case "input":
    case "const":
      return [];
    case "unary":
    case "permute":
    case "regroup":
    case "slice":
    case "flip":
    case "pick":
      return [node.x];
    case "scan":
      return node.init ? [node.decay, node.input, node.init] : [node.decay, node.input];
    case "reduce":
      return [node.x];
    case "binary":
    case "contract":
      return [node.a, node.b];
    case "where":
      return [node.cond, node.a, node.b];
    case "concat":
      return [...node.parts];
    case "gather":
      return [node.table, node.indices];
    case "conv1d":
      return [node.x, node.w];
  }
}

/** Number of elements of a node. */
export function numel(node: { shape: readonly number[] }): number {
  return node.shape.reduce((p, s) => p * s, 1);
}

/** Size of `axis` in `node`, or undefined. */
export function axisSize(node: Node, axis: string): number | undefined {
  const i = node.axes.indexOf(axis);
  return i < 0 ? undefined : node.shape[i];
}

/** All nodes reachable from `roots`, in topological (creation) order. */
export function collectNodes(roots: readonly Node[]): Node[] {
  const seen = new Map<number, Node>();
  const stack = [...roots];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n.id)) continue;
    seen.set(n.id, n);
    stack.push(...nodeInputs(n));
  }
  return [...seen.values()].sort((a, b) => a.id - b.id);
}

/** Row-major element strides of a node's layout, by axis name. */
export function stridesOf(node: { axes: readonly string[]; shape: readonly number[] }) {
  const strides: Record<string, number> = {};
  let s = 1;
  for (let i = node.axes.length - 1; i >= 0; i--) {
    strides[node.axes[i]] = s;
    s *= node.shape[i];
  }
  return strides;
}

/** A traced program: named inputs and named outputs. */
export interface Graph {
  readonly inputs: readonly InputNode[];
  readonly outputs: Readonly<Record<string, Node>>;
  /** True when the user function returned one tensor rather than a record. */
  readonly single: boolean;
}
