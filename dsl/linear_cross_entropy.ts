/**
 * Cross-entropy of a linear head, computed over chunks of positions so that no logits tensor
 * is larger than a byte budget. A language model's logits are positions × vocabulary: at
 * b = 8, l = 2048 and a 50,280-word vocabulary they take 3.3 GB, more than a WebGPU device
 * lets one shader binding cover (often 2 GiB or less). Split into pieces of at most the
 * budget, each piece is an ordinary head matmul and {@link crossEntropy}, and the backward
 * pass (through `slice`) is the same per piece.
 *
 * ```ts
 * const loss = linearCrossEntropy(features, head, t.targets, "v", { maxLogitsBytes: 1 << 30 });
 * ```
 *
 * @module
 */

import { showAxes } from "./axes.ts";
import { add, div } from "./elementwise.ts";
import { einsum } from "./einsum.ts";
import { crossEntropy, type LossOptions } from "./losses.ts";
import type { Tensor } from "./tensor.ts";
import { toNode } from "./tensor.ts";
import { slice } from "./views.ts";

/** Options of {@link linearCrossEntropy}. */
export interface LinearCrossEntropyOptions extends LossOptions {
  /**
   * The largest logits piece, in bytes (default 2^30 = 1 GiB). A program's caller that knows
   * its device passes the device's `maxStorageBufferBindingSize`.
   */
  maxLogitsBytes?: number;
}

/** Bytes of one f32 logit. */
const LOGIT_BYTES = 4;

/**
 * The cross-entropy of `softmax(features · headᵀ)` along `vocabAxis` against integer `targets`,
 * reduced to a scalar like {@link crossEntropy}. `head` has the vocabulary axis and the
 * features' contracted axes (those it shares with `features`); `targets` has the features'
 * other axes. When all logits would exceed `maxLogitsBytes`, the positions are split along
 * their outermost axes into pieces that fit, and the pieces' sums are added: the result and its
 * gradient are those of the unsplit loss (up to the order of the f32 sums).
 *
 * @throws Error naming the problem when the axes do not fit together, or when a single logits
 *   row (the vocabulary) is larger than `maxLogitsBytes`.
 */
export function linearCrossEntropy(
  features: Tensor,
  head: Tensor,
  targets: Tensor,
  vocabAxis: string,
  options: LinearCrossEntropyOptions = {},
): Tensor<""> {
  const x = toNode(features, "linearCrossEntropy");
  const w = toNode(head, "linearCrossEntropy");
  const maxBytes = options.maxLogitsBytes ?? 2 ** 30;
  if (!(Number.isFinite(maxBytes) && maxBytes > 0)) {
    throw new Error(
      `linearCrossEntropy: maxLogitsBytes must be a positive number, got ${maxBytes}`,
    );
  }
  if (!w.axes.includes(vocabAxis) || x.axes.includes(vocabAxis)) {
    throw new Error(
      `linearCrossEntropy: the vocabulary axis "${vocabAxis}" must be in the head ` +
        `${showAxes(w.axes)} and not in the features ${showAxes(x.axes)}`,
    );
  }
  const contracted = x.axes.filter((a) => w.axes.includes(a));
  if (contracted.length === 0 || contracted.length !== w.axes.length - 1) {
    throw new Error(
      `linearCrossEntropy: the head ${showAxes(w.axes)} must have "${vocabAxis}" and only axes ` +
        `the features ${showAxes(x.axes)} also have`,
    );
  }
  const vocab = w.shape[w.axes.indexOf(vocabAxis)];
  const rowBytes = vocab * LOGIT_BYTES;
  if (rowBytes > maxBytes) {
    throw new Error(
      `linearCrossEntropy: one row of ${vocab} logits (${rowBytes} bytes) is larger than ` +
        `maxLogitsBytes (${maxBytes})`,
    );
  }
  const total = sumOfPieces(features, head, targets, vocabAxis, contracted, maxBytes, { n: 0 });
  if (options.reduction === "sum") return total;
  if (options.reduction !== undefined && options.reduction !== "mean") {
    throw new Error(
      `linearCrossEntropy: reduction must be "mean" or "sum", got ${
        JSON.stringify(options.reduction)
      }`,
    );
  }
  const positions = x.shape.reduce((p, s, i) => (contracted.includes(x.axes[i]) ? p : p * s), 1);
  return div(total, positions) as Tensor<"">;
}

/** The summed cross-entropy of one piece, split further while its logits exceed the budget. */
function sumOfPieces(
  features: Tensor,
  head: Tensor,
  targets: Tensor,
  v: string,
  contracted: string[],
  maxBytes: number,
  pieces: { n: number },
): Tensor<""> {
  const x = toNode(features, "linearCrossEntropy");
  const rest = x.axes.filter((a) => !contracted.includes(a));
  const restSize = (axes: string[]) => axes.reduce((p, a) => p * x.shape[x.axes.indexOf(a)], 1);
  const vocab = toNode(head, "linearCrossEntropy").shape[head.axes.indexOf(v)];
  const bytes = restSize(rest) * vocab * LOGIT_BYTES;
  if (bytes <= maxBytes) {
    const spec = `${x.axes.join(" ")}, ${head.axes.join(" ")} -> ${rest.join(" ")} ${v}`;
    const logits = einsum(spec as never, features as never, head as never) as Tensor;
    return crossEntropy(logits, targets, v as never, { reduction: "sum" });
  }
  // Split the outermost axis that is longer than 1 into the fewest pieces that fit; a piece of
  // length 1 that still does not fit is split along the next axis by the recursion.
  const axis = rest.find((a) => x.shape[x.axes.indexOf(a)] > 1)!;
  const size = x.shape[x.axes.indexOf(axis)];
  const perIndex = bytes / size;
  const step = Math.max(1, Math.floor(maxBytes / perIndex));
  let total: Tensor<""> | undefined;
  for (let start = 0; start < size; start += step) {
    const end = Math.min(size, start + step);
    // Every piece gets its own axis name: a named axis has one size in a program.
    const name = `${axis}_ce${pieces.n++}`;
    const part = sumOfPieces(
      slice(features, axis as never, start, end, name as never) as Tensor,
      head,
      slice(targets, axis as never, start, end, name as never) as Tensor,
      v,
      contracted,
      maxBytes,
      pieces,
    );
    total = total ? add(total, part) as Tensor<""> : part;
  }
  return total!;
}
