/**
 * The fusion pass: decides which nodes are materialized (get a buffer) and groups the rest into
 * kernels. Everything that is not a kernel root is computed inline where it is used:
 * - elementwise chains and views fuse into their consumers (recomputed when several kernels
 *   read them: memory traffic costs more than arithmetic);
 * - a contraction or reduction fuses its operands as a prologue and, when its only consumer is
 *   an elementwise chain over the same axes, that chain as an epilogue.
 *
 * @module
 */

import { collectNodes, type Graph, type Node, nodeInputs } from "../dsl/ir.ts";

/** The heavy node kinds: each is the core of its own kernel. */
export type CoreNode = Extract<Node, { kind: "contract" | "reduce" }>;

/** One planned kernel: it computes `root` (materialized), around an optional `core`. */
export interface KernelGroup {
  /** The node whose values this kernel writes. */
  readonly root: Node;
  /** A contraction or reduction computed inside the kernel; `root` is its epilogue. */
  readonly core?: CoreNode;
}

/** The fusion plan. */
export interface FusionPlan {
  /** Nodes with their own buffer: inputs, outputs and kernel roots. */
  readonly materialized: ReadonlySet<Node>;
  /** Kernels in execution order. */
  readonly kernels: readonly KernelGroup[];
}

/** Fusion knobs (mostly for tests and the binding-limit splitter). */
export interface FusionOptions {
  /** Nodes that must get their own buffer. */
  forceMaterialize?: ReadonlySet<Node>;
  /** A fused subtree larger than this (in nodes) and read by several kernels is materialized. */
  maxRecomputeNodes?: number;
}

const ELEMENTWISE = new Set(["unary", "binary", "where", "permute", "const"]);

function isCore(n: Node): n is CoreNode {
  return n.kind === "contract" || n.kind === "reduce";
}

/** Nodes computed inside the kernel of `root`, stopping at materialized nodes. */
export function fusedTree(root: Node, materialized: ReadonlySet<Node>): Node[] {
  const seen = new Set<Node>([root]);
  const stack = [...nodeInputs(root)];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n)) continue;
    seen.add(n);
    stack.push(...nodeInputs(n));
  }
  return [...seen];
}

function sameAxisSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/**
 * Finds the core `root` can wrap as an epilogue: the only heavy node reached from `root`
 * through elementwise ops alone, used once, over the same axes as `root`.
 */
function epilogueCore(
  root: Node,
  materialized: ReadonlySet<Node>,
  users: Map<Node, number>,
): CoreNode | undefined {
  if (isCore(root)) return root;
  if (!ELEMENTWISE.has(root.kind)) return undefined;
  const found: CoreNode[] = [];
  const seen = new Set<Node>();
  const walk = (n: Node) => {
    if (seen.has(n) || materialized.has(n) && n !== root) return;
    seen.add(n);
    if (isCore(n)) {
      found.push(n);
      return;
    }
    if (ELEMENTWISE.has(n.kind)) nodeInputs(n).forEach(walk);
  };
  walk(root);
  if (found.length !== 1) return undefined;
  const core = found[0];
  if ((users.get(core) ?? 0) !== 1 || !sameAxisSet(core.axes, root.axes)) return undefined;
  return core;
}

/** Plans kernels for `graph`. */
export function planFusion(graph: Graph, options: FusionOptions = {}): FusionPlan {
  const maxRecompute = options.maxRecomputeNodes ?? 48;
  const outputs = Object.values(graph.outputs);
  const nodes = collectNodes(outputs);
  const users = new Map<Node, number>();
  for (const n of nodes) for (const i of nodeInputs(n)) users.set(i, (users.get(i) ?? 0) + 1);

  const materialized = new Set<Node>([...graph.inputs, ...outputs]);
  for (const n of options.forceMaterialize ?? []) materialized.add(n);
  for (const n of nodes) if (n.kind === "input") materialized.add(n);

  // Iterate to a fixpoint: each new root changes what the other kernels contain.
  for (let changed = true; changed;) {
    changed = false;
    const roots = nodes.filter((n) => materialized.has(n) && n.kind !== "input");
    const reachedBy = new Map<Node, number>();
    for (const root of roots) {
      const core = epilogueCore(root, materialized, users);
      for (const n of fusedTree(root, materialized)) {
        if (n === root) continue;
        if (isCore(n) && n !== core) {
          materialized.add(n);
          changed = true;
        }
        reachedBy.set(n, (reachedBy.get(n) ?? 0) + 1);
      }
    }
    if (changed) continue;
    // Subtrees read by several kernels: recompute small ones, materialize big ones.
    for (const [n, count] of reachedBy) {
      if (count < 2 || n.kind === "const") continue;
      if (isCore(n) || fusedTree(n, materialized).length > maxRecompute) {
        materialized.add(n);
        changed = true;
      }
    }
  }

  const kernels: KernelGroup[] = nodes
    .filter((n) => materialized.has(n) && n.kind !== "input")
    .map((root) => ({ root, core: epilogueCore(root, materialized, users) }));
  return { materialized, kernels };
}
