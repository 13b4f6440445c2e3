// The scan primitive and the fused selective-scan kernel, against the float64 interpreter.
import assert from "node:assert/strict";
import { elementsOf, type KernelArtifact } from "../codegen/artifact.ts";
import { einsum } from "../dsl/einsum.ts";
import { add, exp, mul, neg } from "../dsl/elementwise.ts";
import { finalState, pick, scan } from "../dsl/scan.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile, type CompileOptions } from "../runtime/compile.ts";
import {
  assertClose,
  freshSeed,
  randomArray,
  randomInputs,
  rng,
  selectiveScanInputs,
} from "./util.ts";
import { slice } from "../dsl/views.ts";

type Sizes = { b: number; l: number; d: number; n: number };

function mambaInputs(s: Sizes, next: () => number) {
  return selectiveScanInputs(s, next, { dt: [-3, 0] });
}

const INPUTS = { ...SELECTIVE_SCAN_INPUTS, h0: "b d n" } as const;

async function checkSelectiveScan(
  sizes: Sizes,
  opts: { reverse?: boolean; init?: boolean } & CompileOptions = {},
) {
  const seed = freshSeed();
  const prog = await compile(
    INPUTS,
    (t) => {
      const { y, state } = selectiveScan(t, {
        reverse: opts.reverse,
        init: opts.init ? t.h0 : undefined,
      });
      return { y, state };
    },
    sizes,
    { backend: "gpu", scan: opts.scan },
  );
  const inputs = mambaInputs(sizes, rng(seed));
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  const what = `selective scan ${JSON.stringify(sizes)} ${JSON.stringify(opts)} seed ${seed}`;
  assertClose(got.y, want.y, 1e-4, `${what}: y`);
  assertClose(got.state, want.state, 1e-4, `${what}: final state`);
  // The (b, l, d, n) state is never in memory.
  const full = sizes.b * sizes.l * sizes.d * sizes.n;
  for (const k of prog.kernels) {
    for (const buf of [...k.reads, ...k.writes]) {
      if (sizes.l > 1) {
        assert.ok(elementsOf(buf) < full, `${what}: ${k.name} binds a state-sized buffer`);
      }
    }
  }
  prog.destroy();
  return prog.kernels.length;
}

Deno.test("selective scan: the issue's program compiles to exactly one kernel", async () => {
  const kernels = await checkSelectiveScan({ b: 2, l: 7, d: 5, n: 16 });
  assert.equal(kernels, 1);
});

Deno.test("selective scan: lengths 1, 7, 129, 1000 with odd channel counts", async () => {
  for (const l of [1, 7, 129, 1000]) {
    const kernels = await checkSelectiveScan({ b: 2, l, d: 3, n: 16 }, { init: l % 2 === 1 });
    // Few channels and a long sequence: the automatic strategy chunks (3 kernels).
    assert.equal(kernels, l >= 256 ? 3 : 1);
  }
});

Deno.test("selective scan: reverse, init and final state, odd state size", async () => {
  await checkSelectiveScan({ b: 3, l: 33, d: 7, n: 5 }, { reverse: true, init: true });
  await checkSelectiveScan({ b: 1, l: 40, d: 3, n: 16 }, { reverse: true });
});

Deno.test("selective scan: chunked strategy (chunks not dividing the length), both directions", async () => {
  for (const reverse of [false, true]) {
    const kernels = await checkSelectiveScan(
      { b: 2, l: 301, d: 3, n: 16 },
      { reverse, init: true, scan: { chunks: 7 } },
    );
    assert.equal(kernels, 3, "local pass, carry pass, output pass");
  }
  // The automatic choice chunks a long sequence with few channels.
  assert.equal(await checkSelectiveScan({ b: 1, l: 2000, d: 2, n: 4 }, { init: true }), 3);
});

Deno.test("selective scan: one lane per channel (no subgroups) gives the same result", async () => {
  await checkSelectiveScan({ b: 2, l: 19, d: 5, n: 16 }, { init: true, scan: { lanes: 1 } });
});

Deno.test("step mode: l = 1 with an in-place state equals the full scan token by token", async () => {
  const seed = freshSeed();
  const sizes = { b: 2, l: 9, d: 5, n: 16 };
  const full = await compile(INPUTS, (t) => selectiveScan(t, { init: t.h0 }), sizes, {
    backend: "gpu",
  });
  const inputs = mambaInputs(sizes, rng(seed));
  const want = await full.run(inputs);
  const step = await compile(
    INPUTS,
    (t) => selectiveScan(t, { init: t.h0 }),
    { ...sizes, l: 1 },
    { backend: "gpu", inPlace: { state: "h0" } },
  );
  assert.equal(step.kernels.length, 1, "one fused decode-step kernel");
  const { b, l, d, n } = sizes;
  let state = inputs.h0;
  const per = (arr: Float32Array, width: number, t: number) => {
    const out = new Float32Array(b * width);
    for (let i = 0; i < b; i++) {
      out.set(arr.subarray((i * l + t) * width, (i * l + t + 1) * width), i * width);
    }
    return out;
  };
  for (let t = 0; t < l; t++) {
    const got = await step.run({
      ...inputs,
      x: per(inputs.x, d, t),
      dt: per(inputs.dt, d, t),
      z: per(inputs.z, d, t),
      B: per(inputs.B, n, t),
      C: per(inputs.C, n, t),
      h0: state,
    });
    assertClose(got.y, per(want.y, d, t), 1e-4, `step ${t} (seed ${seed})`);
    state = got.state;
  }
  assertClose(state, want.state, 1e-4, `final state after ${l} steps (seed ${seed})`);
  full.destroy();
  step.destroy();
});

Deno.test("scan with state axes p and n (Mamba-2 shape, recurrent) and a materialized state", async () => {
  const seed = freshSeed();
  const sizes = { b: 2, l: 11, h: 3, p: 5, n: 7 };
  const prog = await compile(
    { a: "b l h", u: "b l h p n", C: "b l n", s0: "b h p n" },
    ({ a, u, C, s0 }) => {
      const h = scan("l", exp(neg(a)), u, { init: s0 });
      return {
        y: einsum("b l h p n, b l n -> b l h p", h, C),
        last: finalState(h),
      };
    },
    sizes,
    { backend: "gpu" },
  );
  const next = rng(seed);
  const inputs = {
    a: randomArray(2 * 11 * 3, next, 0, 1),
    u: randomArray(2 * 11 * 3 * 5 * 7, next),
    C: randomArray(2 * 11 * 7, next),
    s0: randomArray(2 * 3 * 5 * 7, next),
  };
  const got = await prog.run(inputs);
  const want = prog.interpret(inputs);
  assertClose(got.y, want.y, 1e-4, `y (seed ${seed})`);
  assertClose(got.last, want.last, 1e-4, `last (seed ${seed})`);
  prog.destroy();

  // A consumer that needs every state value forces the state into memory, still correctly.
  const mat = await compile(
    { a: "b l h", u: "b l h p n" },
    ({ a, u }) => {
      const h: Tensor = scan("l", exp(neg(a)), u, { reverse: true });
      return { h2: mul(h, h), mid: pick(h, "l", 4), s: add(h, 1) };
    },
    sizes,
    { backend: "gpu" },
  );
  const got2 = await mat.run({ a: inputs.a, u: inputs.u });
  const want2 = mat.interpret({ a: inputs.a, u: inputs.u });
  for (const k of ["h2", "mid", "s"] as const) {
    assertClose(got2[k], want2[k], 1e-4, `materialized ${k} (seed ${seed})`);
  }
  mat.destroy();
});

Deno.test("scan errors name the problem", async () => {
  assert.throws(
    // @ts-expect-error a plain object is not a Tensor (a JS caller could still pass one)
    () => scan("q", {}, 1),
    /expected a Tensor or a number/,
  );
  await assert.rejects(
    () =>
      compile(
        { a: "b l", u: "b l" },
        // @ts-expect-error q is not an axis: a compile error, and a trace-time error in JS
        ({ a, u }) => scan("q", a, u),
        { b: 1, l: 2 },
        { backend: "cpu" },
      ),
    /axis "q" is in neither decay \[b l\] nor input \[b l\]/,
  );
  await assert.rejects(
    () =>
      compile(
        { a: "b l", u: "b l", s: "l" },
        ({ a, u, s }) => scan("l", a, u, { init: s }),
        { b: 1, l: 2 },
        { backend: "cpu" },
      ),
    /init \[l\] has axis "l"/,
  );
  await assert.rejects(
    () =>
      compile(
        { a: "b l", u: "b l", s: "b" },
        ({ a, u, s }) => ({ out: finalState(scan("l", a, u, { init: s })), s2: add(s, 1) }),
        { b: 1, l: 2 },
        { backend: "cpu", inPlace: { out: "s" } },
      ),
    /nothing else may read "s"/,
  );
});

/**
 * The selective scan with B and C sliced out of one input P (b l r) at `offsets` (16 states
 * each), in each lane mode of `modes`, against the interpreter; `check` sees each program first.
 */
async function checkSlicedBC(
  sizes: Sizes & { r: number },
  offsets: [number, number],
  modes: readonly NonNullable<CompileOptions["scan"]>[],
  check: (prog: { kernels: readonly KernelArtifact[] }, mode: string) => void = () => {},
) {
  const seed = freshSeed();
  for (const scan of modes) {
    const prog = await compile(
      { ...SELECTIVE_SCAN_INPUTS, P: "b l r" },
      (t) =>
        selectiveScan({
          ...t,
          B: slice(t.P, "r", offsets[0], offsets[0] + 16, "n"),
          C: slice(t.P, "r", offsets[1], offsets[1] + 16, "n"),
        }).y,
      sizes,
      { backend: "gpu", scan },
    );
    check(prog, JSON.stringify(scan));
    const inputs = randomInputs(prog.graph, rng(seed));
    assertClose(
      await prog.run(inputs),
      prog.interpret(inputs),
      1e-4,
      `scan ${JSON.stringify(scan)} seed ${seed}`,
    );
    prog.destroy();
  }
}

Deno.test("B and C sliced out of a wider tensor (state-dependent indices) in every lane mode", async () => {
  // Offsets 3 and 19 leave no aligned vector groups of B and C, also with every load prefetched.
  await checkSlicedBC({ b: 2, l: 37, d: 5, n: 16, r: 35 }, [3, 19], [
    {},
    { transpose: false },
    { lanes: 1 },
    { chunks: 4 },
    { lanes: 4, prefetch: "all" },
  ]);
});

Deno.test("B and C sliced at aligned offsets of one buffer are read as vectors of that buffer", async () => {
  // As Mamba-2's decode reads B and C out of its conv output (x, B, C in one buffer): a view
  // whose offset and strides are multiples of the vector width is read through a vector binding
  // of the buffer behind it.
  const modes = [{ lanes: 4 }, { lanes: 1 }, { lanes: 4, transpose: false }];
  await checkSlicedBC({ b: 3, l: 5, d: 7, n: 16, r: 40 }, [4, 24], modes, (prog, mode) => {
    for (const k of prog.kernels) {
      const p = k.reads.findIndex((r) => (r as { name?: string }).name === "P");
      if (p < 0) continue;
      assert.match(k.wgsl, new RegExp(`b${p}v: array<vec4<f32>>`), mode);
    }
  });
});

Deno.test("an inline contraction in the step (dt = P·W_Δ) is split over the channel's lanes", async () => {
  // Every lane of a channel needs the same Δ: each sums every 8th term (r = 7 leaves a lane
  // without any, r = 50 some with one more) and subgroup shuffles add the shares.
  const seed = freshSeed();
  for (const [l, r] of [[1, 7], [3, 50]]) {
    const sizes = { b: 2, l, d: 5, n: 16, r };
    const prog = await compile(
      { ...SELECTIVE_SCAN_INPUTS, P: "b l r", Wd: "d r" },
      (t) => selectiveScan({ ...t, dt: einsum("b l r, d r -> b l d", t.P, t.Wd) }).y,
      sizes,
      { backend: "gpu", scan: { transpose: false } },
    );
    const wgsl = prog.kernels.map((k) => k.wgsl).join("\n");
    assert.match(wgsl, /8 lane\(s\)\/channel/);
    assert.match(wgsl, /\+= subgroupShuffleXor\(vacc\d+, 4u\)/);
    const inputs = randomInputs(prog.graph, rng(seed));
    assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `r = ${r} seed ${seed}`);
    prog.destroy();
  }
});
