/**
 * Moving values along one axis: `pad` (a longer axis, under a new name), `shift` (x_{t−k}, same
 * axis) and `rename`. They are index views over the existing IR (concat with constant parts,
 * slice), so they fuse into the kernels that read them: no memory, no kernel of their own.
 *
 * @module
 */

import { parseAxes, showAxes } from "./axes.ts";
import type { Renamed } from "./views.ts";
import { requireFloat } from "./build.ts";
import { makeNode, type Node } from "./ir.ts";
import { Tensor, toNode } from "./tensor.ts";

function sizeIn(n: Node, axis: string, op: string): number {
  const i = n.axes.indexOf(axis);
  if (i < 0) throw new Error(`${op}: the tensor ${showAxes(n.axes)} has no axis "${axis}"`);
  return n.shape[i];
}

function checkCount(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${what} must be a non-negative integer, got ${value}`);
  }
}

/** A name not among `taken`, for an axis that lives only inside one view. */
function privateAxis(base: string, taken: readonly string[]): string {
  let name = `_${base}`;
  for (let i = 0; taken.includes(name); i++) name = `_${base}${i}`;
  return name;
}

/** `x` renamed along `axis` → `newAxis` (a slice over the whole axis: a free view). */
function renameNode(n: Node, axis: string, newAxis: string): Node {
  return makeNode({
    kind: "slice",
    x: n,
    axis,
    newAxis,
    start: 0,
    axes: n.axes.map((a) => (a === axis ? newAxis : a)),
    shape: n.shape,
    dtype: n.dtype,
  });
}

/** The node of `pad` after validation (shared with `shift`). */
function padNode(
  n: Node,
  axis: string,
  before: number,
  after: number,
  newAxis: string,
  value: number,
): Node {
  const size = sizeIn(n, axis, "pad");
  // Constant parts with `axis` renamed: a name with one size per graph, seen by no user.
  const side = (count: number, label: string) => {
    const partAxis = privateAxis(`${newAxis}_${label}`, n.axes);
    return {
      node: makeNode({
        kind: "const",
        value,
        axes: n.axes.map((a) => (a === axis ? partAxis : a)),
        shape: n.shape.map((s, i) => (n.axes[i] === axis ? count : s)),
        dtype: "f32",
      }),
      axis: partAxis,
    };
  };
  const parts = [
    ...(before > 0 ? [side(before, "before")] : []),
    { node: n, axis },
    ...(after > 0 ? [side(after, "after")] : []),
  ];
  const offsets: number[] = [];
  let total = 0;
  for (const p of parts) {
    offsets.push(total);
    total += sizeIn(p.node, p.axis, "pad");
  }
  if (total !== size + before + after) throw new Error("internal: pad size");
  return makeNode({
    kind: "concat",
    parts: parts.map((p) => p.node),
    partAxes: parts.map((p) => p.axis),
    newAxis,
    offsets,
    axes: n.axes.map((a) => (a === axis ? newAxis : a)),
    shape: n.shape.map((s, i) => (n.axes[i] === axis ? total : s)),
    dtype: "f32",
  });
}

/**
 * `x` with `before` entries of `value` added before index 0 of `axis` and `after` entries after
 * its end. The longer axis gets the new name `newAxis` (a named axis has one size in a
 * program, as for `slice` and `concat`); `value` may be ±Infinity (e.g. before a max).
 *
 * ```ts
 * // x: Tensor<"b l d"> with l = 7  →  Tensor<"b m d"> with m = 10
 * const padded = pad(x, "l", 2, 1, "m");
 * ```
 */
export function pad<A extends string, X extends string, N extends string>(
  x: Tensor<A>,
  axis: X,
  before: number,
  after: number,
  newAxis: N,
  value = 0,
): Renamed<A, X, N> {
  const n = toNode(x, "pad");
  requireFloat(n, "pad");
  const size = sizeIn(n, axis, "pad");
  checkCount(before, "pad: before");
  checkCount(after, "pad: after");
  if (Number.isNaN(value)) throw new Error("pad: value is NaN");
  parseAxes(newAxis, "pad: new axis");
  const same = (newAxis as string) === axis;
  if (!same && n.axes.includes(newAxis)) {
    throw new Error(`pad: new axis "${newAxis}" already exists in ${showAxes(n.axes)}`);
  }
  if (same && before + after > 0) {
    throw new Error(
      `pad: axis "${axis}" grows from ${size} to ${size + before + after}: give it a new name`,
    );
  }
  if (before + after === 0) return new Tensor(renameNode(n, axis, newAxis)) as Renamed<A, X, N>;
  return new Tensor(padNode(n, axis, before, after, newAxis, value)) as Renamed<A, X, N>;
}

/**
 * `x` moved `k` places along `axis`: out[t] = x[t − k], with `fill` (default 0) where t − k is
 * outside the axis. Same axis name and size. `shift(x, "l", 1)` is x_{t−1} (the previous
 * position, 0 at t = 0); a negative `k` looks ahead: `shift(x, "l", -1)` is x_{t+1}.
 *
 * ```ts
 * const previous = shift(x, "l", 1);        // Tensor<"b l d">
 * const delta = sub(x, previous);           // fuses: one kernel, no extra buffer
 * ```
 */
export function shift<A extends string>(
  x: Tensor<A>,
  axis: string,
  k: number,
  fill = 0,
): Tensor<A> {
  const n = toNode(x, "shift");
  requireFloat(n, "shift");
  const size = sizeIn(n, axis, "shift");
  if (!Number.isInteger(k)) throw new Error(`shift: k must be an integer, got ${k}`);
  if (Number.isNaN(fill)) throw new Error("shift: fill is NaN");
  if (k === 0) return x;
  const steps = Math.min(Math.abs(k), size); // further moves leave only fill
  const wide = privateAxis(`${axis}_shift`, n.axes);
  const padded = k > 0
    ? padNode(n, axis, steps, 0, wide, fill)
    : padNode(n, axis, 0, steps, wide, fill);
  return new Tensor(makeNode({
    kind: "slice",
    x: padded,
    axis: wide,
    newAxis: axis,
    start: k > 0 ? 0 : steps,
    axes: n.axes,
    shape: n.shape,
    dtype: "f32",
  })) as Tensor<A>;
}

/**
 * The same tensor with axis `from` called `to` (same size and layout; free): lets two tensors'
 * axes meet or stay apart by name, e.g. the key positions of attention scores.
 *
 * ```ts
 * const keys = rename(k, "l", "s");   // Tensor<"b l d"> → Tensor<"b s d">
 * const scores = einsum("b l d, b s d -> b l s", q, keys);
 * ```
 */
export function rename<A extends string, F extends string, T extends string>(
  x: Tensor<A>,
  from: F,
  to: T,
): Renamed<A, F, T> {
  const n = toNode(x, "rename");
  sizeIn(n, from, "rename");
  parseAxes(to, "rename: new name");
  if (to === (from as string)) return x as unknown as Renamed<A, F, T>;
  if (n.axes.includes(to)) {
    throw new Error(`rename: "${to}" is already an axis of ${showAxes(n.axes)}`);
  }
  return new Tensor(renameNode(n, from, to)) as Renamed<A, F, T>;
}
