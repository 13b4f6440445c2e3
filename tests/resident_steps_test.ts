// ResidentProgram's constant inputs (on the device, never updated) and several steps per
// submit (copies of the per-step buffers sharing the state): the same results as one step at
// a time, computed here in float64.
import assert from "node:assert/strict";
import { add, mul, sub } from "../dsl/elementwise.ts";
import { sum } from "../dsl/reduce.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import { assertClose, freshSeed, randomArray, rng } from "./util.ts";

const D = 13;
const INPUTS = { w: "d", frozen: "d", g: "d", lr: "" } as const;

Deno.test("ResidentProgram: constants stay, steps() runs several steps in one submit", async () => {
  const seed = freshSeed();
  const next = rng(seed);
  const w0 = randomArray(D, next), frozen = randomArray(D, next);
  const grads = Array.from({ length: 5 }, () => randomArray(D, next));
  const lrs = [0.1, 0.2, 0.3, 0.4, 0.5];
  const prog = await ResidentProgram.create(
    INPUTS,
    // w ← w − lr·(g + frozen·w): each step reads the state the previous one wrote.
    (t) => {
      const w = sub(t.w, mul(t.lr, add(t.g, mul(t.frozen, t.w))));
      return { w, norm: sum(mul(w, w), "d") };
    },
    { d: D },
    { state: { w: "w" }, constant: ["frozen"], replicas: 3 },
  );
  try {
    // Where create spent its time; the replicas share the first copy's pipelines.
    const times = prog.compileTimes;
    assert.ok(times.codegenMs > 0 && times.pipelinesMs >= 0 && times.buffersMs >= 0);
    assert.ok(times.pipelines >= 1 && times.pipelines <= prog.kernels.length, `${times.pipelines}`);
    prog.write("w", w0);
    prog.write("frozen", frozen);
    const step = (i: number) => ({ g: grads[i], lr: Float32Array.of(lrs[i]) });
    await prog.steps([step(0), step(1), step(2)]);
    await prog.steps([step(3)]);
    await prog.step(step(4));
    const want = Float64Array.from(w0);
    for (let i = 0; i < 5; i++) {
      for (let j = 0; j < D; j++) want[j] -= lrs[i] * (grads[i][j] + frozen[j] * want[j]);
    }
    const got = await prog.read(["w", "frozen", "norm"]);
    assertClose(got.w, want, 1e-5, `five steps in three submits (seed ${seed})`);
    assert.deepEqual(got.frozen, frozen, "the constant input is untouched");
    assertClose(got.norm, [want.reduce((s, x) => s + x * x, 0)], 1e-5, "the last step's output");
    await assert.rejects(
      prog.steps([step(0), step(1), step(2), step(3)]),
      /steps: got 4 steps; one submit runs 1 to 3 \(replicas\)/,
    );
    await assert.rejects(prog.step({ frozen, ...step(0) }), /"frozen" is state/);
  } finally {
    prog.destroy();
  }
  await assert.rejects(
    ResidentProgram.create(INPUTS, (t) => ({ w: sub(t.w, t.g) }), { d: D }, {
      state: { w: "w" },
      constant: ["w"],
    }),
    /constant: input "w" is also state/,
  );
});

Deno.test("ResidentProgram.benchmark: one timing per kernel; the state still updates", async () => {
  const prog = await ResidentProgram.create(
    INPUTS,
    (t) => ({ w: sub(t.w, mul(t.lr, add(t.g, mul(t.frozen, t.w)))) }),
    { d: D },
    { state: { w: "w" }, constant: ["frozen"] },
  );
  try {
    prog.write("w", new Float32Array(D).fill(1));
    prog.write("frozen", new Float32Array(D));
    // 2 warm-up and 3 timed steps of w ← w − 0.5·1.
    const r = await prog.benchmark({ g: new Float32Array(D).fill(1), lr: Float32Array.of(0.5) }, {
      warmup: 2,
      iterations: 3,
    });
    assert.deepEqual(r.kernels.map((k) => k.name), prog.kernels.map((k) => k.name));
    assert.ok(r.totalNs > 0 && r.kernels.every((k) => k.medianNs >= 0));
    const { w } = await prog.read(["w"]);
    assertClose(w, new Float64Array(D).fill(1 - 5 * 0.5), 1e-6, "five steps ran");
    await assert.rejects(() => prog.benchmark({ w: new Float32Array(D) }), /is state/);
  } finally {
    prog.destroy();
  }
});
