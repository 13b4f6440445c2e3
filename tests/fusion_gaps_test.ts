// Fusion of layer shapes a newcomer writes (issue 19): a bidirectional selective scan with a
// low-rank Δ chain, `reverse: true` against flipped inputs, layout-only rearranges after a
// matmul, and mLSTM's two scans sharing their decay. Each test counts the kernels (the counts
// before the fixes are in its comments) and checks every output against the float64
// interpreter on random inputs of awkward sizes, both scan directions, init and final states.
import assert from "node:assert/strict";
import { einsum } from "../dsl/einsum.ts";
import { grad } from "../dsl/autodiff.ts";
import {
  abs,
  add,
  div,
  exp,
  maximum,
  mul,
  neg,
  sigmoid,
  silu,
  softplus,
  tanh,
} from "../dsl/elementwise.ts";
import { finalState, scan } from "../dsl/scan.ts";
import { rmsnorm, sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { conv1d, flip, rearrange, transpose } from "../dsl/views.ts";
import { rename } from "../dsl/axis_ops.ts";
import { pipelineKey } from "../runtime/gpu_pipelines.ts";
import type { InputSpec } from "../dsl/trace.ts";
import { compile, type CompileOptions } from "../runtime/compile.ts";
import type { TraceResult } from "../dsl/trace.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

/** Compiles `fn` for the GPU, checks every output against the interpreter, returns the kernels. */
async function kernelsOf<const S extends InputSpec>(
  what: string,
  inputs: S,
  fn: Parameters<typeof compile<S, TraceResult>>[1],
  sizes: Record<string, number>,
  options: CompileOptions = {},
): Promise<{ name: string; wgsl: string }[]> {
  const seed = freshSeed();
  const prog = await compile(inputs, fn, sizes, { backend: "gpu", ...options });
  const data = randomInputs(prog.graph, rng(seed));
  const got = await prog.run(data) as Record<string, Float32Array>;
  const want = prog.interpret(data) as Record<string, Float64Array>;
  for (const name of Object.keys(want)) {
    assertClose(got[name], want[name], 1e-4, `${what} seed ${seed}: output ${name}`);
  }
  const kernels = prog.kernels.map(({ name, wgsl }) => ({ name, wgsl }));
  prog.destroy();
  return kernels;
}

const VIM_INPUTS = {
  x: "b l d",
  xs: "b l e",
  Wr: "d r",
  Wd: "r e",
  bias: "e",
  Alog: "e n",
  B: "b l n",
  C: "b l n",
  h0: "b e n",
} as const;
// d is long enough that x·W_r is a matmul; r short enough that ·W_Δ is a loop in the scan.
const VIM_SIZES = { b: 2, l: 37, d: 67, r: 5, e: 6, n: 3 };

type VimT = { [K in keyof typeof VIM_INPUTS]: Tensor };

/** One direction of a Vision-Mamba scan: Δ = softplus(x·W_r·W_Δ + bias), written as one einsum. */
function vimDirection(t: VimT, backward: "reverse" | "flip" | "none", init: boolean) {
  const f = (v: Tensor) => backward === "flip" ? flip(v as Tensor<"b l e">, "l") as Tensor : v;
  const dt = softplus(add(einsum("b l d, d r, r e -> b l e", f(t.x), t.Wr, t.Wd), t.bias));
  const A = neg(exp(t.Alog));
  const h = scan(
    "l",
    exp(einsum("b l e, e n -> b l e n", dt, A)),
    einsum("b l e, b l n, b l e -> b l e n", dt, f(t.B), f(t.xs)),
    { reverse: backward === "reverse", init: init ? t.h0 : undefined },
  );
  const y = einsum("b l e n, b l n -> b l e", h, f(t.C));
  return { y: f(y), state: finalState(h) };
}

Deno.test("Δ chain x·W_r·W_Δ as one einsum: a rank-r projection, W_Δ inlined in the scan", async () => {
  // Before: W_r·W_Δ (d×e) and x·(W_r·W_Δ) were two matmul kernels; now x·W_r is one and the
  // product with W_Δ runs inside the scan, as in Mamba-1.
  for (const init of [false, true]) {
    const kernels = await kernelsOf("Δ chain", VIM_INPUTS, (t) => {
      const { y, state } = vimDirection(t, "none", init);
      return { y, state };
    }, VIM_SIZES);
    assert.deepEqual(kernels.map((k) => k.name.replace(/^k\d+_/, "")), ["contract_blr", "scan"]);
  }
});

Deno.test("bidirectional scan: reverse: true costs no more kernels than flipping", async () => {
  const counts: Record<string, number> = {};
  for (const backward of ["reverse", "flip"] as const) {
    for (const permute of [false, true]) {
      const kernels = await kernelsOf(`bidirectional ${backward}`, VIM_INPUTS, (t) => {
        const fw = vimDirection(t, "none", true);
        const bw = vimDirection(t, backward, true);
        const y = add(fw.y as Tensor<"b l e">, bw.y as Tensor<"b l e">);
        return { y: permute ? transpose(y, "b e l") : y, sf: fw.state, sb: bw.state };
      }, VIM_SIZES);
      counts[`${backward}${permute ? " permuted" : ""}`] = kernels.length;
    }
  }
  // Per direction one x·W_r matmul and one scan kernel; the sum runs in the epilogue of the
  // second direction's scan whichever way the backward direction is written. Before: 7 with
  // `reverse: true` (two matmuls per direction, the sum a kernel of its own), 6 with flips,
  // whose sum then ran before the scan it reads (wrong values).
  assert.deepEqual(counts, { reverse: 4, "reverse permuted": 4, flip: 4, "flip permuted": 4 });
});

Deno.test("layout-only rearrange or flip after a matmul: stored through, no copy kernel", async () => {
  // W stored [e, d]: with one row per batch the matrix-vector kernel runs the product.
  const inputs = { x: "b l d", W: "e d", bias: "e" } as const;
  const cases = [
    { l: 33, view: "split" },
    { l: 33, view: "split-flip" },
    { l: 33, view: "merge" },
    { l: 1, view: "split" },
    { l: 1, view: "split-flip" },
  ];
  for (const { l, view } of cases) {
    const kernels = await kernelsOf(`matmul then ${view}, l=${l}`, inputs, (t) => {
      const y = silu(add(einsum("b l d, e d -> b l e", t.x, t.W), t.bias));
      const heads = rearrange(y, "b l (h p) -> b h l p", { p: 5 });
      if (view === "split") return { y: heads };
      if (view === "split-flip") return { y: flip(heads, "l") };
      return { y: rearrange(heads, "b h l p -> b l f=(p h)") };
    }, { b: 2, l, d: 70, e: 65 });
    // Before: 2 (the matmul, then a copy kernel for the view).
    assert.equal(kernels.length, 1, `${view}, l=${l}: ${kernels.map((k) => k.name).join(" ")}`);
    assert.equal(kernels[0].wgsl.includes("matrix-vector"), l === 1, "the GEMV kernel for 2 rows");
  }
});

const MLSTM_INPUTS = {
  q: "b l h k",
  k: "b l h k",
  v: "b l h v",
  f: "b l h",
  i: "b l h",
  C0: "b h v k",
  n0: "b h k",
} as const;
type MlstmT = { [K in keyof typeof MLSTM_INPUTS]: Tensor };

/** mLSTM: C_t = f_t·C_{t−1} + i_t·v_t·k_tᵀ, n_t = f_t·n_{t−1} + i_t·k_t, y = C·q / max(|n·q|, 1). */
function mlstm(
  t: MlstmT,
  opts: { reverse: boolean; init: boolean; finals?: boolean },
): Record<string, Tensor> {
  const f = sigmoid(t.f), i = exp(neg(t.i));
  const C = scan("l", f, einsum("b l h, b l h v, b l h k -> b l h v k", i, t.v, t.k), {
    reverse: opts.reverse,
    init: opts.init ? t.C0 : undefined,
  });
  const n = scan("l", f, einsum("b l h, b l h k -> b l h k", i, t.k), {
    reverse: opts.reverse,
    init: opts.init ? t.n0 : undefined,
  });
  const num = einsum("b l h v k, b l h k -> b l h v", C, t.q);
  const den = einsum("b l h k, b l h k -> b l h", n, t.q);
  const y = div(num, maximum(abs(den), 1) as Tensor<"b l h">);
  return opts.finals ? { y, C: finalState(C), n: finalState(n) } : { y };
}

Deno.test("mLSTM: two scans sharing their decay run as one kernel, y in its epilogue", async () => {
  const sizes = { b: 2, l: 29, h: 3, k: 5, v: 7 };
  const strategies = [{}, { tileSteps: 0, lanes: 1 }, { tileSteps: 0, chunks: 3 }, {
    tileSteps: 16,
  }];
  for (const [s, scanStrategy] of strategies.entries()) {
    for (const reverse of [false, true]) {
      const init = (s + Number(reverse)) % 2 === 0;
      const kernels = await kernelsOf(
        `mLSTM ${JSON.stringify({ reverse, init, scanStrategy })}`,
        MLSTM_INPUTS,
        (t) => mlstm(t, { reverse, init }),
        sizes,
        { scan: scanStrategy },
      );
      // Before: one kernel per scan and one for y (3).
      assert.equal(
        kernels.length,
        "chunks" in scanStrategy ? 3 : 1,
        kernels.map((k) => k.name).join(" "),
      );
    }
  }
});

Deno.test("mLSTM with final states: the scans stay apart, y in the second one's epilogue", async () => {
  const sizes = { b: 1, l: 13, h: 2, k: 3, v: 4 };
  for (const reverse of [false, true]) {
    const kernels = await kernelsOf(
      `mLSTM with final states, reverse ${reverse}`,
      MLSTM_INPUTS,
      (t) => mlstm(t, { reverse, init: true, finals: true }),
      sizes,
    );
    // Before: 3 (y a kernel of its own).
    assert.equal(kernels.length, 2, kernels.map((k) => k.name).join(" "));
  }
});

Deno.test("two sums over both directions' outputs: no kernel waits on one that waits on it", async () => {
  const inputs = { u: "b l d", a: "b l d", B: "b l n", C1: "b l n", C2: "b l n" } as const;
  const kernels = await kernelsOf("crossed sums", inputs, (t) => {
    const decay = exp(einsum("b l d, b l n -> b l d n", neg(sigmoid(t.a)), t.B));
    const input = einsum("b l d, b l n -> b l d n", t.u, t.B);
    const fw = scan("l", decay, input);
    const bw = scan("l", decay, input, { reverse: true });
    // Created in the order fw·C1, bw·C1, bw·C2, fw·C2: each sum's newest core is in the other
    // direction's kernel; the two kernels would read each other's outputs, so one sum gets a
    // kernel of its own.
    const f1 = einsum("b l d n, b l n -> b l d", fw, t.C1);
    const b1 = einsum("b l d n, b l n -> b l d", bw, t.C1);
    const b2 = einsum("b l d n, b l n -> b l d", bw, t.C2);
    const f2 = einsum("b l d n, b l n -> b l d", fw, t.C2);
    return { y1: add(f1, b1), y2: add(b2, f2) };
  }, { b: 2, l: 11, d: 3, n: 4 });
  // Two scan kernels, one of them with its sum in the epilogue, and the other sum's kernel
  // (before: 4, one kernel per sum).
  assert.equal(kernels.length, 3, kernels.map((k) => k.name).join(" "));
});

Deno.test("a backward scan costs one kernel written with reverse: true or with flips", async () => {
  const inputs = {
    x: "b l d",
    dt: "b l d",
    a: "b l",
    B: "b l n",
    C: "b l n",
    h0: "b d n",
  } as const;
  const sizes = { b: 2, l: 37, d: 5, n: 4 };
  const strategies = [
    {},
    { tileSteps: 0, lanes: 1 },
    { tileSteps: 0, lanes: 4 },
    {
      tileSteps: 0,
      chunks: 3,
    },
    { tileSteps: 16 },
    { mode: "chunked" as const, chunks: 3 },
  ];
  for (const [s, strategy] of strategies.entries()) {
    for (const reverse of [false, true]) {
      const init = (s + Number(reverse)) % 2 === 1;
      const ssd = strategy.mode === "chunked";
      const kernels = await kernelsOf(
        `backward scan ${JSON.stringify({ reverse, init, strategy })}`,
        inputs,
        (t) => {
          const f = (v: Tensor) => reverse ? v : flip(v as Tensor<"b l">, "l") as Tensor;
          const dt = softplus(f(t.dt));
          // A scalar decay per step (the SSD form) or one per channel and state (Mamba-1's).
          const decay = ssd
            ? exp(neg(softplus(f(t.a))))
            : exp(einsum("b l d, b l n -> b l d n", neg(dt), f(t.B)));
          const h = scan("l", decay, einsum("b l d, b l n, b l d -> b l d n", dt, f(t.B), f(t.x)), {
            reverse,
            init: init ? t.h0 : undefined,
          });
          const y = einsum("b l d n, b l n -> b l d", h, f(t.C));
          return { y: f(silu(y)), state: finalState(h) };
        },
        sizes,
        { scan: strategy },
      );
      // Before: flipped, one more (a copy kernel for the flipped output).
      const want = "chunks" in strategy ? 3 : 1;
      assert.equal(kernels.length, want, kernels.map((k) => k.name).join(" "));
    }
  }
});

Deno.test("SS2D-style directions read one x·W_r through views; each W_Δ finishes in its scan", async () => {
  const inputs = {
    x: "b hh ww d",
    xs: "b hh ww e",
    Wr: "d r",
    Wd1: "r e",
    Wd2: "r e",
    bias: "e",
    Alog: "e n",
    B: "b hh ww n",
    C: "b hh ww n",
  } as const;
  const sizes = { b: 2, hh: 3, ww: 5, d: 67, r: 4, e: 6, n: 3 };
  const kernels = await kernelsOf("SS2D directions", inputs, (t) => {
    const xr = einsum("b hh ww d, d r -> b hh ww r", t.x, t.Wr);
    // Direction 1: row-major order; direction 2: column-major order, backwards.
    const inner = (v: Tensor) => v.axes[3];
    const rows = (v: Tensor) =>
      rearrange(v, `b hh ww ${inner(v)} -> b l=(hh ww) ${inner(v)}` as never) as Tensor;
    const cols = (v: Tensor) =>
      flip(
        rearrange(v, `b hh ww ${inner(v)} -> b l=(ww hh) ${inner(v)}` as never) as Tensor,
        "l" as never,
      ) as Tensor;
    const direction = (view: (v: Tensor) => Tensor, Wd: Tensor) => {
      const dt = softplus(add(einsum("b l r, r e -> b l e", view(xr), Wd), t.bias));
      const h = scan(
        "l",
        exp(einsum("b l e, e n -> b l e n", dt, neg(exp(t.Alog)))),
        einsum("b l e, b l n, b l e -> b l e n", dt, view(t.B), view(t.xs)),
      );
      return einsum("b l e n, b l n -> b l e", h, view(t.C));
    };
    return { y1: direction(rows, t.Wd1), y2: direction(cols, t.Wd2) };
  }, sizes);
  // x·W_r once, then one scan kernel per direction with its W_Δ loop inside (as before: this
  // locks in that views between the projection and the scan keep W_Δ in the scan).
  assert.deepEqual(kernels.map((k) => k.name.replace(/^k\d+_/, "")), [
    "contract_bhhwwr",
    "scan",
    "scan",
  ]);
});

Deno.test("stacked mLSTM layers sharing their gates: no scan merged with one it reads", async () => {
  const sizes = { b: 1, l: 17, h: 2, k: 3, v: 3 };
  const kernels = await kernelsOf("two mLSTM layers", MLSTM_INPUTS, (t) => {
    const y1 = mlstm(t, { reverse: false, init: true }).y;
    // The second layer's values are the first layer's outputs; its gates (decay) are the same.
    return { y: mlstm({ ...t, v: y1 }, { reverse: false, init: false }).y };
  }, sizes);
  // Layer 1's C and n with layer 2's n (which reads nothing of layer 1), then layer 2's C.
  // Before: 5.
  assert.equal(kernels.length, 2, kernels.map((k) => k.name).join(" "));
});

Deno.test("each direction's sum reading the other's flipped output: one of them fuses", async () => {
  const inputs = {
    u: "b l d",
    a: "b l d",
    B: "b l n",
    C1: "b l n",
    C2: "b l n",
    h0: "b d n",
  } as const;
  for (const init of [false, true]) {
    const kernels = await kernelsOf(`crossed flips, init ${init}`, inputs, (t) => {
      const decay = exp(einsum("b l d, b l n -> b l d n", neg(sigmoid(t.a)), t.B));
      const input = einsum("b l d, b l n -> b l d n", t.u, t.B);
      const fw = scan("l", decay, input, { init: init ? t.h0 : undefined });
      const bw = scan("l", decay, input, { reverse: true, init: init ? t.h0 : undefined });
      const sum = (h: Tensor, C: Tensor) => einsum("b l d n, b l n -> b l d", h, C);
      // Each sum is an epilogue of its own scan that reads the other scan's second sum.
      const yf = add(sum(fw, t.C1), flip(sum(bw, t.C2), "l"));
      const yb = add(sum(bw, t.C1), flip(sum(fw, t.C2), "l"));
      return { yf, yb };
    }, { b: 2, l: 13, d: 3, n: 4 });
    // The two scan kernels would read each other's outputs: one sum gets a kernel of its own.
    // Before: 2 kernels, the first reading an output of the second before it was written.
    assert.equal(kernels.length, 3, kernels.map((k) => k.name).join(" "));
  }
});

Deno.test("a deep residual stack's backward: kernels read a bounded number of buffers", async () => {
  // x_{i+1} = x_i + tanh(x_i·W_i): x_i's cotangent sums the contributions of every later
  // layer. Inlined where several kernels read it, layer i's kernels read L − i buffers, so
  // each layer compiled to different WGSL (one pipeline each); it now gets a buffer once it
  // reads more than 3, and layers repeat their kernels.
  const maxBindings: number[] = [];
  const distinct: number[] = [];
  const counts: number[] = [];
  for (const depth of [4, 9]) {
    const inputs: Record<string, string> = { x: "b l d", w: "b l d" };
    for (let i = 0; i < depth; i++) inputs[`W${i}`] = "d e";
    const kernels = await kernelsOf(`residual stack of ${depth}`, inputs, (t) => {
      const weights = Object.fromEntries(
        Array.from({ length: depth }, (_, i) => [`W${i}`, t[`W${i}`]]),
      );
      return grad((p: Record<string, Tensor>) => {
        let x = t.x;
        for (let i = 0; i < depth; i++) {
          const mixed = rename(einsum("b l d, d e -> b l e", x, p[`W${i}`]), "e", "d");
          x = add(x, tanh(mixed));
        }
        return einsum("b l d, b l d -> ", x, t.w);
      })(weights);
    }, { b: 2, l: 5, d: 7, e: 7 });
    maxBindings.push(Math.max(...kernels.map((k) => k.wgsl.match(/@binding/g)?.length ?? 0)));
    distinct.push(new Set(kernels.map((k) => pipelineKey(k.wgsl))).size);
    counts.push(kernels.length);
  }
  // Before: 7 and 12 bindings; 26 kernels at depth 9, all different.
  assert.ok(maxBindings[1] <= maxBindings[0], `largest binding counts: ${maxBindings}`);
  assert.ok(distinct[1] < 0.6 * counts[1], `depth 9: ${distinct[1]} texts in ${counts[1]} kernels`);
});

Deno.test("a short contraction of costly operands feeding a scan is a matmul, not a loop in it", async () => {
  // Mamba-2's chunked backward sums B·x over each chunk's steps, both behind SiLU: inlined into
  // the chunk scan, every (p, n) state recomputed its whole row of both (20 ms a layer at the
  // 130M shape). The cheap Δ projection of the tests above stays inline.
  const costly = (v: Tensor) => silu(add(softplus(v), tanh(abs(v))));
  const kernels = await kernelsOf(
    "chunk sums",
    { x: "b c q p", B: "b c q n", a: "b c" },
    (t) => {
      const sums = einsum("b c q p, b c q n -> b c p n", costly(t.x), costly(t.B));
      return { h: scan("c", exp(neg(abs(t.a))), sums) };
    },
    { b: 2, c: 5, q: 7, p: 6, n: 5 },
  );
  assert.equal(kernels.length, 2, kernels.map((k) => k.name).join(", "));
  assert.match(kernels[0].wgsl.split("\n")[0], /matmul/);
  assert.doesNotMatch(kernels[1].wgsl, /vacc/);
});

Deno.test("a matmul operand with a costly prologue gets a buffer; a cheap one stays a prologue", async () => {
  // The prologue is evaluated once per output tile along the other side (N / 128 = 5 times
  // here): a chain of 20 ops is written once instead; a norm-like 3 ops is not.
  const costly = (v: Tensor) => {
    let x = v;
    for (let i = 0; i < 5; i++) x = add(tanh(x), sigmoid(abs(x)));
    return x;
  };
  const sizes = { t: 37, k: 19, n: 640 };
  const heavy = await kernelsOf(
    "costly operand",
    { x: "t k", w: "k n" },
    (t) => ({ y: einsum("t k, k n -> t n", costly(t.x), t.w) }),
    sizes,
  );
  assert.equal(heavy.length, 2, heavy.map((k) => k.name).join(", "));
  assert.match(heavy[0].wgsl.split("\n")[0], /elementwise/);
  const light = await kernelsOf(
    "cheap operand",
    { x: "t k", w: "k n" },
    (t) => ({ y: einsum("t k, k n -> t n", add(tanh(t.x), abs(t.x)), t.w) }),
    sizes,
  );
  assert.equal(light.length, 1, light.map((k) => k.name).join(", "));
  // A causal conv's four taps count as the 8 multiplies and adds they are (with their loads):
  // Mamba-2's gated norm recomputed from the conv, 9 ops besides it, gets a buffer.
  const conv = await kernelsOf(
    "conv operand",
    { x: "t k", cw: "k j", z: "t k", w: "k n" },
    (t) => {
      const gated = mul(add(silu(conv1d(t.x, t.cw, "t", "j")), mul(t.x, 0.5)), silu(t.z));
      const op = mul(add(tanh(gated), sigmoid(gated)), gated);
      return { y: einsum("t k, k n -> t n", op, t.w) };
    },
    { ...sizes, j: 4 },
  );
  assert.equal(conv.length, 2, conv.map((k) => k.name).join(", "));
  assert.match(conv[0].wgsl.split("\n")[0], /elementwise/);
});

Deno.test("a costly subtree shared by a matmul and another kernel gets a buffer", async () => {
  // N = 96 is one output tile: the matmul rule alone leaves the operand a prologue. Read by a
  // second kernel too, the 20-op chain would be evaluated in both (in every tile of the
  // matmul): Mamba-2's backward cotangent through the gated norm was recomputed in 10 kernels of
  // a layer, 7 of them tiled. A 3-op shared operand is still recomputed.
  const costly = (v: Tensor) => {
    let x = v;
    for (let i = 0; i < 5; i++) x = add(tanh(x), sigmoid(abs(x)));
    return x;
  };
  const sizes = { t: 37, k: 19, n: 96 };
  const shared = (op: (v: Tensor) => Tensor) => (t: { x: Tensor<"t k">; w: Tensor<"k n"> }) => {
    const a = op(t.x);
    return { y: einsum("t k, k n -> t n", a, t.w), s: sum(a, "k") };
  };
  const heavy = await kernelsOf("shared costly", { x: "t k", w: "k n" }, shared(costly), sizes);
  assert.equal(heavy.length, 3, heavy.map((k) => k.name).join(", "));
  assert.match(heavy[0].wgsl.split("\n")[0], /elementwise/);
  const cheap = (v: Tensor) => add(tanh(v), abs(v));
  const light = await kernelsOf("shared cheap", { x: "t k", w: "k n" }, shared(cheap), sizes);
  assert.equal(light.length, 2, light.map((k) => k.name).join(", "));
});

Deno.test("a norm read by a wide matmul gets a buffer; by a narrow one or in decode it stays", async () => {
  // A residual sum and RMSNorm (about 6 operations) in the prologue of a product with N = 2100
  // (17 reloads of 128 columns) is written once; with N = 1000 (8 reloads), or for 3 rows
  // (a matrix-vector kernel reads them once), it stays a prologue.
  const norm = (t: { x: Tensor<"t k">; r: Tensor<"t k">; g: Tensor<"k"> }) =>
    rmsnorm(add(t.x, t.r), "k", t.g);
  const inputs = { x: "t k", r: "t k", g: "k", w: "k n" } as const;
  const kinds = async (t: number, n: number) =>
    (await kernelsOf(
      `norm t=${t} n=${n}`,
      inputs,
      (v) => ({ y: einsum("t k, k n -> t n", norm(v), v.w) }),
      { t, k: 37, n },
    )).map((k) => k.wgsl.split("\n")[0].replace(/^\/\/ k\d+_\w+: /, "").split(" ")[0]);
  assert.deepEqual(await kinds(130, 2100), ["reduce", "elementwise,", "matmul"]);
  assert.deepEqual(await kinds(130, 1000), ["reduce", "matmul"]);
  const decode = await kinds(3, 2100);
  assert.ok(!decode.includes("elementwise,"), decode.join(", "));
});

Deno.test("a cheap subtree a long scan reads many times per element gets a buffer", async () => {
  // B behind a 4-tap conv and SiLU (about 12 operations and reads) feeds a scan over 70 steps
  // of d × 5 states and a reduction. With d = 20 the scan kernel reads each B element for
  // 20 channels (Mamba-2's B and C, shared by every head): B gets a buffer. With d = 8 it
  // stays a prologue. Values against the interpreter either way.
  const kinds = async (d: number) =>
    (await kernelsOf(
      `conv'd B, d=${d}`,
      { x: "b l d", B: "b l n", w: "n j", a: "b l d" },
      (t) => {
        const Bc = silu(conv1d(t.B, t.w, "l", "j"));
        const h = scan("l", exp(neg(abs(t.a))), einsum("b l d, b l n -> b l d n", t.x, Bc));
        return { y: einsum("b l d n, b l n -> b l d", h, Bc), s: sum(Bc, "n") };
      },
      { b: 2, l: 70, d, n: 5, j: 4 },
    )).map((k) => k.wgsl.split("\n")[0].replace(/^\/\/ k\d+_\w+: /, "").split(" ")[0]);
  assert.ok((await kinds(20)).includes("elementwise,"), "d = 20: B gets a buffer");
  assert.ok(!(await kinds(8)).includes("elementwise,"), "d = 8: B stays a prologue");
});

Deno.test("one-step scan: a prologue shared by every channel gets a buffer once the lanes are many", async () => {
  // A decode-shaped scan (l = 1) whose B goes through a short chain of its own (as Mamba-2's
  // causal conv and SiLU): every lane of every channel would recompute it, so with this many
  // lanes (2 × 1400 channels × 1040 states) the chain gets a kernel and the scan reads its
  // buffer, the materialized SiLU included (scans once spelled a unary themselves even when it
  // had a buffer). With 3 channels it stays inline: one kernel.
  const inputs = { x: "b l d", B0: "b l n", B1: "b l n", w: "n", C: "b l n", h0: "b d n" } as const;
  const fn = (t: { [K in keyof typeof inputs]: Tensor }) => {
    const B = silu(add(mul(t.B0, t.w), mul(t.B1, 0.5)));
    const h = scan("l", 0.9, einsum("b l n, b l d -> b l d n", B, t.x), { init: t.h0 });
    return { y: einsum("b l d n, b l n -> b l d", h, t.C), last: finalState(h) };
  };
  const many = await kernelsOf("many lanes", inputs, fn, { b: 2, l: 1, d: 1400, n: 1040 });
  assert.equal(many.length, 2, many.map((k) => k.name).join(" "));
  const scanKernel = many.find((k) => k.name.includes("scan"))!;
  assert.ok(!/silu|exp\(-/.test(scanKernel.wgsl.split("fn main")[1]), "the scan recomputes B");
  const few = await kernelsOf("few lanes", inputs, fn, { b: 1, l: 1, d: 3, n: 5 });
  assert.equal(few.length, 1, few.map((k) => k.name).join(" "));
});
