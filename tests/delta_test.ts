// The delta rule (deltaRule): the recurrent and chunked kernels against a float64 loop written
// from the papers' equation (tests/delta_reference.ts) and the interpreter, on awkward sizes.
import assert from "node:assert/strict";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { deltaRule } from "../dsl/delta.ts";
import { sigmoid } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { trace } from "../dsl/trace.ts";
import type { ScanStrategy } from "../codegen/scan_strategy.ts";
import { chooseDeltaLowering } from "../codegen/delta_plan.ts";
import { DEFAULT_LIMITS } from "../codegen/limits.ts";
import type { DeltaNode } from "../dsl/ir.ts";
import { compile } from "../runtime/compile.ts";
import { deltaArrays, type DeltaSizes, referenceDelta } from "./delta_reference.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const INPUTS = {
  q: "b t h dk",
  k: "b t h dk",
  v: "b t h dv",
  braw: "b t h",
  gate: "b t h",
  init: "b h dv dk",
} as const;

type Case = {
  gated: boolean;
  init: boolean;
  strategy: ScanStrategy;
  scale?: number;
  /** Write the final state into init's buffer. */
  inPlace?: boolean;
};

/** β = sigmoid(braw) is computed in the program: an elementwise prologue fused into the kernel. */
function program(c: Case) {
  return (x: Record<keyof typeof INPUTS, Tensor>) => {
    const { y, state } = deltaRule(
      { q: x.q, k: x.k, v: x.v, beta: sigmoid(x.braw), gate: c.gated ? x.gate : undefined },
      { time: "t", key: "dk", value: "dv", init: c.init ? x.init : undefined, scale: c.scale },
    );
    return { y, state };
  };
}

async function check(s: DeltaSizes, c: Case) {
  const seed = freshSeed();
  const arrays = deltaArrays(s, rng(seed), c.gated, c.init);
  const braw = arrays.beta.map((p) => Math.log(p / (1 - p)));
  const inputs = {
    q: arrays.q,
    k: arrays.k,
    v: arrays.v,
    braw,
    gate: arrays.gate ?? new Float32Array(s.b * s.t * s.h),
    init: arrays.init ?? new Float32Array(s.b * s.h * s.dv * s.dk),
  };
  const scale = c.scale ?? 1 / Math.sqrt(s.dk);
  const want = referenceDelta(s, {
    ...arrays,
    beta: Float64Array.from(braw, (z) => 1 / (1 + Math.exp(-z))),
  }, scale);
  const prog = await compile(INPUTS, program(c), s, {
    backend: "gpu",
    scan: c.strategy,
    inPlace: c.inPlace ? { state: "init" } : undefined,
  });
  try {
    const got = await prog.run(inputs);
    const oracle = prog.interpret(inputs);
    const ctx = `seed ${seed} ${JSON.stringify(s)} ${JSON.stringify(c)} [${
      prog.kernels.map((k) => k.name)
    }]`;
    assertClose(oracle.y, want.y, 1e-9, `interpreter y ${ctx}`);
    assertClose(oracle.state, want.state, 1e-9, `interpreter state ${ctx}`);
    assertClose(got.y, want.y, 1e-4, `kernel y ${ctx}`);
    assertClose(got.state, want.state, 1e-4, `kernel state ${ctx}`);
    return prog.kernels.map((k) => k.name);
  } finally {
    prog.destroy();
  }
}

const AWKWARD: DeltaSizes = { b: 2, t: 37, h: 3, dk: 6, dv: 5 };

Deno.test("deltaRule recurrent: Gated DeltaNet with init, default lanes", async () => {
  await check(AWKWARD, { gated: true, init: true, strategy: { mode: "recurrent" } });
});

Deno.test("deltaRule recurrent: DeltaNet (α = 1), no init, one lane per row (no subgroups)", async () => {
  await check(AWKWARD, { gated: false, init: false, strategy: { mode: "recurrent", lanes: 1 } });
});

Deno.test("deltaRule recurrent: several lanes per row share a row (shuffles), dk not a multiple", async () => {
  await check({ b: 1, t: 9, h: 2, dk: 11, dv: 7 }, {
    gated: true,
    init: true,
    strategy: { mode: "recurrent", lanes: 4 },
    scale: 0.7,
  });
  // One key per lane, two lanes past dk (their keys masked to zero).
  await check({ b: 1, t: 5, h: 1, dk: 6, dv: 3 }, {
    gated: true,
    init: true,
    strategy: { mode: "recurrent", lanes: 8 },
  });
});

Deno.test("deltaRule chunked: Gated DeltaNet with init, chunks of 8, T not a multiple", async () => {
  const names = await check(AWKWARD, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 5 },
  });
  assert.equal(names.length, 3, `three chunked kernels, got ${names}`);
});

Deno.test("deltaRule chunked: DeltaNet (α = 1), no init, chunks of 16, one lane per row", async () => {
  await check({ b: 1, t: 50, h: 3, dk: 9, dv: 4 }, {
    gated: false,
    init: false,
    strategy: { mode: "chunked", chunks: 4, lanes: 1 },
  });
});

Deno.test("deltaRule chunked: one padded chunk of the default length, lanes sharing rows", async () => {
  await check({ b: 2, t: 21, h: 1, dk: 13, dv: 6 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", lanes: 4 },
    scale: 1.3,
  });
});

Deno.test("deltaRule chunked: a state pass of 32 threads, value rows in several blocks", async () => {
  // 32 threads of 4 lanes: 8 value rows per workgroup, so dv = 19 takes three blocks.
  await check({ b: 2, t: 37, h: 2, dk: 11, dv: 19 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 3, lanes: 4, workgroup: 32 },
  });
});

Deno.test("deltaRule chunked: more value columns than one output tile (dv = 70)", async () => {
  await check({ b: 1, t: 23, h: 2, dk: 9, dv: 70 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 2 },
  });
});

Deno.test("deltaRule chunked: several vec4s of keys per lane, state written in place", async () => {
  await check({ b: 2, t: 29, h: 1, dk: 37, dv: 3 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 4 },
    inPlace: true,
  });
});

Deno.test("deltaRule chunked, tile-form state pass: 16 value rows, dv in two blocks, keys not a multiple of 8", async () => {
  const names = await check({ b: 2, t: 37, h: 2, dk: 11, dv: 19 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 3, passRows: 16 },
  });
  assert.equal(names.length, 3, `three chunked kernels, got ${names}`);
});

Deno.test("deltaRule chunked, default kernels at a key size of 8 and chunks of 64", async () => {
  // The tile-form pass (the default) once had no thread layout here: the state tile of 8 keys
  // had fewer threads than the chunk's projection needs.
  const names = await check({ b: 1, t: 40, h: 2, dk: 8, dv: 8 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked" },
  });
  assert.equal(names.length, 3, `three chunked kernels, got ${names}`);
});

Deno.test("deltaRule chunked, tile-form state pass: 32 rows, DeltaNet, chunks of 8, state in place", async () => {
  await check({ b: 1, t: 45, h: 3, dk: 20, dv: 7 }, {
    gated: false,
    init: true,
    strategy: { mode: "chunked", chunks: 6, passRows: 32 },
    scale: 0.9,
    inPlace: true,
  });
});

Deno.test("deltaRule chunked, tile-form state pass: 64 rows, no init, one padded chunk", async () => {
  await check({ b: 2, t: 13, h: 1, dk: 9, dv: 66 }, {
    gated: true,
    init: false,
    strategy: { mode: "chunked", passRows: 64 },
  });
});

Deno.test("deltaRule chunked: chunks of 8 (one substitution block), dk + dv not a multiple of 8", async () => {
  const names = await check({ b: 2, t: 37, h: 2, dk: 11, dv: 6 }, {
    gated: true,
    init: true,
    strategy: { mode: "chunked", chunks: 5 },
  });
  assert.equal(names.length, 3, `three chunked kernels, got ${names}`);
});

Deno.test("deltaRule chunked with the tile-form pass: DeltaNet, more columns than kernel 1's threads", async () => {
  // dk + dv = 300 > 256: kernel 1's threads substitute two columns each; 152 padded keys give
  // the pass slices of 8.
  await check({ b: 1, t: 21, h: 2, dk: 150, dv: 150 }, {
    gated: false,
    init: true,
    strategy: { mode: "chunked", chunks: 2, passRows: 16 },
  });
});

Deno.test("deltaRule: a tile-form pass over the device's workgroup memory names the knob", async () => {
  // 64 rows × 256 keys of state alone are 64 KiB.
  await assert.rejects(
    () =>
      check({ b: 1, t: 9, h: 1, dk: 256, dv: 64 }, {
        gated: true,
        init: false,
        strategy: { mode: "chunked", passRows: 64 },
      }),
    /tile-form state pass with 64 value rows needs \d+ bytes of workgroup memory at key size 256; the device has \d+ \(use fewer passRows\)/,
  );
});

Deno.test("deltaRule: a passRows outside 16, 32, 64 is a clear error", async () => {
  await assert.rejects(
    () => check(AWKWARD, { gated: true, init: true, strategy: { mode: "chunked", passRows: 24 } }),
    /passRows must be one of 16, 32, 64 \(got 24\)/,
  );
});

Deno.test("deltaRule: second derivatives are a clear error naming the op", () => {
  // The gradient itself differentiates (tests/delta_grad_test.ts); its gradient does not.
  assert.throws(
    () =>
      trace({ q: "t dk", k: "t dk", v: "t dv", beta: "t" }, (x) => {
        const inner = (p: { v: Tensor; k: Tensor }) =>
          valueAndGrad((r: { v: Tensor }) =>
            sum(
              deltaRule({ ...x, k: p.k, v: r.v }, { time: "t", key: "dk", value: "dv" }).y,
              "t dv",
            )
          )({ v: p.v })[1].v;
        const outer = valueAndGrad((p: { k: Tensor }) => sum(inner({ v: x.v, k: p.k }), "t dv"));
        return outer({ k: x.k })[0];
      }, { t: 3, dk: 2, dv: 2 }),
    /deltaRule's gradient \(node \d+\) has no derivative: no second derivatives/,
  );
});

Deno.test("deltaRule: operands with the wrong axes name the op, the operand and the axes", () => {
  assert.throws(
    () =>
      trace(
        { q: "t dk", k: "t dv", v: "t dv", beta: "t" },
        (x) => deltaRule(x, { time: "t", key: "dk", value: "dv" }).y,
        { t: 3, dk: 2, dv: 2 },
      ),
    /deltaRule: k \[t dv\] must have the axes \[t dk\]/,
  );
});

Deno.test("deltaRule decode: steps of length 1 updating the state in place match the full sequence", async () => {
  const seed = freshSeed();
  const s: DeltaSizes = { b: 2, t: 6, h: 3, dk: 7, dv: 5 };
  const x = deltaArrays(s, rng(seed), true, true);
  const braw = x.beta.map((p) => Math.log(p / (1 - p)));
  const want = referenceDelta(
    s,
    { ...x, beta: Float64Array.from(braw, (z) => 1 / (1 + Math.exp(-z))) },
    1 / Math.sqrt(s.dk),
  );
  const c: Case = { gated: true, init: true, strategy: {} };
  const step = await compile(INPUTS, program(c), { ...s, t: 1 }, {
    backend: "gpu",
    inPlace: { state: "init" },
  });
  try {
    assert.deepEqual(step.kernels.map((k) => k.name), ["k0_delta_bthdv"], "one recurrent kernel");
    const at = (arr: ArrayLike<number>, width: number, t: number) => {
      const out = new Float32Array(s.b * s.h * width);
      for (let b = 0; b < s.b; b++) {
        for (let i = 0; i < s.h * width; i++) {
          out[b * s.h * width + i] = arr[((b * s.t + t) * s.h) * width + i];
        }
      }
      return out;
    };
    let state = x.init!;
    for (let t = 0; t < s.t; t++) {
      const got = await step.run({
        q: at(x.q, s.dk, t),
        k: at(x.k, s.dk, t),
        v: at(x.v, s.dv, t),
        braw: at(braw, 1, t),
        gate: at(x.gate!, 1, t),
        init: state,
      });
      assertClose(got.y, at(want.y, s.dv, t), 1e-4, `step ${t} (seed ${seed})`);
      state = got.state;
    }
    assertClose(state, want.state, 1e-4, `final state after ${s.t} steps (seed ${seed})`);
  } finally {
    step.destroy();
  }
});

Deno.test("deltaRule cost rule: decode keeps the recurrent kernel, a long sequence is chunked", () => {
  const limits = {
    ...DEFAULT_LIMITS,
    maxStorageBufferBindingSize: 2 ** 31,
    maxBufferSize: 2 ** 32,
  };
  const choose = (sizes: Record<string, number>) => {
    const g = trace(INPUTS, program({ gated: true, init: true, strategy: {} }), sizes);
    const y = g.outputs.y;
    assert.equal(y.kind, "delta");
    return chooseDeltaLowering(y as DeltaNode, limits);
  };
  assert.equal(choose({ b: 1, t: 1, h: 32, dk: 128, dv: 128 }), "recurrent");
  assert.equal(choose({ b: 1, t: 64, h: 32, dk: 128, dv: 128 }), "recurrent");
  assert.equal(choose({ b: 1, t: 8192, h: 32, dk: 128, dv: 128 }), "chunked");
  // Scratch over a binding keeps the recurrent kernel.
  const small = { ...limits, maxStorageBufferBindingSize: 1 << 20 };
  const g = trace(INPUTS, program({ gated: true, init: false, strategy: {} }), {
    b: 1,
    t: 8192,
    h: 32,
    dk: 128,
    dv: 128,
  });
  assert.equal(chooseDeltaLowering(g.outputs.y as DeltaNode, small), "recurrent");
});

Deno.test("deltaRule: no batch axes and one key and value (both lowerings)", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const t = 19;
  const x = deltaArrays({ b: 1, t, h: 1, dk: 1, dv: 1 }, next, true, true);
  const want = referenceDelta({ b: 1, t, h: 1, dk: 1, dv: 1 }, x, 0.9);
  for (const mode of ["recurrent", "chunked"] as const) {
    const prog = await compile(
      { q: "t k", k: "t k", v: "t v", beta: "t", g: "t", h0: "v k" },
      (a) =>
        deltaRule({ q: a.q, k: a.k, v: a.v, beta: a.beta, gate: a.g }, {
          time: "t",
          key: "k",
          value: "v",
          init: a.h0,
          scale: 0.9,
        }),
      { t, k: 1, v: 1 },
      { backend: "gpu", scan: { mode, chunks: 3 } },
    );
    try {
      const got = await prog.run({ q: x.q, k: x.k, v: x.v, beta: x.beta, g: x.gate!, h0: x.init! });
      assertClose(got.y, want.y, 1e-4, `${mode} y (seed ${seed})`);
      assertClose(got.state, want.state, 1e-4, `${mode} state (seed ${seed})`);
    } finally {
      prog.destroy();
    }
  }
});
