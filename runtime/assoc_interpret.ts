/**
 * The float64 meaning of an associative scan (`assocScan` nodes): the plain sequential fold
 * of the traced combine along the axis, one channel at a time.
 *
 * @module
 */

import {
  type AssocCombine,
  type AssocScanNode,
  collectNodes,
  type Node,
  numel,
} from "../dsl/ir.ts";
import { stridesOf } from "../dsl/ir.ts";
import { BINARY_F64, UNARY_F64 } from "./scalar_math.ts";

/**
 * Compiles a combine graph into a float64 function of two records (arrays, one number per
 * component): every node of a combine is elementwise, so one position is a scalar program.
 */
export function combineF64(
  combine: AssocCombine,
): (left: readonly number[], right: readonly number[]) => number[] {
  const order = collectNodes(combine.results);
  const slot = new Map<Node, number>(order.map((n, i) => [n, i]));
  const values = new Float64Array(order.length);
  const leftAt = new Map(combine.left.map((n, i) => [n as Node, i]));
  const rightAt = new Map(combine.right.map((n, i) => [n as Node, i]));
  return (left, right) => {
    order.forEach((n, i) => {
      switch (n.kind) {
        case "input":
          values[i] = leftAt.has(n) ? left[leftAt.get(n)!] : right[rightAt.get(n)!];
          return;
        case "const":
          values[i] = n.value;
          return;
        case "unary":
          values[i] = UNARY_F64[n.op](values[slot.get(n.x)!]);
          return;
        case "binary":
          values[i] = BINARY_F64[n.op](values[slot.get(n.a)!], values[slot.get(n.b)!]);
          return;
        case "where":
          values[i] = values[slot.get(n.cond)!] !== 0
            ? values[slot.get(n.a)!]
            : values[slot.get(n.b)!];
          return;
        case "permute":
          values[i] = values[slot.get(n.x)!];
          return;
        default:
          throw new Error(`internal: a combine holds a ${n.kind} node`);
      }
    });
    return combine.results.map((r) => values[slot.get(r)!]);
  };
}

/** Component `node.component` of the scan, given its elements' values. */
export function evalAssocScan(
  node: AssocScanNode,
  get: (n: Node) => Float64Array,
): Float64Array {
  const out = new Float64Array(numel(node));
  const elems = node.elems.map(get);
  const f = combineF64(node.combine);
  const k = node.axes.indexOf(node.axis);
  const len = node.shape[k];
  const outStrides = stridesOf(node);
  const elemStrides = node.elems.map((e) => stridesOf(e));
  const channels = numel(node) / len;
  const channelAxes = node.axes.filter((a) => a !== node.axis);
  const channelShape = node.shape.filter((_, i) => i !== k);
  for (let c = 0; c < channels; c++) {
    // The channel's index along every axis but the scan axis.
    const env: Record<string, number> = {};
    let rest = c;
    for (let d = channelAxes.length - 1; d >= 0; d--) {
      env[channelAxes[d]] = rest % channelShape[d];
      rest = Math.floor(rest / channelShape[d]);
    }
    const offset = (s: Record<string, number>, t: number) =>
      channelAxes.reduce((o, a) => o + env[a] * s[a], 0) + t * s[node.axis];
    let acc: number[] | undefined;
    for (let j = 0; j < len; j++) {
      const t = node.reverse ? len - 1 - j : j;
      const x = elems.map((e, i) => e[offset(elemStrides[i], t)]);
      // The accumulated part holds the earlier positions: it is on the left going forward,
      // on the right going in reverse.
      acc = acc === undefined ? x : node.reverse ? f(x, acc) : f(acc, x);
      out[offset(outStrides, t)] = acc[node.component];
    }
  }
  return out;
}
