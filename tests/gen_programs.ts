// fast-check generators of random DSL programs: einsums over random axes and sizes, and
// elementwise chains with views. Every op is kept in a numerically safe domain so that f32 vs
// float64 differences stay rounding-sized. Only legal programs are generated: where two
// operands each have an axis the other lacks, the chain broadcasts one explicitly first
// (elementwise ops refuse the implicit outer product; dsl_errors_test checks that they do).
import fc from "fast-check";
import { einsum } from "../dsl/einsum.ts";
import * as ew from "../dsl/elementwise.ts";
import type { InputSpec, Sizes } from "../dsl/trace.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { flip, rearrange, transpose } from "../dsl/views.ts";
import { max, mean, softmax, sum } from "../dsl/reduce.ts";

/** A generated program: inputs, sizes and the function to trace. */
export interface GeneratedProgram {
  description: string;
  inputs: InputSpec;
  sizes: Sizes;
  fn: (t: Record<string, Tensor>) => Tensor;
}

const AXES = ["a", "b", "c", "d", "e"];
/** Awkward sizes: 1, primes, and sizes just past powers of two. */
const SIZES = [1, 2, 3, 5, 7, 13, 17, 33, 67, 129];

const sizesArb = fc.tuple(...AXES.map(() => fc.constantFrom(...SIZES))).map((s) =>
  Object.fromEntries(AXES.map((a, i) => [a, s[i]])) as Sizes
);

const axesArb = (min: number, max: number) =>
  fc.shuffledSubarray(AXES, { minLength: min, maxLength: max });

function volume(axes: string[], sizes: Sizes): number {
  return axes.reduce((p, a) => p * sizes[a], 1);
}

/** Random einsums with 1–3 operands (keeps total work small for the CPU oracle). */
export const einsumProgram: fc.Arbitrary<GeneratedProgram> = fc
  .record({
    operands: fc.array(axesArb(1, 3), { minLength: 1, maxLength: 3 }),
    outPick: fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }),
    sizes: sizesArb,
  })
  .filter(({ operands, sizes }) => {
    const all = [...new Set(operands.flat())];
    return volume(all, sizes) <= 150_000 && operands.every((o) => volume(o, sizes) <= 40_000);
  })
  .map(({ operands, outPick, sizes }) => {
    const all = [...new Set(operands.flat())];
    const out = all.filter((_, i) => outPick[i % outPick.length]);
    const spec = `${operands.map((o) => o.join(" ")).join(", ")} -> ${out.join(" ")}`;
    const inputs: InputSpec = {};
    operands.forEach((o, i) => inputs[`t${i}`] = o.join(" "));
    return {
      description: `einsum("${spec}") sizes ${JSON.stringify(sizes)}`,
      inputs,
      sizes,
      fn: (t: Record<string, Tensor>) => einsum(spec, ...operands.map((_, i) => t[`t${i}`])),
    };
  });

type Step =
  | { kind: "unary"; op: number }
  | { kind: "binary"; op: number; other: number }
  | { kind: "view"; op: number; axis: number }
  | { kind: "where"; other: number };

const UNARY: [string, (x: Tensor) => Tensor][] = [
  ["neg", ew.neg],
  ["exp(tanh)", (x) => ew.exp(ew.tanh(x))],
  ["log(|x|+0.5)", (x) => ew.log(ew.add(ew.abs(x), 0.5))],
  ["sqrt(|x|+0.1)", (x) => ew.sqrt(ew.add(ew.abs(x), 0.1))],
  ["rsqrt(|x|+0.5)", (x) => ew.rsqrt(ew.add(ew.abs(x), 0.5))],
  ["sigmoid", ew.sigmoid],
  ["silu", ew.silu],
  ["softplus", ew.softplus],
  ["tanh", ew.tanh],
  ["relu+x", (x) => ew.add(ew.relu(x), x)],
];

const BINARY: [string, (x: Tensor, y: Tensor) => Tensor][] = [
  ["add", ew.add],
  ["sub", ew.sub],
  ["mul", ew.mul],
  ["div(|y|+0.5)", (x, y) => ew.div(x, ew.add(ew.abs(y), 0.5))],
  ["maximum", ew.maximum],
  ["minimum", ew.minimum],
  ["pow(|x|+0.5, 2)", (x) => ew.pow(ew.add(ew.abs(x), 0.5), 2)],
  ["pow(|x|+0.5, 1.5)", (x) => ew.pow(ew.add(ew.abs(x), 0.5), 1.5)],
];

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant("unary" as const), op: fc.nat(UNARY.length - 1) }),
  fc.record({
    kind: fc.constant("binary" as const),
    op: fc.nat(BINARY.length - 1),
    other: fc.nat(2),
  }),
  fc.record({ kind: fc.constant("view" as const), op: fc.nat(2), axis: fc.nat(4) }),
  fc.record({ kind: fc.constant("where" as const), other: fc.nat(2) }),
);

/**
 * `t` broadcast to its axes followed by those of `other` it lacks, when each has an axis the
 * other lacks (an outer broadcast, which must be explicit); else `t` itself.
 */
function coverAxes(t: Tensor, other: Tensor, log: string[]): Tensor {
  const missing = other.axes.filter((a) => !t.axes.includes(a));
  if (missing.length === 0 || t.axes.every((a) => other.axes.includes(a))) return t;
  log.push(`broadcast +${missing.join(" ")}`);
  // Sizes from the traced tensor, not the generator's record: callers may shrink the sizes.
  const newSizes = Object.fromEntries(missing.map((a) => [a, other.size(a)]));
  return ew.broadcast(t, [...t.axes, ...missing].join(" "), newSizes);
}

/** Random elementwise chains over three inputs with broadcasting, views and selects. */
export const elementwiseProgram: fc.Arbitrary<GeneratedProgram> = fc
  .record({
    axes: fc.tuple(axesArb(1, 3), axesArb(1, 3), axesArb(0, 2)),
    steps: fc.array(stepArb, { minLength: 1, maxLength: 7 }),
    reduceAt: fc.option(fc.nat(3), { nil: undefined }),
    sizes: sizesArb,
  })
  .filter(({ axes, sizes }) => volume([...new Set(axes.flat())], sizes) <= 60_000)
  .map(({ axes, steps, reduceAt, sizes }) => {
    const names = ["x", "y", "z"];
    const inputs: InputSpec = {};
    axes.forEach((a, i) => inputs[names[i]] = a.join(" "));
    const log: string[] = [];
    const fn = (t: Record<string, Tensor>) => {
      const leaves = names.map((n) => t[n]);
      let cur = leaves[0];
      steps.forEach((s) => {
        if (s.kind === "unary") {
          log.push(UNARY[s.op][0]);
          cur = UNARY[s.op][1](cur);
        } else if (s.kind === "binary") {
          const other = leaves[s.other];
          cur = coverAxes(cur, other, log);
          log.push(`${BINARY[s.op][0]} ${names[s.other]}`);
          cur = BINARY[s.op][1](cur, other);
        } else if (s.kind === "where") {
          // Compare raw inputs only: f32 and float64 agree exactly on them.
          const other = leaves[s.other];
          const cond = ew.gt(coverAxes(leaves[0], other, log), other);
          cur = coverAxes(cur, cond, log);
          log.push(`where(x > ${names[s.other]})`);
          cur = ew.where(cond, cur, ew.neg(cur));
        } else {
          const axis = cur.axes[s.axis % Math.max(cur.axes.length, 1)];
          if (!axis) return;
          if (s.op === 0) {
            log.push(`flip ${axis}`);
            cur = flip(cur, axis);
          } else if (s.op === 1) {
            const order = [...cur.axes].reverse().join(" ");
            log.push(`transpose ${order}`);
            cur = transpose(cur, order);
          } else {
            // Rename the axis and back: two regroup views (names are positional on the left).
            const renamed = cur.axes.map((a) => (a === axis ? `${axis}_` : a)).join(" ");
            const original = cur.axes.join(" ");
            log.push(`rename ${axis}`);
            cur = rearrange(
              rearrange(cur, `${renamed} -> ${renamed}`),
              `${original} -> ${original}`,
            );
          }
        }
      });
      if (reduceAt !== undefined && cur.axes.length > 0) {
        const axis = cur.axes[reduceAt % cur.axes.length];
        const kinds = [
          () => sum(cur, axis),
          () => max(cur, axis),
          () => mean(cur, axis),
          () => softmax(cur, axis),
        ];
        log.push(`reduce#${reduceAt} ${axis}`);
        cur = kinds[reduceAt % kinds.length]();
      }
      return cur;
    };
    return {
      get description() {
        return `chain [${log.join(", ")}] inputs ${JSON.stringify(inputs)} sizes ${
          JSON.stringify(sizes)
        }`;
      },
      inputs,
      sizes,
      fn,
    };
  });
