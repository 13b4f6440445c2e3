// f32 edge values on the GPU against the float64 interpreter, as documented in
// codegen/wgsl_math.ts: log reads subnormal operands exactly, softplus and exp are accurate down
// to the bottom of the normal range, and results below it are within 2^-126 of the oracle (a GPU
// may flush subnormals to zero).
import assert from "node:assert/strict";
import { exp, log, softplus } from "../dsl/elementwise.ts";
import { trace } from "../dsl/trace.ts";
import { compile } from "../runtime/compile.ts";
import { hasGpu } from "../runtime/gpu_device.ts";
import { interpret } from "../runtime/interpreter.ts";

const gpuOnly = { ignore: !(await hasGpu()) };

/** Smallest normal f32: below it a GPU may flush values to zero. */
const F32_MIN_NORMAL = 2 ** -126;

Deno.test({
  ...gpuOnly,
  name: "gpu: log of subnormal inputs is exact (read from the bits)",
  async fn() {
    const x = [1.4e-45, 3e-45, 1e-42, 1e-40, 5e-39, 1.1e-38, F32_MIN_NORMAL, 1e-30, 0.5, 7, 0];
    const prog = await compile({ x: "n" }, ({ x }) => log(x), { n: x.length }, { backend: "gpu" });
    const input = Float32Array.from(x);
    const got = await prog.run({ x: input }) as Float32Array;
    const want = prog.interpret({ x: input }) as Float64Array;
    for (let i = 0; i < x.length; i++) {
      if (want[i] === -Infinity) assert.equal(got[i], -Infinity, `log(${input[i]})`);
      else {assert.ok(
          Math.abs(got[i] - want[i]) <= 1e-6 * Math.abs(want[i]),
          `log(${input[i]}): got ${got[i]}, want ${want[i]}`,
        );}
    }
    prog.destroy();
  },
});

Deno.test({
  ...gpuOnly,
  name: "gpu: exp and softplus are exact down to the normal range; below it within 2^-126 of 0",
  async fn() {
    // A dense sweep (softplus's old log(1 + e) form lost up to a third of its value near -16 on
    // lavapipe, whose log is only absolutely accurate near 1) and the tail past the normal range.
    const x = Array.from({ length: 3200 }, (_, i) => -87 + i * 0.0371);
    x.push(-87.3, -87.34, -88, -95, -100, -103, -104, -200, -Infinity);
    const prog = await compile(
      { x: "n" },
      ({ x }) => ({ exp: exp(x), softplus: softplus(x) }),
      { n: x.length },
      { backend: "gpu" },
    );
    const input = Float32Array.from(x);
    const got = await prog.run({ x: input });
    const want = prog.interpret({ x: input });
    for (const op of ["exp", "softplus"] as const) {
      for (let i = 0; i < x.length; i++) {
        const g = got[op][i], w = want[op][i];
        const where = `${op}(${input[i]}): got ${g}, want ${w}`;
        if (w >= F32_MIN_NORMAL) assert.ok(Math.abs(g - w) <= 1e-5 * w, where);
        else assert.ok(g >= 0 && Math.abs(g - w) < F32_MIN_NORMAL, where);
      }
    }
    prog.destroy();
  },
});

Deno.test("the interpreter stays exact in float64, subnormal results included", () => {
  const graph = trace({ x: "n" }, ({ x }) => ({ sp: softplus(x), l: log(x) }), { n: 2 });
  const out = interpret(graph, { x: [-100, 1.4e-45] });
  assert.ok(Math.abs(out.sp[0] - Math.exp(-100)) <= 1e-15 * Math.exp(-100));
  assert.ok(Math.abs(out.l[1] - Math.log(1.4e-45)) <= 1e-12 * 103);
});
