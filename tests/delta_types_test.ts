// Type-level tests of deltaRule (`deno check tests/` type-checks this file): axis names that
// are not axes of the operands are compile errors, and y keeps v's axes.
import { deltaRule } from "../dsl/delta.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** Never called: only type-checked. */
export function deltaRuleTypes(
  q: Tensor<"b t h dk">,
  k: Tensor<"b t h dk">,
  v: Tensor<"b t h dv">,
  beta: Tensor<"b t h">,
): unknown[] {
  const { y } = deltaRule({ q, k, v, beta }, { time: "t", key: "dk", value: "dv" });
  const typed: Tensor<"b t h dv"> = y;
  // @ts-expect-error: "l" is not an axis of v
  const badTime = deltaRule({ q, k, v, beta }, { time: "l", key: "dk", value: "dv" });
  // @ts-expect-error: "dv" is not an axis of q
  const badKey = deltaRule({ q, k, v, beta }, { time: "t", key: "dv", value: "dv" });
  // @ts-expect-error: "dk" is not an axis of v
  const badValue = deltaRule({ q, k, v, beta }, { time: "t", key: "dk", value: "dk" });
  return [typed, badTime, badKey, badValue];
}

Deno.test("deltaRule types: checked by deno check (nothing to run)", () => {});
