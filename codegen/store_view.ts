/**
 * Layout-only views at a kernel's root (`rearrange` after a matmul, a `flip` of its output):
 * the kernel computes the node below them at its own indices and stores each value where the
 * views put it, so the views cost no copy kernel. Each view here is a bijection of elements,
 * so every element of the root is written exactly once.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import type { Env } from "./expr.ts";
import { u32Literal } from "./wgsl_math.ts";

type StoreView = Extract<Node, { kind: "regroup" | "flip" }>;

function isStoreView(n: Node): n is StoreView {
  return n.kind === "regroup" || n.kind === "flip";
}

/** The views from `root` down (root first) and the node below them (`root` when none). */
export function storeViews(root: Node): { views: StoreView[]; base: Node } {
  const views: StoreView[] = [];
  let n = root;
  while (isStoreView(n)) {
    views.push(n);
    n = n.x;
  }
  return { views, base: n };
}

/** The index environment of the view's output where its input is at `env` (see module doc). */
function forwardEnv(view: StoreView, env: Env): Env {
  if (view.kind === "flip") {
    const size = view.shape[view.axes.indexOf(view.axis)];
    return { ...env, [view.axis]: `(${u32Literal(size - 1)} - ${env[view.axis]})` };
  }
  // Input axes → elementary indices → output axes (the inverse of ExprEmitter's regroup).
  const elem: Record<string, string> = {};
  view.inGroups.forEach((g, k) => {
    const idx = env[view.x.axes[k]];
    let inner = 1;
    for (let j = g.length - 1; j >= 0; j--) {
      const div = inner === 1 ? idx : `(${idx} / ${u32Literal(inner)})`;
      elem[g[j]] = j === 0 ? div : `(${div} % ${u32Literal(view.sizes[g[j]])})`;
      inner *= view.sizes[g[j]];
    }
  });
  const out: Record<string, string> = {};
  view.outGroups.forEach((g, k) => {
    let expr = "";
    let inner = 1;
    for (let j = g.length - 1; j >= 0; j--) {
      const term = inner === 1 ? elem[g[j]] : `${elem[g[j]]} * ${u32Literal(inner)}`;
      expr = expr ? `${term} + ${expr}` : term;
      inner *= view.sizes[g[j]];
    }
    out[view.axes[k]] = g.length === 1 ? expr : `(${expr})`;
  });
  return out;
}

/** Where the root's views store the value the base has at `env` (an env of the root's axes). */
export function storeEnv(root: Node, env: Env): Env {
  const { views } = storeViews(root);
  return views.reduceRight((e, v) => forwardEnv(v, e), env);
}
