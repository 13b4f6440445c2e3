/**
 * Views (permute, slice, pick, regroup) seen as affine maps into the buffer behind them: element
 * (i_a) of the view sits at `offset + Σ strides[a]·i_a` of its base. A kernel that reads a view
 * this way can address the base directly, e.g. with vector loads (the scan's B and C, slices of
 * a conv output whose buffer also holds x).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { stridesOf } from "../dsl/ir.ts";

/** Where a view's elements sit in its base buffer: `offset + Σ strides[a]·i_a`. */
export interface AffineView {
  /** The buffer read. */
  readonly base: Node;
  /** Element offset of the view's first element in `base`. */
  readonly offset: number;
  /** Element stride of each of the view's axes in `base`. */
  readonly strides: Readonly<Record<string, number>>;
}

/**
 * The affine map of `node` into the first node below it that `isBase` accepts, through
 * permutes, slices, picks and regroups, or undefined (another node kind on the way, a flip, or a
 * regroup merging axes that are not adjacent in the base).
 */
export function affineView(node: Node, isBase: (n: Node) => boolean): AffineView | undefined {
  if (isBase(node)) return { base: node, offset: 0, strides: stridesOf(node) };
  switch (node.kind) {
    case "permute":
      // Same axis names in another order: the strides by name do not change.
      return affineView(node.x, isBase);
    case "slice": {
      const x = affineView(node.x, isBase);
      if (!x) return undefined;
      const { [node.axis]: stride, ...rest } = x.strides;
      return {
        base: x.base,
        offset: x.offset + node.start * stride,
        strides: { ...rest, [node.newAxis]: stride },
      };
    }
    case "pick": {
      const x = affineView(node.x, isBase);
      if (!x) return undefined;
      const { [node.axis]: stride, ...rest } = x.strides;
      return { base: x.base, offset: x.offset + node.index * stride, strides: rest };
    }
    case "regroup": {
      const x = affineView(node.x, isBase);
      if (!x) return undefined;
      // Each elementary axis's stride, from the input axes (innermost elementary first).
      const elementary: Record<string, number> = {};
      node.inGroups.forEach((group, i) => {
        let stride = x.strides[node.x.axes[i]];
        for (let e = group.length - 1; e >= 0; e--) {
          elementary[group[e]] = stride;
          stride *= node.sizes[group[e]];
        }
      });
      const strides: Record<string, number> = {};
      for (const [j, group] of node.outGroups.entries()) {
        // Size-1 elementaries take no place; the rest must nest as a row-major block.
        const real = group.filter((e) => node.sizes[e] !== 1);
        for (let i = 0; i + 1 < real.length; i++) {
          const inner = real[i + 1];
          if (elementary[real[i]] !== elementary[inner] * node.sizes[inner]) return undefined;
        }
        strides[node.axes[j]] = real.length ? elementary[real[real.length - 1]] : 0;
      }
      return { base: x.base, offset: x.offset, strides };
    }
    default:
      return undefined;
  }
}
