/**
 * Tensors made from indices and literal data: `arange` (positions), causal and sliding-window
 * masks, `tril`/`triu`, and small literal tensors. None of them needs memory: kernels compute
 * an `arange` from the axis index and bake literal values into their code, so a mask or a
 * position fuses into the kernel that reads it.
 *
 * @module
 */

import { type Canon, parseAxes, showAxes } from "./axes.ts";
import { requireFloat } from "./build.ts";
import { type BinaryOp, makeNode, type Node } from "./ir.ts";
import { Tensor, toNode } from "./tensor.ts";

/** Largest arange: every index below 2²⁴ is exact in f32. */
export const ARANGE_MAX = 2 ** 24;

/**
 * Most elements of a literal tensor: kernels select its values with a tree of `select`s, so
 * larger data belongs in a program input.
 */
export const LITERAL_MAX_ELEMENTS = 256;

const F32_MAX = 3.4028234663852886e38;

/** The arange node of `axis` (checked: a positive size whose indices are exact in f32). */
export function arangeNode(axis: string, size: number, op: string): Node {
  if (!Number.isInteger(size) || size < 1) {
    throw new Error(`${op}: size of axis "${axis}" must be a positive integer, got ${size}`);
  }
  if (size > ARANGE_MAX) {
    throw new Error(
      `${op}: axis "${axis}" of size ${size} is too long: positions above 2^24 are not exact in f32`,
    );
  }
  return makeNode({ kind: "arange", axis, axes: [axis], shape: [size], dtype: "f32" });
}

/**
 * The positions 0, 1, …, size − 1 along `axis`, as f32 (exact below 2²⁴). Costs no memory:
 * a kernel computes each value from its index, so `arange` fuses like a constant.
 *
 * ```ts
 * const pos = arange("l", 7);                   // Tensor<"l">: 0 1 2 3 4 5 6
 * const angle = mul(pos, invFreq);              // l f, for rotary embeddings
 * const every4th = eq(mod(arange("l", 7), 4), 0);
 * ```
 */
export function arange<A extends string>(axis: A, size: number): Tensor<Canon<A>> {
  const names = parseAxes(axis, "arange: axis");
  if (names.length !== 1) throw new Error(`arange: expected one axis name, got "${axis}"`);
  return new Tensor(arangeNode(names[0], size, "arange"));
}

/** Options of {@link causalMask}. */
export interface MaskOptions {
  /** Shifts the diagonal: keep col ≤ row + offset (default 0; −1 excludes the diagonal). */
  offset?: number;
  /**
   * Sliding window: also require col > row + offset − window, so each row keeps at most
   * `window` columns, ending at its diagonal (local attention of width `window`).
   */
  window?: number;
}

/** Axis sizes for a mask: one number for both axes, or sizes by name. */
export type MaskSizes = number | Readonly<Record<string, number>>;

function maskSize(sizes: MaskSizes, axis: string): number {
  const size = typeof sizes === "number" ? sizes : sizes[axis];
  if (size === undefined) throw new Error(`causalMask: no size given for axis "${axis}"`);
  return size;
}

function checkInteger(value: number, what: string, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new Error(
      `${what} must be an integer${min > -Infinity ? ` ≥ ${min}` : ""}, got ${value}`,
    );
  }
}

/** A comparison or difference node over `axes` in exactly that order (no broadcast rule). */
function pairwise(op: BinaryOp, a: Node, b: Node, axes: string[], shape: number[]): Node {
  return makeNode({ kind: "binary", op, a, b, axes, shape, dtype: "f32" });
}

function scalar(value: number): Node {
  return makeNode({ kind: "const", value, axes: [], shape: [], dtype: "f32" });
}

/**
 * Which entries a band mask keeps, by d = col − row: d ≤ `max` (and d > `max` − `window` when
 * given), or d ≥ `min`.
 */
type Band = { max: number; window?: number } | { min: number };

/** The 0/1 mask of `band` over `[rowAxis colAxis]`. */
function bandMask(
  rowAxis: string,
  colAxis: string,
  rows: number,
  cols: number,
  op: string,
  band: Band,
): Node {
  if (rowAxis === colAxis) throw new Error(`${op}: the row and column axes are both "${rowAxis}"`);
  const row = arangeNode(rowAxis, rows, op);
  const col = arangeNode(colAxis, cols, op);
  const axes = [rowAxis, colAxis];
  const shape = [rows, cols];
  const diff = pairwise("sub", col, row, axes, shape); // col − row, exact in f32
  if ("min" in band) return pairwise("ge", diff, scalar(band.min), axes, shape);
  const upper = pairwise("le", diff, scalar(band.max), axes, shape);
  if (band.window === undefined) return upper;
  const lower = pairwise("gt", diff, scalar(band.max - band.window), axes, shape);
  return pairwise("mul", upper, lower, axes, shape);
}

/**
 * The causal mask over `rowAxis × colAxis`: 1 where col ≤ row (+ `offset`), else 0, with an
 * optional sliding `window`. Built from {@link arange}s and comparisons, so it needs no memory:
 * `sum(mul(x, mask), "j")` is one kernel.
 *
 * ```ts
 * const mask = causalMask("i", "j", 5);                     // Tensor<"i j">, lower triangle
 * const local = causalMask("i", "j", { i: 8, j: 8 }, { window: 3 });
 * const scores = where(causalMask("i", "j", 8), s, -Infinity);
 * ```
 */
export function causalMask<R extends string, C extends string>(
  rowAxis: R,
  colAxis: C,
  sizes: MaskSizes,
  options: MaskOptions = {},
): Tensor<Canon<`${R} ${C}`>> {
  parseAxes(`${rowAxis} ${colAxis}`, "causalMask: axes");
  const offset = options.offset ?? 0;
  checkInteger(offset, "causalMask: offset", -Infinity);
  if (options.window !== undefined) checkInteger(options.window, "causalMask: window", 1);
  const rows = maskSize(sizes, rowAxis);
  const cols = maskSize(sizes, colAxis);
  return new Tensor(
    bandMask(rowAxis, colAxis, rows, cols, "causalMask", { max: offset, window: options.window }),
  );
}

/** `x` with zeros outside `band`, in `x`'s own axis order. */
function keepWhere<A extends string>(
  x: Tensor<A>,
  rowAxis: string,
  colAxis: string,
  op: string,
  band: Band,
): Tensor<A> {
  const n = toNode(x, op);
  requireFloat(n, op);
  for (const a of [rowAxis, colAxis]) {
    if (!n.axes.includes(a)) {
      throw new Error(`${op}: the tensor ${showAxes(n.axes)} has no axis "${a}"`);
    }
  }
  const size = (a: string) => n.shape[n.axes.indexOf(a)];
  const mask = bandMask(rowAxis, colAxis, size(rowAxis), size(colAxis), op, band);
  // The result is laid out like x whatever the mask's order: nodes meet by axis name.
  return new Tensor(makeNode({
    kind: "where",
    cond: mask,
    a: n,
    b: scalar(0),
    axes: n.axes,
    shape: n.shape,
    dtype: "f32",
  })) as Tensor<A>;
}

/**
 * The lower triangle of `x` over (`rowAxis`, `colAxis`): entries with col ≤ row + `offset`
 * kept, the rest set to 0 (like `torch.tril`; infinities above the diagonal become 0 too).
 * `tril(scores, "i", "j")`.
 */
export function tril<A extends string>(
  x: Tensor<A>,
  rowAxis: string,
  colAxis: string,
  offset = 0,
): Tensor<A> {
  checkInteger(offset, "tril: offset", -Infinity);
  return keepWhere(x, rowAxis, colAxis, "tril", { max: offset });
}

/**
 * The upper triangle of `x` over (`rowAxis`, `colAxis`): entries with col ≥ row + `offset`
 * kept, the rest set to 0 (like `torch.triu`). `triu(a, "i", "j", 1)` drops the diagonal.
 */
export function triu<A extends string>(
  x: Tensor<A>,
  rowAxis: string,
  colAxis: string,
  offset = 0,
): Tensor<A> {
  checkInteger(offset, "triu: offset", -Infinity);
  return keepWhere(x, rowAxis, colAxis, "triu", { min: offset });
}

/** Numbers nested as deep as the tensor has axes (a plain number for no axes). */
export type NestedNumbers = number | readonly NestedNumbers[];

/**
 * A small constant tensor from literal values, one array level per axis (outermost first):
 * `tensor([-1, 1], "t")`, `tensor([[0, -1], [1, 0]], "i j")`. The values (f32, at most
 * {@link LITERAL_MAX_ELEMENTS}) are baked into each kernel that reads them: no buffer and no
 * upload. Larger constant data belongs in a program input.
 */
export function tensor<A extends string>(values: NestedNumbers, axes: A): Tensor<Canon<A>> {
  const names = parseAxes(axes, "tensor: axes");
  const shape: number[] = [];
  const flat: number[] = [];
  const walk = (v: NestedNumbers, depth: number, path: number[]) => {
    const where = path.length ? ` at [${path.join("][")}]` : "";
    if (depth === names.length) {
      if (typeof v !== "number") {
        throw new Error(
          `tensor: expected a number${where} (${names.length} axes: ${showAxes(names)}), ` +
            `got ${Array.isArray(v) ? "an array" : typeof v}`,
        );
      }
      if (Number.isNaN(v)) throw new Error(`tensor: value${where} is NaN`);
      if (Number.isFinite(v) && Math.abs(v) > F32_MAX) {
        throw new Error(`tensor: value ${v}${where} does not fit in f32`);
      }
      flat.push(v);
      return;
    }
    if (!Array.isArray(v)) {
      throw new Error(
        `tensor: expected an array${where} for axis "${names[depth]}" of ${showAxes(names)}, ` +
          `got ${typeof v}`,
      );
    }
    if (v.length === 0) throw new Error(`tensor: axis "${names[depth]}"${where} is empty`);
    if (shape[depth] === undefined) shape[depth] = v.length;
    if (v.length !== shape[depth]) {
      throw new Error(
        `tensor: axis "${names[depth]}" has ${v.length} entries${where} but ${shape[depth]} ` +
          `before (rows must all have the same length)`,
      );
    }
    v.forEach((item, i) => walk(item, depth + 1, [...path, i]));
  };
  walk(values, 0, []);
  if (flat.length > LITERAL_MAX_ELEMENTS) {
    throw new Error(
      `tensor: ${flat.length} values; literal tensors hold at most ${LITERAL_MAX_ELEMENTS} ` +
        `(they are baked into kernels): pass larger data as a program input`,
    );
  }
  return new Tensor(makeNode({ kind: "literal", values: flat, axes: names, shape, dtype: "f32" }));
}
