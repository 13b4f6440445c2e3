// Calls on a loaded model: overlapping calls each get their own result, stop tokens may be a
// list, options are validated with messages that name them, and a destroyed model says so.
import assert from "node:assert/strict";
import { type GenerateOptions, loadModel } from "../models/language_model.ts";
import { hasGpu } from "../runtime/gpu_device.ts";

const gpuOpts = { ignore: !(await hasGpu()) };
const fixture = (name: string) => new URL(`./fixtures/models/${name}`, import.meta.url).pathname;

Deno.test({
  name: "overlapping logits and generate calls each get the result of the call made alone",
  ...gpuOpts,
  async fn() {
    const model = await loadModel(fixture("mamba_tied_n8"), { progress: false });
    try {
      // Same-length prompts share every buffer and program: the worst case for interleaving.
      const prompts = [[5, 9, 14, 3, 77], [60, 2, 31, 8, 8], [11, 12, 13, 14, 15], [
        99,
        1,
        50,
        7,
        2,
      ]];
      type Call = { kind: "logits"; prompt: number[] } | {
        kind: "generate";
        prompts: number[][];
        options: GenerateOptions;
      };
      const calls: Call[] = [];
      prompts.forEach((prompt, i) => {
        calls.push({ kind: "logits", prompt });
        const options = { maxNew: 10, eos: -1, blockSize: 4, seed: i };
        calls.push({ kind: "generate", prompts: [prompt], options });
        calls.push({
          kind: "generate",
          prompts: [prompt],
          options: { ...options, temperature: 1.5, topK: 30 },
        });
      });
      calls.push({ kind: "generate", prompts: prompts.slice(0, 2), options: { maxNew: 7 } });
      calls.push({ kind: "logits", prompt: [4, 4] });
      const run = (c: Call) =>
        c.kind === "logits" ? model.logits([c.prompt]) : model.generate(c.prompts, c.options);
      // One at a time first: this also compiles everything, so the overlapping calls below
      // share programs and buffers (as calls on a warm model do).
      const alone: (Float32Array | number[][])[] = [];
      for (const c of calls) alone.push(await run(c));
      const together = await Promise.all(calls.map(run));
      calls.forEach((c, i) => {
        const what = `call ${i} (${c.kind})`;
        if (c.kind === "logits") {
          assert.deepEqual(
            Array.from(together[i] as Float32Array),
            Array.from(alone[i] as Float32Array),
            what,
          );
        } else {
          assert.deepEqual(together[i], alone[i], what);
        }
      });
      // The generations differ from each other (so a swap would have been seen).
      const firsts = calls.flatMap((c, i) => c.kind === "generate" ? [String(together[i])] : []);
      assert.ok(new Set(firsts).size >= firsts.length - 2, `${firsts}`);
    } finally {
      model.destroy();
    }
  },
});

Deno.test({
  name: "generation stops at any token of an eos list; bad eos and maxNew are named",
  ...gpuOpts,
  async fn() {
    const model = await loadModel(fixture("mamba_tied_n8"), { progress: false });
    try {
      const prompt = [[5, 9, 14]];
      const options = { maxNew: 12, temperature: 2, seed: 4 };
      const full = (await model.generate(prompt, { ...options, eos: [] }))[0];
      assert.equal(full.length, 12);
      const [a, b] = [full[6], full[3]];
      const stop = Math.min(full.indexOf(a), full.indexOf(b));
      const cut = (await model.generate(prompt, { ...options, eos: [a, b] }))[0];
      assert.deepEqual(cut, full.slice(0, stop + 1));
      // The model's own list (ModelDefinition.eosTokenIds) is the default.
      (model.definition as { eosTokenIds: readonly number[] }).eosTokenIds = [a, b];
      assert.deepEqual((await model.generate(prompt, options))[0], cut);
      assert.deepEqual((await model.generate(prompt, { ...options, eos: -1 }))[0], full);
      const bad: [unknown, RegExp][] = [
        ["x", /eos must be a token id in \[0, 100\).*got string "x"/],
        [NaN, /eos must be .*got NaN/],
        [100, /eos must be .*got 100/],
        [[1, 2.5], /eos must be .*got \[1,2\.5\]/],
      ];
      for (const [eos, message] of bad) {
        await assert.rejects(model.generate(prompt, { maxNew: 2, eos: eos as number }), message);
      }
      await assert.rejects(
        model.generate(prompt, { maxNew: 2 ** 40 }),
        /maxNew 1099511627776 is too large for this device: at most \d+ new tokens per row/,
      );
      await assert.rejects(model.generate(prompt, { maxNew: 1.5 }), /maxNew must be a positive/);
    } finally {
      model.destroy();
    }
  },
});

Deno.test({
  name: "a destroyed model finishes the calls already made and rejects later ones",
  ...gpuOpts,
  async fn() {
    const model = await loadModel(fixture("mamba_tied_n8"), { progress: false });
    const want = await model.generate([[1, 2, 3]], { maxNew: 5, eos: -1 });
    const inFlight = model.generate([[1, 2, 3]], { maxNew: 5, eos: -1 });
    model.destroy();
    assert.deepEqual(await inFlight, want);
    await assert.rejects(model.logits([[1, 2]]), /logits: the model was destroyed/);
    await assert.rejects(
      model.generate([[1]], { maxNew: 1 }),
      /generate: the model was destroyed/,
    );
    await assert.rejects(model.benchmarkDecodeStep(), /the model was destroyed/);
    model.destroy(); // twice is harmless
  },
});
