// Short scans compute the prologue values their workgroup's channels share (B and C behind a
// causal conv and SiLU, as Mamba-2's decode step) once per workgroup in workgroup memory
// (codegen/scan_shared_prologue.ts): checked against the float64 interpreter, with the
// kernel's header saying whether the values were shared.
import assert from "node:assert/strict";
import { einsum } from "../dsl/einsum.ts";
import { exp, neg, silu } from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { conv1d, slice } from "../dsl/views.ts";
import { compile } from "../runtime/compile.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

const INPUTS = {
  a: "b l h",
  x: "b l h p",
  P: "b l c",
  w: "c k",
  s0: "b h p n",
} as const;

/** Runs the Mamba-2-shaped short scan at `sizes`; returns the scan kernel's WGSL. */
async function check(
  sizes: { b: number; l: number; h: number; p: number; n: number },
  reverse: boolean,
): Promise<string> {
  const seed = freshSeed();
  const { n } = sizes;
  const prog = await compile(
    INPUTS,
    (t) => {
      const conv = silu(conv1d(t.P, t.w, "l", "k"));
      const B = slice(conv, "c", 1, n + 1, "n");
      const C = slice(conv, "c", n + 1, 2 * n + 1, "n");
      const h = scan("l", exp(neg(t.a)), einsum("b l h p, b l n -> b l h p n", t.x, B), {
        init: t.s0,
        reverse,
      });
      return { y: einsum("b l h p n, b l n -> b l h p", h, C), last: finalState(h) };
    },
    { ...sizes, c: 2 * n + 3, k: 4 },
    { backend: "gpu" },
  );
  const inputs = randomInputs(prog.graph, rng(seed));
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  const what = `${JSON.stringify(sizes)} reverse ${reverse} seed ${seed}`;
  assertClose(got.y, want.y, 1e-4, `${what}: y`);
  assertClose(got.last, want.last, 1e-4, `${what}: final state`);
  const scanKernel = prog.kernels.find((k) => k.name.includes("scan"));
  prog.destroy();
  assert.ok(scanKernel, `${what}: no scan kernel`);
  return scanKernel.wgsl;
}

Deno.test("short scans share B and C behind a conv across the workgroup's channels", async () => {
  // 64 channels a sequence: the workgroup's channels all belong to one sequence, so B and C
  // (which depend on the sequence, the step and the state, not on the head) are shared.
  for (const [l, reverse, n] of [[1, false, 12], [3, true, 12], [5, false, 12], [1, false, 32]]) {
    // n = 32: four states a lane, stored as one vector each into the final state.
    const wgsl = await check({ b: 2, l: l as number, h: 4, p: 16, n: n as number }, !!reverse);
    const header = wgsl.split("\n")[0];
    assert.match(header, /shared prologue \(2\)/, `l = ${l}: ${header}`);
    if (n === 32) assert.match(wgsl, /vec4<f32>\(h0, h1, h2, h3\)/, header);
  }
});

Deno.test("short scans keep per-lane prologues where the workgroup spans sequences", async () => {
  // 15 channels a sequence: a workgroup's channels belong to several sequences, whose B and C
  // differ, so each lane computes its own (and the results still match).
  const header = (await check({ b: 3, l: 2, h: 3, p: 5, n: 9 }, false)).split("\n")[0];
  assert.doesNotMatch(header, /shared prologue/, header);
});
