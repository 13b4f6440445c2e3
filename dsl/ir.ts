/**
 * The IR: a DAG of nodes with named axes and concrete sizes. Every node's `axes` order is also
 * its memory layout (row-major) whenever it is materialized. Values are addressed by axis name,
 * so broadcasting and permutation need no index arithmetic: a node evaluated "at" an
 * environment (axis name → index) just ignores the axes it does not have.
 *
 * @module
 */

/**
 * Element types. `i32` is used for token ids / gather indices. `f16` (IEEE binary16) and `bf16`
 * (bfloat16) are 16-bit float types: a node of one holds values representable in it (program
 * inputs of that dtype, `cast` results, views of those); math on them is f32 (every elementwise
 * op, contraction, reduction and scan gives an f32 node) and rounds only where a `cast` says
 * so. Program inputs of a 16-bit dtype are stored in 16 bits on the GPU; every other buffer
 * holds f32 (`codegen/dtypes.ts`).
 */
export type DType = "f32" | "i32" | "f16" | "bf16";

/** The float element types (everything but `i32`). */
export type FloatDType = Exclude<DType, "i32">;

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
  | "relu"
  | "sin"
  | "cos"
  | "tan"
  | "floor"
  | "ceil"
  | "round"
  | "sign"
  | "erf"
  /** The identity, whose gradient is zero: `stopGradient`. */
  | "stop_gradient"
  /** Rounding to the nearest f16 value, ties to even (`cast(x, "f16")`; gradient 1). */
  | "round_f16"
  /** Rounding to the nearest bf16 value, ties to even (`cast(x, "bf16")`; gradient 1). */
  | "round_bf16";

/**
 * Elementwise functions of two arguments; comparisons give 1 or 0; `mod` is the floor
 * remainder (sign of b).
 */
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
  | "ne"
  | "mod";

/** Reductions over named axes. */
export type ReduceOp = "sum" | "max" | "min";

/** Fields every node has. */
export interface Base {
  /** Unique, increasing in creation order (so creation order is a topological order). */
  readonly id: number;
  /** Axis names, in layout order. */
  readonly axes: readonly string[];
  /** Sizes matching `axes`. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
}

/** A program input (activations or weights). */
export interface InputNode extends Base {
  /** Discriminant. */
  readonly kind: "input";
  /** The input's name in the program's input spec. */
  readonly name: string;
}
/** A scalar constant. */
export interface ConstNode extends Base {
  /** Discriminant. */
  readonly kind: "const";
  /** The constant. */
  readonly value: number;
}
/**
 * The index along `axis`, as an f32 value (0, 1, …, size − 1): positions, masks. Like a
 * constant it needs no memory: kernels compute it from the axis index.
 */
export interface ArangeNode extends Base {
  /** Discriminant. */
  readonly kind: "arange";
  /** The one axis (`axes` is `[axis]`). */
  readonly axis: string;
}
/**
 * A small constant tensor given by its values (row-major over `axes`). Baked into the
 * kernels that read it (no buffer, no upload).
 */
export interface LiteralNode extends Base {
  /** Discriminant. */
  readonly kind: "literal";
  /** The values, row-major, `numel` of them. */
  readonly values: readonly number[];
}
/** `op(x)` elementwise. */
export interface UnaryNode extends Base {
  /** Discriminant. */
  readonly kind: "unary";
  /** The function. */
  readonly op: UnaryOp;
  /** The operand. */
  readonly x: Node;
}
/** `op(a, b)` elementwise with broadcasting by axis name. */
export interface BinaryNode extends Base {
  /** Discriminant. */
  readonly kind: "binary";
  /** The function. */
  readonly op: BinaryOp;
  /** Left operand. */
  readonly a: Node;
  /** Right operand. */
  readonly b: Node;
}
/** `cond != 0 ? a : b` elementwise. */
export interface WhereNode extends Base {
  /** Discriminant. */
  readonly kind: "where";
  /** Selector (nonzero picks `a`). */
  readonly cond: Node;
  /** Value where `cond` is nonzero. */
  readonly a: Node;
  /** Value where `cond` is zero. */
  readonly b: Node;
}
/** Same values, another layout order of the same axes. */
export interface PermuteNode extends Base {
  /** Discriminant. */
  readonly kind: "permute";
  /** The tensor whose axes are reordered (to this node's `axes`). */
  readonly x: Node;
}
/**
 * Binary contraction: out[axes] = Σ over `summed` of a·b. Summed axes appear in both operands;
 * n-ary einsums are split into these by the front end.
 */
export interface ContractNode extends Base {
  /** Discriminant. */
  readonly kind: "contract";
  /** First operand. */
  readonly a: Node;
  /** Second operand. */
  readonly b: Node;
  /** Axes summed over (in both operands, not in the result). */
  readonly summed: readonly string[];
}
/** Reduction of `x` over `over`. */
export interface ReduceNode extends Base {
  /** Discriminant. */
  readonly kind: "reduce";
  /** The reduction. */
  readonly op: ReduceOp;
  /** The reduced tensor. */
  readonly x: Node;
  /** Axes reduced away. */
  readonly over: readonly string[];
}
/**
 * Regrouping of axes (einops rearrange): each input axis is a product of elementary axes
 * (`inGroups`), each output axis too (`outGroups`); `sizes` gives every elementary size.
 */
export interface RegroupNode extends Base {
  /** Discriminant. */
  readonly kind: "regroup";
  /** The regrouped tensor. */
  readonly x: Node;
  /** Elementary axes of each input axis, outermost first. */
  readonly inGroups: readonly (readonly string[])[];
  /** Elementary axes of each output axis, outermost first. */
  readonly outGroups: readonly (readonly string[])[];
  /** Size of every elementary axis. */
  readonly sizes: Readonly<Record<string, number>>;
}
/** out[newAxis = i] = x[axis = i + start]. */
export interface SliceNode extends Base {
  /** Discriminant. */
  readonly kind: "slice";
  /** The sliced tensor. */
  readonly x: Node;
  /** The axis of `x` that is sliced. */
  readonly axis: string;
  /** The result's name for the sliced range. */
  readonly newAxis: string;
  /** First index of `axis` taken. */
  readonly start: number;
}
/** Reverses `axis`. */
export interface FlipNode extends Base {
  /** Discriminant. */
  readonly kind: "flip";
  /** The reversed tensor. */
  readonly x: Node;
  /** The axis reversed. */
  readonly axis: string;
}
/** Concatenation: part i supplies `newAxis` indices [offsets[i], offsets[i] + size of its axis). */
export interface ConcatNode extends Base {
  /** Discriminant. */
  readonly kind: "concat";
  /** The concatenated tensors, in order. */
  readonly parts: readonly Node[];
  /** Each part's axis that is concatenated. */
  readonly partAxes: readonly string[];
  /** The result's name for the concatenated axis. */
  readonly newAxis: string;
  /** Where each part starts along `newAxis`. */
  readonly offsets: readonly number[];
}
/** out[idx axes, table axes except `axis`] = table[axis = indices[idx axes]]. */
export interface GatherNode extends Base {
  /** Discriminant. */
  readonly kind: "gather";
  /** The table rows are taken from (e.g. an embedding). */
  readonly table: Node;
  /** The i32 indices along `axis` (e.g. token ids). */
  readonly indices: Node;
  /** The table's axis that the indices select. */
  readonly axis: string;
}
/**
 * Causal depthwise convolution along `axis`:
 * out[t] = Σ_j w[j] · x[t − (K − 1) + j], taps j over `tapAxis` (size K), zero before t = 0.
 */
export interface Conv1dNode extends Base {
  /** Discriminant. */
  readonly kind: "conv1d";
  /** The signal. */
  readonly x: Node;
  /** The taps (per channel: depthwise). */
  readonly w: Node;
  /** The axis convolved along (time). */
  readonly axis: string;
  /** The taps' axis in `w`. */
  readonly tapAxis: string;
}

/** out[...] = x[axis = index]: one position of `axis`, which the result no longer has. */
export interface PickNode extends Base {
  /** Discriminant. */
  readonly kind: "pick";
  /** The tensor a position is taken from. */
  readonly x: Node;
  /** The axis removed. */
  readonly axis: string;
  /** The position of `axis` taken. */
  readonly index: number;
}
/**
 * Linear recurrence along `axis`, elementwise over every other axis:
 * h[t] = decay[t] · h[t − 1] + input[t], with h[−1] = init (or 0). With `reverse`, t runs
 * from the end. `axes` is the broadcast of decay and input.
 */
export interface ScanNode extends Base {
  /** Discriminant. */
  readonly kind: "scan";
  /** The axis the recurrence runs along. */
  readonly axis: string;
  /** decay[t], broadcast by axis name. */
  readonly decay: Node;
  /** input[t], broadcast by axis name. */
  readonly input: Node;
  /** The state before the first step (all axes but `axis`); zero when absent. */
  readonly init?: Node;
  /** Run from the last position to the first. */
  readonly reverse: boolean;
  /**
   * Set on the adjoint scan autodiff builds (`dsl/vjp_scan.ts`): the forward scan it is the
   * adjoint of. Values ignore it; codegen may then compute both together without storing
   * either state (`codegen/scan_backward_plan.ts`).
   */
  readonly primal?: ScanNode;
}

/**
 * The delta rule (DeltaNet, Gated DeltaNet) along `axis`, per batch position (every axis of
 * `beta` but `axis`): S_t = S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, y_t = scale·S_t q_t,
 * with α_t = exp(gate_t) (1 without a gate) and S_{−1} = init (or 0). The state S is
 * [value × key] per batch position. This node's value is y (v's axes); the final state is a
 * {@link DeltaStateNode} reading it. Both are always materialized: one kernel writes both.
 */
export interface DeltaNode extends Base {
  /** Discriminant. */
  readonly kind: "delta";
  /** Queries: batch axes, `axis`, `keyAxis`. */
  readonly q: Node;
  /** Keys: batch axes, `axis`, `keyAxis`. */
  readonly k: Node;
  /** Values: batch axes, `axis`, `valueAxis` (the result's axes). */
  readonly v: Node;
  /** Write strengths β_t: batch axes and `axis`. */
  readonly beta: Node;
  /** log α_t (Gated DeltaNet), over beta's axes; absent for DeltaNet (α = 1). */
  readonly gate?: Node;
  /** The state before the first step: batch axes, `valueAxis`, `keyAxis`. */
  readonly init?: Node;
  /** The time axis. */
  readonly axis: string;
  /** The key (and query) feature axis. */
  readonly keyAxis: string;
  /** The value feature axis. */
  readonly valueAxis: string;
  /** The factor on every output (y_t = scale·S_t q_t). */
  readonly scale: number;
}
/** The state a {@link DeltaNode} leaves after its last step: batch axes, value, key. */
export interface DeltaStateNode extends Base {
  /** Discriminant. */
  readonly kind: "delta_state";
  /** The recurrence whose final state this is. */
  readonly x: DeltaNode;
}

/**
 * The gradient of a {@link DeltaNode} with respect to its q, k, v, beta or init (`wrt`), given
 * the cotangents of its output y (`ct`, over y's axes) and of its final state (`ctState`, over
 * the state's axes); either may be absent (zero). The adjoint state G_t = ∂L/∂S_t runs backwards
 * (dsl/vjp_delta.ts has the equations); the forward states are recomputed from checkpoints. The
 * axes are the operand's.
 */
export interface DeltaGradNode extends Base {
  /** Discriminant. */
  readonly kind: "delta_grad";
  /** The forward recurrence (its operands are read, not its outputs). */
  readonly of: DeltaNode;
  /** The cotangent of the forward's y, over its axes. */
  readonly ct?: Node;
  /** The cotangent of the forward's final state: batch axes, value, key. */
  readonly ctState?: Node;
  /** Which operand's gradient this is. */
  readonly wrt: "q" | "k" | "v" | "beta" | "init";
}

/**
 * Softmax attention (`attention`, dsl/attention.ts): for every batch position and query row,
 * out[t, e] = Σ_s softmax_s(scale·q[t]·k[s] over the allowed keys)·v[s, e]. Batch axes are k's
 * axes but `keyAxis` and `featureAxis`; q has them, `queryAxis`, `featureAxis` and at most one
 * more axis (`groupAxis`: the query heads sharing one key/value head, grouped-query attention).
 * Allowed keys: all, or with `causal` s ≤ t + (keys − queries), and with `window` w also
 * s > t + (keys − queries) − w. The value is over q's axes with the feature axis replaced by
 * v's (`valueAxis`), in this node's `axes` order.
 */
export interface AttentionNode extends Base {
  /** Discriminant. */
  readonly kind: "attention";
  /** Queries: batch axes, optional `groupAxis`, `queryAxis`, `featureAxis`. */
  readonly q: Node;
  /** Keys: batch axes, `keyAxis`, `featureAxis`. */
  readonly k: Node;
  /** Values: batch axes, `keyAxis`, `valueAxis`. */
  readonly v: Node;
  /** The query position axis of q. */
  readonly queryAxis: string;
  /** The key position axis of k and v (may have the same name as `queryAxis`). */
  readonly keyAxis: string;
  /** The axis q and k are contracted over. */
  readonly featureAxis: string;
  /** v's feature axis (the result's last axis by name). */
  readonly valueAxis: string;
  /** q's axis of query heads per key/value head (grouped-query attention), if any. */
  readonly groupAxis?: string;
  /** The factor on q·k before the softmax. */
  readonly scale: number;
  /** Keys after the query's diagonal are masked (decode: the diagonal is shifted by keys − queries). */
  readonly causal: boolean;
  /** With `causal`: only the last `window` keys up to the diagonal. */
  readonly window?: number;
  /**
   * Attention sinks: a logit per query head (over some of q's axes but the query and feature
   * axes) added to the softmax as a key whose value is zero.
   */
  readonly sinks?: Node;
}

/**
 * The gradient of an {@link AttentionNode}'s value with respect to its q, k or v (`wrt`), given
 * the cotangent `ct` of its output: FlashAttention-2's backward, the probabilities recomputed
 * from q and k. The axes are the operand's. A `v` gradient may name the `k` gradient of the same
 * forward and cotangent as its `pair`: one kernel then writes both.
 */
export interface AttentionGradNode extends Base {
  /** Discriminant. */
  readonly kind: "attention_grad";
  /** The forward attention (its output O is read). */
  readonly of: AttentionNode;
  /** The cotangent of the forward's output, over its axes. */
  readonly ct: Node;
  /** Which operand's gradient this is. */
  readonly wrt: "q" | "k" | "v" | "sinks";
  /** For `wrt: "v"`: the `k` gradient computed by the same kernel. */
  readonly pair?: AttentionGradNode;
}

/**
 * The combine function of an {@link AssocScanNode}, traced once: `results[i]` is component i
 * of combine(left, right) as an elementwise graph over the placeholder leaves `left` and
 * `right` (input nodes that no program declares, one per component, with the elements' axes)
 * and constants. It is a separate small graph: `nodeInputs` never reaches it.
 */
export interface AssocCombine {
  /** The record's keys, in component order. */
  readonly names: readonly string[];
  /** Placeholders of the left (earlier) operand, one per component. */
  readonly left: readonly InputNode[];
  /** Placeholders of the right (later) operand, one per component. */
  readonly right: readonly InputNode[];
  /** Component i of combine(left, right). */
  readonly results: readonly Node[];
}

/**
 * Component `component` of an associative scan along `axis`: y[t] = x[0] ⊕ x[1] ⊕ … ⊕ x[t]
 * (with `reverse`, x[t] ⊕ x[t+1] ⊕ … ⊕ x[L−1]), where each x[t] is the record of `elems` at t
 * and ⊕ is `combine`. Every component of one scan shares `elems` and `combine` (the same
 * objects); `op` names the built-in scans (cummax, …) whose transpose rules exist.
 */
export interface AssocScanNode extends Base {
  /** Discriminant. */
  readonly kind: "assocScan";
  /** The axis scanned along. */
  readonly axis: string;
  /** The element components, all over this node's axes. */
  readonly elems: readonly Node[];
  /** The associative combine (the user's contract). */
  readonly combine: AssocCombine;
  /** Which component of the scanned record this node is. */
  readonly component: number;
  /** Run from the last position to the first. */
  readonly reverse: boolean;
  /** The built-in scan this is, when it is one (its gradient rule exists). */
  readonly op?: "sum" | "prod" | "max" | "min" | "logsumexp";
}

/** Any IR node. */
export type Node =
  | InputNode
  | ConstNode
  | ArangeNode
  | LiteralNode
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
  | ScanNode
  | DeltaNode
  | DeltaStateNode
  | DeltaGradNode
  | AttentionNode
  | AttentionGradNode
  | AssocScanNode;

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
    case "arange":
    case "literal":
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
    case "delta_state":
      return [node.x];
    case "delta":
      return [node.q, node.k, node.v, node.beta, node.gate, node.init].filter((n) =>
        n !== undefined
      );
    case "binary":
    case "contract":
      return [node.a, node.b];
    case "attention":
      return node.sinks ? [node.q, node.k, node.v, node.sinks] : [node.q, node.k, node.v];
    case "attention_grad": {
      const ins = [...nodeInputs(node.of), node.of, node.ct];
      return node.pair ? [...ins, node.pair] : ins;
    }
    case "delta_grad":
      return [...nodeInputs(node.of), node.ct, node.ctState].filter((n): n is Node =>
        n !== undefined
      );
    case "where":
      return [node.cond, node.a, node.b];
    case "concat":
      return [...node.parts];
    case "gather":
      return [node.table, node.indices];
    case "conv1d":
      return [node.x, node.w];
    case "assocScan":
      return [...node.elems];
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
  /** The program's inputs, in declaration order. */
  readonly inputs: readonly InputNode[];
  /** The program's outputs by name (`"out"` when the function returned one tensor). */
  readonly outputs: Readonly<Record<string, Node>>;
  /** True when the user function returned one tensor rather than a record. */
  readonly single: boolean;
}
