/**
 * Checks of the host data given for a program's inputs, shared by the GPU program, the CPU
 * backend and the interpreter: every input is checked before anything is uploaded or computed,
 * and a bad one gets one line naming the input, its axes and size, and what was given.
 *
 * @module
 */

import { showAxes } from "../dsl/axes.ts";
import type { InputNode, Node } from "../dsl/ir.ts";
import { numel } from "../dsl/ir.ts";
import { storageBytes, storageDtype } from "../codegen/dtypes.ts";
import { halfValues, halfWords } from "./half.ts";

/**
 * Host data accepted for an input: a typed array of numbers (Float32Array, Float64Array,
 * Int32Array, Uint32Array; other numeric typed arrays work too) or an array of numbers. i32
 * inputs need integers in the int32 range.
 */
export type HostArray = Float32Array | Float64Array | Int32Array | Uint32Array | number[];

/** Typed arrays whose elements are numbers (not BigInts). */
type NumericTypedArray = Exclude<ArrayBufferView, DataView | BigInt64Array | BigUint64Array> & {
  readonly length: number;
  readonly [index: number]: number;
};

function isNumericTypedArray(data: unknown): data is NumericTypedArray {
  return ArrayBuffer.isView(data) && !(data instanceof DataView) &&
    !(data instanceof BigInt64Array) && !(data instanceof BigUint64Array);
}

/** "input "x" [b l] (14 f32 elements)": how errors name an input. */
export function describeInput(input: InputNode): string {
  const shape = input.shape.length > 1 ? `, shape ${input.shape.join("×")}` : "";
  return `input "${input.name}" ${showAxes(input.axes)} (${numel(input)} ${input.dtype} ` +
    `element${numel(input) === 1 ? "" : "s"}${shape})`;
}

/** A short description of a value that is not valid input data, for error messages. */
function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "string") {
    return `a string (${JSON.stringify(value.length > 20 ? value.slice(0, 20) + "…" : value)})`;
  }
  if (typeof value === "bigint") return `a bigint (${value}n)`;
  if (typeof value !== "object") return `a ${typeof value} (${String(value)})`;
  const name = (value as object).constructor?.name ?? "object";
  const article = /^[aeiou]/i.test(name) ? "an" : "a";
  const length = (value as { length?: unknown }).length;
  return typeof length === "number"
    ? `${article} ${name} of ${length} elements`
    : `${article} ${name}`;
}

function expected(input: InputNode): string {
  // 16-bit float inputs take f32 data: it is rounded to the input's type when uploaded.
  return input.dtype === "i32"
    ? "an Int32Array or an array of integers"
    : "a Float32Array, a Float64Array or an array of numbers";
}

/**
 * Checks one input's data: a numeric typed array or an array of numbers, of the input's length;
 * for i32 inputs, every element an integer in the int32 range. Throws one line otherwise.
 */
export function checkHostInput(input: InputNode, data: unknown): asserts data is HostArray {
  const what = describeInput(input);
  if (data === undefined) throw new Error(`missing ${what}`);
  const typed = isNumericTypedArray(data);
  if (!typed && !Array.isArray(data)) {
    throw new Error(`${what}: expected ${expected(input)}, got ${describeValue(data)}`);
  }
  const values = data as ArrayLike<unknown>;
  if (values.length !== numel(input)) {
    throw new Error(
      `input "${input.name}" ${showAxes(input.axes)} needs ${numel(input)} elements (shape ` +
        `${input.shape.join("×")}), got ${values.length} (${describeValue(data)})`,
    );
  }
  const i32 = input.dtype === "i32";
  // A typed array holds numbers, and these kinds only int32 values: nothing to look at.
  const fits = typed && (!i32 || data instanceof Int32Array || data instanceof Int16Array ||
    data instanceof Int8Array || data instanceof Uint16Array || data instanceof Uint8Array ||
    data instanceof Uint8ClampedArray);
  if (!fits) {
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== "number") {
        throw new Error(`${what}: element ${i} is ${describeValue(v)}, not a number`);
      }
      if (i32 && !(Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31)) {
        throw new Error(`${what}: element ${i} is ${v}, not an integer in the int32 range`);
      }
    }
  }
}

/**
 * Checks every input of a program in `data` (no missing, unknown or malformed ones) before the
 * caller uses any of them. `skip` names inputs the caller supplies otherwise (buffers bound by
 * the caller), which must then not be given.
 */
export function checkHostInputs(
  inputs: readonly InputNode[],
  data: Readonly<Record<string, unknown>>,
  skip: ReadonlySet<InputNode> = new Set(),
): void {
  if (data === null || typeof data !== "object") {
    throw new Error(`expected a record of inputs by name, got ${describeValue(data)}`);
  }
  const known = new Map(inputs.map((i) => [i.name, i]));
  for (const name of Object.keys(data)) {
    const input = known.get(name);
    if (!input) {
      throw new Error(
        `unknown input "${name}"; the program takes: ${[...known.keys()].join(", ")}`,
      );
    }
    if (skip.has(input)) {
      throw new Error(`${describeInput(input)} is bound to a GPU buffer; do not pass it`);
    }
  }
  for (const input of inputs) if (!skip.has(input)) checkHostInput(input, data[input.name]);
}

/** What an input's GPU buffer holds: f32 values, i32 ids, or 16-bit words (f16, bf16). */
export type DeviceArray = Float32Array | Int32Array | Uint16Array;

/** The typed array an input's GPU buffer holds; `copy` forces a private copy of the data. */
export function deviceArray(
  input: InputNode,
  data: HostArray,
  copy: boolean,
): DeviceArray {
  if (input.dtype === "f16" || input.dtype === "bf16") {
    // 16-bit words, rounded to nearest even; padded to whole u32s (writeBuffer's unit).
    const words = new Uint16Array(data.length + (data.length & 1));
    words.set(halfWords(data, input.dtype));
    return words;
  }
  if (input.dtype === "i32") {
    return data instanceof Int32Array && !copy ? data : Int32Array.from(data);
  }
  return data instanceof Float32Array && !copy ? data : Float32Array.from(data);
}

/** Bytes to read back for a node's buffer: its storage, padded to whole u32s. */
export function paddedBytes(node: Node): number {
  return Math.ceil(storageBytes(node) / 4) * 4;
}

/**
 * A node's buffer contents as host data: i32 ids, or f32 values (16-bit words, which only a
 * program input returned as an output holds, are widened exactly).
 */
export function hostOutput(node: Node, raw: ArrayBuffer): Float32Array | Int32Array {
  if (node.dtype === "i32") return new Int32Array(raw);
  const dtype = storageDtype(node);
  if (dtype === "f16" || dtype === "bf16") {
    return halfValues(new Uint16Array(raw, 0, numel(node)), dtype);
  }
  return new Float32Array(raw);
}
