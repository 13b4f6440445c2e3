// Combine functions shared by the associative-scan tests.
import { add, mul } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";

/** A 2×2 matrix [[a, b], [c, d]] as a record of tensors. */
export type M2 = { a: Tensor; b: Tensor; c: Tensor; d: Tensor };

/** The product l·r of 2×2 matrices [[a, b], [c, d]]. */
export function matmul2(l: M2, r: M2): M2 {
  return {
    a: add(mul(l.a, r.a), mul(l.b, r.c)),
    b: add(mul(l.a, r.b), mul(l.b, r.d)),
    c: add(mul(l.c, r.a), mul(l.d, r.c)),
    d: add(mul(l.c, r.b), mul(l.d, r.d)),
  };
}
