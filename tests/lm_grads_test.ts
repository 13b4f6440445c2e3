// Gradients of the language models' training loss (mean next-token cross-entropy) with respect
// to every weight, for tiny HF checkpoints (tests/fixtures/models):
//  - the float64 interpreter against central finite differences at a few entries of every
//    weight (always runs);
//  - the float64 interpreter against HF transformers' torch autograd in float64
//    (tests/oracle/lm_grads.py writes grads.safetensors and grads.json next to the checkpoint;
//    ignored until those exist): the loss within 1e-10 relative, each gradient within 1e-9 of
//    its norm, ‖g − g_HF‖₂ / ‖g_HF‖₂;
//  - the program compiled on the adapter (f32) against the float64 reference (HF's when its
//    fixture exists, else the interpreter's): ‖g − g_ref‖₂ / ‖g_ref‖₂ ≤ 1e-4 per weight.
import assert from "node:assert/strict";
import { type ModelDefinition, modelDefinitionFor } from "../models/definitions.ts";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readConfig } from "../models/checkpoint/config.ts";
import { readSafetensorsHeader } from "../models/checkpoint/header.ts";
import { lmLoss, lmLossAndGradOutputs, lmLossInputs } from "../models/train/lm_loss.ts";
import { compile } from "../runtime/compile.ts";
import { interpret } from "../runtime/interpreter.ts";
import { trace } from "../dsl/trace.ts";
import { checkGradients } from "./grad_check.ts";
import { freshSeed, relativeError, rng } from "./util.ts";

const ROOT = new URL("./fixtures/models/", import.meta.url).pathname;
/** The fixtures tests/oracle/lm_grads.py writes gradients for (keep the two lists equal). */
const MODELS = ["mamba_tied_n8", "mamba2_tied_g1_n8_q8", "mamba2_untied_g2_n16_q4"];
const B = 2, L = 13;

interface Model {
  def: ModelDefinition;
  weights: Record<string, Float32Array>;
}

async function loadWeights(name: string): Promise<Model> {
  const dir = ROOT + name;
  const config = await readConfig(dir);
  const def = modelDefinitionFor(config, dir);
  const ckpt = await Checkpoint.open(dir);
  const weights: Record<string, Float32Array> = {};
  try {
    for (const [k, shape] of def.weightShapes()) weights[k] = await ckpt.getF32(k, shape);
  } finally {
    ckpt.close();
  }
  return { def, weights };
}

/** HF's reference: ids, targets, loss (grads.json) and float64 gradients (grads.safetensors). */
interface HfGrads {
  ids: Int32Array;
  targets: Int32Array;
  loss: number;
  grads: Map<string, Float64Array>;
}

async function readHfGrads(name: string): Promise<HfGrads> {
  const dir = ROOT + name;
  const meta = JSON.parse(await Deno.readTextFile(`${dir}/grads.json`));
  const path = `${dir}/grads.safetensors`;
  const header = await readSafetensorsHeader(path);
  const bytes = await Deno.readFile(path);
  const grads = new Map<string, Float64Array>();
  for (const [k, info] of header.tensors) {
    assert.equal(info.dtype, "F64", `${path}: ${k} is ${info.dtype}`);
    const copy = bytes.slice(info.byteOffset, info.byteOffset + info.byteLength);
    grads.set(k, new Float64Array(copy.buffer));
  }
  const flat = (rows: number[][]) => Int32Array.from(rows.flat());
  assert.deepEqual([meta.ids.length, meta.ids[0].length], [B, L], `${dir}/grads.json ids`);
  return { ids: flat(meta.ids), targets: flat(meta.targets), loss: meta.loss, grads };
}

const hasHf = (name: string) => {
  try {
    return Deno.statSync(`${ROOT}${name}/grads.safetensors`).isFile;
  } catch {
    return false;
  }
};

function randomTokens(vocab: number, seed: number) {
  const next = rng(seed);
  const seq = Array.from(
    { length: B },
    () => Array.from({ length: L + 1 }, () => Math.floor(next() * vocab)),
  );
  return {
    ids: Int32Array.from(seq.flatMap((r) => r.slice(0, L))),
    targets: Int32Array.from(seq.flatMap((r) => r.slice(1))),
  };
}

const f64 = (w: Record<string, Float32Array>) =>
  Object.fromEntries(Object.entries(w).map(([k, v]) => [k, Float64Array.from(v)]));

/** The interpreter's loss and gradients (float64) on the checkpoint's weights. */
function interpreterGrads(m: Model, ids: Int32Array, targets: Int32Array) {
  const graph = trace(
    lmLossInputs(m.def),
    (t) => lmLossAndGradOutputs(m.def, t),
    m.def.sizes(B, L),
  );
  return interpret(graph, { ...f64(m.weights), ids, targets });
}

for (const name of MODELS) {
  Deno.test(`${name}: the interpreter's LM-loss gradients match central differences`, async () => {
    const m = await loadWeights(name);
    const seed = freshSeed();
    const { ids, targets } = randomTokens(m.def.vocab, seed);
    const wrt = Object.keys(m.def.weightInputs());
    // Three entries spread over each weight: 2·3 forward passes per weight.
    try {
      checkGradients(
        lmLossInputs(m.def),
        (t) => lmLoss(m.def, t),
        wrt,
        m.def.sizes(B, L),
        { ...f64(m.weights), ids, targets },
        { maxElements: 3, tol: 1e-6, step: 1e-5 },
      );
    } catch (e) {
      throw new Error(`seed ${seed}: ${(e as Error).message}`);
    }
    assert.ok(wrt.includes("backbone.embeddings.weight"), `seed ${seed}`);
  });

  Deno.test({
    name: `${name}: the interpreter's loss and gradients match HF transformers (float64)`,
    ignore: !hasHf(name),
    fn: async () => {
      const m = await loadWeights(name);
      const hf = await readHfGrads(name);
      const out = interpreterGrads(m, hf.ids, hf.targets);
      const lossErr = Math.abs(out.loss[0] - hf.loss) / Math.abs(hf.loss);
      assert.ok(lossErr <= 1e-10, `${name}: loss ${out.loss[0]} vs HF ${hf.loss} (${lossErr})`);
      const names = Object.keys(m.def.weightInputs());
      assert.deepEqual([...hf.grads.keys()].sort(), [...names].sort(), `${name}: gradient names`);
      for (const k of names) {
        const err = relativeError(out[`grad.${k}`], hf.grads.get(k)!);
        assert.ok(err <= 1e-9, `${name}: grad ${k}: ‖Δ‖/‖g_HF‖ = ${err}`);
      }
    },
  });

  // Mamba-2's scans also with the state-free SSD backward (codegen/ssd_backward.ts).
  const variants = name.startsWith("mamba2") ? [false, true] : [false];
  for (const ssd of variants) {
    const title = ssd ? " (ssdBackward)" : "";
    Deno.test(`${name}: the compiled f32 gradients match float64 within 1e-4 of each norm${title}`, async () => {
      const m = await loadWeights(name);
      const hf = hasHf(name) ? await readHfGrads(name) : undefined;
      const seed = freshSeed();
      const { ids, targets } = hf ?? randomTokens(m.def.vocab, seed);
      let ref: { loss: number; grads: Map<string, ArrayLike<number>> };
      if (hf) {
        ref = hf;
      } else {
        const out = interpreterGrads(m, ids, targets);
        const grads = new Map(Object.keys(m.weights).map((k) => [k, out[`grad.${k}`]]));
        ref = { loss: out.loss[0], grads };
      }
      const prog = await compile(
        lmLossInputs(m.def),
        (t) => lmLossAndGradOutputs(m.def, t),
        m.def.sizes(B, L),
        { backend: "gpu", ...(ssd ? { ssdBackward: { chunk: 4 } } : {}) },
      );
      try {
        const out = await prog.run({ ...m.weights, ids, targets });
        const what = `${name} (${hf ? "HF reference" : `interpreter reference, seed ${seed}`})`;
        const lossErr = Math.abs(out.loss[0] - ref.loss) / Math.abs(ref.loss);
        assert.ok(lossErr <= 1e-5, `${what}: loss ${out.loss[0]} vs ${ref.loss}`);
        for (const [k, want] of ref.grads) {
          const err = relativeError(out[`grad.${k}`], want);
          assert.ok(err <= 1e-4, `${what}: grad ${k}: ‖Δ‖/‖g_ref‖ = ${err}`);
        }
      } finally {
        prog.destroy();
      }
    });
  }
}
