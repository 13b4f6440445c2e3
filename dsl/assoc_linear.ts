/**
 * Recognizes a linear recurrence written as an associative scan, so that it lowers to the
 * linear `scan` (and its kernels, fusion and gradient). The pairs (a, b) stand for the maps
 * h ↦ a·h + b; composing the older map then the newer one gives
 *
 *   (a, b) = (a_old · a_new, a_new · b_old + b_new),
 *
 * whose b component is h[t] = a[t]·h[t−1] + b[t] (h[−1] = 0) and whose a component is the
 * running product of a. "Newer" is the right operand of a forward scan and the left one of a
 * reverse scan (which then computes h[t] = a[t]·h[t+1] + b[t]). Matching is structural, up to
 * the order of the operands of `mul` and `add`.
 *
 * @module
 */

import type { AssocCombine, Node } from "./ir.ts";

/** The components of a linear-recurrence combine: `decay` is a, `input` is b. */
export interface LinearPair {
  /** Index of the decay component a. */
  readonly decay: number;
  /** Index of the input component b. */
  readonly input: number;
}

function isBinary(n: Node, op: "mul" | "add", x: Node, y: Node): boolean {
  return n.kind === "binary" && n.op === op &&
    (n.a === x && n.b === y || n.a === y && n.b === x);
}

/** The linear-recurrence reading of `combine`, or undefined when it is not one. */
export function linearRecurrence(combine: AssocCombine, reverse: boolean): LinearPair | undefined {
  if (combine.results.length !== 2) return undefined;
  const [newer, older] = reverse ? [combine.left, combine.right] : [combine.right, combine.left];
  for (const [a, b] of [[0, 1], [1, 0]]) {
    const resultA = combine.results[a], resultB = combine.results[b];
    if (!isBinary(resultA, "mul", combine.left[a], combine.right[a])) continue;
    if (resultB.kind !== "binary" || resultB.op !== "add") continue;
    const product = resultB.a === newer[b] ? resultB.b : resultB.b === newer[b] ? resultB.a : null;
    if (product && isBinary(product, "mul", newer[a], older[b])) return { decay: a, input: b };
  }
  return undefined;
}
