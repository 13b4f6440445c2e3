/**
 * Shared pieces of the delta-rule kernels (delta_recurrent.ts, delta_chunked.ts): the sizes of
 * a `delta` node, the decoding of a workgroup's batch position, and the loads of its operands
 * through the expression emitter (so elementwise prologues such as sigmoid(β) fuse in).
 *
 * @module
 */

import type { DeltaNode, Node } from "../dsl/ir.ts";
import { decodeIndex, type Env, type ExprEmitter } from "./expr.ts";
import { f32Literal, u32Literal } from "./wgsl_math.ts";

/** The sizes of a delta rule. */
export interface DeltaShapes {
  /** Batch axes (beta's axes but time), in beta's order. */
  readonly batch: readonly string[];
  /** Their sizes. */
  readonly batchShape: readonly number[];
  /** Number of batch positions (independent recurrences). */
  readonly batches: number;
  /** Steps. */
  readonly len: number;
  /** Key size. */
  readonly dk: number;
  /** Value size. */
  readonly dv: number;
}

/** The sizes of `node`. */
export function deltaShapes(node: DeltaNode): DeltaShapes {
  const size = (n: Node, a: string) => n.shape[n.axes.indexOf(a)];
  const batch = node.beta.axes.filter((a) => a !== node.axis);
  const batchShape = batch.map((a) => size(node.beta, a));
  return {
    batch,
    batchShape,
    batches: batchShape.reduce((p, s) => p * s, 1),
    len: size(node.v, node.axis),
    dk: size(node.k, node.keyAxis),
    dv: size(node.v, node.valueAxis),
  };
}

/** WGSL lets decoding the batch position `flat` into one index per batch axis. */
export function batchEnv(s: DeltaShapes, flat: string): { lines: string[]; env: Env } {
  return decodeIndex(flat, s.batch, s.batchShape, "bi_");
}

/**
 * The operand values of one step `t` (a u32 expression, already < len), emitted into `e`:
 * α (1 without a gate), β, and, when asked, q and k at key index expressions and v at a
 * value index expression. Indices past the end are clamped; the caller masks what it must.
 */
export class DeltaLoads {
  readonly #node: DeltaNode;
  readonly #env: Env;
  /** @param node the delta rule; @param env the batch environment */
  constructor(node: DeltaNode, env: Env) {
    this.#node = node;
    this.#env = env;
  }
  /** α_t = exp(gate_t) (the literal 1 without a gate). */
  alpha(e: ExprEmitter, t: string): string {
    const n = this.#node;
    return n.gate ? `exp(${this.logAlpha(e, t)})` : f32Literal(1);
  }
  /** log α_t (the literal 0 without a gate). */
  logAlpha(e: ExprEmitter, t: string): string {
    const n = this.#node;
    return n.gate ? e.emit(n.gate, { ...this.#env, [n.axis]: t }) : f32Literal(0);
  }
  /** β_t. */
  beta(e: ExprEmitter, t: string): string {
    return e.emit(this.#node.beta, { ...this.#env, [this.#node.axis]: t });
  }
  /** q or k at step t, key index `j`. */
  key(e: ExprEmitter, which: "q" | "k", t: string, j: string): string {
    const n = this.#node;
    return e.emit(n[which], { ...this.#env, [n.axis]: t, [n.keyAxis]: j });
  }
  /** v at step t, value index `i`. */
  value(e: ExprEmitter, t: string, i: string): string {
    const n = this.#node;
    return e.emit(n.v, { ...this.#env, [n.axis]: t, [n.valueAxis]: i });
  }
  /** init at value index `i`, key index `j` (the literal 0 without init). */
  init(e: ExprEmitter, i: string, j: string): string {
    const n = this.#node;
    return n.init ? e.emit(n.init, { ...this.#env, [n.valueAxis]: i, [n.keyAxis]: j }) : "0.0";
  }
}

/** `min(x, n − 1)` as WGSL: an index clamped into an axis of size n. */
export function clampIndex(x: string, n: number): string {
  return n === 1 ? "0u" : `min(${x}, ${u32Literal(n - 1)})`;
}

/** The butterfly sum of `v` over `lanes` adjacent subgroup lanes (every lane gets the sum). */
export function laneSum(v: string, lanes: number): string[] {
  const out: string[] = [];
  for (let m = 1; m < lanes; m *= 2) out.push(`${v} = ${v} + subgroupShuffleXor(${v}, ${m}u);`);
  return out;
}

/**
 * One butterfly of subgroup shuffles summing each of `values` over `lanes` adjacent lanes: the
 * shuffles of independent sums issue together, so their latency is one chain, not one per sum.
 */
export function laneSums(values: string[], lanes: number): string[] {
  const out: string[] = [];
  for (let m = 1; m < lanes; m *= 2) {
    out.push(...values.map((v) => `let ${v}x${m}: f32 = subgroupShuffleXor(${v}, ${m}u);`));
    out.push(...values.map((v) => `${v} = ${v} + ${v}x${m};`));
  }
  return out;
}
