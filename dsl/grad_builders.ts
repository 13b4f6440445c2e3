/**
 * IR-level node builders for the backward graphs of {@link ./autodiff.ts}. They skip the public
 * ops' user-facing checks (the rules only build well-formed nodes) and allow what the rules need:
 * cotangents that lack some axes of their primal (constant along them), fresh axis names for
 * padding, an index ramp along one axis. Every elementwise node built here has operands whose
 * axes nest; products of operands whose axes do not nest go through `einsum`, so the front end
 * decides how an outer product is lowered.
 *
 * @module
 */

import { broadcastAxes } from "./axes.ts";
import { einsum } from "./einsum.ts";
import { type BinaryOp, makeNode, type Node, type UnaryOp } from "./ir.ts";
import { Tensor } from "./tensor.ts";

/** An input of a node and the cotangent it receives from that node (what a rule returns). */
export type Contribution = readonly [input: Node, cotangent: Node];

/** An axis with its size. */
export interface SizedAxis {
  /** The axis name. */
  readonly axis: string;
  /** Its size. */
  readonly size: number;
}

let freshCounter = 0;

/**
 * The backward pass itself (autodiff's `backward`): the cotangents of `wrt` given seeds, for
 * rules that differentiate a small graph of their own (a user's associative-scan combine).
 */
export type Differentiate = (
  seeds: readonly { node: Node; ct: Node }[],
  wrt: readonly Node[],
) => (Node | undefined)[];

/**
 * A new axis name for a backward graph: `_ad<n>_<base>`, unique in this process (a user would
 * have to pick such a name on purpose to clash with it).
 */
export function freshAxis(base: string): string {
  return `_ad${freshCounter++}_${base}`;
}

/** Size of `axis` in `node` (the axis must be there). */
export function sizeOf(node: Node, axis: string): number {
  const i = node.axes.indexOf(axis);
  if (i < 0) throw new Error(`internal: node ${node.id} has no axis "${axis}"`);
  return node.shape[i];
}

/** A constant over the given axes. */
export function constant(value: number, axes: readonly SizedAxis[] = []): Node {
  return makeNode({
    kind: "const",
    value,
    axes: axes.map((a) => a.axis),
    shape: axes.map((a) => a.size),
    dtype: "f32",
  });
}

/** The axes of `node` with their sizes, in layout order. */
export function sizedAxes(node: Node): SizedAxis[] {
  return node.axes.map((axis, i) => ({ axis, size: node.shape[i] }));
}

/** `op(x)` elementwise. */
export function unary(op: UnaryOp, x: Node): Node {
  return makeNode({ kind: "unary", op, x, axes: x.axes, shape: x.shape, dtype: "f32" });
}

/** The broadcast axes and sizes of several nodes (by name; the rules never mix sizes). */
function broadcastOf(nodes: readonly Node[]): { axes: string[]; shape: number[] } {
  let axes: string[] = [];
  for (const n of nodes) axes = broadcastAxes(axes, n.axes);
  const shape = axes.map((a) => sizeOf(nodes.find((n) => n.axes.includes(a))!, a));
  return { axes, shape };
}

/** Whether one of two axis lists contains the other. */
function nests(a: readonly string[], b: readonly string[]): boolean {
  return a.every((x) => b.includes(x)) || b.every((x) => a.includes(x));
}

/**
 * The operands of an elementwise node, each pair's axes nested (one's inside the other's): an
 * operand that brings an axis another lacks while lacking one of the other's is multiplied by
 * ones over all the operands' axes first. Backward graphs thus never rely on outer broadcasting
 * in elementwise nodes; outer products go through `einsum` ({@link productTo}).
 */
function nested(operands: readonly Node[]): Node[] {
  const out = [...operands];
  const all = broadcastOf(operands);
  const union = all.axes.map((axis, i) => ({ axis, size: all.shape[i] }));
  for (let i = 0; i < out.length; i++) {
    for (let j = 0; j < out.length; j++) {
      if (i === j || nests(out[i].axes, out[j].axes)) continue;
      const k = out[i].axes.length <= out[j].axes.length ? i : j;
      out[k] = makeNode({
        kind: "binary",
        op: "mul",
        a: out[k],
        b: constant(1, union),
        axes: all.axes,
        shape: all.shape,
        dtype: "f32",
      });
    }
  }
  return out;
}

/** `op(a, b)` elementwise, broadcasting by axis name (nested: see {@link nested}). */
export function binary(op: BinaryOp, a: Node, b: Node): Node {
  const [x, y] = nested([a, b]);
  return makeNode({ kind: "binary", op, a: x, b: y, ...broadcastOf([x, y]), dtype: "f32" });
}

/** `cond != 0 ? a : b` elementwise (nested: see {@link nested}). */
export function select(cond: Node, a: Node, b: Node): Node {
  const [c, x, y] = nested([cond, a, b]);
  return makeNode({ kind: "where", cond: c, a: x, b: y, ...broadcastOf([c, x, y]), dtype: "f32" });
}

/** `a · s` for a number `s` (no node when s = 1). */
export function scale(a: Node, s: number): Node {
  return s === 1 ? a : binary("mul", a, constant(s));
}

/** Σ of `x` over its axes that are not in `keep` (no node when there are none). */
export function sumTo(x: Node, keep: readonly string[]): Node {
  const over = x.axes.filter((a) => !keep.includes(a));
  if (over.length === 0) return x;
  const kept = sizedAxes(x).filter((a) => keep.includes(a.axis));
  return makeNode({
    kind: "reduce",
    op: "sum",
    x,
    over,
    axes: kept.map((a) => a.axis),
    shape: kept.map((a) => a.size),
    dtype: "f32",
  });
}

/**
 * The cotangent an operand of an elementwise node gets from `x`, an expression over the node's
 * axes that is constant along the axes it lacks (a lazily broadcast cotangent): Σ over the
 * node's axes the operand lacks. Those that x has are reduced; those that it lacks are sums of
 * equal terms, a multiplication by their sizes.
 */
export function sumForOperand(x: Node, node: Node, operand: Node): Node {
  let factor = 1;
  node.axes.forEach((a, i) => {
    if (!operand.axes.includes(a) && !x.axes.includes(a)) factor *= node.shape[i];
  });
  return scale(sumTo(x, operand.axes), factor);
}

/**
 * Σ of x·y over every axis not in `keep`: the result has the axes of `keep` that x or y has.
 * Lowered by `einsum` (a contraction when both operands have a summed axis).
 */
export function productTo(x: Node, y: Node, keep: readonly string[]): Node {
  const all = broadcastAxes(x.axes, y.axes);
  const out = keep.filter((a) => all.includes(a));
  const spec = `${x.axes.join(" ")}, ${y.axes.join(" ")} -> ${out.join(" ")}`;
  const einsumAny = einsum as unknown as (spec: string, ...operands: Tensor[]) => Tensor;
  return einsumAny(spec, new Tensor(x), new Tensor(y)).node;
}

/**
 * Σ of x·y over the axes of the elementwise `node` that `operand` lacks, x·y being constant
 * along the node's axes that neither has (see {@link sumForOperand}).
 */
export function productForOperand(x: Node, y: Node, node: Node, operand: Node): Node {
  let factor = 1;
  node.axes.forEach((a, i) => {
    if (!operand.axes.includes(a) && !x.axes.includes(a) && !y.axes.includes(a)) {
      factor *= node.shape[i];
    }
  });
  return scale(productTo(x, y, operand.axes), factor);
}

/** `x` with the axes of `target` it lacks added (its values repeated along them). */
export function expandTo(x: Node, target: readonly SizedAxis[]): Node {
  const missing = target.filter((a) => !x.axes.includes(a.axis));
  if (missing.length === 0) return x;
  // Ones over x's axes and the missing ones: the operands' axes nest.
  return binary("mul", x, constant(1, [...sizedAxes(x), ...missing]));
}

/** `x` laid out in the order `axes` (the same set). */
export function inLayout(x: Node, axes: readonly string[]): Node {
  if (x.axes.join(" ") === axes.join(" ")) return x;
  return makeNode({
    kind: "permute",
    x,
    axes: [...axes],
    shape: axes.map((a) => sizeOf(x, a)),
    dtype: x.dtype,
  });
}

/** `x` with every axis and the layout of `target` (values repeated along missing axes). */
export function materializeAs(x: Node, target: Node): Node {
  return inLayout(expandTo(x, sizedAxes(target)), target.axes);
}

/** Positions [start, start + size) of `axis`, as the axis `newAxis`. */
export function sliceAlong(
  x: Node,
  axis: string,
  start: number,
  size: number,
  newAxis: string,
): Node {
  if (start === 0 && size === sizeOf(x, axis) && newAxis === axis) return x;
  return makeNode({
    kind: "slice",
    x,
    axis,
    newAxis,
    start,
    axes: x.axes.map((a) => (a === axis ? newAxis : a)),
    shape: x.axes.map((a, i) => (a === axis ? size : x.shape[i])),
    dtype: x.dtype,
  });
}

/** Reverses `axis` of `x`. */
export function flipAlong(x: Node, axis: string): Node {
  return makeNode({ kind: "flip", x, axis, axes: x.axes, shape: x.shape, dtype: x.dtype });
}

/** Position `index` of `axis`, which the result no longer has. */
export function pickAt(x: Node, axis: string, index: number): Node {
  const k = x.axes.indexOf(axis);
  return makeNode({
    kind: "pick",
    x,
    axis,
    index,
    axes: x.axes.filter((_, i) => i !== k),
    shape: x.shape.filter((_, i) => i !== k),
    dtype: x.dtype,
  });
}

/** One piece of a concatenation: a node and its axis that runs along the result's axis. */
export interface Piece {
  /** The node. */
  readonly node: Node;
  /** Its axis concatenated. */
  readonly axis: string;
}

/** Concatenates pieces (which agree on every other axis) along `newAxis`. */
export function concatAlong(pieces: readonly Piece[], newAxis: string): Node {
  if (pieces.length === 1 && pieces[0].axis === newAxis) return pieces[0].node;
  const offsets: number[] = [];
  let total = 0;
  for (const p of pieces) {
    offsets.push(total);
    total += sizeOf(p.node, p.axis);
  }
  const first = pieces[0];
  return makeNode({
    kind: "concat",
    parts: pieces.map((p) => p.node),
    partAxes: pieces.map((p) => p.axis),
    newAxis,
    offsets,
    axes: first.node.axes.map((a) => (a === first.axis ? newAxis : a)),
    shape: first.node.axes.map((a, i) => (a === first.axis ? total : first.node.shape[i])),
    dtype: first.node.dtype,
  });
}

/** A constant shaped like `like`, with `axis` replaced by a fresh axis of `size`. */
function constAlong(like: Node, axis: string, size: number, value = 0): Piece {
  const fresh = freshAxis(axis);
  return {
    node: constant(
      value,
      sizedAxes(like).map((a) => (a.axis === axis ? { axis: fresh, size } : a)),
    ),
    axis: fresh,
  };
}

/**
 * `x` placed at positions [before, before + size of `axis`) of a new axis `newAxis` of length
 * before + size + after, zeros elsewhere (the transpose of a slice).
 */
export function padAlong(
  x: Node,
  axis: string,
  before: number,
  after: number,
  newAxis: string,
): Node {
  const pieces: Piece[] = [];
  if (before > 0) pieces.push(constAlong(x, axis, before));
  pieces.push({ node: x, axis });
  if (after > 0) pieces.push(constAlong(x, axis, after));
  return concatAlong(pieces, newAxis);
}

/** `x` with a new axis of size 1 (named `axis`, last in layout). */
export function withUnitAxis(x: Node, axis: string): Node {
  return binary("mul", x, constant(1, [...sizedAxes(x), { axis, size: 1 }]));
}

/**
 * `x` moved along `axis` by `shift` positions (positive: later): out[t] = x[t − shift], and
 * where t − shift is outside the axis, `fill`: a number, or a node with `axis` of size |shift|
 * and x's other axes (default 0).
 */
export function shiftAlong(x: Node, axis: string, shift: number, fill: Node | number = 0): Node {
  const size = sizeOf(x, axis);
  if (shift === 0) return x;
  const n = Math.abs(shift);
  if (typeof fill !== "number" && (sizeOf(fill, axis) !== n || n > size)) {
    throw new Error("internal: shiftAlong's fill must have the shift's size along the axis");
  }
  if (n >= size) return typeof fill === "number" ? constant(fill, sizedAxes(x)) : fill;
  const filler: Piece = typeof fill === "number"
    ? constAlong(x, axis, n, fill)
    : { node: fill, axis };
  const kept = freshAxis(axis);
  const body: Piece = {
    node: sliceAlong(x, axis, shift > 0 ? 0 : n, size - n, kept),
    axis: kept,
  };
  return concatAlong(shift > 0 ? [filler, body] : [body, filler], axis);
}
