// Type-level tests: `deno test` type-checks this file, and each @ts-expect-error must match a
// real type error, so these assertions fail the suite if the typed einsum stops catching them.
import { einsum } from "../dsl/einsum.ts";
import { add, mul } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** Never called: only type-checked. */
export function typeChecks(x: Tensor<"b l d">, A: Tensor<"d n">, D: Tensor<"d">): unknown[] {
  const y: Tensor<"b l d n"> = einsum("b l d, d n -> b l d n", x, A);
  const z: Tensor<"b l d"> = mul(D, x);
  const w: Tensor<"b l d"> = add(x, 1);
  const t: Tensor<"b l d"> = einsum("b  l d ,d n->b l d", x, A);
  const s: Tensor<"b d"> = sum(x, "l");
  // @ts-expect-error operand 1 is [b l d] but the spec says [b d]
  einsum("b d, d n -> b n", x, A);
  // @ts-expect-error the broadcast result is [b l d], not [b d]
  const bad: Tensor<"b d"> = mul(D, x);
  // @ts-expect-error too few operands
  einsum("b l d, d n -> b l n", x);
  return [y, z, w, t, s, bad];
}

Deno.test("typed einsum: this file type-checks (the checks above are the test)", () => {
  if (typeof typeChecks !== "function") throw new Error("unreachable");
});
