// Property tests of associativeScan: random combines (sum, max, (max, +) pairs, 2×2 matrix
// products), random sizes, layouts, directions and lowerings (sequential, chunked with random
// tiles, single pass or three kernels); the kernels against the interpreter, the interpreter against a fold written here.
import fc from "fast-check";
import { associativeScan } from "../dsl/assoc_scan.ts";
import { add, maximum } from "../dsl/elementwise.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { compile } from "../runtime/compile.ts";
import type { AssocScanStrategy } from "../codegen/assoc_scan_kernel.ts";
import { matmul2 } from "./assoc_cases.ts";
import { assertClose, randomArray, rng } from "./util.ts";

const RUNS = Number(Deno.env.get("SSMKIT_PROPERTY_RUNS") ?? 12);
const SEED = Deno.env.get("SSMKIT_PROPERTY_SEED");
const OPTIONS = { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: Number(SEED) }) };

type Rec = Record<string, Tensor>;

interface Combine {
  readonly name: string;
  readonly keys: readonly string[];
  readonly tensors: (a: Rec, b: Rec) => Rec;
  readonly numbers: (a: number[], b: number[]) => number[];
  /** Range of the random elements (matrix entries small, so products stay bounded). */
  readonly range: [number, number];
}

const COMBINES: Combine[] = [
  {
    name: "sum",
    keys: ["x"],
    tensors: (a, b) => ({ x: add(a.x, b.x) }),
    numbers: (a, b) => [a[0] + b[0]],
    range: [-1, 1],
  },
  {
    name: "max",
    keys: ["x"],
    tensors: (a, b) => ({ x: maximum(a.x, b.x) }),
    numbers: (a, b) => [Math.max(a[0], b[0])],
    range: [-1, 1],
  },
  {
    name: "(max, +)",
    keys: ["s", "m"],
    tensors: (a, b) => ({ s: add(a.s, b.s), m: maximum(add(a.m, b.s), b.m) }),
    numbers: (a, b) => [a[0] + b[0], Math.max(a[1] + b[0], b[1])],
    range: [-1, 1],
  },
  {
    name: "2×2 product",
    keys: ["a", "b", "c", "d"],
    tensors: (a, b) => matmul2(a as never, b as never),
    numbers: (p, q) => [
      p[0] * q[0] + p[1] * q[2],
      p[0] * q[1] + p[1] * q[3],
      p[2] * q[0] + p[3] * q[2],
      p[2] * q[1] + p[3] * q[3],
    ],
    range: [-0.8, 0.8],
  },
];

const caseArb = fc.record({
  combine: fc.constantFrom(...COMBINES),
  l: fc.integer({ min: 1, max: 70 }),
  c: fc.integer({ min: 1, max: 3 }),
  scanFirst: fc.boolean(),
  reverse: fc.boolean(),
  strategy: fc.oneof(
    fc.constant<AssocScanStrategy>({ mode: "sequential" }),
    fc.record({
      mode: fc.constant<"chunked">("chunked"),
      workgroup: fc.integer({ min: 1, max: 40 }),
      perThread: fc.integer({ min: 1, max: 4 }),
      chunkTiles: fc.integer({ min: 1, max: 3 }),
      tileScan: fc.constantFrom<("subgroup" | "workgroup")[]>("subgroup", "workgroup"),
      stage: fc.boolean(),
      // The single pass (look-back, 0 polls: every predecessor recomputed) or the three kernels.
      singlePass: fc.boolean(),
      lookbackSpins: fc.constantFrom(0, 1, 64),
    }),
  ),
  seed: fc.integer(),
});

Deno.test("assocScan property: random combines, sizes and lowerings match the oracles", async () => {
  await fc.assert(
    fc.asyncProperty(caseArb, async (p) => {
      const axes = p.scanFirst ? "l c" : "c l";
      const inputs = Object.fromEntries(p.combine.keys.map((k) => [k, axes]));
      const sizes = { l: p.l, c: p.c };
      const prog = await compile(
        inputs,
        (t: Rec) => associativeScan("l", p.combine.tensors, t, { reverse: p.reverse }),
        sizes,
        { backend: "gpu", assocScan: p.strategy },
      );
      const next = rng(p.seed);
      const data: Record<string, Float32Array> = {};
      for (const k of p.combine.keys) data[k] = randomArray(p.l * p.c, next, ...p.combine.range);
      const got = await prog.run(data) as Record<string, Float32Array>;
      const want = prog.interpret(data) as Record<string, Float64Array>;
      prog.destroy();
      // The fold written here, in the same order.
      const folded: Record<string, Float64Array> = {};
      for (const k of p.combine.keys) folded[k] = new Float64Array(p.l * p.c);
      for (let c = 0; c < p.c; c++) {
        let acc: number[] | undefined;
        for (let j = 0; j < p.l; j++) {
          const t = p.reverse ? p.l - 1 - j : j;
          const i = p.scanFirst ? t * p.c + c : c * p.l + t;
          const x = p.combine.keys.map((k) => data[k][i]);
          acc = acc === undefined
            ? x
            : p.reverse
            ? p.combine.numbers(x, acc)
            : p.combine.numbers(acc, x);
          p.combine.keys.forEach((k, n) => folded[k][i] = acc![n]);
        }
      }
      const what = `${p.combine.name} ${axes} ${JSON.stringify(sizes)} reverse=${p.reverse} ` +
        `${JSON.stringify(p.strategy)} seed ${p.seed}`;
      for (const k of p.combine.keys) {
        assertClose(want[k], folded[k], 1e-12, `${what}: interpreter ${k}`);
        assertClose(got[k], want[k], 1e-4, `${what}: kernel ${k}`);
      }
    }),
    OPTIONS,
  );
});
