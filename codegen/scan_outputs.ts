/**
 * Outputs of one scan group that read each other: an output's epilogue may combine its own
 * contraction with those of earlier outputs (mLSTM's y = C·q / max(|n·q|, 1), both sums of one
 * merged scan's state). The earlier outputs are written to memory too, but the epilogue takes
 * their values from the registers the kernel just summed them into, at the same position.
 *
 * @module
 */

import { type Node, nodeInputs } from "../dsl/ir.ts";
import type { Env } from "./expr.ts";
import type { ScanSpec } from "./scan_spec.ts";

/**
 * An intercept for output `k`'s epilogue at `outEnv`: the contraction of an earlier output j
 * (< k) at that same position is `valueOf(j)`; anything else is left to the emitter.
 */
export function earlierOutputs(
  spec: ScanSpec,
  k: number,
  outEnv: Env,
  valueOf: (j: number) => string,
): (node: Node, env: Env) => string | undefined {
  return (node, env) => {
    for (let j = 0; j < k; j++) {
      const o = spec.outputs[j];
      // Only a bare sum (its root is the contraction) holds the value the register holds.
      if (o.contract === undefined || o.root !== o.contract || node !== o.contract) continue;
      if (node.axes.every((a) => env[a] === outEnv[a])) return valueOf(j);
    }
    return undefined;
  };
}

/** Whether some output's epilogue reads another output of the group (see the module doc). */
export function outputsReadEachOther(spec: ScanSpec, materialized: ReadonlySet<Node>): boolean {
  const roots = new Set<Node>(spec.outputs.map((o) => o.root));
  return spec.outputs.some((o) => {
    const seen = new Set<Node>();
    const stack: Node[] = o.root === o.contract ? [] : [o.root];
    while (stack.length) {
      const n = stack.pop()!;
      if (seen.has(n)) continue;
      seen.add(n);
      if (n !== o.root && roots.has(n)) return true;
      if (n === o.contract || (n !== o.root && materialized.has(n))) continue;
      stack.push(...nodeInputs(n));
    }
    return false;
  });
}
