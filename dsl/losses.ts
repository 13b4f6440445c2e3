/**
 * Training losses: cross-entropy over a vocabulary axis (with its log-softmax fused in) and mean
 * squared error. Both return a scalar tensor, ready for {@link valueAndGrad}.
 *
 * ```ts
 * const [loss, g] = valueAndGrad((p: { W: Tensor<"d v"> }) =>
 *   crossEntropy(einsum("b l d, d v -> b l v", t.x, p.W), t.targets, "v")
 * )({ W: t.W });
 * ```
 *
 * @module
 */

import { type CheckAxis, showAxes } from "./axes.ts";
import { uncheckedBinary, uncheckedWhere } from "./build.ts";
import { exp, log, mul, stopGradient, sub } from "./elementwise.ts";
import { arange } from "./index_ops.ts";
import { makeNode, type Node } from "./ir.ts";
import { max, mean, sum } from "./reduce.ts";
import { type AxesOf, Tensor, toNode } from "./tensor.ts";
import { gather } from "./views.ts";

/** How a loss combines its per-position terms. */
export type Reduction = "mean" | "sum";

/** Options of {@link crossEntropy} and {@link mse}. */
export interface LossOptions {
  /** `"mean"` (the default) averages the per-position terms; `"sum"` adds them. */
  reduction?: Reduction;
}

/**
 * Cross-entropy of integer targets under `softmax(logits)` along `vocabAxis`, reduced to a
 * scalar (mean over every other axis by default; see {@link LossOptions}). `targets` are i32 ids
 * in [0, V) with exactly the logits' other axes (any order).
 *
 * Each term is computed stably as `logsumexp(logits) − logits[target]` with the row maximum
 * subtracted before `exp`, never as `log(softmax(…))`: that underflows to −∞ once logits differ
 * by about 100 (exp rounds to 0), while this form stays exact (a term of 200 for logits ±100).
 * The logits are read by reductions over the vocabulary axis only: the program materializes no
 * b·l·v probability tensor. Ids must lie in [0, V): like `gather`, the interpreter rejects
 * others and the GPU clamps them into range (it does not check ids on the device).
 *
 * Through {@link valueAndGrad} the gradient with respect to the logits is
 * `(softmax(logits) − onehot(targets)) · ct` (ct = 1/N for the mean of N terms).
 */
export function crossEntropy<L extends Tensor, Ax extends string>(
  logits: L,
  targets: Tensor,
  vocabAxis: CheckAxis<AxesOf<L>, Ax, "crossEntropy">,
  options: LossOptions = {},
): Tensor<""> {
  const reduction = checkReduction(options, "crossEntropy");
  const x = toNode(logits, "crossEntropy");
  const ids = toNode(targets, "crossEntropy");
  const v = vocabAxis as string;
  if (x.dtype !== "f32") {
    throw new Error(`crossEntropy: logits ${showAxes(x.axes)} must be f32, not ${x.dtype}`);
  }
  if (!x.axes.includes(v)) {
    throw new Error(`crossEntropy: the logits ${showAxes(x.axes)} have no vocabulary axis "${v}"`);
  }
  if (ids.dtype !== "i32") {
    throw new Error(
      `crossEntropy: targets ${showAxes(ids.axes)} must be i32 ids, not ${ids.dtype}`,
    );
  }
  const rest = x.axes.filter((a) => a !== v);
  const sameAxes = ids.axes.length === rest.length && rest.every((a) => ids.axes.includes(a));
  if (!sameAxes) {
    throw new Error(
      `crossEntropy: targets ${showAxes(ids.axes)} must have the logits' axes without "${v}", ` +
        `i.e. ${showAxes(rest)}`,
    );
  }
  for (const a of rest) {
    const want = x.shape[x.axes.indexOf(a)];
    const got = ids.shape[ids.axes.indexOf(a)];
    if (want !== got) {
      throw new Error(
        `crossEntropy: axis "${a}" has size ${got} in the targets but ${want} in the logits`,
      );
    }
  }
  const vocab = x.shape[x.axes.indexOf(v)];
  const L: Tensor = logits;
  // Row maximum: exp(x − m) ≤ 1, and Σ exp(x − m) ≥ 1 (the maximum's own term), so its log is
  // finite and ≥ 0 whatever the logits' magnitude. The term does not depend on m (its
  // derivative in m is 1 − Σ softmax = 0), so m is a constant for the gradient: without the
  // stopGradient the backward pass would still build that zero as two reductions over v.
  const m = stopGradient(max(L, v));
  const shifted = sub(L, m);
  const logSumExp = log(sum(exp(shifted), v));
  // The target's shifted logit through a one-hot mask: eq(ids, 0…V−1) over [rest, v]. The ids
  // become f32 by gathering the ramp 0…V−1 at them (i32 tensors are only gather indices), and
  // the mask is an elementwise node a reduction consumes, so it costs no memory. `gather`
  // itself cannot pick the target logit: its table may not share axes with its indices.
  const idsAsFloat = gather(arange(v, vocab), targets, v);
  const onehot = uncheckedBinary("eq", idsAsFloat.node, arange(v, vocab).node);
  const picked = sum(new Tensor(uncheckedWhere(onehot, shifted.node, zero())), v);
  const terms = sub(logSumExp, picked);
  return reduceAll(terms, reduction);
}

/**
 * Mean squared error Σ (prediction − target)² / N over every axis (or the plain sum with
 * `reduction: "sum"`). Both must have the same axes (any order) and sizes: a loss never
 * broadcasts, since a misspelled axis would otherwise silently compare every pair.
 */
export function mse(prediction: Tensor, target: Tensor, options: LossOptions = {}): Tensor<""> {
  const reduction = checkReduction(options, "mse");
  const p = toNode(prediction, "mse");
  const t = toNode(target, "mse");
  const same = p.axes.length === t.axes.length && p.axes.every((a) => t.axes.includes(a));
  if (!same) {
    throw new Error(
      `mse: the prediction ${showAxes(p.axes)} and the target ${showAxes(t.axes)} must have the ` +
        `same axes`,
    );
  }
  if (p.axes.length === 0) {
    throw new Error(`mse: the prediction is a scalar; give tensors with axes`);
  }
  const d = sub(prediction, target);
  return reduceAll(mul(d, d), reduction);
}

/** The reduction an options record asks for, checked. */
function checkReduction(options: LossOptions, op: string): Reduction {
  const r = options.reduction ?? "mean";
  if (r !== "mean" && r !== "sum") {
    throw new Error(`${op}: reduction must be "mean" or "sum", got ${JSON.stringify(r)}`);
  }
  return r;
}

/** Sums or averages over every axis; a scalar stays as it is. */
function reduceAll(x: Tensor, reduction: Reduction): Tensor<""> {
  if (x.axes.length === 0) return x as Tensor<"">;
  const axes = x.axes.join(" ");
  return (reduction === "sum" ? sum(x, axes) : mean(x, axes)) as Tensor<"">;
}

/** The scalar constant 0. */
function zero(): Node {
  return makeNode({ kind: "const", value: 0, axes: [], shape: [], dtype: "f32" });
}
