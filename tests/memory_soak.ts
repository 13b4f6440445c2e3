// Memory soak. 200 generate() calls and 100 logits() calls over 100 distinct prompt lengths
// (1..100) on a fixture model, printing resident memory (Deno.memoryUsage().rss) after loading,
// after the first calls compiled every chunk program, and at the end; exits 1 when the calls grew
// it by more than the bound or compiled any new pipeline. The suite runs a short version in a
// process of its own (tests/prompt_chunks_test.ts): resident memory is per process, and other
// test modules share the test runner's.
//
//   deno run -A tests/memory_soak.ts [--model DIR] [--calls 200] [--max-len 100] [--bound-mb 64]
import { parseArgs } from "node:util";
import { loadModel } from "../models/language_model.ts";
import { getGpu } from "../runtime/gpu_device.ts";
import { pipelineCacheFor } from "../runtime/program.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    calls: { type: "string", default: "200" },
    "max-len": { type: "string", default: "100" },
    "bound-mb": { type: "string", default: "64" },
  },
});
const dir = values.model ??
  new URL("./fixtures/models/mamba_tied_n8", import.meta.url).pathname;
const calls = Number(values.calls);
const maxLen = Number(values["max-len"]);
// 2^k − 1 ≥ maxLen: a prompt of that length runs every chunk length the others need.
const warmLen = 2 ** Math.ceil(Math.log2(maxLen + 1)) - 1;
const bound = Number(values["bound-mb"]);
const mb = () => (Deno.memoryUsage().rss / 2 ** 20).toFixed(1);
const prompt = (l: number, salt: number) =>
  Array.from({ length: l }, (_, i) => (i * 37 + l * 11 + salt) % 100);

const t0 = performance.now();
const model = await loadModel(dir, { progress: false });
const pipelines = pipelineCacheFor(await getGpu());
console.log(`loaded ${dir}: rss ${mb()} MB`);
await model.logits([prompt(warmLen, 0)]);
await model.generate([prompt(warmLen, 0)], { maxNew: 4 });
const compiled = pipelines.size;
const before = Deno.memoryUsage().rss;
console.log(
  `warmed up (${pipelines.size} pipelines, ${JSON.stringify(model.cacheStats())}): ` +
    `rss ${mb()} MB after ${((performance.now() - t0) / 1000).toFixed(0)} s`,
);
const t1 = performance.now();
for (let i = 0; i < calls; i++) {
  const l = 1 + (i % maxLen);
  await model.generate([prompt(l, i)], { maxNew: 8, eos: -1, temperature: 0.8, seed: i });
  if (i < maxLen) await model.logits([prompt(l, i)]);
  if ((i + 1) % 50 === 0) console.log(`  ${i + 1} generate calls: rss ${mb()} MB`);
}
const after = Deno.memoryUsage().rss;
const grown = (after - before) / 2 ** 20;
console.log(
  `after ${calls} generate and ${
    Math.min(calls, maxLen)
  } logits calls over ${maxLen} prompt lengths ` +
    `(${((performance.now() - t1) / 1000).toFixed(0)} s, ${pipelines.size} pipelines, ` +
    `${JSON.stringify(model.cacheStats())}): rss ${mb()} MB, grew ${grown.toFixed(1)} MB ` +
    `(bound ${bound} MB)`,
);
model.destroy();
if (pipelines.size !== compiled) {
  console.error(`memory_soak: prompt lengths compiled ${pipelines.size - compiled} new pipelines`);
  Deno.exit(1);
}
if (grown > bound) {
  console.error(`memory_soak: resident memory grew ${grown.toFixed(1)} MB, over ${bound} MB`);
  Deno.exit(1);
}
