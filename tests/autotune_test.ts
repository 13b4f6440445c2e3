// The autotuner (runtime/autotune.ts): a matmul's tile configs, the chunked delta rule's
// state-pass variants, a scan's lowering (recurrent or chunked, by chunk length), the recurrent
// scan's lanes and tiling, and the fused
// scan backward's workgroup and checkpoints are timed on the adapter and cached per adapter and
// key; a cached choice
// is used without timing again (a planted choice shows it); the tuned program still agrees with
// the interpreter; a broken cache file is a one-line error; without `autotune` nothing is timed.
import assert from "node:assert/strict";
import { deltaRule } from "../dsl/delta.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { einsum } from "../dsl/einsum.ts";
import { exp, mul, softplus } from "../dsl/elementwise.ts";
import { scan } from "../dsl/scan.ts";
import { valueAndGrad } from "../dsl/autodiff.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import { compile } from "../runtime/compile.ts";
import { adapterKey } from "../runtime/autotune.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { assertClose, freshSeed, rng } from "./util.ts";

const MATMUL = { x: "m k", w: "k n" } as const;
const SIZES = { m: 37, k: 29, n: 45 };
const matmul = (t: { x: unknown; w: unknown }) =>
  einsum("m k, k n -> m n", t.x as never, t.w as never);

function randomInputs(seed: number) {
  const next = rng(seed);
  return {
    x: Float32Array.from({ length: 37 * 29 }, () => next() - 0.5),
    w: Float32Array.from({ length: 29 * 45 }, () => next() - 0.5),
  };
}

type Cache = {
  version: 1;
  adapters: Record<string, Record<string, { choice: string; ns: Record<string, number> }>>;
};

/** The cache file's entry whose key starts with `prefix`, for this adapter (asserted to exist). */
async function cachedEntry(cacheFile: string, prefix: string) {
  const cache = JSON.parse(await Deno.readTextFile(cacheFile)) as Cache;
  const entries = cache.adapters[adapterKey(await getGpu())];
  const key = Object.keys(entries).find((k) => k.startsWith(prefix));
  assert.ok(key, `no entry "${prefix}…": ${Object.keys(entries)}`);
  return { cache, entry: entries[key] };
}

/** Random f32 inputs of a program, each drawn by `draw(name)`. */
function randomInputs32(
  prog: { graph: { inputs: readonly { name: string; shape: readonly number[] }[] } },
  draw: (name: string) => number,
): Record<string, Float32Array> {
  const data: Record<string, Float32Array> = {};
  for (const inp of prog.graph.inputs) {
    const n = inp.shape.reduce((a, s) => a * s, 1);
    data[inp.name] = Float32Array.from({ length: n }, () => draw(inp.name));
  }
  return data;
}

Deno.test("autotune: a matmul's tile configs are timed, cached, and the winner used", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  try {
    const prog = await compile(MATMUL, matmul, SIZES, {
      backend: "gpu",
      autotune: { cacheFile, iterations: 2 },
    });
    const { cache, entry } = await cachedEntry(cacheFile, "matmul b1 m37 n45 k29");
    assert.ok(Object.keys(entry.ns).length >= 3, `timed ${Object.keys(entry.ns)}`);
    const fastest = Object.entries(entry.ns).sort((a, b) => a[1] - b[1])[0][0];
    assert.equal(entry.choice, fastest);
    assert.match(prog.kernels[0].wgsl, new RegExp(`tile ${entry.choice}\\)`));
    const data = randomInputs(seed);
    assertClose(await prog.run(data), prog.interpret(data), 1e-4, `seed ${seed}`);
    prog.destroy();

    // Plant another candidate: the next compile reads it and times nothing.
    const other = Object.keys(entry.ns).find((n) => n !== entry.choice)!;
    entry.choice = other;
    await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
    const before = (await Deno.stat(cacheFile)).mtime?.getTime();
    const again = await compile(MATMUL, matmul, SIZES, { backend: "gpu", autotune: { cacheFile } });
    assert.match(again.kernels[0].wgsl, new RegExp(`tile ${other}\\)`));
    assertClose(await again.run(data), again.interpret(data), 1e-4, `planted, seed ${seed}`);
    again.destroy();
    assert.equal((await Deno.stat(cacheFile)).mtime?.getTime(), before, "the cache was rewritten");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Gated DeltaNet's recurrence (no norms), as the delta-rule tests compile it. */
const DELTA_INPUTS = {
  q: "b t h dk",
  k: "b t h dk",
  v: "b t h dv",
  beta: "b t h",
  g: "b t h",
} as const;
const gatedDelta = (t: Record<keyof typeof DELTA_INPUTS, Tensor>) =>
  deltaRule({ q: t.q, k: t.k, v: t.v, beta: t.beta, gate: t.g }, {
    time: "t",
    key: "dk",
    value: "dv",
  }).y;

Deno.test("autotune: the chunked delta rule's state pass and output kernel are tuning points", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 1, t: 21, h: 2, dk: 8, dv: 6 };
  try {
    const prog = await compile(
      DELTA_INPUTS,
      gatedDelta,
      sizes,
      {
        backend: "gpu",
        scan: { mode: "chunked", chunks: 3 },
        autotune: { cacheFile, iterations: 2 },
      },
    );
    await cachedEntry(cacheFile, "delta-pass b2 t21 c8 dk8 dv6");
    const data = randomInputs32(
      prog,
      (name) => name === "beta" ? next() : name === "g" ? -next() : next() - 0.5,
    );
    assertClose(await prog.run(data), prog.interpret(data), 1e-4, `seed ${seed}`);
    prog.destroy();
    // Plant non-default candidates of the two points: the program still agrees.
    for (const out of ["min64", "min128_cols128"]) {
      const planted = { "delta-pass": "lanes1_wg64", "delta-out": out };
      for (const [prefix, choice] of Object.entries(planted)) {
        const { cache, entry } = await cachedEntry(cacheFile, `${prefix} b2 t21 c8 dk8 dv6`);
        assert.ok(choice in entry.ns, `${prefix}: ${choice} among ${Object.keys(entry.ns)}`);
        entry.choice = choice;
        await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
      }
      const again = await compile(
        DELTA_INPUTS,
        gatedDelta,
        sizes,
        { backend: "gpu", scan: { mode: "chunked", chunks: 3 }, autotune: { cacheFile } },
      );
      assert.deepEqual(
        again.kernels.flatMap((k) => k.tuning ? [k.tuning.chosen] : []),
        ["lanes1_wg64", out],
      );
      assertClose(await again.run(data), again.interpret(data), 1e-4, `${out}, seed ${seed}`);
      again.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: where the model runs the delta rule recurrently, lanes or chunks are a choice", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, t: 19, h: 1, dk: 12, dv: 5 };
  try {
    const prog = await compile(DELTA_INPUTS, gatedDelta, sizes, {
      backend: "gpu",
      autotune: { cacheFile, iterations: 2 },
    });
    const { cache, entry } = await cachedEntry(cacheFile, "delta b2 t19 dk12 dv5");
    assert.ok("chunked" in entry.ns && "recurrent" in entry.ns, `${Object.keys(entry.ns)}`);
    // The chunked candidate was timed with its own points tuned first (nested), not with their
    // defaults, and those choices are cached too.
    const nested = (entry as { nested?: string[] }).nested ?? [];
    for (const prefix of ["delta-pass b2 t19", "delta-out b2 t19"]) {
      const key = nested.find((k) => k.startsWith(prefix));
      assert.ok(key, `nested ${prefix}: ${nested}`);
      assert.ok(cache.adapters[adapterKey(await getGpu())][key], `${key} cached`);
    }
    const data = randomInputs32(
      prog,
      (name) => name === "beta" ? next() : name === "g" ? -next() : next() - 0.5,
    );
    const want = prog.interpret(data);
    prog.destroy();
    // Each candidate planted in turn gives the interpreter's result; with "chunked", the
    // nested state pass's planted choice is the one the program runs.
    const entries = cache.adapters[adapterKey(await getGpu())];
    const passKey = nested.find((k) => k.startsWith("delta-pass"))!;
    entries[passKey].choice = "lanes1_wg64";
    for (const choice of Object.keys(entry.ns)) {
      entry.choice = choice;
      await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
      const again = await compile(DELTA_INPUTS, gatedDelta, sizes, {
        backend: "gpu",
        autotune: { cacheFile },
      });
      const chosen = again.kernels.flatMap((k) => k.tuning ? [k.tuning.chosen] : []);
      assert.equal(chosen[0], choice);
      assert.equal(again.kernels.length > 1, choice === "chunked", choice);
      if (choice === "chunked") assert.ok(chosen.includes("lanes1_wg64"), `${chosen}`);
      assertClose(await again.run(data), want, 1e-4, `${choice}, seed ${seed}`);
      again.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: a broken cache file is a one-line error; no autotune writes nothing", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  try {
    await Deno.writeTextFile(cacheFile, "{ not json");
    await assert.rejects(
      compile(MATMUL, matmul, SIZES, { backend: "gpu", autotune: { cacheFile } }),
      (e: Error) => /is not JSON/.test(e.message) && !e.message.includes("\n"),
    );
    await Deno.writeTextFile(cacheFile, JSON.stringify({ version: 7 }));
    await assert.rejects(
      compile(MATMUL, matmul, SIZES, { backend: "gpu", autotune: { cacheFile } }),
      /not an ssmkit autotune cache/,
    );
    await Deno.remove(cacheFile);
    const plain = await compile(MATMUL, matmul, SIZES, { backend: "gpu" });
    plain.destroy();
    await assert.rejects(Deno.stat(cacheFile), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: a scan with the SSD form chooses between recurrent and chunk lengths", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  const inputs = { x: "b l h p", dt: "b l h", A: "h", B: "b l n", C: "b l n" } as const;
  const sizes = { b: 1, l: 40, h: 2, p: 4, n: 4 };
  try {
    const prog = await compile(
      inputs,
      (t) => {
        const delta = softplus(t.dt);
        const h = scan(
          "l",
          exp(mul(delta, t.A)),
          einsum("b l h, b l h p, b l n -> b l h p n", delta, t.x, t.B),
        );
        return einsum("b l h p n, b l n -> b l h p", h, t.C);
      },
      sizes,
      { backend: "gpu", autotune: { cacheFile, iterations: 2 } },
    );
    const { entry } = await cachedEntry(cacheFile, "scan ");
    const timed = Object.keys(entry.ns);
    assert.ok(
      timed.includes("recurrent") && timed.some((n) => n.startsWith("chunked")),
      `${timed}`,
    );
    const data = randomInputs32(
      prog,
      (name) => name === "A" ? -0.2 - next() : name === "dt" ? next() - 2 : next() - 0.5,
    );
    assertClose(
      await prog.run(data),
      prog.interpret(data),
      1e-4,
      `${entry.choice}, seed ${seed}`,
    );
    prog.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: a recurrent scan's lanes and tiling are a choice; a planted one is used", async () => {
  // The selective scan (a decay per channel and state: no SSD form) runs the recurrent kernel;
  // its strategy is a tuning point of its own (codegen/scan_tuning.ts).
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  const sizes = { b: 2, l: 37, d: 5, n: 4 };
  const fn = (t: Parameters<typeof selectiveScan>[0]) => selectiveScan(t).y;
  const draw = (name: string) =>
    name === "A" ? -0.5 - next() : name === "dt" ? next() - 2 : next() - 0.5;
  try {
    const prog = await compile(SELECTIVE_SCAN_INPUTS, fn, sizes, {
      backend: "gpu",
      autotune: { cacheFile, iterations: 2 },
    });
    const { cache, entry } = await cachedEntry(cacheFile, "recurrent scan ");
    const timed = Object.keys(entry.ns);
    assert.ok(timed.includes("default") && timed.length >= 3, `${timed}`);
    const data = randomInputs32(prog, draw);
    assertClose(await prog.run(data), prog.interpret(data), 1e-4, `${entry.choice}, seed ${seed}`);
    prog.destroy();

    // Plant one lane per channel: the next compile emits what forcing it emits.
    const key = Object.keys(Object.values(cache.adapters)[0]).find((k) =>
      k.startsWith("recurrent scan ")
    )!;
    for (const entries of Object.values(cache.adapters)) entries[key].choice = "lanes1";
    await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
    const planted = await compile(SELECTIVE_SCAN_INPUTS, fn, sizes, {
      backend: "gpu",
      autotune: { cacheFile },
    });
    const forced = await compile(SELECTIVE_SCAN_INPUTS, fn, sizes, {
      backend: "gpu",
      scan: { lanes: 1 },
    });
    const wgsl = (p: { kernels: readonly { wgsl: string }[] }) => p.kernels.map((k) => k.wgsl);
    assert.deepEqual(wgsl(planted), wgsl(forced));
    assertClose(await planted.run(data), planted.interpret(data), 1e-4, `lanes1, seed ${seed}`);
    planted.destroy();
    forced.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: the fused scan backward's workgroup and checkpoint interval", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  const wrt = Object.keys(SELECTIVE_SCAN_INPUTS) as (keyof typeof SELECTIVE_SCAN_INPUTS)[];
  try {
    const prog = await compile(
      { ...SELECTIVE_SCAN_INPUTS, w: "b l d" },
      (t) => {
        const params = Object.fromEntries(wrt.map((k) => [k, t[k]])) as Parameters<
          typeof selectiveScan
        >[0];
        const [value, grads] = valueAndGrad((p: typeof params) =>
          einsum("b l d, b l d -> ", selectiveScan(p).y, t.w)
        )(params);
        return { value, dx: grads.x, dA: grads.A };
      },
      { b: 2, l: 23, d: 5, n: 4 },
      { backend: "gpu", autotune: { cacheFile, iterations: 2 } },
    );
    const { entry } = await cachedEntry(cacheFile, "scan-backward ");
    assert.ok(Object.keys(entry.ns).length >= 6, `${Object.keys(entry.ns)}`);
    const data = randomInputs32(
      prog,
      (name) => name === "A" ? -0.5 - next() : name === "dt" ? next() - 2 : next() - 0.5,
    );
    const got = await prog.run(data) as Record<string, Float32Array>;
    const want = prog.interpret(data) as Record<string, Float64Array>;
    for (const k of ["value", "dx", "dA"]) {
      assertClose(got[k], want[k], 1e-4, `${k} with ${entry.choice} (seed ${seed})`);
    }
    prog.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("autotune: a large matmul's timed candidates leave out tiles the model rules out", async () => {
  // 2048×1024×512: the skinny (M ≤ 4 or N ≤ 4) tiles are modelled far beyond 4× the best.
  const prog = await compile(
    { a: "m k", b: "k n" },
    (t) => einsum("m k, k n -> m n", t.a, t.b),
    { m: 2048, k: 512, n: 1024 },
    { backend: "cpu" },
  );
  const point = prog.kernels[0].tuning;
  assert.ok(point, "the matmul is a tuning point");
  const names = point.alternatives().map(([name]) => name);
  assert.ok(names.includes(point.chosen), names.join(", "));
  assert.ok(!names.includes("skinnyM") && !names.includes("skinnyN"), names.join(", "));
  assert.ok(names.length >= 2, names.join(", "));
});

Deno.test("autotune: the chunked delta rule's chunk length is a choice, nested in the lowering's", async () => {
  const dir = await Deno.makeTempDir();
  const cacheFile = `${dir}/autotune.json`;
  const seed = freshSeed();
  const next = rng(seed);
  // Short enough for the model's recurrent kernel; 64- and 32-step chunks give 2 and 3 chunks.
  const sizes = { b: 1, t: 70, h: 2, dk: 12, dv: 5 };
  const draw = (name: string) => name === "beta" ? next() : name === "g" ? -next() : next() - 0.5;
  try {
    for (const scan of [{ mode: "chunked" as const }, undefined]) {
      const prog = await compile(DELTA_INPUTS, gatedDelta, sizes, {
        backend: "gpu",
        scan,
        autotune: { cacheFile, iterations: 2 },
      });
      prog.destroy();
    }
    const { cache, entry } = await cachedEntry(cacheFile, "delta-chunk b2 t70 dk12 dv5");
    assert.deepEqual(Object.keys(entry.ns).sort(), ["chunk32", "chunk64"]);
    // Each chunk length's own points were tuned with it.
    const nested = (entry as { nested?: string[] }).nested ?? [];
    for (const c of [32, 64]) {
      for (const prefix of [`delta-pass b2 t70 c${c}`, `delta-out b2 t70 c${c}`]) {
        assert.ok(nested.some((k) => k.startsWith(prefix)), `nested ${prefix}: ${nested}`);
      }
    }
    const outer = (await cachedEntry(cacheFile, "delta b2 t70 dk12 dv5")).entry as {
      nested?: string[];
    };
    assert.ok(outer.nested?.includes("delta-chunk b2 t70 dk12 dv5"), `${outer.nested}`);
    // Each length planted in turn is the one the chunked program runs, and agrees.
    for (const choice of ["chunk32", "chunk64"]) {
      entry.choice = choice;
      await Deno.writeTextFile(cacheFile, JSON.stringify(cache));
      const again = await compile(DELTA_INPUTS, gatedDelta, sizes, {
        backend: "gpu",
        scan: { mode: "chunked" },
        autotune: { cacheFile },
      });
      const keys = again.kernels.flatMap((k) => k.tuning ? [k.tuning.key] : []);
      assert.ok(
        keys.some((k) => k.startsWith(`delta-pass b2 t70 c${choice.slice(5)} `)),
        `${choice}: ${keys}`,
      );
      const data = randomInputs32(again, draw);
      assertClose(await again.run(data), again.interpret(data), 1e-4, `${choice}, seed ${seed}`);
      again.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
