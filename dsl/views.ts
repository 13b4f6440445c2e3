/**
 * Data movement with named axes: transpose, einops-style rearrange, slice, flip, concat,
 * gather (embedding lookup) and the causal depthwise conv1d of Mamba's short convolution.
 * All of these fuse into the kernels that read them: none needs its own pass over memory.
 *
 * @module
 */

import {
  type CheckAxis,
  type CheckNewAxis,
  type IsLiteral,
  type IsSubset,
  type Join,
  type KnownAxes,
  type Minus,
  parseAxes,
  type Rename,
  showAxes,
  type Words,
} from "./axes.ts";
import { requireFloat } from "./build.ts";
import { makeNode, type Node } from "./ir.ts";
import type { CheckPattern, RearrangeAxes } from "./rearrange_types.ts";
import { type AxesOf, Tensor, type TensorOf, toNode } from "./tensor.ts";

/**
 * `x` (axes `A`) with axis `X` renamed to `N`: typed when all three are known, else untyped.
 */
export type Renamed<A, X extends string, N extends string> = KnownAxes<A> extends false ? Tensor
  : IsLiteral<X> extends false ? Tensor
  : IsLiteral<N> extends false ? Tensor
  : A extends string ? Tensor<Rename<A, X, N>>
  : Tensor;

/** `O` when it is a reordering of the axes `A`, else an error message. */
export type CheckPermutation<A, O extends string> = KnownAxes<A> extends false ? O
  : IsLiteral<O> extends false ? O
  : A extends string ? (
      [
        IsSubset<A, O>,
        IsSubset<O, A>,
        Words<A>["length"] extends Words<O>["length"] ? true : false,
      ] extends [true, true, true] ? O
        : `transpose: [${O}] is not a reordering of the tensor's axes [${A}]`
    )
  : O;

/** The result type of `gather(table /* T *\/, ids /* I *\/, axis)`: I's axes, then T's but `axis`. */
export type Gathered<T, I, X extends string> = KnownAxes<T> extends false ? Tensor
  : KnownAxes<I> extends false ? Tensor
  : IsLiteral<X> extends false ? Tensor
  : T extends string ? I extends string ? Tensor<Join<[...Words<I>, ...Minus<Words<T>, [X]>]>>
    : Tensor
  : Tensor;

function sizeIn(n: Node, axis: string, op: string): number {
  const i = n.axes.indexOf(axis);
  if (i < 0) throw new Error(`${op}: the tensor ${showAxes(n.axes)} has no axis "${axis}"`);
  return n.shape[i];
}

/** The same tensor laid out in another axis order: `transpose(x, "d b l")`. */
export function transpose<X extends Tensor, O extends string>(
  x: X,
  order: CheckPermutation<AxesOf<X>, O>,
): TensorOf<O> {
  const n = toNode(x, "transpose");
  const axes = parseAxes(order, "transpose: order");
  const same = axes.length === n.axes.length && axes.every((a) => n.axes.includes(a));
  if (!same) {
    throw new Error(
      `transpose: order ${showAxes(axes)} is not a permutation of ${showAxes(n.axes)}`,
    );
  }
  const shape = axes.map((a) => sizeIn(n, a, "transpose"));
  return new Tensor(
    makeNode({ kind: "permute", x: n, axes, shape, dtype: n.dtype }),
  ) as TensorOf<O>;
}

interface PatternSide {
  groups: string[][];
  names: string[];
}

/** Parses one side of `"b l (h p)"` / `"b l d=(h p)"` into groups of elementary axes. */
function parsePatternSide(text: string, pattern: string, output: boolean): PatternSide {
  const groups: string[][] = [];
  const names: string[] = [];
  const re =
    /\s*(?:([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\(([^)]*)\)|\(([^)]*)\)|([A-Za-z_][A-Za-z0-9_]*))/y;
  let pos = 0;
  const src = text.trim();
  while (pos < src.length) {
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) throw new Error(`rearrange "${pattern}": cannot parse "${src.slice(pos)}"`);
    pos = re.lastIndex;
    if (m[4]) {
      groups.push([m[4]]);
      names.push(m[4]);
    } else if (m[1]) {
      groups.push(parseAxes(m[2], `rearrange "${pattern}"`));
      names.push(m[1]);
    } else {
      if (output) {
        throw new Error(
          `rearrange "${pattern}": the merged output axis (${m[3].trim()}) needs a name, ` +
            `e.g. "d=(${m[3].trim()})"`,
        );
      }
      groups.push(parseAxes(m[3], `rearrange "${pattern}"`));
      names.push("");
    }
    while (pos < src.length && src[pos] === " ") pos++;
  }
  return { groups, names };
}

/**
 * einops-style rearrange. The left side names the input axes by position (a plain name renames
 * the axis; `(h p)` splits it); the right side lists output axes, where a merge must be named:
 * `rearrange(x, "b l (h p) -> b l h p", { p: 64 })`, `rearrange(y, "b l h p -> b l d=(h p)")`.
 * The result type comes from the pattern (`Tensor<"b l h p">`), and TypeScript checks the
 * pattern against a typed tensor's axes: one entry per axis on the left, the same elementary
 * axes on both sides, merged output axes named.
 */
export function rearrange<X extends Tensor, P extends string>(
  x: X,
  pattern: CheckPattern<AxesOf<X>, P>,
  sizes: Record<string, number> = {},
): TensorOf<RearrangeAxes<P>> {
  const n = toNode(x, "rearrange");
  const sides = pattern.split("->");
  if (sides.length !== 2) throw new Error(`rearrange "${pattern}": needs exactly one "->"`);
  const left = parsePatternSide(sides[0], pattern, false);
  const right = parsePatternSide(sides[1], pattern, true);
  if (left.groups.length !== n.axes.length) {
    throw new Error(
      `rearrange "${pattern}": the left side has ${left.groups.length} axes but the tensor ` +
        `has ${n.axes.length}: ${showAxes(n.axes)}`,
    );
  }
  const elem: Record<string, number> = {};
  left.groups.forEach((g, i) => {
    const total = n.shape[i];
    const unknown = g.filter((a) => sizes[a] === undefined);
    if (g.length === 1) {
      elem[g[0]] = total;
      if (sizes[g[0]] !== undefined && sizes[g[0]] !== total) {
        throw new Error(
          `rearrange "${pattern}": size conflict on axis "${g[0]}": ${sizes[g[0]]} given but ` +
            `the tensor's axis "${n.axes[i]}" has ${total}`,
        );
      }
      return;
    }
    if (unknown.length > 1) {
      throw new Error(
        `rearrange "${pattern}": give the sizes of all but one of (${g.join(" ")}), ` +
          `e.g. { ${g[1]}: ... }`,
      );
    }
    const known = g.filter((a) => sizes[a] !== undefined).reduce((p, a) => p * sizes[a], 1);
    if (total % known !== 0) {
      throw new Error(
        `rearrange "${pattern}": axis "${n.axes[i]}" of size ${total} cannot be split into ` +
          `(${g.join(" ")}) with the given sizes`,
      );
    }
    for (const a of g) elem[a] = sizes[a] ?? total / known;
    const product = g.reduce((p, a) => p * elem[a], 1);
    if (product !== total) {
      throw new Error(
        `rearrange "${pattern}": (${g.join(" ")}) has ${product} elements but axis ` +
          `"${n.axes[i]}" has ${total}`,
      );
    }
  });
  const leftElems = left.groups.flat();
  const rightElems = right.groups.flat();
  const missing = leftElems.filter((a) => !rightElems.includes(a));
  const extra = rightElems.filter((a) => !leftElems.includes(a));
  const repeated = new Set(leftElems).size !== leftElems.length ||
    new Set(rightElems).size !== rightElems.length;
  if (missing.length || extra.length || repeated) {
    throw new Error(
      `rearrange "${pattern}": both sides must use the same axes once each` +
        (missing.length ? `; missing on the right: ${missing.join(", ")}` : "") +
        (extra.length ? `; unknown on the right: ${extra.join(", ")}` : ""),
    );
  }
  parseAxes(right.names.join(" "), `rearrange "${pattern}": output`);
  const shape = right.groups.map((g) => g.reduce((p, a) => p * elem[a], 1));
  return new Tensor(makeNode({
    kind: "regroup",
    x: n,
    inGroups: left.groups,
    outGroups: right.groups,
    sizes: elem,
    axes: right.names,
    shape,
    dtype: n.dtype,
  })) as TensorOf<RearrangeAxes<P>>;
}

/**
 * Indices [start, end) of `axis`, as a new axis `newAxis` (a named axis has one size in a
 * program, so a shorter piece needs a new name): `slice(xz /* b l e *\/, "e", 0, 1536, "d")` is
 * `Tensor<"b l d">`.
 */
export function slice<X extends Tensor, Ax extends string, N extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "slice">,
  start: number,
  end: number,
  newAxis: CheckNewAxis<AxesOf<X>, N, Ax, "slice">,
): Renamed<AxesOf<X>, Ax, N> {
  const from: string = axis, to: string = newAxis;
  const n = toNode(x, "slice");
  const size = sizeIn(n, from, "slice");
  if (
    !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > size || start >= end
  ) {
    throw new Error(
      `slice: range [${start}, ${end}) is not inside axis "${from}" of size ${size}`,
    );
  }
  parseAxes(to, "slice: new axis");
  if (to !== from && n.axes.includes(to)) {
    throw new Error(`slice: new axis "${to}" already exists in ${showAxes(n.axes)}`);
  }
  if (to === from && end - start !== size) {
    throw new Error(
      `slice: a piece of "${from}" (${end - start} of ${size}) needs a new axis name`,
    );
  }
  const axes = n.axes.map((a) => (a === from ? to : a));
  const shape = n.shape.map((s, i) => (n.axes[i] === from ? end - start : s));
  return new Tensor(
    makeNode({ kind: "slice", x: n, axis: from, newAxis: to, start, axes, shape, dtype: n.dtype }),
  ) as Renamed<AxesOf<X>, Ax, N>;
}

/** Reverses the order along `axis` (for backward scans of bidirectional models). */
export function flip<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "flip">,
): X {
  const n = toNode(x, "flip");
  sizeIn(n, axis, "flip");
  return new Tensor(
    makeNode({ kind: "flip", x: n, axis, axes: n.axes, shape: n.shape, dtype: n.dtype }),
  ) as X;
}

/**
 * Concatenates tensors along one axis each, into `newAxis`: `concat([a, b], ["n", "m"], "k")`.
 * All other axes must match by name and size. The result has the first tensor's axes with its
 * concatenated axis renamed (`[a /* b n *\/, c /* b m *\/]` gives `Tensor<"b k">`).
 */
export function concat<
  const P extends readonly Tensor[],
  const Ax extends readonly string[],
  N extends string,
>(
  parts: P,
  axes: Ax,
  newAxis: N,
): Renamed<AxesOf<P[0]>, Ax[0], N> {
  if (parts.length === 0) throw new Error("concat: no tensors given");
  if (axes.length !== parts.length) {
    throw new Error(`concat: ${parts.length} tensors but ${axes.length} axis names`);
  }
  const nodes = parts.map((p) => toNode(p, "concat"));
  const offsets: number[] = [];
  let total = 0;
  const first = nodes[0];
  const rest0 = first.axes.filter((a) => a !== axes[0]);
  nodes.forEach((n, i) => {
    offsets.push(total);
    total += sizeIn(n, axes[i], "concat");
    const rest = n.axes.filter((a) => a !== axes[i]);
    const same = rest.length === rest0.length && rest.every((a) => rest0.includes(a));
    if (!same) {
      throw new Error(
        `concat: tensor ${i + 1} ${showAxes(n.axes)} does not match tensor 1 ` +
          `${showAxes(first.axes)} apart from the concatenated axis`,
      );
    }
    for (const a of rest) {
      if (sizeIn(n, a, "concat") !== sizeIn(first, a, "concat")) {
        throw new Error(
          `concat: size conflict on axis "${a}": ${sizeIn(first, a, "concat")} in tensor 1 ` +
            `but ${sizeIn(n, a, "concat")} in tensor ${i + 1}`,
        );
      }
    }
    if (n.dtype !== first.dtype) throw new Error("concat: tensors of different dtypes");
  });
  parseAxes(newAxis, "concat: new axis");
  if (rest0.includes(newAxis)) {
    throw new Error(`concat: new axis "${newAxis}" clashes with ${showAxes(first.axes)}`);
  }
  const outAxes = first.axes.map((a) => (a === axes[0] ? newAxis : a));
  const shape = outAxes.map((a) => (a === newAxis ? total : sizeIn(first, a, "concat")));
  return new Tensor(makeNode({
    kind: "concat",
    parts: nodes,
    partAxes: [...axes],
    newAxis,
    offsets,
    axes: outAxes,
    shape,
    dtype: first.dtype,
  })) as Renamed<AxesOf<P[0]>, Ax[0], N>;
}

/**
 * Embedding lookup: `gather(table /* v d *\/, ids /* b l, i32 *\/, "v")` is `b l d`.
 * Out-of-range ids are clamped on the GPU; check ids before running when unsure.
 */
export function gather<T extends Tensor, I extends Tensor, Ax extends string>(
  table: T,
  indices: I,
  axis: CheckAxis<AxesOf<T>, Ax, "gather">,
): Gathered<AxesOf<T>, AxesOf<I>, Ax> {
  const t = toNode(table, "gather");
  const ix = toNode(indices, "gather");
  sizeIn(t, axis, "gather");
  if (ix.dtype !== "i32") {
    throw new Error(`gather: indices ${showAxes(ix.axes)} must have dtype i32, not ${ix.dtype}`);
  }
  const tableRest = t.axes.filter((a) => a !== axis);
  const clash = tableRest.filter((a) => ix.axes.includes(a));
  if (clash.length) {
    throw new Error(`gather: axes ${clash.join(", ")} are in both the table and the indices`);
  }
  const axes = [...ix.axes, ...tableRest];
  const shape = axes.map((a) => (ix.axes.includes(a) ? sizeIn(ix, a, "") : sizeIn(t, a, "")));
  return new Tensor(
    makeNode({ kind: "gather", table: t, indices: ix, axis, axes, shape, dtype: t.dtype }),
  ) as Gathered<AxesOf<T>, AxesOf<I>, Ax>;
}

/**
 * Causal depthwise 1-D convolution along `axis` (Mamba's short conv): with `w` over
 * (channels…, `tapAxis`) of K taps, out[t] = Σ_j w[j] · x[t − (K − 1) + j], zero-padded on the left.
 * Every axis of `w` except `tapAxis` must be an axis of `x` (the channels).
 */
export function conv1d<X extends Tensor, W extends Tensor, Ax extends string, K extends string>(
  x: X,
  w: W,
  axis: CheckAxis<AxesOf<X>, Ax, "conv1d">,
  tapAxis: CheckAxis<AxesOf<W>, K, "conv1d">,
): X {
  const nx = toNode(x, "conv1d");
  const nw = toNode(w, "conv1d");
  requireFloat(nx, "conv1d");
  requireFloat(nw, "conv1d");
  sizeIn(nx, axis, "conv1d");
  sizeIn(nw, tapAxis, "conv1d");
  if (nx.axes.includes(tapAxis)) {
    throw new Error(`conv1d: tap axis "${tapAxis}" must not be an axis of x ${showAxes(nx.axes)}`);
  }
  for (const a of nw.axes) {
    if (a === tapAxis) continue;
    if (!nx.axes.includes(a)) {
      throw new Error(
        `conv1d: weight axis "${a}" of ${showAxes(nw.axes)} is not an axis of x ${
          showAxes(nx.axes)
        }`,
      );
    }
    if (a === axis) throw new Error(`conv1d: the weight must not have the time axis "${axis}"`);
    if (sizeIn(nw, a, "conv1d") !== sizeIn(nx, a, "conv1d")) {
      throw new Error(
        `conv1d: size conflict on axis "${a}": ${sizeIn(nx, a, "")} in x but ` +
          `${sizeIn(nw, a, "")} in the weight`,
      );
    }
  }
  return new Tensor(makeNode({
    kind: "conv1d",
    x: nx,
    w: nw,
    axis,
    tapAxis,
    axes: nx.axes,
    shape: nx.shape,
    dtype: "f32",
  })) as X;
}
