/**
 * Buffer reuse between a program's intermediate tensors. Kernels run in one fixed order, so an
 * intermediate's buffer is needed only from the first kernel that binds it to the last: after
 * that, a later intermediate may take it over. A training step holds hundreds of activations and
 * gradients of which few are alive at once; without reuse its buffers are the sum of all of
 * them (64 GiB for the Mamba-2 130M step at b = 8, l = 2048, where torch peaks at about half).
 *
 * Reusing a buffer is safe within one submit: WebGPU orders every dispatch's storage accesses
 * after the previous dispatch's, so a kernel that writes a reused buffer runs after the last
 * kernel that read its previous tenant.
 *
 * @module
 */

/** What the plan needs of a kernel: the buffers it binds, as opaque keys. */
export interface BindingUse<K> {
  readonly reads: readonly K[];
  readonly writes: readonly K[];
}

/** Where each reusable key lives. */
export interface ReusePlan<K> {
  /** The slot (physical buffer) of every reusable key. */
  readonly slotOf: ReadonlyMap<K, number>;
  /** Each slot's size in bytes. */
  readonly slotBytes: readonly number[];
}

/**
 * Assigns the `reusable` keys to slots so that keys whose live ranges (first to last kernel
 * binding them) overlap never share one. A key takes the smallest free slot of at least its
 * size and at most twice it (and at most `maxSlotBytes`, so that a slot still fits one
 * binding); otherwise a new slot of its own size. Keys that no kernel binds get no slot.
 *
 * @param kernels The kernels in dispatch order.
 * @param reusable Keys whose contents matter only within one run (not inputs, outputs, caller
 *   buffers or state kept between runs).
 * @param bytesOf A key's buffer size in bytes.
 * @param maxSlotBytes The largest slot a key may take over (a binding's size limit).
 */
export function planBufferReuse<K>(
  kernels: readonly BindingUse<K>[],
  reusable: ReadonlySet<K>,
  bytesOf: (key: K) => number,
  maxSlotBytes: number,
): ReusePlan<K> {
  const last = new Map<K, number>();
  kernels.forEach((k, i) => {
    for (const key of [...k.reads, ...k.writes]) if (reusable.has(key)) last.set(key, i);
  });
  const slotOf = new Map<K, number>();
  const slotBytes: number[] = [];
  const free: number[] = [];
  kernels.forEach((k, i) => {
    const keys = [...new Set([...k.reads, ...k.writes])].filter((key) => reusable.has(key));
    // Every key this kernel binds is alive during it: take slots for the new ones first,
    // release the ones that end here afterwards.
    for (const key of keys) {
      if (slotOf.has(key)) continue;
      const need = bytesOf(key);
      let best = -1;
      for (let f = 0; f < free.length; f++) {
        const size = slotBytes[free[f]];
        if (size < need || size > 2 * need || size > Math.max(need, maxSlotBytes)) continue;
        if (best < 0 || size < slotBytes[free[best]]) best = f;
      }
      if (best >= 0) {
        slotOf.set(key, free[best]);
        free.splice(best, 1);
      } else {
        slotOf.set(key, slotBytes.length);
        slotBytes.push(need);
      }
    }
    for (const key of keys) if (last.get(key) === i) free.push(slotOf.get(key)!);
  });
  return { slotOf, slotBytes };
}
