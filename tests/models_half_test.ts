// Models loaded with 16-bit weight matrices (`loadModel(dir, { dtype })`): the GPU path equals
// the float64 interpreter on the same rounded weights, the logits stay close to HF's f32
// logits, and greedy decoding follows the f32 run except where the f32 logits themselves leave
// less than the tolerance between the two candidates.
import assert from "node:assert/strict";
import { loadModel } from "../models/language_model.ts";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readConfig } from "../models/checkpoint/config.ts";
import { modelDefinitionFor } from "../models/definitions.ts";
import { isHalfWeight, withWeightDtype } from "../models/weight_dtype.ts";
import { trace } from "../dsl/trace.ts";
import { interpret } from "../runtime/interpreter.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { assertClose, relativeError } from "./util.ts";

const root = new URL("./fixtures/models/", import.meta.url);
const fixture = (name: string) => new URL(name, root).pathname;
/** The f32 checkpoints with HF f32 references (Mamba and Mamba-2, tied and untied heads). */
const FIXTURES = [
  "mamba_tied_n8",
  "mamba_untied_n16",
  "mamba2_tied_g1_n8_q8",
  "mamba2_untied_g2_n16_q4",
];
/**
 * Relative (L2) error allowed against HF's f32 logits. f16 keeps 11 significant bits (unit
 * roundoff 2⁻¹¹) and meets 1e-2 with room (≤ 2.5e-3 measured). bf16 keeps 8 (2⁻⁸, 8× coarser):
 * rounding these random tiny checkpoints' matrices to bf16 alone moves their logits by 0.6–2%
 * (the interpreter check shows the whole difference is that rounding), so bf16 gets 3e-2.
 */
const HF_TOLERANCE = { f16: 1e-2, bf16: 3e-2 } as const;
/** Greedy steps compared with the f32 run. */
const STEPS = 32;

interface Reference {
  prompts: number[][];
  logits: number[][][];
}

const reference = async (name: string): Promise<Reference> =>
  JSON.parse(await Deno.readTextFile(`${fixture(name)}/reference.json`));

/** Logits of every position from the float64 interpreter, weights given as `dtype` inputs. */
async function interpretedLogits(
  name: string,
  dtype: "f16" | "bf16",
  tokens: number[],
): Promise<Float64Array> {
  const dir = fixture(name);
  const def = withWeightDtype(modelDefinitionFor(await readConfig(dir), dir), dtype);
  const ckpt = await Checkpoint.open(dir);
  const weights: Record<string, Float32Array> = {};
  try {
    for (const [w, shape] of def.weightShapes()) weights[w] = await ckpt.getF32(w, shape);
  } finally {
    ckpt.close();
  }
  const graph = trace(
    { ...def.weightInputs(), ids: { axes: "b l", dtype: "i32" } },
    (t) => ({ logits: def.forward(t, {}).logits }),
    def.sizes(1, tokens.length),
  );
  return interpret(graph, { ...weights, ids: Int32Array.from(tokens) }).logits;
}

for (const dtype of ["f16", "bf16"] as const) {
  Deno.test(`${dtype} weights: logits equal the float64 interpreter and are near HF's f32`, async () => {
    for (const name of FIXTURES) {
      const ref = await reference(name);
      const model = await loadModel(fixture(name), { progress: false, dtype });
      try {
        for (const [i, prompt] of ref.prompts.entries()) {
          const got = await model.logits([prompt]);
          // Same rounded weights, f32 arithmetic: as close as the f32 path is to HF.
          if (i === 0) {
            const want = await interpretedLogits(name, dtype, prompt);
            assertClose(got, want, 1e-4, `${name} ${dtype} prompt ${i} vs interpreter`);
          }
          const hf = ref.logits[i].flat();
          assertClose(got, hf, HF_TOLERANCE[dtype], `${name} ${dtype} prompt ${i} vs HF f32`);
          // The weights really are rounded: 16-bit logits differ from HF's beyond f32 noise.
          assert.ok(relativeError(got, hf) > 1e-5, `${name} ${dtype}: no rounding visible`);
        }
      } finally {
        model.destroy();
      }
    }
  });
}

Deno.test(`f16 and bf16 weights: greedy tokens follow the f32 run for ${STEPS} steps`, async () => {
  const options = { maxNew: STEPS, eos: -1, blockSize: 8 };
  for (const name of FIXTURES) {
    const ref = await reference(name);
    const f32 = await loadModel(fixture(name), { progress: false });
    try {
      const vocab = f32.definition.vocab;
      const wants = [];
      for (const prompt of ref.prompts) wants.push((await f32.generate([prompt], options))[0]);
      for (const dtype of ["f16", "bf16"] as const) {
        const half = await loadModel(fixture(name), { progress: false, dtype });
        try {
          for (const [i, prompt] of ref.prompts.entries()) {
            const want = wants[i];
            const got = (await half.generate([prompt], options))[0];
            const step = got.findIndex((t, k) => t !== want[k]);
            if (step < 0) continue;
            // A divergence must be a near tie in the f32 model's own logits at that position.
            const seq = [...prompt, ...want.slice(0, step)];
            const all = await f32.logits([seq]);
            const row = all.subarray((seq.length - 1) * vocab, seq.length * vocab);
            const scale = row.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
            const gap = row[want[step]] - row[got[step]];
            assert.ok(
              gap <= 1e-2 * scale,
              `${name} ${dtype} prompt ${i}: step ${step} chose ${got[step]} over ${
                want[step]
              }, an f32 logit gap of ${gap} (max |logit| ${scale})`,
            );
            console.log(
              `${name} ${dtype} prompt ${i}: diverges at step ${step} on a logit gap of ` +
                `${gap.toExponential(2)} (${(gap / scale).toExponential(2)} of max |logit|)`,
            );
          }
        } finally {
          half.destroy();
        }
      }
    } finally {
      f32.destroy();
    }
  }
});

Deno.test("f16 and bf16 checkpoints kept in their own dtype are exact (HF logits to 1e-4)", async () => {
  // Their tensors are already 16-bit: storing them as 16-bit words and widening in the kernel
  // loses nothing, so the f32 tolerance holds.
  for (const [name, dtype] of [["mamba_f16", "f16"], ["mamba_bf16", "bf16"]] as const) {
    const ref = await reference(name);
    const model = await loadModel(fixture(name), { progress: false, dtype });
    try {
      for (const [i, prompt] of ref.prompts.entries()) {
        assertClose(await model.logits([prompt]), ref.logits[i].flat(), 1e-4, `${name} ${i}`);
      }
    } finally {
      model.destroy();
    }
  }
});

Deno.test("16-bit weights are the matrices; the rest stays f32", async () => {
  const dir = fixture("mamba2_untied_g2_n16_q4");
  const def = withWeightDtype(modelDefinitionFor(await readConfig(dir), dir), "bf16");
  const half = Object.entries(def.weightInputs()).filter(([n, d]) => isHalfWeight(n, d));
  assert.deepEqual(
    half.map(([n]) => n).filter((n) => n.includes("layers.0.") || !n.includes("layers")),
    [
      "backbone.embeddings.weight",
      "lm_head.weight",
      "backbone.layers.0.mixer.in_proj.weight",
      "backbone.layers.0.mixer.out_proj.weight",
    ],
  );
  for (const [, decl] of half) assert.equal(typeof decl === "string" ? "f32" : decl.dtype, "bf16");
});

Deno.test("a bad dtype, or f16 on an adapter without shader-f16, is one clear error", async () => {
  const dir = fixture("mamba_tied_n8");
  await assert.rejects(
    () => loadModel(dir, { progress: false, dtype: "f8" as "f16" }),
    /loadModel: dtype "f8" is not one of f32, f16, bf16/,
  );
  const ctx = await getGpu();
  const gpu = { ...ctx, features: { ...ctx.features, shaderF16: false } };
  await assert.rejects(
    () => loadModel(dir, { progress: false, dtype: "f16", gpu }),
    /loadModel: dtype "f16" needs WebGPU's "shader-f16" feature, which this adapter .* lacks; use dtype "bf16" or "f32"/,
  );
});
