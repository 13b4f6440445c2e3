/**
 * `deltaRule`: the delta rule of DeltaNet and Gated DeltaNet as one op,
 * S_t = S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, y_t = scale·S_t q_t. The compiler runs it
 * as a fused recurrent kernel (state on chip) or as the chunked WY/UT algorithm for long
 * sequences (see ARCHITECTURE.md).
 *
 * @module
 */

import { type CheckAxis, showAxes } from "./axes.ts";
import { requireFloat } from "./build.ts";
import { type DeltaNode, makeNode, type Node } from "./ir.ts";
import { type AxesOf, Tensor, toNode } from "./tensor.ts";

/** The operands of {@link deltaRule}. */
export interface DeltaOperands<V extends Tensor, Q extends Tensor = Tensor> {
  /** Queries: batch axes, time, key axis. */
  q: Q;
  /** Keys (usually L2-normalized): batch axes, time, key axis. */
  k: Tensor;
  /** Values: batch axes, time, value axis. */
  v: V;
  /** Write strengths β_t (usually sigmoid of a projection): batch axes and time. */
  beta: Tensor;
  /** log α_t for Gated DeltaNet (≤ 0: α_t = exp(gate) in (0, 1]), over beta's axes. */
  gate?: Tensor;
}

/**
 * Options of {@link deltaRule}. With typed tensors, an axis name that is not an axis of v (time,
 * value) or q (key) is a compile error.
 */
export interface DeltaOptions<
  V extends Tensor = Tensor,
  Q extends Tensor = Tensor,
  T extends string = string,
  K extends string = string,
  Va extends string = string,
> {
  /** The time axis (the recurrence runs along it). */
  time: CheckAxis<AxesOf<V>, T, "deltaRule">;
  /** The key and query feature axis. */
  key: CheckAxis<AxesOf<Q>, K, "deltaRule">;
  /** The value feature axis. */
  value: CheckAxis<AxesOf<V>, Va, "deltaRule">;
  /** The state before the first step: batch axes, value axis, key axis (zero when absent). */
  init?: Tensor;
  /** Factor on every output (default 1/√(key size), as in FLA). */
  scale?: number;
}

/** What {@link deltaRule} returns. */
export type DeltaResult<V extends Tensor> = {
  /** y_t = scale·S_t q_t, with v's axes. */
  y: Tensor<AxesOf<V>>;
  /** S after the last step: batch axes (beta's order), value axis, key axis. */
  state: Tensor;
};

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/**
 * The delta rule along `options.time`, independently for every batch position (every axis of
 * `beta` except time, e.g. batch and head): S_t = S_{t−1}·α_t(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ,
 * y_t = scale·S_t q_t, where α_t = exp(gate_t) (Gated DeltaNet) or 1 (DeltaNet, no gate).
 * S is [value × key] per batch position; `state` is S after the last step, to be fed back
 * as `init`. Not differentiable (yet): `valueAndGrad` through it throws.
 *
 * ```ts
 * const { y, state } = deltaRule({ q, k, v, beta, gate }, { time: "t", key: "dk", value: "dv" });
 * ```
 */
export function deltaRule<
  V extends Tensor,
  Q extends Tensor,
  T extends string,
  K extends string,
  Va extends string,
>(
  operands: DeltaOperands<V, Q>,
  options: DeltaOptions<V, Q, T, K, Va>,
): DeltaResult<V> {
  const time: string = options.time, key: string = options.key, value: string = options.value;
  const named = (x: Tensor, what: string) => {
    const n = toNode(x, `deltaRule: ${what}`);
    requireFloat(n, `deltaRule: ${what}`);
    return n;
  };
  const q = named(operands.q, "q"), k = named(operands.k, "k"), v = named(operands.v, "v");
  const beta = named(operands.beta, "beta");
  const gate = operands.gate === undefined ? undefined : named(operands.gate, "gate");
  if (key === value || key === time || value === time) {
    throw new Error(
      `deltaRule: the time, key and value axes must differ (got "${time}", "${key}", "${value}")`,
    );
  }
  if (!beta.axes.includes(time)) {
    throw new Error(`deltaRule: beta ${showAxes(beta.axes)} has no time axis "${time}"`);
  }
  const batch = beta.axes.filter((a) => a !== time);
  const size = new Map<string, number>();
  const expect = (n: Node, what: string, axes: string[]) => {
    if (!sameSet(n.axes, axes)) {
      throw new Error(
        `deltaRule: ${what} ${showAxes(n.axes)} must have the axes ${showAxes(axes)} ` +
          `(beta's axes with "${time}" replaced as the operand needs)`,
      );
    }
    n.axes.forEach((a, i) => {
      const known = size.get(a);
      if (known !== undefined && known !== n.shape[i]) {
        throw new Error(
          `deltaRule: size conflict on axis "${a}": ${known} elsewhere but ${
            n.shape[i]
          } in ${what}`,
        );
      }
      size.set(a, n.shape[i]);
    });
  };
  expect(beta, "beta", [...batch, time]);
  if (gate) expect(gate, "gate", [...batch, time]);
  expect(q, "q", [...batch, time, key]);
  expect(k, "k", [...batch, time, key]);
  expect(v, "v", [...batch, time, value]);
  const stateAxes = [...batch, value, key];
  let init: Node | undefined;
  if (options.init !== undefined) {
    init = named(options.init, "init");
    expect(init, "init", stateAxes);
  }
  const scale = options.scale ?? 1 / Math.sqrt(size.get(key)!);
  if (!Number.isFinite(scale)) {
    throw new Error(`deltaRule: scale must be a finite number, got ${scale}`);
  }
  const node = makeNode({
    kind: "delta",
    q,
    k,
    v,
    beta,
    gate,
    init,
    axis: time,
    keyAxis: key,
    valueAxis: value,
    scale,
    axes: [...v.axes],
    shape: [...v.shape],
    dtype: "f32",
  }) as DeltaNode;
  const state = makeNode({
    kind: "delta_state",
    x: node,
    axes: stateAxes,
    shape: stateAxes.map((a) => size.get(a)!),
    dtype: "f32",
  });
  return { y: new Tensor(node) as Tensor<AxesOf<V>>, state: new Tensor(state) };
}
