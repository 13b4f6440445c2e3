/**
 * Transpose rules of the index-remapping nodes: permute, regroup, slice, flip, concat, pick,
 * gather and conv1d. Each maps the cotangent back through the inverse index map; where the
 * forward map drops positions (slice, pick), the backward pads with zero constants, and where it
 * reads a position several times (gather, conv1d), the backward sums over the readers in a
 * contraction (deterministic: no scatter, no atomics).
 *
 * @module
 */

import { arangeNode } from "./index_ops.ts";
import {
  binary,
  concatAlong,
  expandTo,
  flipAlong,
  freshAxis,
  materializeAs,
  padAlong,
  type Piece,
  productTo,
  shiftAlong,
  sizeOf,
  sliceAlong,
  withUnitAxis,
} from "./grad_builders.ts";
import { type Conv1dNode, type GatherNode, makeNode, type Node } from "./ir.ts";
import type { Contribution } from "./grad_builders.ts";

/** The view nodes. */
export type ViewNode = Extract<
  Node,
  { kind: "permute" | "regroup" | "slice" | "flip" | "concat" | "gather" | "conv1d" | "pick" }
>;

/** The cotangents a view sends to its inputs (see {@link ./vjp_rules.ts}). */
export function viewRule(
  node: ViewNode,
  ct: Node,
  wanted: (input: Node) => boolean,
): Contribution[] {
  switch (node.kind) {
    case "permute":
      // Cotangents are addressed by name: the layout order does not matter.
      return wanted(node.x) ? [[node.x, ct]] : [];
    case "regroup": {
      if (!wanted(node.x)) return [];
      const full = materializeAs(ct, node);
      return [[
        node.x,
        makeNode({
          kind: "regroup",
          x: full,
          inGroups: node.outGroups,
          outGroups: node.inGroups,
          sizes: node.sizes,
          axes: node.x.axes,
          shape: node.x.shape,
          dtype: "f32",
        }),
      ]];
    }
    case "slice": {
      if (!wanted(node.x)) return [];
      const len = sizeOf(node, node.newAxis);
      const along = expandTo(ct, [{ axis: node.newAxis, size: len }]);
      const after = sizeOf(node.x, node.axis) - node.start - len;
      return [[node.x, padAlong(along, node.newAxis, node.start, after, node.axis)]];
    }
    case "flip":
      if (!wanted(node.x)) return [];
      return [[node.x, ct.axes.includes(node.axis) ? flipAlong(ct, node.axis) : ct]];
    case "concat":
      return node.parts.flatMap((part, i): Contribution[] => {
        if (!wanted(part)) return [];
        if (!ct.axes.includes(node.newAxis)) return [[part, ct]];
        const size = sizeOf(part, node.partAxes[i]);
        return [[part, sliceAlong(ct, node.newAxis, node.offsets[i], size, node.partAxes[i])]];
      });
    case "pick": {
      if (!wanted(node.x)) return [];
      const unit = freshAxis(node.axis);
      const after = sizeOf(node.x, node.axis) - 1 - node.index;
      return [[node.x, padAlong(withUnitAxis(ct, unit), unit, node.index, after, node.axis)]];
    }
    case "gather":
      return wanted(node.table) ? [[node.table, gatherTableCotangent(node, ct)]] : [];
    case "conv1d":
      return conv1dRule(node, ct, wanted);
  }
}

/**
 * The scatter-add of the cotangent into the table rows, as a contraction with a one-hot:
 * ct_table[v, …] = Σ_idx [ids[idx] = v] · ct[idx, …]. The ids become f32 by gathering a ramp
 * 0…V−1 (the IR has no cast), exact for tables of fewer than 2²⁴ rows.
 */
function gatherTableCotangent(node: GatherNode, ct: Node): Node {
  const rows = sizeOf(node.table, node.axis);
  const ramp = arangeNode(node.axis, rows, "gather (backward)");
  const ids = makeNode({
    kind: "gather",
    table: ramp,
    indices: node.indices,
    axis: node.axis,
    axes: node.indices.axes,
    shape: node.indices.shape,
    dtype: "f32",
  });
  const oneHot = binary("eq", ids, ramp);
  return productTo(ct, oneHot, node.table.axes);
}

/**
 * out[t] = Σ_j w[j] · x[t − (K−1) + j]. The x cotangent is the same causal conv run backward in
 * time (flip, conv with the same taps, flip); the w cotangent contracts the cotangent with the
 * K shifted copies of x, stacked along the tap axis.
 */
function conv1dRule(node: Conv1dNode, ct: Node, wanted: (n: Node) => boolean): Contribution[] {
  const out: Contribution[] = [];
  const { axis, tapAxis } = node;
  if (wanted(node.x)) {
    const reversed = flipAlong(materializeAs(ct, node), axis);
    const conv = makeNode({
      kind: "conv1d",
      x: reversed,
      w: node.w,
      axis,
      tapAxis,
      axes: reversed.axes,
      shape: reversed.shape,
      dtype: "f32",
    });
    out.push([node.x, flipAlong(conv, axis)]);
  }
  if (wanted(node.w)) {
    const taps = sizeOf(node.w, tapAxis);
    const pieces: Piece[] = [];
    for (let j = 0; j < taps; j++) {
      const unit = freshAxis(tapAxis);
      pieces.push({ node: withUnitAxis(shiftAlong(node.x, axis, taps - 1 - j), unit), axis: unit });
    }
    out.push([node.w, productTo(ct, concatAlong(pieces, tapAxis), node.w.axes)]);
  }
  return out;
}
