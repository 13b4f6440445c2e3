/**
 * Associative scans: y[t] = x[0] ⊕ x[1] ⊕ … ⊕ x[t] along one named axis, for any associative
 * ⊕ written in the DSL over a record of tensors, and the named scans built on it (cumsum,
 * cumprod, cummax, cummin, logcumsumexp).
 *
 * The combine function is traced once, on placeholder tensors, into a small elementwise graph
 * ({@link AssocCombine}); kernels inline it per step and the interpreter evaluates it per
 * element. Associativity is the caller's contract: the kernels regroup the combines (chunks,
 * workgroup trees) but never reorder the operands.
 *
 * @module
 */

import { type CheckAxis, showAxes } from "./axes.ts";
import { requireFloat } from "./build.ts";
import { type AssocCombine, type InputNode, makeNode, type Node, nodeInputs, numel } from "./ir.ts";
import { type AxesOf, Tensor, toNode } from "./tensor.ts";
import { linearRecurrence } from "./assoc_linear.ts";

/** Options of the scans in this module. */
export interface CumulativeOptions {
  /** Scan from the last position to the first: y[t] = x[t] ⊕ x[t+1] ⊕ … ⊕ x[L−1]. */
  reverse?: boolean;
}

/** Node kinds a combine function may use: elementwise math on its arguments and constants. */
const COMBINE_KINDS = new Set(["input", "const", "unary", "binary", "where", "permute"]);

/** The built-in scans with gradient rules (see {@link ./vjp_assoc.ts}). */
export type AssocOp = "sum" | "prod" | "max" | "min" | "logsumexp";

/** Below this many channels a long axis is chunked (one thread per channel starves the GPU). */
export const CHUNK_BELOW_CHANNELS = 8192;
/** The shortest axis that is chunked. */
export const CHUNK_FROM_LENGTH = 1024;

/**
 * Whether a scan of `channels` independent sequences of length `len` is best cut into chunks
 * scanned by workgroups, rather than folded by one thread per channel. When the scan axis is
 * innermost in memory (`innermost`), threads per channel read addresses `len` apart, while a
 * workgroup's tile is contiguous: chunks whenever a tile fills. Otherwise threads per channel
 * read coalesced rows and win once there are enough of them to fill the GPU. (The linear scan's
 * chunked form carries across chunks in one thread per channel, so cumsum and cumprod take the
 * associative kernels where that chain is long.)
 */
export function prefersChunks(channels: number, len: number, innermost: boolean): boolean {
  return len >= CHUNK_FROM_LENGTH && (innermost || channels < CHUNK_BELOW_CHANNELS);
}

/**
 * Whether cumsum/cumprod of `x` along `axis` should leave the linear scan for the associative
 * scan's chunked kernels: where the linear scan's carry pass (one thread per channel walking
 * every chunk; `chooseScanStrategy` makes min(⌈len/64⌉, ⌈65536/channels⌉) chunks) would walk
 * more than 1024 chunks, e.g. 65536 for a 64M-step axis.
 */
function longCarryChain(x: Node, axis: string): boolean {
  const len = x.shape[x.axes.indexOf(axis)];
  const channels = numel(x) / len;
  const linearChunks = Math.min(Math.ceil(len / 64), Math.ceil(65536 / channels));
  const innermost = x.axes[x.axes.length - 1] === axis;
  return prefersChunks(channels, len, innermost) && linearChunks > 1024;
}

/**
 * Associative scan of a record of tensors along `axis`: each position's element is the record
 * of `elems` there; the result at t combines the elements up to t (from t to the end with
 * `reverse`) with `combine(left, right)`, where `left` holds the earlier positions. `combine`
 * is traced once and may use only elementwise ops on its two arguments and constants; it
 * must return a record with the same keys. Every element must have the same axes.
 *
 * ```ts
 * // The running maximum and the running sum of logs, as one scan of (max, +) pairs.
 * const { m } = associativeScan("l", (a, b) => ({
 *   s: add(a.s, b.s),
 *   m: maximum(add(a.m, b.s), b.m),
 * }), { s: logf, m: i });
 * ```
 */
export function associativeScan<R extends Record<string, Tensor>>(
  axis: string,
  combine: (left: R, right: R) => R,
  elems: R,
  options: CumulativeOptions = {},
): R {
  return assocScanRecord("associativeScan", axis, combine, elems, options.reverse ?? false);
}

function assocScanRecord<R extends Record<string, Tensor>>(
  op: string,
  axis: string,
  combine: (left: R, right: R) => R,
  elems: R,
  reverse: boolean,
  named?: AssocOp,
): R {
  if (typeof combine !== "function") throw new Error(`${op}: combine must be a function`);
  if (elems === null || typeof elems !== "object" || elems instanceof Tensor) {
    throw new Error(`${op}: elems must be a record of tensors, e.g. { x }`);
  }
  const names = Object.keys(elems);
  if (names.length === 0) throw new Error(`${op}: elems is an empty record`);
  const nodes = names.map((k) => {
    const n = toNode(elems[k], `${op}: elems.${k}`);
    requireFloat(n, `${op}: elems.${k}`);
    return n;
  });
  const first = nodes[0];
  if (!first.axes.includes(axis)) {
    throw new Error(`${op}: axis "${axis}" is not in elems.${names[0]} ${showAxes(first.axes)}`);
  }
  nodes.forEach((n, i) => {
    const same = n.axes.length === first.axes.length &&
      n.axes.every((a, j) => first.shape[first.axes.indexOf(a)] === n.shape[j]);
    if (!same) {
      throw new Error(
        `${op}: elems.${names[i]} ${showAxes(n.axes)} must have the axes and sizes of ` +
          `elems.${names[0]} ${showAxes(first.axes)}`,
      );
    }
  });
  const combineGraph = traceCombine(op, names, first, combine);
  const linear = linearRecurrence(combineGraph, reverse);
  if (linear) {
    // A linear recurrence: the linear scan's kernels, fusion and gradient apply.
    const a = nodes[linear.decay], b = nodes[linear.input];
    return {
      [names[linear.input]]: new Tensor(linearScan(axis, a, b, reverse)),
      [names[linear.decay]]: new Tensor(linearScan(axis, a, constNode(0), reverse, constNode(1))),
    } as R;
  }
  const out: Record<string, Tensor> = {};
  names.forEach((k, component) => {
    out[k] = new Tensor(makeNode({
      kind: "assocScan",
      axis,
      elems: nodes,
      combine: combineGraph,
      component,
      reverse,
      op: named,
      axes: first.axes,
      shape: first.shape,
      dtype: "f32",
    }));
  });
  return out as R;
}

/** Traces `combine` on placeholders and checks what it built. */
function traceCombine<R extends Record<string, Tensor>>(
  op: string,
  names: readonly string[],
  like: Node,
  combine: (left: R, right: R) => R,
): AssocCombine {
  const placeholders = (side: string): InputNode[] =>
    names.map((k) =>
      makeNode({
        kind: "input",
        name: `${side}.${k}`,
        axes: like.axes,
        shape: like.shape,
        dtype: "f32",
      })
    );
  const left = placeholders("left"), right = placeholders("right");
  const asRecord = (ps: InputNode[]) =>
    Object.fromEntries(names.map((k, i) => [k, new Tensor(ps[i])])) as R;
  const result = combine(asRecord(left), asRecord(right));
  if (result === null || typeof result !== "object" || result instanceof Tensor) {
    throw new Error(`${op}: combine must return a record with the keys ${names.join(", ")}`);
  }
  const got = Object.keys(result);
  if (got.length !== names.length || !names.every((k) => got.includes(k))) {
    throw new Error(
      `${op}: combine returned the keys {${got.join(", ")}}, expected {${names.join(", ")}}`,
    );
  }
  const results = names.map((k) => toNode(result[k], `${op}: combine's ${k}`));
  const leaves = new Set<Node>([...left, ...right]);
  const seen = new Set<Node>();
  const stack = [...results];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    if (!COMBINE_KINDS.has(n.kind)) {
      throw new Error(
        `${op}: combine may use only elementwise ops on its arguments and constants, ` +
          `got a ${n.kind} ${showAxes(n.axes)}`,
      );
    }
    if (n.kind === "input" && !leaves.has(n)) {
      throw new Error(
        `${op}: combine may read only its two arguments, not input "${n.name}" from outside`,
      );
    }
    if (n.axes.some((a) => !like.axes.includes(a))) {
      throw new Error(
        `${op}: combine's value ${showAxes(n.axes)} has axes the elements ` +
          `${showAxes(like.axes)} lack`,
      );
    }
    stack.push(...nodeInputs(n));
  }
  return { names, left, right, results };
}

function single(op: string, x: Tensor, axis: string): Node {
  const n = toNode(x, op);
  requireFloat(n, op);
  if (!n.axes.includes(axis)) {
    throw new Error(`${op}: the tensor ${showAxes(n.axes)} has no axis "${axis}"`);
  }
  return n;
}

/** The linear scan h[t] = decay[t]·h[t∓1] + input[t] over `like`'s axes (decay's). */
function linearScan(axis: string, decay: Node, input: Node, reverse: boolean, init?: Node) {
  const like = decay.axes.length >= input.axes.length ? decay : input;
  return makeNode({
    kind: "scan",
    axis,
    decay,
    input,
    init,
    reverse,
    axes: like.axes,
    shape: like.shape,
    dtype: "f32",
  });
}

function constNode(value: number): Node {
  return makeNode({ kind: "const", value, axes: [], shape: [], dtype: "f32" });
}

/** cumsum of a node (`cumsum` without its checks; also its own transpose). */
export function cumsumNode(n: Node, axis: string, reverse: boolean): Node {
  if (longCarryChain(n, axis)) return namedScan("cumsum", "sum", new Tensor(n), axis, reverse).node;
  return linearScan(axis, constNode(1), n, reverse);
}

/**
 * Cumulative sum along `axis` (y[t] = x[0] + … + x[t]). It is the linear recurrence
 * h[t] = h[t−1] + x[t] and runs on the linear scan's kernels, except for long axes with few
 * channels, which the associative scan's chunked kernels run better.
 */
export function cumsum<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "cumsum">,
  options: CumulativeOptions = {},
): X {
  const n = single("cumsum", x, axis);
  return new Tensor(cumsumNode(n, axis, options.reverse ?? false)) as X;
}

/** The linear scan computing cumprod: h[t] = x[t]·h[t∓1] from h = 1 (its gradient's form). */
export function cumprodAsLinearScan(n: Node, axis: string, reverse: boolean): Node {
  return linearScan(axis, n, constNode(0), reverse, constNode(1));
}

/**
 * Cumulative product along `axis` (y[t] = x[0] · … · x[t]): the linear recurrence
 * h[t] = x[t]·h[t−1] from h[−1] = 1, run on the linear scan's kernels (or, for long axes with
 * few channels, the associative scan's chunked kernels). Its gradient is the linear scan's,
 * exact at zeros.
 */
export function cumprod<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "cumprod">,
  options: CumulativeOptions = {},
): X {
  const n = single("cumprod", x, axis);
  const reverse = options.reverse ?? false;
  if (longCarryChain(n, axis)) return namedScan("cumprod", "prod", x, axis, reverse) as X;
  return new Tensor(cumprodAsLinearScan(n, axis, reverse)) as X;
}

function namedScan(op: string, named: AssocOp, x: Tensor, axis: string, reverse: boolean) {
  single(op, x, axis);
  const combines: Record<AssocOp, (a: Node, b: Node) => Node> = {
    sum: (a, b) => binaryNode("add", a, b),
    prod: (a, b) => binaryNode("mul", a, b),
    max: (a, b) => binaryNode("max", a, b),
    min: (a, b) => binaryNode("min", a, b),
    // log(eᵃ + eᵇ) = max + log(1 + e^−|a−b|): no overflow, exact when one side dominates.
    logsumexp: (a, b) => {
      const m = binaryNode("max", a, b);
      const d = unaryNode("neg", unaryNode("abs", binaryNode("sub", a, b)));
      return binaryNode(
        "add",
        m,
        unaryNode("log", binaryNode("add", constNode(1), unaryNode("exp", d))),
      );
    },
  };
  return assocScanRecord(
    op,
    axis,
    (l: { x: Tensor }, r: { x: Tensor }) => ({
      x: new Tensor(combines[named](l.x.node, r.x.node)),
    }),
    { x },
    reverse,
    named,
  ).x;
}

function binaryNode(op: "max" | "min" | "add" | "sub" | "mul", a: Node, b: Node): Node {
  return makeNode({ kind: "binary", op, a, b, axes: a.axes, shape: a.shape, dtype: "f32" });
}

function unaryNode(op: "neg" | "abs" | "log" | "exp", x: Node): Node {
  return makeNode({ kind: "unary", op, x, axes: x.axes, shape: x.shape, dtype: "f32" });
}

/**
 * Running maximum along `axis` (y[t] = max(x[0], …, x[t])). Its gradient goes to the first
 * position attaining each running maximum.
 */
export function cummax<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "cummax">,
  options: CumulativeOptions = {},
): X {
  return namedScan("cummax", "max", x, axis, options.reverse ?? false) as X;
}

/**
 * Running minimum along `axis` (y[t] = min(x[0], …, x[t])). Its gradient goes to the first
 * position attaining each running minimum.
 */
export function cummin<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "cummin">,
  options: CumulativeOptions = {},
): X {
  return namedScan("cummin", "min", x, axis, options.reverse ?? false) as X;
}

/**
 * y[t] = log(exp(x[0]) + … + exp(x[t])) along `axis`, computed stably (no overflow for large
 * x; −∞ elements are not supported).
 */
export function logcumsumexp<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "logcumsumexp">,
  options: CumulativeOptions = {},
): X {
  return namedScan("logcumsumexp", "logsumexp", x, axis, options.reverse ?? false) as X;
}
