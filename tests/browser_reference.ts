/**
 * The Deno side of tests/browser_test.ts's speed comparison, run as its own process so that it
 * can use the same WebGPU adapter as the browser (the test points Vulkan at Chromium's
 * SwiftShader). It runs what the page's check mode runs and prints one JSON line:
 *
 *   deno run -A tests/browser_reference.ts MODEL_DIR PROMPT(1,2,3) NEW
 *
 * @module
 */

import { getGpu, loadModel } from "../mod.ts";

const [dir, promptText, newText] = Deno.args;
const gpu = await getGpu();
const model = await loadModel(dir, { progress: false });
const prompt = promptText.split(",").map(Number);
const maxNew = Number(newText);
const logits = Array.from(await model.logits([prompt]));
await model.generate([prompt], { maxNew, eos: -1 }); // compiles, as the page's warm-up run
const t0 = performance.now();
const [tokens] = await model.generate([prompt], { maxNew, eos: -1 });
const seconds = (performance.now() - t0) / 1000;
model.destroy();

console.log(JSON.stringify({
  adapter: gpu.adapterInfo.description,
  logits,
  tokens,
  tokensPerSecond: maxNew / seconds,
}));
