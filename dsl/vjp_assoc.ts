/**
 * Transpose rules of the built-in associative scans. Each is a linear scan in the opposite
 * direction (see {@link ./vjp_scan.ts}); below, "next" is one step toward the scan's end
 * (t+1 forward, t−1 reverse) and "previous" one step toward its start.
 *
 * - cumsum (on the chunked kernels): a cumsum the other way; cumprod: the linear scan's rule.
 * - cummax / cummin: a position is a *record* when it raises the running extreme (the first
 *   position always is; a tie is not, so the cotangent goes to the first position attaining
 *   each extreme). y[t]'s cotangent goes to the last record at or before t:
 *   g[t] = c[t] + (1 − record[next])·g[next], ∂x[t] = record[t]·g[t].
 * - logcumsumexp: ∂x[s] = Σ_{t ≥ s} c[t]·e^{x[s] − y[t]} = e^{x[s] − y[s]}·k[s] with
 *   k[s] = c[s] + e^{y[s] − y[next]}·k[next]; y never decreases, so every factor is ≤ 1.
 *
 * A user's combine has no rule: differentiating it is an error naming the scan.
 *
 * @module
 */

import {
  binary,
  constant,
  type Contribution,
  materializeAs,
  shiftAlong,
  sumTo,
  unary,
} from "./grad_builders.ts";
import { type AssocScanNode, makeNode, type Node, type ScanNode } from "./ir.ts";
import { cumprodAsLinearScan, cumsumNode } from "./assoc_scan.ts";
import { scanRule } from "./vjp_scan.ts";
import { showAxes } from "./axes.ts";

function reverseScan(node: AssocScanNode, decay: Node, input: Node): Node {
  return makeNode({
    kind: "scan",
    axis: node.axis,
    decay,
    input: materializeAs(input, node),
    reverse: !node.reverse,
    axes: node.axes,
    shape: node.shape,
    dtype: "f32",
  });
}

/** The cotangent an associative scan sends to its element. */
export function assocScanRule(
  node: AssocScanNode,
  ct: Node,
  wanted: (input: Node) => boolean,
): Contribution[] {
  if (node.op === undefined) {
    throw new Error(
      `associativeScan: no gradient for a user-defined combine (scan along "${node.axis}" of ` +
        `${showAxes(node.axes)}, component "${node.combine.names[node.component]}"); ` +
        `differentiate cumsum, cumprod, cummax, cummin or logcumsumexp, or write it with scan`,
    );
  }
  const x = node.elems[0];
  if (!wanted(x)) return [];
  const { axis } = node;
  // shiftAlong(v, axis, +1) reads v[t−1]: "previous" going forward.
  const toStart = node.reverse ? -1 : 1;
  const next = (v: Node, fill: number) => shiftAlong(v, axis, -toStart, fill);
  const previous = (v: Node, fill: number) => shiftAlong(v, axis, toStart, fill);
  const y: Node = node;
  if (node.op === "sum") {
    return [[x, sumTo(cumsumNode(materializeAs(ct, node), axis, !node.reverse), x.axes)]];
  }
  if (node.op === "prod") {
    // The linear scan's rule, on the same recurrence (its values recomputed by a linear scan).
    return scanRule(cumprodAsLinearScan(x, axis, node.reverse) as ScanNode, ct, wanted);
  }
  if (node.op === "logsumexp") {
    // The value shifted in at the end multiplies the zero state; min(·, 0) keeps it finite.
    const decay = unary("exp", binary("min", binary("sub", y, next(y, 0)), constant(0)));
    const k = reverseScan(node, decay, ct);
    return [[x, sumTo(binary("mul", unary("exp", binary("sub", x, y)), k), x.axes)]];
  }
  // raises[t]: position next(t) is a record. Its value at the end is never used.
  const raises = binary(node.op === "max" ? "gt" : "lt", next(y, 0), y);
  const record = previous(raises, 1);
  const g = reverseScan(node, binary("sub", constant(1), raises), ct);
  return [[x, sumTo(binary("mul", record, g), x.axes)]];
}
