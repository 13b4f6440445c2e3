/**
 * The transpose rule of `scan`. For h[t] = a[t]·h[t−1] + u[t] (h[−1] = init) and the cotangent
 * c[t] of h[t], the adjoint state g[t] = ∂L/∂h[t] (through every later step) satisfies
 *
 *   g[t] = a[t+1]·g[t+1] + c[t],   g[L] = 0,
 *
 * a scan in the opposite direction whose decay is a shifted one step (the value shifted in is
 * never used: it multiplies the zero state; it is 1, so that log(decay) stays finite). Then ∂L/∂u[t] = g[t], ∂L/∂a[t] = g[t]·h[t−1] and
 * ∂L/∂init = a[0]·g[0]. A reverse scan (h[t] = a[t]·h[t+1] + u[t], h[L] = init) mirrors every
 * index: g runs forward with decay a[t−1], ∂a[t] = g[t]·h[t+1], ∂init = a[L−1]·g[L−1].
 * `finalState` is a `pick` of the scan, whose rule pads its cotangent into c.
 *
 * The adjoint records its primal (`ScanNode.primal`): where every consumer of h and g fits,
 * codegen computes them together, recomputing h from chunk checkpoints, so neither state is
 * written to memory (`codegen/scan_backward_plan.ts`); elsewhere h is materialized to form
 * h[t∓1].
 *
 * @module
 */

import {
  constant,
  expandTo,
  materializeAs,
  pickAt,
  productTo,
  shiftAlong,
  sizedAxes,
  sizeOf,
  sumTo,
} from "./grad_builders.ts";
import { makeNode, type Node, type ScanNode } from "./ir.ts";
import type { Contribution } from "./grad_builders.ts";

/** The cotangents a scan sends to its decay, input and init. */
export function scanRule(
  node: ScanNode,
  ct: Node,
  wanted: (input: Node) => boolean,
): Contribution[] {
  const { axis, decay, input, init, reverse } = node;
  const len = sizeOf(node, axis);
  // One step toward the scan's start: t−1 for a forward scan, t+1 for a reverse one.
  const towardStart = reverse ? -1 : 1;
  const first = reverse ? len - 1 : 0;
  // The adjoint's decay at t is the forward decay at the next step (t+1 forward, t−1 reverse).
  // The value shifted in multiplies the zero state, so any value is right; 1 rather than 0
  // keeps a positive decay positive, which the chunked (SSD) lowering needs: it works with
  // log(decay).
  const adjointDecay = decay.axes.includes(axis) ? shiftAlong(decay, axis, -towardStart, 1) : decay;
  const adjoint = makeNode({
    kind: "scan",
    axis,
    decay: adjointDecay,
    input: materializeAs(ct, node),
    reverse: !reverse,
    primal: node,
    axes: node.axes,
    shape: node.shape,
    dtype: "f32",
  });
  const out: Contribution[] = [];
  if (wanted(input)) out.push([input, sumTo(adjoint, input.axes)]);
  if (wanted(decay)) {
    // h at the previous step; before the first step, init (or zero).
    const stateAxes = sizedAxes(node).filter((a) => a.axis !== axis);
    const start = init
      ? expandTo(init, [...stateAxes, { axis, size: 1 }])
      : constant(0, [...stateAxes, { axis, size: 1 }]);
    const previous = shiftAlong(node, axis, towardStart, start);
    out.push([decay, productTo(adjoint, previous, decay.axes)]);
  }
  if (init && wanted(init)) {
    const decayFirst = decay.axes.includes(axis) ? pickAt(decay, axis, first) : decay;
    out.push([init, productTo(decayFirst, pickAt(adjoint, axis, first), init.axes)]);
  }
  return out;
}
