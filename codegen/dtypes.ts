/**
 * Storage versus compute types. Kernels compute in f32 (i32 for ids) whatever a node's dtype;
 * a buffer's element type is its storage type:
 *
 * - a program input of dtype `f16` is an `array<f16>` (the device's `shader-f16` feature);
 * - a program input of dtype `bf16` is an `array<u32>` holding two bf16 words per element
 *   (element 2i in the low half): WGSL has no bf16 type, and a bf16 is the top half of an f32,
 *   so the load widens it exactly with a shift;
 * - every other buffer (kernel outputs, intermediates, scratch) is f32 or i32. A 16-bit node
 *   that is materialized holds values already rounded to its type, which f32 stores exactly.
 *
 * Loads widen to f32 ({@link loadWgsl}); rounding happens only in `cast` (`round_f16`,
 * `round_bf16`), so contractions, reductions and scan states accumulate in f32.
 *
 * @module
 */

import type { DType, Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";

/** A buffer's key: an IR node, or a scratch buffer (structurally `artifact.ts`'s ScratchBuffer). */
export type BufferKey = Node | {
  readonly kind: "scratch";
  readonly elements: number;
  readonly dtype: "f32" | "atomic<u32>";
};

/** The element type of the buffer holding `key`. */
export function storageDtype(key: BufferKey): DType {
  if (key.kind === "input") return key.dtype;
  return key.dtype === "i32" ? "i32" : "f32";
}

/** The WGSL element type of a storage array of `dtype`. */
export function wgslArrayType(dtype: DType): string {
  return dtype === "bf16" ? "u32" : dtype;
}

/**
 * The WGSL element type of the storage array holding `key`: `wgslArrayType` of its storage
 * dtype, or `atomic<u32>` for the single-pass scan's scratch words (4 bytes, like f32).
 */
export function wgslStorageType(key: BufferKey): string {
  if (key.kind === "scratch" && key.dtype === "atomic<u32>") return "atomic<u32>";
  return wgslArrayType(storageDtype(key));
}

/** The WGSL type of a value of `dtype` in registers: f32 for every float type. */
export function valueType(dtype: DType): "f32" | "i32" {
  return dtype === "i32" ? "i32" : "f32";
}

/** Bytes of the buffer holding `key` (16-bit inputs take 2 bytes per element). */
export function storageBytes(key: BufferKey): number {
  const dtype = storageDtype(key);
  const elements = key.kind === "scratch" ? key.elements : numel(key);
  return elements * (dtype === "f16" || dtype === "bf16" ? 2 : 4);
}

/** Whether a buffer's elements are 16-bit words. */
export function isHalfStorage(key: BufferKey): boolean {
  const dtype = storageDtype(key);
  return dtype === "f16" || dtype === "bf16";
}

/**
 * WGSL expression loading element `offset` of the array `array` whose storage type is `dtype`,
 * as an f32 (i32 for `i32`): f16 converts, a bf16 word is shifted into the top of an f32.
 */
export function loadWgsl(array: string, offset: string, dtype: DType): string {
  if (dtype === "f16") return `f32(${array}[${offset}])`;
  if (dtype === "bf16") {
    return `bitcast<f32>((${array}[(${offset}) >> 1u] >> (((${offset}) & 1u) << 4u)) << 16u)`;
  }
  return `${array}[${offset}]`;
}

/** Whether a WGSL module uses the f16 type (and so needs `enable f16;`); comments don't count. */
export function usesF16(wgsl: string): boolean {
  return /\bf16\b/.test(wgsl.replace(/\/\/[^\n]*/g, ""));
}

/** The module with the `enable f16;` directive first when it uses f16. */
export function withF16Directive(wgsl: string): string {
  return usesF16(wgsl) && !/^\s*enable f16;/.test(wgsl) ? `enable f16;\n${wgsl}` : wgsl;
}
