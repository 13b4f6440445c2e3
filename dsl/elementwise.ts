/**
 * Elementwise math with broadcasting by axis name: `mul(D /* d *\/, x /* b l d *\/)` is `b l d`.
 *
 * **The broadcast rule.** An elementwise op's operands broadcast by name only when one of them
 * has every axis the others have (numbers have none): the result then has that operand's axes,
 * and the others are repeated along the axes they lack. Operands that each bring an axis the
 * other lacks are an error, at compile time for typed tensors and at trace time always, because
 * broadcasting them would silently make an outer product: in
 * `sum(mul(q /* b l h dk *\/, k /* b l h d *\/), "dk")`, where `d` was meant to be `dk`, it would
 * compute Σ_dk q · k over [b l h dk d]. Write an intended outer product explicitly:
 * `einsum("b l h dk, b l h d -> b l h dk d", q, k)` for a product, or {@link broadcast} an
 * operand to the full axes first (`add(broadcast(a, "b l d", { d: 4 }), c)`).
 *
 * @module
 */

import {
  type Broadcast,
  type IsLiteral,
  type IsSubset,
  type Join,
  type KnownAxes,
  type Minus,
  type OuterBroadcastError,
  parseAxes,
  showAxes,
  type Words,
} from "./axes.ts";
import { requireFloat, uncheckedBinary, uncheckedWhere } from "./build.ts";
import { type BinaryOp, makeNode, type Node, type UnaryOp } from "./ir.ts";
import { type AxesOf, Tensor, type TensorLike, type TensorOf, toNode } from "./tensor.ts";

/** Result type of broadcasting two tensor-likes (untyped when either's axes are unknown). */
export type Bcast<X, Y> = KnownAxes<AxesOf<X>> extends false ? Tensor
  : KnownAxes<AxesOf<Y>> extends false ? Tensor
  : Tensor<Broadcast<AxesOf<X>, AxesOf<Y>>>;

/**
 * The type of an elementwise op's second operand: `Y` when the broadcast rule holds (one
 * operand's axes contain the other's, or either is untyped), else an error message naming both
 * operands' axes, so that a misspelled axis is a compile error.
 */
export type CheckBroadcast<X, Y, Op extends string> = KnownAxes<AxesOf<X>> extends false ? Y
  : KnownAxes<AxesOf<Y>> extends false ? Y
  : [OuterBroadcastError<AxesOf<X>, AxesOf<Y>, Op>] extends [never] ? Y
  : OuterBroadcastError<AxesOf<X>, AxesOf<Y>, Op>;

/**
 * The type of `where`'s last operand: `Y` when one of the three operands has every axis of
 * the others (or any is untyped), else an error message.
 */
export type CheckWhere<C, X, Y> = KnownAxes<AxesOf<C>> extends false ? Y
  : KnownAxes<AxesOf<X>> extends false ? Y
  : KnownAxes<AxesOf<Y>> extends false ? Y
  : HasAllAxes<[AxesOf<C>, AxesOf<X>, AxesOf<Y>]> extends true ? Y
  : `where: no operand has every axis of the others (cond [${AxesOf<C>}], a [${AxesOf<
    X
  >}], b [${AxesOf<Y>}]): elementwise ops do not make outer products; use broadcast()`;

/** True when one of the axis strings `T` contains all the others' axes. */
export type HasAllAxes<T extends string[]> = true extends {
  [K in keyof T]: IsSubset<Join<AllAxes<T>>, T[K]>;
}[number] ? true
  : false;

/** Every axis of the axis strings `T`, each once, in order of first appearance. */
export type AllAxes<T extends string[], Seen extends string[] = []> = T extends
  [infer H extends string, ...infer R extends string[]]
  ? AllAxes<R, [...Seen, ...Minus<Words<H>, Seen>]>
  : Seen;

/**
 * Throws unless one operand has every axis the others have (the broadcast rule above), with a
 * message naming each operand's axes and the explicit alternatives.
 */
export function requireOneHasAllAxes(op: string, operands: [string, Node][]): void {
  const all: string[] = [];
  for (const [, n] of operands) for (const a of n.axes) if (!all.includes(a)) all.push(a);
  if (operands.some(([, n]) => n.axes.length === all.length)) return;
  const hint = `if an outer product is meant, ` +
    (op === "mul" && operands.length === 2
      ? `write einsum("${operands.map(([, n]) => n.axes.join(" ")).join(", ")} -> ` +
        `${all.join(" ")}", …) or broadcast() an operand to ${showAxes(all)} first`
      : `broadcast() an operand to ${showAxes(all)} first`) +
    `; if not, an axis name is misspelled`;
  if (operands.length === 2) {
    const [[, a], [, b]] = operands;
    const onlyA = a.axes.filter((x) => !b.axes.includes(x));
    const onlyB = b.axes.filter((x) => !a.axes.includes(x));
    throw new Error(
      `${op}: ${showAxes(a.axes)} has ${onlyA.join(", ")} and ${showAxes(b.axes)} has ` +
        `${onlyB.join(", ")}, which the other lacks: broadcasting by name would make the outer ` +
        `product ${showAxes(all)}; ${hint}`,
    );
  }
  const list = operands.map(([name, n]) => `${name} ${showAxes(n.axes)}`).join(", ");
  throw new Error(
    `${op}: no operand has every axis of the others (${list}): broadcasting by name would ` +
      `make the outer product ${showAxes(all)}; ${hint}`,
  );
}

/** An elementwise function of one tensor. */
export type UnaryFn = <X extends Tensor>(x: X) => X;

/**
 * An elementwise function of two tensor-likes, broadcasting by axis name when one operand's axes
 * contain the other's (see the module documentation).
 */
export type BinaryFn<Op extends string = string> = <X extends TensorLike, Y extends TensorLike>(
  a: X,
  b: CheckBroadcast<X, Y, Op>,
) => Bcast<X, Y>;

/** The user-facing function of a unary op (float operands; the result keeps x's axes). */
export function unaryOp(op: UnaryOp): UnaryFn {
  return <X extends Tensor>(x: X): X => {
    const n = toNode(x, op);
    requireFloat(n, op);
    return new Tensor(
      makeNode({ kind: "unary", op, x: n, axes: n.axes, shape: n.shape, dtype: "f32" }),
    ) as X;
  };
}

/**
 * The checked binary op behind the public ones, untyped (for library code that already knows
 * its operands' axes at run time only): the broadcast rule, dtypes and sizes are checked.
 */
export function checkedBinary(op: BinaryOp, name: string, a: TensorLike, b: TensorLike): Tensor {
  const na = toNode(a, name);
  const nb = toNode(b, name);
  requireOneHasAllAxes(name, [["a", na], ["b", nb]]);
  return new Tensor(uncheckedBinary(op, na, nb));
}

function binary<Op extends string>(op: BinaryOp, name: Op): BinaryFn<Op> {
  return <X extends TensorLike, Y extends TensorLike>(
    a: X,
    b: CheckBroadcast<X, Y, Op>,
  ): Bcast<X, Y> => checkedBinary(op, name, a, b as TensorLike) as Bcast<X, Y>;
}

/**
 * `x` itself, but a constant for differentiation: `valueAndGrad`, `grad` and `vjp` send
 * no cotangent through it (JAX's `stop_gradient`, PyTorch's `detach`). Compiles to nothing (the
 * kernel reads x).
 */
export const stopGradient: UnaryFn = unaryOp("stop_gradient");
/** `-x` */
export const neg: UnaryFn = unaryOp("neg");
/** `e^x` */
export const exp: UnaryFn = unaryOp("exp");
/** Natural logarithm. */
export const log: UnaryFn = unaryOp("log");
/** Square root. */
export const sqrt: UnaryFn = unaryOp("sqrt");
/** `1 / sqrt(x)` */
export const rsqrt: UnaryFn = unaryOp("rsqrt");
/** `|x|` */
export const abs: UnaryFn = unaryOp("abs");
/** `1 / (1 + e^-x)` */
export const sigmoid: UnaryFn = unaryOp("sigmoid");
/** `x · sigmoid(x)` (also called swish). */
export const silu: UnaryFn = unaryOp("silu");
/** `log(1 + e^x)`, computed stably (equal to x above 20, like PyTorch). */
export const softplus: UnaryFn = unaryOp("softplus");
/** Hyperbolic tangent. */
export const tanh: UnaryFn = unaryOp("tanh");
/** `max(x, 0)` */
export const relu: UnaryFn = unaryOp("relu");

/** `a + b`, broadcasting by axis name (one operand's axes must contain the other's). */
export const add: BinaryFn<"add"> = binary("add", "add");
/** `a - b` (broadcast rule as {@link add}). */
export const sub: BinaryFn<"sub"> = binary("sub", "sub");
/**
 * `a · b` (broadcast rule as {@link add}): `mul(D /* d *\/, x /* b l d *\/)` is `b l d`; an
 * outer product such as [b l dk] × [b l d] is `einsum("b l dk, b l d -> b l dk d", a, b)`.
 */
export const mul: BinaryFn<"mul"> = binary("mul", "mul");
/** `a / b` (broadcast rule as {@link add}). */
export const div: BinaryFn<"div"> = binary("div", "div");
/** `a ^ b` (a ≥ 0, or b a small integer constant). */
export const pow: BinaryFn<"pow"> = binary("pow", "pow");
/** `a < b` as 1 or 0. */
export const lt: BinaryFn<"lt"> = binary("lt", "lt");
/** `a <= b` as 1 or 0. */
export const le: BinaryFn<"le"> = binary("le", "le");
/** `a > b` as 1 or 0. */
export const gt: BinaryFn<"gt"> = binary("gt", "gt");
/** `a >= b` as 1 or 0. */
export const ge: BinaryFn<"ge"> = binary("ge", "ge");
/** `a == b` as 1 or 0. */
export const eq: BinaryFn<"eq"> = binary("eq", "eq");
/** `a != b` as 1 or 0. */
export const ne: BinaryFn<"ne"> = binary("ne", "ne");
/** Elementwise maximum of two tensors (for the reduction use `max(x, "axis")`). */
export const maximum: BinaryFn<"maximum"> = binary("max", "maximum");
/** Elementwise minimum of two tensors (for the reduction use `min(x, "axis")`). */
export const minimum: BinaryFn<"minimum"> = binary("min", "minimum");

/**
 * `cond != 0 ? a : b`, broadcasting all three by axis name: one of them must have every axis
 * of the others (the broadcast rule of {@link add}).
 */
export function where<C extends TensorLike, X extends TensorLike, Y extends TensorLike>(
  cond: C,
  a: X,
  b: CheckWhere<C, X, Y>,
): Bcast<C, Bcast<X, Y>> {
  const nc = toNode(cond, "where");
  const na = toNode(a, "where");
  const nb = toNode(b as TensorLike, "where");
  requireOneHasAllAxes("where", [["cond", nc], ["a", na], ["b", nb]]);
  return new Tensor(uncheckedWhere(nc, na, nb)) as Bcast<C, Bcast<X, Y>>;
}

/**
 * A constant tensor with named axes: `full(0, "b s d", { b: 2, s: 3, d: 8 })`. It costs no
 * memory: kernels read the value as a literal.
 */
export function full<A extends string>(
  value: number,
  axes: A,
  sizes: Record<string, number>,
): TensorOf<A> {
  const names = parseAxes(axes, "full: axes");
  return new Tensor(
    makeNode({
      kind: "const",
      value,
      axes: names,
      shape: constShape(names, sizes, "full"),
      dtype: "f32",
    }),
  ) as TensorOf<A>;
}

function constShape(names: string[], sizes: Record<string, number>, op: string): number[] {
  return names.map((a) => {
    const s = sizes[a];
    if (!Number.isInteger(s) || s < 1) {
      throw new Error(`${op}: axis "${a}" needs a positive integer size, e.g. { ${a}: 4 }`);
    }
    return s;
  });
}

/** The axes `broadcast(x, axes, …)` adds to `x`'s: those of `S` that `A` lacks. */
export type NewAxes<A extends string, S extends string> = Exclude<
  Words<S>[number],
  Words<A>[number]
>;

/**
 * The sizes argument of {@link broadcast}: exactly the new axes' sizes when both axis strings
 * are known, else any sizes (checked at trace time).
 */
export type BroadcastSizes<A, S extends string> = KnownAxes<A> extends false
  ? Record<string, number>
  : IsLiteral<S> extends false ? Record<string, number>
  : A extends string ? Record<NewAxes<A, S>, number>
  : Record<string, number>;

/** `S` when it contains every axis of `A`, else an error message. */
export type CheckBroadcastTo<A, S extends string> = KnownAxes<A> extends false ? S
  : IsLiteral<S> extends false ? S
  : A extends string
    ? (Minus<Words<A>, Words<S>> extends [infer M extends string, ...string[]]
      ? `broadcast: the tensor's axis ${M} is missing from [${S}]`
      : S)
  : S;

/**
 * The explicit form of an outer broadcast: `x` repeated along the axes of `axes` it lacks,
 * laid out in the order of `axes`; `sizes` gives the new axes' sizes (and only theirs):
 * `broadcast(a /* b l *\/, "b l d", { d: 4 })` is `b l d`. Elementwise ops only broadcast an
 * operand whose axes are a subset of the other's (see the module documentation), so adding
 * `a` (b l) to `c` (d) is written `add(broadcast(a, "b l d", { d: c.size("d") }), c)`. For
 * products, `einsum` is the better spelling (it never materializes the repeated operand).
 */
export function broadcast<X extends Tensor, S extends string>(
  x: X,
  axes: CheckBroadcastTo<AxesOf<X>, S>,
  sizes: BroadcastSizes<AxesOf<X>, S>,
): TensorOf<S> {
  const n = toNode(x, "broadcast");
  requireFloat(n, "broadcast");
  const target = parseAxes(axes, "broadcast: axes");
  const lost = n.axes.filter((a) => !target.includes(a));
  if (lost.length) {
    throw new Error(
      `broadcast: the tensor ${showAxes(n.axes)} has ${lost.join(", ")}, which ` +
        `${showAxes(target)} lacks (broadcast only adds axes; use sum or pick to remove one)`,
    );
  }
  const added = target.filter((a) => !n.axes.includes(a));
  const sizeRecord: Record<string, number> = sizes;
  for (const key of Object.keys(sizeRecord)) {
    if (!added.includes(key)) {
      throw new Error(
        `broadcast: sizes gives "${key}", which is not a new axis (new: ${showAxes(added)})`,
      );
    }
  }
  let node = n;
  if (added.length) {
    const ones = makeNode({
      kind: "const",
      value: 1,
      axes: added,
      shape: constShape(added, sizeRecord, "broadcast"),
      dtype: "f32",
    });
    node = uncheckedBinary("mul", n, ones);
  }
  if (node.axes.join(" ") !== target.join(" ")) {
    const shape = target.map((a) => node.shape[node.axes.indexOf(a)]);
    node = makeNode({ kind: "permute", x: node, axes: target, shape, dtype: node.dtype });
  }
  return new Tensor(node) as TensorOf<S>;
}
