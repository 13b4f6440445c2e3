/**
 * Program definitions: a traced function bundled with its inputs and sizes, so tools (the
 * `ssmkit wgsl` command, benchmarks) can find and compile the programs a module exports.
 *
 * @module
 */

import type { InputSpec, Sizes, TensorsOf, TraceResult } from "./trace.ts";

const TAG = "ssmkit.program";

/** A program a module exports: `export const step = defineProgram({...}, fn, sizes)`. */
export interface ProgramDef<S extends InputSpec = InputSpec, R extends TraceResult = TraceResult> {
  /** Marks the object as a program definition. */
  readonly kind: "ssmkit.program";
  /** Input declarations. */
  readonly inputs: S;
  /** The function to trace. */
  readonly fn: (tensors: TensorsOf<S>) => R;
  /** Axis sizes. */
  readonly sizes: Sizes;
}

/** Bundles a program for tools that compile a module's exports. */
export function defineProgram<const S extends InputSpec, R extends TraceResult>(
  inputs: S,
  fn: (tensors: TensorsOf<S>) => R,
  sizes: Sizes,
): ProgramDef<S, R> {
  return { kind: TAG, inputs, fn, sizes };
}

/** True for values made by {@link defineProgram}. */
export function isProgramDef(value: unknown): value is ProgramDef {
  return typeof value === "object" && value !== null &&
    (value as { kind?: unknown }).kind === TAG;
}
