/**
 * `scan`: the linear recurrence at the heart of every state-space model,
 * h[t] = decay[t] · h[t − 1] + input[t] along one named axis, elementwise over all others.
 *
 * The compiler decides how it runs: when the state is only contracted away (y = Σ_n C·h) and
 * read at its end, the state is never written to memory (see ARCHITECTURE.md).
 *
 * @module
 */

import { type CheckAxis, showAxes } from "./axes.ts";
import { broadcastShapes, requireFloat } from "./build.ts";
import { type Bcast, type CheckBroadcast, requireOneHasAllAxes } from "./elementwise.ts";
import { makeNode, type Node, type ScanNode } from "./ir.ts";
import type { Reduced } from "./reduce.ts";
import { type AxesOf, Tensor, type TensorLike, toNode } from "./tensor.ts";

/** Options of {@link scan}. */
export interface ScanOptions {
  /** Scan from the last position to the first (backward direction of bidirectional models). */
  reverse?: boolean;
  /** The state before the first step (over every axis of the result except the scan axis). */
  init?: Tensor;
}

/** Result type of a scan: the broadcast of decay and input. */
export type ScanResult<X, Y> = Bcast<X, Y>;

/**
 * Linear recurrence along `axis`: h[t] = decay[t] · h[t − 1] + input[t] (h[−1] = init or 0).
 * `decay` and `input` broadcast by name under the rule of `add` (one operand has every axis
 * of the other); the result has that operand's axes, which include the scan axis.
 */
export function scan<X extends TensorLike, Y extends TensorLike, Ax extends string>(
  axis: CheckAxis<AxesOf<Bcast<X, Y>>, Ax, "scan">,
  decay: X,
  input: CheckBroadcast<X, Y, "scan">,
  options: ScanOptions = {},
): ScanResult<X, Y> {
  const d = toNode(decay, "scan: decay");
  const u = toNode(input as TensorLike, "scan: input");
  requireFloat(d, "scan: decay");
  requireFloat(u, "scan: input");
  requireOneHasAllAxes("scan", [["decay", d], ["input", u]]);
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
export function pick<X extends Tensor, Ax extends string>(
  x: X,
  axis: CheckAxis<AxesOf<X>, Ax, "pick">,
  index: number,
): Reduced<AxesOf<X>, Ax> {
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
  })) as Reduced<AxesOf<X>, Ax>;
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
