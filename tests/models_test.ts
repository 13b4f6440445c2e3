// Language models loaded from tiny HF checkpoints (tests/oracle/tiny_models.py) reproduce HF
// transformers: logits of every position, greedy continuations, and the decode-step cache
// agrees with recomputing the whole sequence.
import assert from "node:assert/strict";
import { loadModel } from "../models/language_model.ts";
import { assertClose } from "./util.ts";
import { assertLegalRamp } from "./block_ramp_util.ts";

const root = new URL("./fixtures/models/", import.meta.url);
const models = [...Deno.readDirSync(root)].filter((e) => e.isDirectory).map((e) => e.name).sort();

interface Reference {
  prompts: number[][];
  logits: number[][][];
  greedy: number[][];
}

Deno.test("fixtures exist for tied, untied, f16 and bf16 checkpoints", () => {
  for (const name of ["mamba_tied_n8", "mamba_untied_n16", "mamba_f16", "mamba_bf16"]) {
    assert.ok(models.includes(name), `missing fixture ${name}`);
  }
});

for (const name of models) {
  const dir = new URL(name, root).pathname;
  const ref: Reference = JSON.parse(await Deno.readTextFile(`${dir}/reference.json`));

  Deno.test(`${name}: logits of every position match HF transformers`, async () => {
    const model = await loadModel(dir, { progress: false });
    for (const [i, prompt] of ref.prompts.entries()) {
      const got = await model.logits([prompt]);
      assertClose(got, ref.logits[i].flat(), 1e-4, `${name} prompt ${i}`);
    }
    model.destroy();
  });

  Deno.test(`${name}: greedy generation on the GPU equals HF generate`, async () => {
    const model = await loadModel(dir, { progress: false });
    for (const [i, prompt] of ref.prompts.entries()) {
      const got = await model.generate([prompt], { maxNew: 8, eos: -1, blockSize: 3 });
      assert.deepEqual(got[0], ref.greedy[i], `${name} prompt ${i}`);
    }
    model.destroy();
  });
}

Deno.test("decoding with the state cache equals recomputing the whole sequence (batch 2)", async () => {
  const dir = new URL("mamba_untied_n16", root).pathname;
  const model = await loadModel(dir, { progress: false });
  const prompts = [[5, 9, 14], [60, 2, 31]];
  const generated = await model.generate(prompts, {
    maxNew: 6,
    eos: -1,
    temperature: 0.8,
    topK: 20,
    seed: 7,
    blockSize: 4,
  });
  // Greedy choices are not involved: check that each sampled token was drawn from the logits
  // the full recomputation gives (probability above zero under top-k), and that greedy
  // continuations of batch rows equal those of single rows.
  const vocab = model.definition.vocab;
  for (const [row, prompt] of prompts.entries()) {
    const seq = [...prompt, ...generated[row]];
    const logits = await model.logits([seq]);
    for (let k = 0; k < generated[row].length; k++) {
      const pos = prompt.length - 1 + k;
      const slice = Array.from(logits.subarray(pos * vocab, (pos + 1) * vocab));
      const kth = [...slice].sort((a, b) => b - a)[19];
      assert.ok(slice[generated[row][k]] >= kth, `row ${row} token ${k} is inside the top-k`);
    }
  }
  const batch = await model.generate(prompts, { maxNew: 5, eos: -1 });
  for (const [row, prompt] of prompts.entries()) {
    assert.deepEqual(batch[row], (await model.generate([prompt], { maxNew: 5, eos: -1 }))[0]);
  }
  model.destroy();
});

Deno.test("generation stops at EOS, streams what it returns, and a block in flight is harmless", async () => {
  const model = await loadModel(new URL("mamba_untied_n16", root).pathname, { progress: false });
  const prompt = [5, 9, 14];
  const full = (await model.generate([prompt], { maxNew: 12, eos: -1, blockSize: 2 }))[0];
  assert.equal(full.length, 12);
  const eos = full[3];
  const streamed: number[] = [];
  const cut = await model.generate([prompt], {
    maxNew: 12,
    eos,
    blockSize: 2,
    onTokens: (t) => streamed.push(...t[0]),
  });
  assert.deepEqual(cut[0], full.slice(0, full.indexOf(eos) + 1));
  assert.deepEqual(streamed, cut[0]);
  // The speculative block submitted before EOS was seen must not disturb the next call.
  for (const blockSize of [1, 5, 32]) {
    const again = await model.generate([prompt], { maxNew: 12, eos: -1, blockSize });
    assert.deepEqual(again[0], full, `block size ${blockSize}`);
  }
  // The default blocks (8 steps, growing to 64) stream the same tokens as single steps; the
  // blocks arrive in the ramp's order.
  const long = (await model.generate([prompt], { maxNew: 300, eos: -1, blockSize: 1 }))[0];
  const blocks: number[] = [];
  const byDefault = await model.generate([prompt], {
    maxNew: 300,
    eos: -1,
    onTokens: (t) => blocks.push(t[0].length),
  });
  assert.deepEqual(byDefault[0], long);
  assertLegalRamp(blocks, 300, 64);
  model.destroy();
});

Deno.test("generation asks for block k's tokens before submitting k + 1, and encodes k + 2 before reading k", async () => {
  const model = await loadModel(new URL("mamba_tied_n8", root).pathname, { progress: false });
  const lines: string[] = [];
  const printError = console.error;
  Deno.env.set("SSMKIT_TRACE_GENERATE", "1");
  try {
    console.error = (...parts: unknown[]) => lines.push(parts.join(" "));
    await model.generate([[1, 2, 3]], { maxNew: 200, eos: -1 });
  } finally {
    console.error = printError;
    Deno.env.delete("SSMKIT_TRACE_GENERATE");
    model.destroy();
  }
  const trace = lines.find((l) => l.startsWith("ssmkit generate trace"));
  assert.ok(trace, `no trace among ${JSON.stringify(lines)}`);
  // Events in order, as "encode 0", "submit 0", "request 0", "read 0" (a block by its first step).
  const events = [...trace.matchAll(/(encode|submit|request|read) (\d+)\+/g)].map((m) =>
    `${m[1]} ${m[2]}`
  );
  const at = (event: string) => {
    const i = events.indexOf(event);
    assert.ok(i >= 0, `"${event}" missing from ${events.join(", ")}`);
    return i;
  };
  // Blocks by their first steps, in the ramp's order (their sizes depend on the CPU's speed).
  const firsts = events.filter((e) => e.startsWith("read")).map((e) => Number(e.split(" ")[1]));
  assertLegalRamp(firsts.map((f, i) => (firsts[i + 1] ?? 200) - f), 200, 64);
  assert.ok(at("submit 0") < at("encode 8"), "the first block runs while the second is encoded");
  for (let k = 0; k + 1 < firsts.length; k++) {
    const [blk, next, after] = [firsts[k], firsts[k + 1], firsts[k + 2]];
    // The map of block k is requested before block k + 1 is submitted (so it waits for block k
    // alone), and block k + 2 is encoded while that map settles, before block k is read.
    assert.ok(at(`request ${blk}`) < at(`submit ${next}`), `block ${blk}: ${events.join(", ")}`);
    assert.ok(at(`submit ${next}`) < at(`read ${blk}`), `block ${blk}: ${events.join(", ")}`);
    if (after !== undefined) {
      assert.ok(at(`submit ${next}`) < at(`encode ${after}`), `block ${blk}: ${events.join(", ")}`);
      assert.ok(at(`encode ${after}`) < at(`read ${blk}`), `block ${blk}: ${events.join(", ")}`);
    }
  }
});

Deno.test("bad inputs to a loaded model are clear errors", async () => {
  const model = await loadModel(new URL("mamba_tied_n8", root).pathname, { progress: false });
  await assert.rejects(
    () => model.logits([[1, 2, 1000]]),
    /token id 1000 .* outside the vocabulary \[0, 100\)/,
  );
  await assert.rejects(() => model.logits([[1, 2], [3]]), /same length/);
  await assert.rejects(
    () => model.generate([[1]], { maxNew: 0 }),
    /maxNew must be a positive integer/,
  );
  model.destroy();
  await assert.rejects(() => loadModel("/nonexistent/model"), /nonexistent/);
});

Deno.test("kernel strategy overrides reach every program of a model (and change nothing)", async () => {
  // Mamba (n = 16) and Mamba-2 (several heads): the scan forced to 2 lanes per channel and the
  // matrix-vector kernels unstaged must still reproduce HF's logits and greedy tokens.
  for (const name of ["mamba_untied_n16", "mamba2_untied_g2_n16_q4"]) {
    const dir = new URL(name, root).pathname;
    const ref: Reference = JSON.parse(await Deno.readTextFile(`${dir}/reference.json`));
    const codegen = {
      scan: { lanes: 2, mode: "recurrent" as const },
      matmul: { gemvStage: false },
    };
    const model = await loadModel(dir, { progress: false, codegen });
    const prompt = ref.prompts[0];
    assertClose(await model.logits([prompt]), ref.logits[0].flat(), 1e-4, `${name} logits`);
    const got = await model.generate([prompt], { maxNew: 8, eos: -1 });
    assert.deepEqual(got[0], ref.greedy[0], `${name} greedy`);
    assert.ok(
      model.lastPrefillKernels().some((k) => k.includes("scan")),
      `${name}: ${model.lastPrefillKernels()}`,
    );
    model.destroy();
  }
  // An impossible override fails at compilation, naming it: it did reach the compiler.
  const dir = new URL("mamba_untied_n16", root).pathname;
  const bad = await loadModel(dir, { progress: false, codegen: { scan: { lanes: 3 } } });
  await assert.rejects(bad.logits([[1, 2, 3]]), /3 lanes per channel/);
  bad.destroy();
});

Deno.test("loadModel's autotune reaches the programs the model compiles", async () => {
  // Tuning a model's programs is `compile`'s autotuner (tests/autotune_test.ts times, caches and
  // applies choices); here the option must reach the builder every prompt chunk and decode step
  // program goes through: a cache file that is not an autotune cache is a one-line error naming
  // the file. (Timing every candidate of a model's programs takes minutes on lavapipe; on an
  // H100 the tuned models ran, bench/RESULTS.md 2026-12-07/08.)
  const dir = new URL("mamba2_untied_g2_n16_q4", root).pathname;
  const cacheFile = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(cacheFile, JSON.stringify({ version: 7 }));
    const model = await loadModel(dir, { progress: false, autotune: { cacheFile } });
    const oneLine = (e: Error) =>
      e.message.includes(cacheFile) && /not an ssmkit autotune cache/.test(e.message) &&
      !e.message.includes("\n");
    await assert.rejects(model.logits([[1, 2, 3, 4, 5]]), oneLine);
    await assert.rejects(model.generate([[1, 2, 3]], { maxNew: 2, eos: -1 }), oneLine);
    model.destroy();
  } finally {
    await Deno.remove(cacheFile);
  }
});
