// attention: the fused kernel (prefill, decode split over keys or in ways) against the float64 interpreter on
// awkward sizes; the interpreter against a plain loop; masks, GQA, kernel counts, errors, and the
// hand-written softmax(QKᵀ)V recognized as the same kernel.
import assert from "node:assert/strict";
import { attention, type AttentionOptions } from "../dsl/attention.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { softmax, sum } from "../dsl/reduce.ts";
import { broadcast, div, mul, where } from "../dsl/elementwise.ts";
import { concat, slice } from "../dsl/views.ts";
import { causalMask } from "../dsl/index_ops.ts";
import { einsum } from "../dsl/einsum.ts";
import { rename } from "../dsl/axis_ops.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import { type AttentionStrategy, planAttention } from "../codegen/attention_shapes.ts";
import type { DeviceLimits } from "../codegen/limits.ts";
import type { AttentionNode } from "../dsl/ir.ts";
import { compile } from "../runtime/compile.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { interpret } from "../runtime/interpreter.ts";
import { assertClose, freshSeed, randomInputs, rng } from "./util.ts";

/** Sizes: batch b, key/value heads g, query heads per group r, queries t, keys s, features d. */
type Sizes = { b: number; g: number; r: number; t: number; s: number; d: number };

const GQA = { q: "b g r t d", k: "b g s d", v: "b g s d" } as const;

/** A large GPU's limits, for plans made without a device. */
const LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 64,
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 2 ** 31 - 4,
  maxBufferSize: 2 ** 40,
  subgroups: true,
  subgroupMinSize: 32,
};

/**
 * Runs attention on the GPU and the interpreter (`runs` times, fresh inputs each: split merges
 * keep state from one run to the next); returns the kernel names.
 */
async function check(
  sizes: Sizes,
  options: AttentionOptions,
  strategy?: AttentionStrategy,
  runs = 1,
): Promise<string[]> {
  const seed = freshSeed();
  const prog = await compile(
    GQA,
    (x: Record<"q" | "k" | "v", Tensor>) => attention(x.q, x.k, x.v, options),
    sizes,
    { backend: "gpu", attention: strategy },
  );
  try {
    const next = rng(seed);
    const names = prog.kernels.map((k) => k.name);
    for (let run = 0; run < runs; run++) {
      const inputs = randomInputs(prog.graph, next) as Record<string, Float32Array>;
      // Larger queries make the softmax peaked, so the masks matter.
      inputs.q = inputs.q.map((x) => 3 * x);
      const want = prog.interpret(inputs);
      const got = await prog.run(inputs);
      const ctx = `seed ${seed} run ${run} ${JSON.stringify(sizes)} ${JSON.stringify(options)} ` +
        `${JSON.stringify(strategy ?? {})} [${names}]`;
      assertClose(got, want, 1e-4, ctx);
    }
    return names;
  } finally {
    prog.destroy();
  }
}

Deno.test("attention interpreter: matches a plain loop (causal GQA with a cache, window)", () => {
  const sizes: Sizes = { b: 1, g: 2, r: 3, t: 4, s: 9, d: 5 };
  const opts: AttentionOptions = { causal: true, window: 3, scale: 0.8 };
  const graph = trace(GQA, (x) => attention(x.q, x.k, x.v, opts), sizes);
  const inputs = randomInputs(graph, rng(freshSeed())) as Record<string, Float32Array>;
  const got = interpret(graph, inputs).out;
  const { q, k, v } = inputs;
  const { g, r, t: T, s: S, d: D } = sizes;
  for (let gi = 0; gi < g; gi++) {
    for (let ri = 0; ri < r; ri++) {
      for (let t = 0; t < T; t++) {
        // Query t sits at key position t + S − T; it sees the last 3 keys up to there.
        const keys = [];
        for (let s = 0; s < S; s++) if (s <= t + S - T && s > t + S - T - 3) keys.push(s);
        const w = keys.map((s) => {
          let dot = 0;
          for (let j = 0; j < D; j++) {
            dot += q[(((gi * r + ri) * T + t) * D) + j] * k[((gi * S + s) * D) + j];
          }
          return Math.exp(0.8 * dot);
        });
        const z = w.reduce((a, b) => a + b, 0);
        for (let j = 0; j < D; j++) {
          const want = keys.reduce((a, s, i) => a + w[i] * v[(gi * S + s) * D + j], 0) / z;
          const at = (((gi * r + ri) * T + t) * D) + j;
          assert.ok(Math.abs(got[at] - want) < 1e-9, `at ${at}: ${got[at]} vs ${want}`);
        }
      }
    }
  }
});

Deno.test("attention prefill: causal, non-causal, GQA, d = 5 and 16, t = 1, 7, 37", async () => {
  for (
    const [sizes, opts] of [
      [{ b: 2, g: 1, r: 1, t: 7, s: 7, d: 5 }, { causal: true }],
      [{ b: 1, g: 2, r: 3, t: 37, s: 37, d: 16 }, { causal: true }],
      [{ b: 1, g: 2, r: 1, t: 37, s: 37, d: 5 }, { causal: false, scale: 0.3 }],
      [{ b: 1, g: 1, r: 3, t: 1, s: 1, d: 16 }, { causal: true }],
    ] as [Sizes, AttentionOptions][]
  ) {
    const names = await check(sizes, opts, { splits: 1 });
    assert.equal(names.length, 1, `one kernel, got ${names}`);
  }
});

Deno.test("attention prefill: sliding window, several query tiles and key tiles", async () => {
  // 37 queries × 3 heads = 111 rows: two tiles of 64; keys in tiles of 8 (window skips tiles).
  const names = await check(
    { b: 1, g: 2, r: 3, t: 37, s: 37, d: 5 },
    { causal: true, window: 6 },
    { keysPerTile: 8 },
  );
  assert.equal(names.length, 1, `one kernel, got ${names}`);
});

Deno.test("attention decode: t < s with a cache, unsplit, split and merged inline or by a kernel", async () => {
  const cached: Sizes = { b: 1, g: 2, r: 3, t: 2, s: 41, d: 16 };
  assert.equal((await check(cached, { causal: true }, { splits: 1 })).length, 1);
  // Key splits merged in the kernel by the last split: one kernel; three runs, so the counters'
  // parity and the words' tags alternate and stale words must be refused.
  const split = { splits: 5, keysPerTile: 4 };
  let names = await check(cached, { causal: true }, split, 3);
  assert.equal(names.length, 1, `one kernel, got ${names}`);
  // Merged by a second kernel.
  names = await check(cached, { causal: true }, { ...split, combine: "kernel" });
  assert.equal(names.length, 2, `split + combine, got ${names}`);
  // Several query tiles and batch positions: a counter and words per row tile.
  names = await check({ b: 2, g: 1, r: 3, t: 2, s: 40, d: 8 }, { causal: true }, {
    ...split,
    rowsPerWorkgroup: 2,
  }, 2);
  assert.equal(names.length, 1, `one kernel, got ${names}`);
  // Window reaching back past some splits (they contribute nothing), both merges.
  const windowed: Sizes = { b: 2, g: 1, r: 1, t: 1, s: 37, d: 5 };
  for (const combine of ["inline", "kernel"] as const) {
    await check(windowed, { causal: true, window: 7 }, { splits: 4, keysPerTile: 4, combine }, 2);
  }
});

Deno.test("attention split merge: no polls, so the last split walks every key itself", async () => {
  // splitSpins 0 reads no word: the merging workgroup always falls back to the full walk.
  const cached: Sizes = { b: 1, g: 2, r: 3, t: 2, s: 41, d: 16 };
  const names = await check(cached, { causal: true }, {
    splits: 5,
    keysPerTile: 4,
    splitSpins: 0,
  }, 3);
  assert.equal(names.length, 1, `one kernel, got ${names}`);
  await check({ b: 2, g: 1, r: 1, t: 1, s: 37, d: 5 }, { causal: true, window: 7 }, {
    splits: 4,
    keysPerTile: 4,
    splitSpins: 0,
  });
  await assert.rejects(
    () => check(cached, { causal: true }, { splits: 5, splitSpins: -1 }),
    /splitSpins must be a whole number ≥ 0, got -1/,
  );
  await assert.rejects(
    () => check(cached, { causal: true }, { splits: 5, combine: "tree" as never }),
    /combine must be "inline" or "kernel", got tree/,
  );
});

Deno.test("attention decode: one kernel by default, split over keys when long, else in ways", async () => {
  const planOf = (sizes: Sizes) => {
    const graph = trace(GQA, (x) => attention(x.q, x.k, x.v, { causal: true }), sizes);
    const ours = graph.outputs.out as AttentionNode;
    assert.equal(ours.kind, "attention");
    return planAttention(ours, LIMITS);
  };
  // Two query rows and 600 keys (19 tiles): 4 splits of at least 4 tiles, merged inline by the
  // last, in groups of the rows' threads.
  const long: Sizes = { b: 1, g: 1, r: 2, t: 1, s: 600, d: 16 };
  const plan = planOf(long);
  assert.ok(plan.splits === 4 && plan.combine === "inline", JSON.stringify(plan));
  assert.ok(plan.ways === 1 && plan.mergeGroups > 1, JSON.stringify(plan));
  let names = await check(long, { causal: true }, undefined, 2);
  assert.equal(names.length, 1, `one kernel, got ${names}`);
  // 100 keys (4 tiles): too few to split; the few rows get a full workgroup of ways.
  const short: Sizes = { b: 1, g: 1, r: 2, t: 1, s: 100, d: 16 };
  assert.ok(planOf(short).splits === 1 && planOf(short).ways > 1, JSON.stringify(planOf(short)));
  names = await check(short, { causal: true });
  assert.equal(names.length, 1, `one kernel, got ${names}`);
});

Deno.test("attention ways: forced ways at awkward sizes, with windows, splits and scalar units", async () => {
  const cases: [Sizes, AttentionOptions, AttentionStrategy][] = [
    // 41 keys in tiles of 8: the last tile partial; two rows per group, 3 queries.
    [{ b: 1, g: 2, r: 3, t: 3, s: 41, d: 16 }, { causal: true }, { ways: 4, keysPerTile: 8 }],
    // Scalar units (d = 5), a window shorter than a way's share of a tile.
    [{ b: 2, g: 1, r: 1, t: 1, s: 37, d: 5 }, { causal: true, window: 3 }, {
      ways: 8,
      keysPerTile: 8,
    }],
    // Ways and key splits together: each split's ways merge, then the splits (inline, or by
    // the combine kernel).
    [{ b: 1, g: 1, r: 2, t: 2, s: 53, d: 12 }, { causal: true }, {
      ways: 2,
      splits: 3,
      keysPerTile: 4,
    }],
    [{ b: 1, g: 1, r: 2, t: 2, s: 53, d: 12 }, { causal: true }, {
      ways: 2,
      splits: 3,
      keysPerTile: 4,
      combine: "kernel",
    }],
    // Non-causal prefill with ways (more rows than one way's tile).
    [{ b: 1, g: 1, r: 2, t: 9, s: 11, d: 8 }, { causal: false, scale: 0.7 }, {
      ways: 2,
      keysPerTile: 4,
    }],
    // Ways without the next tile's prefetch; prefill (one way) with it.
    [{ b: 1, g: 2, r: 2, t: 1, s: 29, d: 8 }, { causal: true }, {
      ways: 4,
      keysPerTile: 8,
      prefetch: false,
    }],
    [{ b: 1, g: 1, r: 3, t: 13, s: 13, d: 12 }, { causal: true, window: 5 }, {
      keysPerTile: 4,
      prefetch: true,
    }],
  ];
  for (const [sizes, opts, strategy] of cases) await check(sizes, opts, strategy);
  // Two lanes per row (shuffles inside each way), 5 vec4 units: the last held by one lane.
  const { features } = await getGpu();
  if (features.subgroups && features.subgroupMinSize >= 2) {
    await check({ b: 1, g: 1, r: 3, t: 1, s: 45, d: 20 }, { causal: true }, {
      ways: 4,
      lanes: 2,
      keysPerTile: 8,
    });
  }
  // Too many ways for the tile: one clear line.
  await assert.rejects(
    () =>
      check({ b: 1, g: 1, r: 1, t: 1, s: 9, d: 4 }, { causal: true }, { ways: 8, keysPerTile: 4 }),
    /ways 8 must be a power of two ≤ 4/,
  );
});

Deno.test("attention: with its projections, prefill is one kernel per projection plus one", async () => {
  // x·Wq, x·Wk, x·Wv (three matmuls), attention (one kernel), then the output projection.
  const spec = { x: "b t e", wq: "e g r d", wk: "e g d", wv: "e g d", wo: "g r d f" } as const;
  // e > 64: the projections are matmuls (shorter ones would be inlined into the loads).
  const sizes = { b: 1, t: 9, e: 80, g: 2, r: 2, d: 4, f: 8 };
  const prog = await compile(
    spec,
    (p) => {
      const q = einsum("b t e, e g r d -> b g r t d", p.x, p.wq);
      const k = rename(einsum("b t e, e g d -> b g t d", p.x, p.wk), "t", "s");
      const v = rename(einsum("b t e, e g d -> b g t d", p.x, p.wv), "t", "s");
      return einsum("b g r t d, g r d f -> b t f", attention(q, k, v, { causal: true }), p.wo);
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.equal(names.filter((n) => n.includes("attention")).length, 1, `${names}`);
    assert.equal(names.length, 5, `3 projections + attention + output projection: ${names}`);
    const inputs = randomInputs(prog.graph, rng(freshSeed())) as Record<string, Float32Array>;
    assertClose(await prog.run(inputs), prog.interpret(inputs), 1e-4, `${names}`);
  } finally {
    prog.destroy();
  }
});

Deno.test("attention: wrong operands name the op, the operand and the axes", () => {
  const sizes = { b: 1, g: 2, r: 3, t: 4, s: 5, d: 6, e: 7, h: 2 };
  const bad = (spec: Record<string, string>, opts: AttentionOptions, pattern: RegExp) =>
    assert.throws(
      () => trace(spec, (x: Record<string, Tensor>) => attention(x.q, x.k, x.v, opts), sizes),
      pattern,
    );
  bad({ q: "b g r t e", k: "b g s d", v: "b g s d" }, {}, /attention: q .* and k .* same feature/);
  bad(
    { q: "b h r t d", k: "b g s d", v: "b g s d" },
    {},
    /attention: q .* lacks the batch axis "g"/,
  );
  bad({ q: "b g r t d", k: "b g s d", v: "b s d" }, {}, /attention: v .* must have k's axes/);
  bad({ q: "b g r h t d", k: "b g s d", v: "b g s d" }, {}, /at most one/);
  bad({ q: "b g r s d", k: "b g t d", v: "b g t d" }, { causal: true }, /at least as many keys/);
  bad({ q: "b g r t d", k: "b g s d", v: "b g s d" }, { window: 2 }, /window 2 needs causal/);
  bad({ q: "b g r t d", k: "b g s d", v: "b g s e" }, { scale: NaN }, /scale must be a finite/);
  // A `b t h d` layout for both (heads second-last) would attend over heads: refused.
  bad({ q: "b t h d", k: "b t h d", v: "b t h d" }, {}, /both have "h" second-last; name the key/);
  assert.throws(
    () =>
      trace(
        { q: "b g r t d", k: "b g s d", v: "b g s d", z: "g t" },
        (x) => attention(x.q, x.k, x.v, { sinks: x.z }),
        sizes,
      ),
    /attention: sinks \[g t\] may only have q's head and batch axes \[b g r\], not \[t\]/,
  );
});

/** softmax(scale·q·kᵀ, masked)·v written by hand in the DSL. */
function handWritten(x: Record<"q" | "k" | "v", Tensor>, sizes: Sizes, window?: number) {
  const scores = mul(einsum("b g r t d, b g s d -> b g r t s", x.q, x.k), 0.5);
  const mask = causalMask("t", "s", { t: sizes.t, s: sizes.s }, {
    offset: sizes.s - sizes.t,
    window,
  });
  const w = softmax(where(mask, scores, -Infinity), "s");
  return einsum("b g r t s, b g s d -> b g r t d", w, x.v);
}

Deno.test("attention pattern: hand-written softmax(QKᵀ)V runs as the one attention kernel", async () => {
  for (
    const [sizes, window] of [
      [{ b: 1, g: 2, r: 3, t: 7, s: 7, d: 5 }, undefined],
      [{ b: 2, g: 1, r: 1, t: 3, s: 11, d: 16 }, 4],
    ] as [Sizes, number | undefined][]
  ) {
    const prog = await compile(GQA, (x) => handWritten(x, sizes, window), sizes, {
      backend: "gpu",
    });
    try {
      const names = prog.kernels.map((k) => k.name);
      assert.deepEqual(names.length, 1, `one kernel: ${names}`);
      assert.ok(names[0].includes("attention"), `${names}`);
      // The interpreter runs the hand-written graph (not the rewrite): an independent check.
      const inputs = randomInputs(prog.graph, rng(freshSeed())) as Record<string, Float32Array>;
      const want = interpret(prog.graph, inputs).out;
      assertClose(await prog.run(inputs), want, 1e-4, `${JSON.stringify(sizes)} ${names}`);
      // The same as the op.
      const op = trace(
        GQA,
        (x) => attention(x.q, x.k, x.v, { causal: true, window, scale: 0.5 }),
        sizes,
      );
      assertClose(interpret(op, inputs).out, want, 1e-12, "op vs hand-written");
    } finally {
      prog.destroy();
    }
  }
});

Deno.test("attention pattern: a mask that is not the causal band is left alone", async () => {
  const sizes: Sizes = { b: 1, g: 1, r: 1, t: 5, s: 5, d: 4 };
  const prog = await compile(
    GQA,
    (x) => {
      const scores = einsum("b g r t d, b g s d -> b g r t s", x.q, x.k);
      const w = softmax(where(causalMask("t", "s", 5, { offset: -1 }), scores, -1e9), "s");
      // Row 0 keeps no key: softmax of all −1e9 is uniform, not attention's band.
      return einsum("b g r t s, b g s d -> b g r t d", w, x.v);
    },
    sizes,
    { backend: "gpu" },
  );
  try {
    const names = prog.kernels.map((k) => k.name);
    assert.ok(!names.some((n) => n.includes("attention")), `${names}`);
  } finally {
    prog.destroy();
  }
});

Deno.test("attention lanes: several threads per row share its features (shuffles), d not a multiple", async () => {
  const { features } = await getGpu();
  const most = features.subgroups ? Math.min(features.subgroupMinSize, 8) : 1;
  assert.ok(most >= 2, "this test wants subgroups (lavapipe and the GPUs have them)");
  for (const lanes of [2, 4, 8].filter((l) => l <= most)) {
    await check({ b: 1, g: 2, r: 3, t: 9, s: 9, d: 5 }, { causal: true }, { lanes });
    await check({ b: 1, g: 1, r: 2, t: 3, s: 30, d: 16 }, { causal: true, window: 11 }, {
      lanes,
      splits: 3,
      keysPerTile: 4,
    });
  }
  // Split merges with lanes: 5 vec4 units over 2 lanes (the last unit on one lane), and scalar
  // units (d = 5) over 2 lanes.
  await check({ b: 1, g: 1, r: 3, t: 1, s: 45, d: 20 }, { causal: true }, {
    lanes: 2,
    splits: 4,
    keysPerTile: 4,
  }, 2);
  await check({ b: 2, g: 1, r: 2, t: 1, s: 23, d: 5 }, { causal: true }, {
    lanes: 2,
    splits: 3,
    keysPerTile: 4,
  }, 2);
  // Without subgroups: one lane per row, every feature in its registers (d = 40 > 32).
  await check({ b: 1, g: 1, r: 2, t: 5, s: 5, d: 40 }, { causal: false }, { lanes: 1 });
  // The default for d = 40 takes two lanes where subgroups exist.
  await check({ b: 1, g: 1, r: 2, t: 5, s: 5, d: 40 }, { causal: true });
  // d = 16 runs vec4 units by default; the scalar form too when forced.
  await check({ b: 1, g: 2, r: 2, t: 6, s: 6, d: 16 }, { causal: true }, { lanes: 2, vec4: false });
  await check({ b: 1, g: 2, r: 2, t: 6, s: 6, d: 12 }, { causal: true }, { lanes: 2, vec4: true });
});

/** Σ w ∘ attention(q, k, v) and its gradients (of `wrt`), by the op or written by hand. */
function gradProgram(
  sizes: Sizes,
  window: number | undefined,
  byHand: boolean,
  wrt: readonly ("q" | "k" | "v")[] = ["q", "k", "v"],
) {
  return (x: Record<"q" | "k" | "v" | "w", Tensor>) => {
    const f = valueAndGrad((p: Record<string, Tensor>) => {
      const [q, k, v] = [p.q ?? x.q, p.k ?? x.k, p.v ?? x.v];
      const o = byHand
        ? handWritten({ q, k, v }, sizes, window)
        : attention(q, k, v, { causal: true, window, scale: 0.5 });
      return sum(mul(o, x.w), "b g r t d");
    });
    const [value, grads] = f(Object.fromEntries(wrt.map((n) => [n, x[n]])));
    return { value, ...Object.fromEntries(wrt.map((n) => [`d${n}`, grads[n]])) };
  };
}

type GradCase = {
  sizes: Sizes;
  window?: number;
  wrt?: readonly ("q" | "k" | "v")[];
  strategy?: AttentionStrategy;
};

/** The op's gradients: the interpreter against autodiff of the hand-written formula, then the GPU. */
async function checkGrad(c: GradCase): Promise<string[]> {
  const spec = { ...GQA, w: "b g r t d" } as const;
  const seed = freshSeed();
  const byOp = gradProgram(c.sizes, c.window, false, c.wrt);
  const byHand = trace(spec, gradProgram(c.sizes, c.window, true, c.wrt), c.sizes);
  const inputs = randomInputs(byHand, rng(seed)) as Record<string, Float32Array>;
  inputs.q = inputs.q.map((x) => 3 * x);
  const want = interpret(byHand, inputs);
  const got = interpret(trace(spec, byOp, c.sizes), inputs);
  const ctx = `seed ${seed} ${JSON.stringify(c)}`;
  for (const name of Object.keys(want)) {
    assertClose(got[name], want[name], 1e-12, `interpreter ${name} ${ctx}`);
  }
  const prog = await compile(spec, byOp, c.sizes, { backend: "gpu", attention: c.strategy });
  try {
    const gpu = await prog.run(inputs) as Record<string, Float32Array>;
    const names = prog.kernels.map((k) => k.name);
    for (const name of Object.keys(want)) {
      assertClose(gpu[name], want[name], 1e-4, `gpu ${name} ${ctx} [${names}]`);
    }
    return names;
  } finally {
    prog.destroy();
  }
}

Deno.test("attention gradient: fused dQ and dK/dV kernels against autodiff of the formula", async () => {
  // GQA with a cache and a window; dQ is one kernel, dK and dV share the stats and key kernels.
  const names = await checkGrad({ sizes: { b: 1, g: 2, r: 3, t: 4, s: 9, d: 5 }, window: 3 });
  const grads = names.filter((n) => n.includes("attention_grad"));
  assert.equal(grads.length, 3, `dq, stats, dkv: ${names}`);
  // Several row and key tiles (111 rows, 70 keys), several lanes, small key tiles.
  await checkGrad({
    sizes: { b: 1, g: 1, r: 3, t: 37, s: 70, d: 16 },
    strategy: { lanes: 4, keysPerTile: 8 },
  });
  await checkGrad({ sizes: { b: 2, g: 1, r: 1, t: 7, s: 7, d: 4 }, strategy: { lanes: 1 } });
});

Deno.test("attention gradient: only dv, or only dq", async () => {
  const sizes: Sizes = { b: 1, g: 2, r: 2, t: 5, s: 6, d: 6 };
  const dv = await checkGrad({ sizes, wrt: ["v"], window: 4 });
  assert.equal(dv.filter((n) => n.includes("attention_grad")).length, 2, `stats, dv: ${dv}`);
  const dq = await checkGrad({ sizes, wrt: ["q"] });
  assert.equal(dq.filter((n) => n.includes("attention_grad")).length, 1, `dq: ${dq}`);
});

Deno.test("attention layouts (and gradients): permuted axes, no group axis, dv ≠ dk, several batch axes", async () => {
  const cases: [
    Record<string, string>,
    Record<string, number>,
    AttentionOptions,
    AttentionStrategy?,
  ][] = [
    // q's group axis first and batch axes in another order; v's feature "e" of another size.
    [
      { q: "r g b t d", k: "b g s d", v: "g b s e" },
      { b: 2, g: 2, r: 3, t: 5, s: 8, d: 4, e: 7 },
      { causal: true },
    ],
    // No group axis (multi-head), dv ≠ dk, splits.
    [
      { q: "b h t d", k: "b h s d", v: "b h s e" },
      { b: 1, h: 3, t: 9, s: 9, d: 8, e: 5 },
      { causal: true, window: 4 },
      { splits: 2, keysPerTile: 4 },
    ],
    // Two batch axes besides the heads, non-causal, scalar units.
    [
      { q: "n b g r t d", k: "n b g s d", v: "n b g s d" },
      { n: 2, b: 2, g: 1, r: 2, t: 3, s: 4, d: 6 },
      { causal: false, scale: 0.9 },
    ],
  ];
  for (const [spec, sizes, opts, strategy] of cases) {
    const seed = freshSeed();
    // The output and the gradients of Σ o² (the fused backward kernels on these layouts too).
    const prog = await compile(
      spec,
      (x: Record<string, Tensor>) => {
        const o = attention(x.q, x.k, x.v, opts);
        const f = valueAndGrad((p: Record<string, Tensor>) => {
          const y = attention(p.q, p.k, p.v, opts);
          return sum(mul(y, y), y.node.axes.join(" "));
        });
        const [, g] = f({ q: x.q, k: x.k, v: x.v });
        return { o, dq: g.q, dk: g.k, dv: g.v };
      },
      sizes,
      { backend: "gpu", attention: strategy },
    );
    try {
      const inputs = randomInputs(prog.graph, rng(seed)) as Record<string, Float32Array>;
      const want = prog.interpret(inputs) as Record<string, Float64Array>;
      const got = await prog.run(inputs) as Record<string, Float32Array>;
      const ctx = `seed ${seed} ${JSON.stringify(spec)} [${prog.kernels.map((k) => k.name)}]`;
      for (const name of ["o", "dq", "dk", "dv"]) {
        assertClose(got[name], want[name], 1e-4, `${name} ${ctx}`);
      }
    } finally {
      prog.destroy();
    }
  }
});

Deno.test("attention pattern: scale by division, no mask, a large finite mask fill", async () => {
  const sizes: Sizes = { b: 1, g: 1, r: 2, t: 6, s: 6, d: 4 };
  const variants = [
    (x: Record<"q" | "k" | "v", Tensor>) => {
      const scores = div(einsum("b g r t d, b g s d -> b g r t s", x.q, x.k), 2);
      return einsum("b g r t s, b g s d -> b g r t d", softmax(scores, "s"), x.v);
    },
    (x: Record<"q" | "k" | "v", Tensor>) => {
      const scores = einsum("b g r t d, b g s d -> b g r t s", x.q, x.k);
      const w = softmax(where(causalMask("t", "s", 6), scores, -1e9), "s");
      return einsum("b g r t s, b g s d -> b g r t d", w, x.v);
    },
  ];
  for (const fn of variants) {
    const prog = await compile(GQA, fn, sizes, { backend: "gpu" });
    try {
      const names = prog.kernels.map((k) => k.name);
      assert.equal(names.length, 1, `${names}`);
      const inputs = randomInputs(prog.graph, rng(freshSeed())) as Record<string, Float32Array>;
      assertClose(await prog.run(inputs), interpret(prog.graph, inputs).out, 1e-4, `${names}`);
    } finally {
      prog.destroy();
    }
  }
});

/** Attention with sinks written by hand: a column of sink logits joins the softmax, then leaves. */
function handWithSinks(x: Record<"q" | "k" | "v" | "sinks", Tensor>, sizes: Sizes) {
  const scores = mul(einsum("b g r t d, b g s d -> b g r t s", x.q, x.k), 0.5);
  const mask = causalMask("t", "s", { t: sizes.t, s: sizes.s }, { offset: sizes.s - sizes.t });
  const col = broadcast(x.sinks, "b g r t z", { b: sizes.b, t: sizes.t, z: 1 });
  const all = concat([where(mask, scores, -Infinity), col], ["s", "z"], "s2");
  const p = slice(softmax(all, "s2"), "s2", 0, sizes.s, "s");
  return einsum("b g r t s, b g s d -> b g r t d", p, x.v);
}

Deno.test("attention sinks: forward and gradients (q, k, v, sinks) against the hand-written form", async () => {
  const spec = { ...GQA, sinks: "g r", w: "b g r t d" } as const;
  for (
    const [sizes, strategy] of [
      [{ b: 2, g: 2, r: 3, t: 5, s: 9, d: 4 }, undefined],
      // Decode with key splits: the sink joins split 0 only.
      [{ b: 1, g: 1, r: 2, t: 1, s: 30, d: 8 }, { splits: 3, keysPerTile: 4 }],
      // Decode in ways (the default): the sink joins way 0 only.
      [{ b: 1, g: 1, r: 2, t: 1, s: 30, d: 8 }, { ways: 4, keysPerTile: 4 }],
    ] as [Sizes, AttentionStrategy | undefined][]
  ) {
    const program = (byHand: boolean) => (x: Record<keyof typeof spec, Tensor>) => {
      const f = valueAndGrad((p: Record<"q" | "k" | "v" | "sinks", Tensor>) => {
        const o = byHand
          ? handWithSinks(p, sizes)
          : attention(p.q, p.k, p.v, { causal: true, scale: 0.5, sinks: p.sinks });
        return sum(mul(o, x.w), "b g r t d");
      });
      const [value, g] = f({ q: x.q, k: x.k, v: x.v, sinks: x.sinks });
      return { value, dq: g.q, dk: g.k, dv: g.v, dsinks: g.sinks };
    };
    const seed = freshSeed();
    const hand = trace(spec, program(true), sizes);
    const inputs = randomInputs(hand, rng(seed)) as Record<string, Float32Array>;
    inputs.sinks = inputs.sinks.map((x) => 2 * x);
    const want = interpret(hand, inputs);
    const got = interpret(trace(spec, program(false), sizes), inputs);
    for (const name of Object.keys(want)) {
      assertClose(got[name], want[name], 1e-12, `interpreter ${name} seed ${seed}`);
    }
    const prog = await compile(spec, program(false), sizes, {
      backend: "gpu",
      attention: strategy,
    });
    try {
      const gpu = await prog.run(inputs) as Record<string, Float32Array>;
      const names = prog.kernels.map((k) => k.name);
      for (const name of Object.keys(want)) {
        assertClose(gpu[name], want[name], 1e-4, `gpu ${name} seed ${seed} [${names}]`);
      }
    } finally {
      prog.destroy();
    }
  }
});
