/**
 * `attention`: softmax attention as one op, softmax(scale·q·kᵀ, masked)·v, with grouped-query
 * heads expressed by axes. The compiler runs it as one fused online-softmax kernel (the score
 * matrix never in memory), split over keys for decode with a long cache (see docs/attention.md).
 *
 * @module
 */

import { showAxes } from "./axes.ts";
import { requireFloat } from "./build.ts";
import { type AttentionNode, makeNode, type Node } from "./ir.ts";
import { type AxesOf, Tensor, toNode } from "./tensor.ts";

/** Options of {@link attention}. */
export interface AttentionOptions {
  /**
   * Mask keys after each query's position. Query t sits at key position t + (keys − queries),
   * so with a cache of earlier keys (decode, chunked prefill) the last query sees every key.
   */
  causal?: boolean;
  /** The factor on q·k before the softmax (default 1/√(feature size)). */
  scale?: number;
  /** With `causal`: each query sees only the last `window` keys up to its position. */
  window?: number;
  /**
   * Attention sinks (as in gpt-oss): a learned logit per query head, over some of q's axes but
   * its query and feature axes (e.g. `g r`), that joins the softmax as an extra key whose value
   * is zero, so the weights of the real keys sum to less than 1.
   */
  sinks?: Tensor;
}

function sizeOf(n: Node, axis: string): number {
  return n.shape[n.axes.indexOf(axis)];
}

/**
 * Softmax attention over named axes. The **last axis** of q and k is the feature axis they are
 * contracted over (the same name in both), the **second-last** is the position axis (queries
 * in q, keys in k and v, under two different names; as torch's `scaled_dot_product_attention`
 * reads (…, L, E), so a `b t h d` layout must be transposed to `b h t d` first: the two names
 * make that mistake an error), and v's last axis is the value
 * feature axis. k's other axes are the
 * batch axes (batch, key/value heads); v has exactly k's axes but the feature; q has every
 * batch axis, and may have one more axis: the query heads that share one key/value head
 * (grouped-query attention, h = g·r heads written as axes `g r`).
 *
 *   out[…, t, e] = Σ_s p[t, s]·v[…, s, e],  p[t, ·] = softmax(scale·q[…, t, :]·k[…, s, :])
 *
 * over the allowed keys: all of them, or with `causal` the keys s ≤ t + (keys − queries), and
 * with `window` w additionally s > t + (keys − queries) − w. The result has q's axes with the
 * feature axis replaced by v's. Differentiable: the backward kernels recompute the
 * probabilities per tile (FlashAttention-2's backward, dsl/vjp_attention.ts).
 *
 * The result is typed with q's axes, which is exact when v's feature axis has q's feature
 * name (the usual case: both "d").
 *
 * ```ts
 * // 8 query heads in 2 groups of 4, each group sharing a key/value head (GQA), causal.
 * const prog = await compile(
 *   { q: "b g r t d", k: "b g s d", v: "b g s d" },
 *   ({ q, k, v }) => attention(q, k, v, { causal: true }), // Tensor<"b g r t d">
 *   { b: 1, g: 2, r: 4, t: 16, s: 16, d: 64 },
 * );
 * ```
 */
export function attention<Q extends Tensor>(
  q: Q,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions = {},
): Tensor<AxesOf<Q>> {
  const named = (x: Tensor, what: string) => {
    const n = toNode(x, `attention: ${what}`);
    requireFloat(n, `attention: ${what}`);
    if (n.axes.length < 2) {
      throw new Error(
        `attention: ${what} ${showAxes(n.axes)} needs at least a position and a feature axis`,
      );
    }
    return n;
  };
  const qn = named(q, "q"), kn = named(k, "k"), vn = named(v, "v");
  const feature = kn.axes[kn.axes.length - 1];
  const keyAxis = kn.axes[kn.axes.length - 2];
  const queryAxis = qn.axes[qn.axes.length - 2];
  const valueAxis = vn.axes[vn.axes.length - 1];
  if (qn.axes[qn.axes.length - 1] !== feature) {
    throw new Error(
      `attention: q ${showAxes(qn.axes)} and k ${showAxes(kn.axes)} must end with the same ` +
        `feature axis (got "${qn.axes[qn.axes.length - 1]}" and "${feature}")`,
    );
  }
  if (sizeOf(qn, feature) !== sizeOf(kn, feature)) {
    throw new Error(
      `attention: feature axis "${feature}" is ${sizeOf(qn, feature)} in q but ` +
        `${sizeOf(kn, feature)} in k`,
    );
  }
  if (keyAxis === queryAxis) {
    // With one name for both position axes, a layout such as `b t h d` (heads second-last)
    // would attend over heads without any error; distinct names make the roles explicit.
    throw new Error(
      `attention: q ${showAxes(qn.axes)} and k ${showAxes(kn.axes)} both have "${keyAxis}" ` +
        `second-last; name the key positions differently (e.g. rename(k, "${keyAxis}", "s") ` +
        `and the same for v)`,
    );
  }
  const batch = kn.axes.slice(0, -2);
  const vWant = [...batch, keyAxis];
  const vHas = vn.axes.slice(0, -1);
  if (vHas.length !== vWant.length || vWant.some((a) => !vHas.includes(a))) {
    throw new Error(
      `attention: v ${showAxes(vn.axes)} must have k's axes ${showAxes(vWant)} and its own ` +
        `feature axis last`,
    );
  }
  for (const a of vWant) {
    if (sizeOf(vn, a) !== sizeOf(kn, a)) {
      throw new Error(
        `attention: axis "${a}" is ${sizeOf(kn, a)} in k but ${sizeOf(vn, a)} in v`,
      );
    }
  }
  if (valueAxis === keyAxis || batch.includes(valueAxis)) {
    throw new Error(`attention: v's feature axis "${valueAxis}" is also one of k's axes`);
  }
  if (valueAxis === feature && sizeOf(vn, valueAxis) !== sizeOf(kn, feature)) {
    throw new Error(
      `attention: v's feature axis "${valueAxis}" is ${sizeOf(vn, valueAxis)} but ` +
        `${sizeOf(kn, feature)} in k: name it differently`,
    );
  }
  for (const a of batch) {
    if (!qn.axes.includes(a)) {
      throw new Error(
        `attention: q ${showAxes(qn.axes)} lacks the batch axis "${a}" of k ${showAxes(kn.axes)}`,
      );
    }
    if (sizeOf(qn, a) !== sizeOf(kn, a)) {
      throw new Error(`attention: axis "${a}" is ${sizeOf(qn, a)} in q but ${sizeOf(kn, a)} in k`);
    }
  }
  if (batch.includes(queryAxis)) {
    throw new Error(
      `attention: q's position axis "${queryAxis}" (its second-last) is a batch axis of k`,
    );
  }
  const extra = qn.axes.filter((a) => !batch.includes(a) && a !== queryAxis && a !== feature);
  if (extra.length > 1) {
    throw new Error(
      `attention: q ${showAxes(qn.axes)} has axes ${showAxes(extra)} that k ${
        showAxes(kn.axes)
      } lacks; at most one (the query heads per key/value head) is allowed`,
    );
  }
  if (extra[0] === valueAxis) {
    throw new Error(`attention: q's axis "${valueAxis}" is also v's feature axis`);
  }
  const causal = options.causal ?? false;
  const queries = sizeOf(qn, queryAxis), keys = sizeOf(kn, keyAxis);
  if (causal && keys < queries) {
    throw new Error(
      `attention: causal needs at least as many keys as queries (q "${queryAxis}" ${queries}, ` +
        `k "${keyAxis}" ${keys})`,
    );
  }
  const window = options.window;
  if (window !== undefined) {
    if (!causal) throw new Error(`attention: window ${window} needs causal: true`);
    if (!Number.isInteger(window) || window < 1) {
      throw new Error(`attention: window must be an integer ≥ 1, got ${window}`);
    }
  }
  const scale = options.scale ?? 1 / Math.sqrt(sizeOf(kn, feature));
  if (!Number.isFinite(scale)) {
    throw new Error(`attention: scale must be a finite number, got ${scale}`);
  }
  let sinks: Node | undefined;
  if (options.sinks !== undefined) {
    sinks = toNode(options.sinks, "attention: sinks");
    requireFloat(sinks, "attention: sinks");
    const allowed = qn.axes.filter((a) => a !== queryAxis && a !== feature);
    const bad = sinks.axes.filter((a) => !allowed.includes(a));
    if (bad.length) {
      throw new Error(
        `attention: sinks ${showAxes(sinks.axes)} may only have q's head and batch axes ` +
          `${showAxes(allowed)}, not ${showAxes(bad)}`,
      );
    }
    for (const a of sinks.axes) {
      if (sizeOf(sinks, a) !== sizeOf(qn, a)) {
        throw new Error(
          `attention: axis "${a}" is ${sizeOf(qn, a)} in q but ${sizeOf(sinks, a)} in sinks`,
        );
      }
    }
  }
  const axes = qn.axes.map((a) => (a === feature ? valueAxis : a));
  const shape = qn.axes.map((a) => (a === feature ? sizeOf(vn, valueAxis) : sizeOf(qn, a)));
  const node: AttentionNode = makeNode({
    kind: "attention",
    q: qn,
    k: kn,
    v: vn,
    queryAxis,
    keyAxis,
    featureAxis: feature,
    valueAxis,
    groupAxis: extra[0],
    scale,
    causal,
    window,
    sinks,
    axes,
    shape,
    dtype: "f32",
  });
  return new Tensor(node) as Tensor<AxesOf<Q>>;
}

/**
 * The keys query `t` may attend to, as the range [lo, hi): all `keys`, or with `causal` those
 * up to t + (keys − queries), and with `window` only the last `window` of those.
 */
export function attendedKeys(
  t: number,
  queries: number,
  keys: number,
  causal: boolean,
  window?: number,
): [lo: number, hi: number] {
  if (!causal) return [0, keys];
  const hi = t + keys - queries + 1;
  return [window === undefined ? 0 : Math.max(0, hi - window), hi];
}
