// Prompts run as chunks of power-of-two lengths continuing from each other's caches: the
// split itself, equality with the whole-sequence program, and what stays compiled (a bounded
// set of programs, no new pipelines per prompt length, bounded resident memory).
import assert from "node:assert/strict";
import { loadModel } from "../models/language_model.ts";
import { chunkLengths } from "../models/prompt_chunks.ts";
import { Checkpoint } from "../models/checkpoint/checkpoint.ts";
import { readConfig } from "../models/checkpoint/config.ts";
import { modelDefinitionFor } from "../models/definitions.ts";
import { compile } from "../runtime/compile.ts";
import { hasGpu } from "../runtime/gpu_device.ts";
import { freshSeed, rng } from "./util.ts";

const gpuOpts = { ignore: !(await hasGpu()) };
const fixture = (name: string) => new URL(`./fixtures/models/${name}`, import.meta.url).pathname;
const seed = freshSeed();
console.log(`prompt_chunks_test seed ${seed}`);
const next = rng(seed);

Deno.test("chunkLengths: powers of two up to the cap, largest first, summing to the length", () => {
  assert.deepEqual(chunkLengths(2100, 1024), [1024, 1024, 32, 16, 4]);
  assert.deepEqual(chunkLengths(1, 1024), [1]);
  assert.deepEqual(chunkLengths(7, 2), [2, 2, 2, 1]);
  for (let i = 0; i < 500; i++) {
    const cap = 2 ** Math.floor(next() * 11);
    const length = 1 + Math.floor(next() * 5000);
    const chunks = chunkLengths(length, cap);
    assert.equal(chunks.reduce((s, c) => s + c, 0), length, `${length} / ${cap}`);
    const bad = chunks.findIndex((c, k) =>
      c > cap || (c & (c - 1)) !== 0 || (k > 0 && c > chunks[k - 1])
    );
    assert.equal(bad, -1, `chunk ${bad} of ${chunks}: over the cap, not a power of two or growing`);
    const below = chunks.filter((c) => c < cap);
    assert.equal(new Set(below).size, below.length, `a length below the cap repeats: ${chunks}`);
  }
  assert.throws(() => chunkLengths(0, 4), /length must be a positive integer, got 0/);
  assert.throws(() => chunkLengths(5, 3), /cap must be a power of two, got 3/);
});

/** Logits of the whole-sequence forward (one program for exactly this shape). */
async function wholeSequenceLogits(dir: string, tokens: number[][]): Promise<Float32Array> {
  const def = modelDefinitionFor(await readConfig(dir), dir);
  const ckpt = await Checkpoint.open(dir);
  const weights: Record<string, Float32Array> = {};
  try {
    for (const [name, shape] of def.weightShapes()) weights[name] = await ckpt.getF32(name, shape);
  } finally {
    ckpt.close();
  }
  const [b, l] = [tokens.length, tokens[0].length];
  const program = await compile(
    { ...def.weightInputs(), ids: { axes: "b l", dtype: "i32" } },
    (t) => ({ logits: def.forward(t, {}).logits }),
    def.sizes(b, l),
    { backend: "gpu" },
  );
  const out = await program.run({ ...weights, ids: Int32Array.from(tokens.flat()) });
  return out.logits as Float32Array;
}

Deno.test({
  name: "chunked logits equal the whole-sequence program (Mamba and Mamba-2, batch 2)",
  ...gpuOpts,
  async fn() {
    // 13 = 8 + 4 + 1 and 21 = 16 + 4 + 1: three chunks each, every row its own prompt.
    for (const [name, l] of [["mamba_untied_n16", 13], ["mamba2_untied_g2_n16_q4", 21]] as const) {
      const tokens = [0, 1].map(() => Array.from({ length: l }, () => Math.floor(next() * 100)));
      const want = await wholeSequenceLogits(fixture(name), tokens);
      const model = await loadModel(fixture(name), { progress: false });
      try {
        const got = await model.logits(tokens);
        let worst = 0, scale = 0;
        for (let i = 0; i < want.length; i++) {
          worst = Math.max(worst, Math.abs(got[i] - want[i]));
          scale = Math.max(scale, Math.abs(want[i]));
        }
        assert.ok(worst <= 1e-5 * scale, `${name}: max |Δ| ${worst} over max |logit| ${scale}`);
      } finally {
        model.destroy();
      }
    }
  },
});

Deno.test({
  name: "varied prompt lengths compile no new pipelines and stay in bounded memory",
  ...gpuOpts,
  async fn() {
    // In a process of its own: resident memory is per process, and the runner's other modules
    // grow it too. 60 generate and 30 logits calls over 30 lengths; the soak exits 1 on any new
    // pipeline or growth over the bound. Before the chunked prompts each call leaked ~4 MB (a
    // sampler pipeline per call) and every length compiled a program (~25 MB on lavapipe).
    const soak = new URL("./memory_soak.ts", import.meta.url).pathname;
    const args = ["run", "-A", soak, "--model", fixture("mamba_tied_n8"), "--calls", "60"];
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...args, "--max-len", "30", "--bound-mb", "48"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    const last = text.trim().split("\n").filter((line) => line.startsWith("after ")).at(-1) ?? "";
    console.log(`  ${last}`);
    assert.match(last, /\{"batchSizes":\[1\],"chunkPrograms":9\}/);
  },
});
