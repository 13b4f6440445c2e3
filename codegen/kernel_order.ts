/**
 * The order kernels run in, from what each reads and writes. Besides read-after-write (a kernel
 * runs after the kernels writing what it reads), in-place updates add write-after-read: an
 * output that shares its input's buffer (an alias: a resident parameter, a decode state) is
 * written only after every other kernel that reads the old value has run. Without that edge a
 * stable order can put an optimizer's update of a weight before a gradient kernel that still
 * reads the weight (a later-planned group, such as a scan-backward group, waits for its inputs
 * while the update is ready).
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";

/** What one kernel group reads and writes (materialized nodes only). */
export interface GroupAccess {
  /** Materialized nodes the group's kernels load. */
  readonly reads: ReadonlySet<Node>;
  /** Nodes the group's kernels store. */
  readonly writes: readonly Node[];
}

/** An order, or the groups left when the rest wait on each other in a cycle. */
export type HazardOrder = { order: number[] } | { cycle: number[] };

/**
 * Indices of `groups` in an order that respects read-after-write and, for each alias (input →
 * output sharing its buffer), write-after-read; stable: the given order wherever it already is
 * one. Returns the groups in a cycle when there is none.
 */
export function hazardOrder(
  groups: readonly GroupAccess[],
  aliases: ReadonlyMap<Node, Node> = new Map(),
): HazardOrder {
  const deps = hazardDeps(groups, aliases);
  // Lowest ready index first (stable); counts of unplaced dependencies make "ready" cheap.
  const waiting = deps.map((d) => d.size);
  const dependents = groups.map(() => [] as number[]);
  deps.forEach((d, i) => d.forEach((w) => dependents[w].push(i)));
  const placed = new Array<boolean>(groups.length).fill(false);
  const order: number[] = [];
  while (order.length < groups.length) {
    let next = -1;
    for (let i = 0; i < groups.length && next < 0; i++) {
      if (!placed[i] && waiting[i] === 0) next = i;
    }
    if (next < 0) return { cycle: groups.map((_, i) => i).filter((i) => !placed[i]) };
    placed[next] = true;
    order.push(next);
    for (const d of dependents[next]) waiting[d]--;
  }
  return { order };
}

/**
 * Per group, the groups it must run after: the writers of what it reads and, where it
 * overwrites an aliased input, the other readers of that input.
 */
export function hazardDeps(
  groups: readonly GroupAccess[],
  aliases: ReadonlyMap<Node, Node> = new Map(),
): Set<number>[] {
  const writer = new Map<Node, number>();
  groups.forEach((g, i) => g.writes.forEach((n) => writer.set(n, i)));
  const deps = groups.map(() => new Set<number>());
  groups.forEach((g, i) => {
    for (const x of g.reads) {
      const w = writer.get(x);
      if (w !== undefined && w !== i) deps[i].add(w);
    }
  });
  // The kernel overwriting an aliased input waits for every other reader of the old value.
  for (const [input, output] of aliases) {
    const w = writer.get(output);
    if (w === undefined) continue;
    groups.forEach((g, i) => {
      if (i !== w && g.reads.has(input)) deps[w].add(i);
    });
  }
  return deps;
}

/**
 * Per group, the length of the longest chain of groups that wait on it (0: nothing does).
 * Groups of one height never wait on each other, directly or not.
 */
export function heights(deps: readonly ReadonlySet<number>[], order: readonly number[]): number[] {
  const height = deps.map(() => 0);
  for (let k = order.length - 1; k >= 0; k--) {
    const i = order[k];
    for (const d of deps[i]) height[d] = Math.max(height[d], height[i] + 1);
  }
  return height;
}
