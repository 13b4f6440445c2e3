/**
 * Typed einsum. The spec string is parsed by TypeScript (operand and result types) and again at
 * trace time. An n-ary einsum becomes: reductions of axes private to one operand, then binary
 * contractions in an order chosen by cost, then a permutation to the requested order.
 *
 * @module
 */

import { type Canon, type IsLiteral, type Minus, parseAxes, showAxes, type Words } from "./axes.ts";
import { requireFloat, uncheckedBinary } from "./build.ts";
import { makeNode, type Node } from "./ir.ts";
import { Tensor } from "./tensor.ts";

/** The operand axis strings of an einsum spec's left side, canonicalized. */
export type SplitOperands<S extends string> = S extends `${infer H},${infer R}`
  ? [Canon<H>, ...SplitOperands<R>]
  : [Canon<S>];

/** Operand axis strings of an einsum spec type. */
export type EinsumInputs<S extends string> = S extends `${infer I}->${string}` ? SplitOperands<I>
  : never;

/** Result axis string of an einsum spec type. */
export type EinsumOutput<S extends string> = S extends `${string}->${infer O}` ? Canon<O> : never;

/** The tensor types an einsum spec expects. */
export type EinsumOperands<S extends string> = IsLiteral<S> extends false ? Tensor[]
  : TensorTuple<EinsumInputs<S>>;

/** Tensor types for a tuple of axis strings. */
export type TensorTuple<T> = T extends [infer H extends string, ...infer R]
  ? [Tensor<H>, ...TensorTuple<R>]
  : [];

/** The tensor type an einsum spec returns. */
export type EinsumResult<S extends string> = IsLiteral<S> extends false ? Tensor
  : Tensor<EinsumOutput<S>>;

/** Every axis of a tuple of axis strings, in order (repeats kept). */
export type AllWords<T> = T extends [infer H extends string, ...infer R]
  ? [...Words<H>, ...AllWords<R>]
  : [];

/**
 * `S` when the spec is well formed (one `->`, every output axis in some operand), else an
 * error message: a parameter of this type turns a typo in the output axes into a compile error.
 */
export type CheckSpec<S extends string> = IsLiteral<S> extends false ? S
  : S extends `${string}->${string}->${string}` ? `einsum "${S}": the spec needs exactly one "->"`
  : S extends `${string}->${string}`
    ? Minus<Words<EinsumOutput<S>>, AllWords<EinsumInputs<S>>> extends
      [infer M extends string, ...string[]]
      ? `einsum "${S}": output axis ${M} appears in no operand`
    : S
  : `einsum "${S}": the spec needs exactly one "->"`;

/** Parsed spec: operand axes and output axes. */
export interface ParsedSpec {
  inputs: string[][];
  output: string[];
}

/** Parses `"b l d, d n -> b l d n"`. */
export function parseEinsumSpec(spec: string): ParsedSpec {
  const parts = spec.split("->");
  if (parts.length !== 2) {
    throw new Error(`einsum "${spec}": the spec needs exactly one "->"`);
  }
  const inputs = parts[0].split(",").map((s, i) =>
    parseAxes(s, `einsum "${spec}": operand ${i + 1}`)
  );
  const output = parseAxes(parts[1], `einsum "${spec}": output`);
  for (const a of output) {
    if (!inputs.some((axes) => axes.includes(a))) {
      throw new Error(`einsum "${spec}": output axis "${a}" appears in no operand`);
    }
  }
  return { inputs, output };
}

/**
 * Einstein summation over named axes: `einsum("b l d, d n -> b l d n", x, A)`. Operand axes
 * must match the spec (as sets: the order in the spec may differ from the tensor's layout).
 * It is also the way to write an outer product, which elementwise `mul` refuses:
 * `einsum("b l dk, b l d -> b l dk d", q, k)`.
 */
export function einsum<S extends string>(
  spec: CheckSpec<S>,
  ...operands: EinsumOperands<S>
): EinsumResult<S> {
  const parsed = parseEinsumSpec(spec);
  const nodes = checkOperands(spec, parsed, operands as Tensor[]);
  return new Tensor(lowerEinsum(nodes, parsed)) as EinsumResult<S>;
}

function checkOperands(spec: string, parsed: ParsedSpec, operands: Tensor[]): Node[] {
  if (operands.length !== parsed.inputs.length) {
    throw new Error(
      `einsum "${spec}": the spec has ${parsed.inputs.length} operand(s) but ` +
        `${operands.length} tensor(s) were given`,
    );
  }
  const sizes = new Map<string, [number, number]>();
  return operands.map((t, i) => {
    if (!(t instanceof Tensor)) throw new Error(`einsum "${spec}": operand ${i + 1} is no Tensor`);
    const n = t.node;
    requireFloat(n, `einsum "${spec}"`);
    const want = parsed.inputs[i];
    const same = want.length === n.axes.length && want.every((a) => n.axes.includes(a));
    if (!same) {
      throw new Error(
        `einsum "${spec}": operand ${i + 1} has axes ${showAxes(n.axes)} but the spec says ` +
          `${showAxes(want)}`,
      );
    }
    n.axes.forEach((a, k) => {
      const prev = sizes.get(a);
      if (prev && prev[0] !== n.shape[k]) {
        throw new Error(
          `einsum "${spec}": size conflict on axis "${a}": ${prev[0]} in operand ${prev[1]} ` +
            `but ${n.shape[k]} in operand ${i + 1}`,
        );
      }
      sizes.set(a, [n.shape[k], i + 1]);
    });
    return n;
  });
}

function sizeOf(nodes: Node[], axis: string): number {
  for (const n of nodes) {
    const i = n.axes.indexOf(axis);
    if (i >= 0) return n.shape[i];
  }
  throw new Error(`internal: axis ${axis} not found`);
}

/** Lowers checked einsum operands to reduce / contract / binary-mul / permute nodes. */
function lowerEinsum(operands: Node[], parsed: ParsedSpec): Node {
  const out = parsed.output;
  // 1. Axes that only one operand has and the output drops: sum them away first.
  let work = operands.map((n, i) => {
    const privateAxes = n.axes.filter((a) =>
      !out.includes(a) && !operands.some((m, j) => j !== i && m.axes.includes(a))
    );
    if (privateAxes.length === 0) return n;
    const keep = n.axes.map((a, k) => [a, n.shape[k]] as const).filter(([a]) =>
      !privateAxes.includes(a)
    );
    return makeNode({
      kind: "reduce",
      op: "sum",
      x: n,
      over: privateAxes,
      axes: keep.map(([a]) => a),
      shape: keep.map(([, s]) => s),
      dtype: "f32",
    });
  });
  // 2. Pairwise contractions in the order of least total cost (cost of a pair = product of all
  // axis sizes involved), ties to the cheapest pair first.
  const size = (a: string) => sizeOf(work, a);
  while (work.length > 1) {
    const { i, j } = cheapestPair(work.map((n) => n.axes), out, size);
    const rest = work.filter((_, k) => k !== i && k !== j);
    work = [...rest, contractPair(work[i], work[j], rest, out, work.length === 2)];
  }
  // 3. Put the result in the requested layout order.
  const result = work[0];
  if (result.axes.join(" ") === out.join(" ")) return result;
  return makeNode({
    kind: "permute",
    x: result,
    axes: out,
    shape: out.map((a) => sizeOf([result], a)),
    dtype: "f32",
  });
}

/** Most operands whose contraction orders are searched exhaustively (beyond: greedy). */
const EXHAUSTIVE_OPERANDS = 5;

/**
 * The pair to contract next: the first step of the order of least total cost (searched over all
 * orders for a few operands), ties (and longer einsums) to the cheapest pair. Greedy alone would
 * pick W_r·W_Δ (no batch axes) in x·W_r·W_Δ and then multiply x by a full d×e matrix, where
 * x·W_r first is a rank-r projection whose product with W_Δ fuses into its consumer.
 */
function cheapestPair(
  items: readonly (readonly string[])[],
  out: readonly string[],
  size: (axis: string) => number,
): { i: number; j: number } {
  let best: { i: number; j: number; total: number; cost: number } | undefined;
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const { cost, rest } = pairStep(items, i, j, out, size);
      const total = cost +
        (items.length <= EXHAUSTIVE_OPERANDS ? leastTotal(rest, out, size) : 0);
      if (!best || total < best.total || (total === best.total && cost < best.cost)) {
        best = { i, j, total, cost };
      }
    }
  }
  return best!;
}

/** Contracting items i and j: its cost and the items left (the result last). */
function pairStep(
  items: readonly (readonly string[])[],
  i: number,
  j: number,
  out: readonly string[],
  size: (axis: string) => number,
): { cost: number; rest: (readonly string[])[] } {
  const all = [...new Set([...items[i], ...items[j]])];
  const rest = items.filter((_, k) => k !== i && k !== j);
  const kept = all.filter((a) => out.includes(a) || rest.some((n) => n.includes(a)));
  return { cost: all.reduce((p, a) => p * size(a), 1), rest: [...rest, kept] };
}

/** The least total cost of contracting `items` down to one. */
function leastTotal(
  items: readonly (readonly string[])[],
  out: readonly string[],
  size: (axis: string) => number,
): number {
  if (items.length < 2) return 0;
  let least = Infinity;
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const { cost, rest } = pairStep(items, i, j, out, size);
      least = Math.min(least, cost + leastTotal(rest, out, size));
    }
  }
  return least;
}

function contractPair(a: Node, b: Node, rest: Node[], out: string[], last: boolean): Node {
  const needed = (axis: string) => out.includes(axis) || rest.some((n) => n.axes.includes(axis));
  const all = [...a.axes, ...b.axes.filter((x) => !a.axes.includes(x))];
  const summed = all.filter((x) => !needed(x));
  if (summed.length === 0) return uncheckedBinary("mul", a, b);
  const keep = last ? out : all.filter(needed);
  return makeNode({
    kind: "contract",
    a,
    b,
    summed,
    axes: keep,
    shape: keep.map((x) => sizeOf([a, b], x)),
    dtype: "f32",
  });
}
