/**
 * `scan`: the linear recurrence at the heart of every state-space model,
 * h[t] = decay[t] · h[t − 1] + input[t] along one named axis, elementwise over all others.
 *
 * The compiler decides how it runs: when the state is only contracted away (y = Σ_n C·h) and
 * read at its end, the state is never written to memory (see ARCHITECTURE.md).
 *
 * @module
 */

import { type Broadcast, showAxes } from "./axes.ts";
import { broadcastShapes, requireFloat } from "./elementwise.ts";
import { makeNode, type Node, type ScanNode } from "./ir.ts";
import { type AxesOf, type IsAny, Tensor, type TensorLike, toNode } from "./tensor.ts";

/** Options of {@link scan}. */
export interface ScanOptions {
  /** Scan from the last position to the first (backward direction of bidirectional models). */
  reverse?: boolean;
  /** The state before the first step (over every axis of the result except the scan axis). */
  init?: Tensor;
}

/** Result type of a scan: the broadcast of decay and input. */
export type ScanResult<X, Y> = IsAny<AxesOf<X>> extends true ? Tensor
  : IsAny<AxesOf<Y>> extends true ? Tensor
  : Tensor<Broadcast<AxesOf<X>, AxesOf<Y>>>;

/**
 * Linear recurrence along `axis`: h[t] = decay[t] · h[t − 1] + input[t] (h[−1] = init or 0).
 * `decay` and `input` broadcast by name; the result has both operands' axes, and the scan axis.
 */
export function scan<X extends TensorLike, Y extends TensorLike>(
  axis: string,
  decay: X,
  input: Y,
  options: ScanOptions = {},
): ScanResult<X, Y> {
  const d = toNode(decay, "scan: decay");
  const u = toNode(input, "scan: input");
  requireFloat(d, "scan: decay");
  requireFloat(u, "scan: input");
  const { axes, shape } = broadcastShapes(d, u, "scan");
  if (!axes.includes(axis)) {
    throw new Error(
      `scan: axis "${axis}" is in neither decay ${showAxes(d.axes)} nor input ${showAxes(u.axes)}`,
    );
  }
  let init: Node | undefined;
  if (options.init !== undefined) {
    init = toNode(options.init, "scan: init");
    requireFloat(init, "scan: init");
    const stateAxes = axes.filter((a) => a !== axis);
    for (const [i, a] of init.axes.entries()) {
      const k = axes.indexOf(a);
      if (a === axis || k < 0) {
        throw new Error(
          `scan: init ${showAxes(init.axes)} has axis "${a}", but the state axes are ` +
            `${showAxes(stateAxes)}`,
        );
      }
      if (shape[k] !== init.shape[i]) {
        throw new Error(
          `scan: size conflict on axis "${a}": ${shape[k]} in the scan but ${
            init.shape[i]
          } in init`,
        );
      }
    }
  }
  return new Tensor(makeNode({
    kind: "scan",
    axis,
    decay: d,
    input: u,
    init,
    reverse: options.reverse ?? false,
    axes,
    shape,
    dtype: "f32",
  })) as ScanResult<X, Y>;
}

/**
 * One position of `axis`, dropping the axis: `pick(logits, "l", 6)` is the last token's logits
 * when l = 7. Negative indices count from the end.
 */
export function pick(x: Tensor, axis: string, index: number): Tensor {
  const n = toNode(x, "pick");
  const k = n.axes.indexOf(axis);
  if (k < 0) throw new Error(`pick: the tensor ${showAxes(n.axes)} has no axis "${axis}"`);
  const size = n.shape[k];
  const i = index < 0 ? size + index : index;
  if (!Number.isInteger(i) || i < 0 || i >= size) {
    throw new Error(`pick: index ${index} is outside axis "${axis}" of size ${size}`);
  }
  return new Tensor(makeNode({
    kind: "pick",
    x: n,
    axis,
    index: i,
    axes: n.axes.filter((a) => a !== axis),
    shape: n.shape.filter((_, j) => j !== k),
    dtype: n.dtype,
  }));
}

/**
 * The state after the last step of a scan (for a reverse scan: after position 0), over every
 * axis except the scan axis. Feed it back as `init` to continue the recurrence.
 */
export function finalState(h: Tensor): Tensor {
  const n = toNode(h, "finalState");
  if (n.kind !== "scan") {
    throw new Error(`finalState: expected the result of scan(), got a ${n.kind} node`);
  }
  const s = n as ScanNode;
  return pick(h, s.axis, s.reverse ? 0 : -1);
}
