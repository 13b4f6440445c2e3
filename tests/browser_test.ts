/**
 * The example page in a real browser: Debian's Chromium, headless with WebGPU (SwiftShader, a
 * software adapter, on a machine without a GPU), driven by puppeteer-core. The page is built
 * (`bundle`), served (`startServer`) and loaded twice: in check mode on a Mamba and a Mamba-2
 * fixture, whose logits must match a Deno run of the same model within 1e-4 and whose greedy
 * tokens must be identical; and as the induction demo, whose accuracy per length must equal
 * Deno's on the same sequences. Deno runs in its own process on the same adapter (Vulkan pointed
 * at Chromium's SwiftShader) when Chromium ships one, so the tokens/s printed side by side
 * compare like with like. A screenshot of the demo goes to out/web_page.png.
 *
 * Ignored, with a message, when no Chromium is found (`SSMKIT_CHROMIUM` names one explicitly).
 *
 * @module
 */

import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import * as esbuild from "esbuild";
import { loadModel } from "../mod.ts";
import { evaluateInduction, seededRandom } from "../models/induction/task.ts";
import { bundle } from "../web/bundle.ts";
import { startServer } from "../web/serve.ts";

const ROOT = new URL("../", import.meta.url).pathname;

function findChromium(): string | undefined {
  const named = Deno.env.get("SSMKIT_CHROMIUM");
  if (named) return named;
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  for (const name of ["chromium", "chromium-browser", "chromium-headless-shell"]) {
    for (const dir of dirs) {
      try {
        if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
      } catch {
        // Not in this folder.
      }
    }
  }
  return undefined;
}

const CHROMIUM = findChromium();
if (!CHROMIUM) {
  console.warn(
    "browser_test: ignored: no chromium binary on PATH (apt-get install chromium, or set " +
      "SSMKIT_CHROMIUM to a Chromium binary)",
  );
}

/** Chromium's SwiftShader Vulkan driver, for a Deno run on the browser's adapter. */
const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

// Small on purpose: SwiftShader compiles and runs every kernel on the CPU. A prompt of 8 tokens
// is one prompt chunk (one program); each induction length is one more.
const PROMPT = [1, 5, 2, 9, 3, 7, 11, 4];
const NEW_TOKENS = 16;
const LENGTHS = [256];
const SEQUENCES = 2;
const FIXTURES = ["mamba_untied_n16", "mamba2_tied_g1_n8_q8"];

interface Check {
  logits: number[];
  tokens: number[];
  tokensPerSecond: number;
}
interface Row {
  length: number;
  accuracy: number;
  tokensPerSecond: number;
}

/** The page's check run, under Deno in this process (on its default adapter). */
async function denoCheck(model: string): Promise<Check> {
  const lm = await loadModel(`${ROOT}tests/fixtures/models/${model}`, { progress: false });
  try {
    const logits = Array.from(await lm.logits([PROMPT]));
    const [tokens] = await lm.generate([PROMPT], { maxNew: NEW_TOKENS, eos: -1 });
    return { logits, tokens, tokensPerSecond: NaN };
  } finally {
    lm.destroy();
  }
}

/** The page's induction run under Deno: same checkpoint, seed, lengths and sequences. */
async function denoInduction(): Promise<Row[]> {
  const lm = await loadModel(`${ROOT}models/induction/checkpoint`, { progress: false });
  const rand = seededRandom(1234);
  const rows: Row[] = [];
  try {
    for (const length of LENGTHS) {
      const opts = { sequences: SEQUENCES, progress: false };
      rows.push(...await evaluateInduction(lm, [length], rand, opts));
    }
  } finally {
    lm.destroy();
  }
  return rows;
}

/**
 * The check run in a Deno process on the browser's adapter (SwiftShader, when Chromium ships
 * its Vulkan driver), for the speed comparison.
 */
async function denoOnSwiftShader(model: string): Promise<(Check & { adapter: string }) | string> {
  try {
    Deno.statSync(SWIFTSHADER_ICD);
  } catch {
    return `no ${SWIFTSHADER_ICD}: no Deno run on the browser's adapter`;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}tests/browser_reference.ts`,
      `${ROOT}tests/fixtures/models/${model}`,
      PROMPT.join(","),
      String(NEW_TOKENS),
    ],
    env: { VK_ICD_FILENAMES: SWIFTSHADER_ICD },
    stderr: "inherit",
  }).output();
  assert.ok(out.success, `tests/browser_reference.ts failed (exit ${out.code})`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Loads `path` and waits until the page reports "done" or "error"; returns its results. */
async function runPage(
  browser: Browser,
  url: string,
  screenshot?: string,
  then?: (page: Page) => Promise<void>,
) {
  const page = await browser.newPage();
  const log: string[] = [];
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`pageerror: ${(e as Error).message}`));
  await page.setViewport({ width: 1100, height: 900 });
  await page.goto(url);
  // A string: this runs in the page, whose DOM this file's (Deno) types do not know.
  await page.waitForFunction('["done", "error"].includes(document.body.dataset.state)', {
    timeout: 120_000,
    polling: 200,
  });
  await then?.(page);
  const result = await page.evaluate(() =>
    JSON.stringify((globalThis as { ssmkitPage?: unknown }).ssmkitPage)
  );
  if (screenshot) {
    await Deno.mkdir(screenshot.slice(0, screenshot.lastIndexOf("/")), { recursive: true });
    await page.screenshot({ path: screenshot as `${string}.png`, fullPage: true });
  }
  await page.close();
  const parsed = JSON.parse(result) as {
    state: string;
    error?: string;
    adapter: string;
    check?: Check;
    induction?: Row[];
    generated?: number[];
  };
  assert.equal(parsed.state, "done", `${url}: ${parsed.error}\n${log.join("\n")}`);
  return parsed;
}

/**
 * The page's "your model" flow: the fixture's files given to the folder picker (as the user
 * would pick them), then Generate with the check's prompt as token ids (no tokenizer.json).
 */
async function pickFolder(page: Page, model: string): Promise<void> {
  const dir = `${ROOT}tests/fixtures/models/${model}`;
  // A webkitdirectory input takes the folder: its files arrive named "FOLDER/NAME".
  const input = (await page.$("#folder"))!;
  await (input as unknown as { uploadFile(...paths: string[]): Promise<void> }).uploadFile(dir);
  await page.waitForFunction(
    '!document.getElementById("generate").disabled || ssmkitPage.state === "error"',
    { timeout: 60_000, polling: 200 },
  );
  await page.evaluate(
    `document.getElementById("prompt").value = "${PROMPT.join(" ")}";
     document.getElementById("max-new").value = "${NEW_TOKENS}";
     document.getElementById("generate").click();`,
  );
  await page.waitForFunction('ssmkitPage.generated || ssmkitPage.state === "error"', {
    timeout: 120_000,
    polling: 200,
  });
}

function assertClose(actual: number[], expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0, at = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / Math.max(1, Math.abs(expected[i]));
    if (!(err <= worst)) [worst, at] = [err, i];
  }
  assert.ok(
    worst <= 1e-4,
    `${what}: logit ${at} is ${actual[at]} in the page, ${expected[at]} under Deno`,
  );
}

function seconds(t0: number): string {
  return `${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

Deno.test({
  name: "browser: the page's logits, greedy tokens and induction accuracy match Deno's",
  ignore: !CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let t0 = performance.now();
    await bundle(false); // the build's Deno-reference check runs here too
    await esbuild.stop();
    const server = startServer(0);
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless=new", "--enable-unsafe-webgpu", "--no-sandbox", "--no-first-run"],
    });
    console.log(`bundle, server, browser: ${seconds(t0)}`);
    try {
      const speeds: string[] = [];
      const pageTokens: number[][] = [];
      for (const model of FIXTURES) {
        t0 = performance.now();
        const query = `check=/tests/fixtures/models/${model}/&prompt=${PROMPT}&new=${NEW_TOKENS}`;
        const page = await runPage(
          browser,
          `${server.url}?${query}`,
          undefined,
          model === FIXTURES[0] ? (p) => pickFolder(p, model) : undefined,
        );
        const deno = await denoCheck(model);
        assertClose(page.check!.logits, deno.logits, model);
        assert.deepEqual(page.check!.tokens, deno.tokens, `${model}: greedy tokens`);
        pageTokens.push(page.check!.tokens);
        if (model === FIXTURES[0]) {
          assert.ok(page.generated, `${model}: the picked folder's Generate gave no tokens`);
          // The form's run stops at the config's eos (0): the same tokens up to there.
          const stop = deno.tokens.indexOf(0);
          const want = stop < 0 ? deno.tokens : deno.tokens.slice(0, stop + 1);
          assert.deepEqual(page.generated, want, `${model}: picked folder, Generate`);
          console.log(`${model}: the same tokens from the picked folder's files`);
        }
        console.log(`${model}: logits and ${NEW_TOKENS} greedy tokens match (${seconds(t0)})`);
        speeds.push(
          `${model}: page ${page.check!.tokensPerSecond.toFixed(1)} tokens/s (${page.adapter})`,
        );
      }

      t0 = performance.now();
      const screenshot = `${ROOT}out/web_page.png`;
      const demo = await runPage(
        browser,
        `${server.url}?lengths=${LENGTHS}&sequences=${SEQUENCES}`,
        screenshot,
      );
      const deno = await denoInduction();
      const accuracy = (rows: Row[]) => rows.map((r) => [r.length, r.accuracy]);
      assert.deepEqual(accuracy(demo.induction!), accuracy(deno));
      console.log(`induction demo: accuracy per length as under Deno (${seconds(t0)})`);
      for (const r of demo.induction!) {
        console.log(
          `  length ${r.length}: accuracy ${r.accuracy}, page ${r.tokensPerSecond.toFixed(0)} ` +
            `tokens/s (compilation included)`,
        );
      }
      console.log(`screenshot: ${screenshot}`);
      await browser.close();

      // Speed on the same adapter, after the browser has gone (they would share the CPU).
      t0 = performance.now();
      const same = await denoOnSwiftShader(FIXTURES[0]);
      if (typeof same === "string") speeds.push(same);
      else {
        assert.deepEqual(same.tokens, pageTokens[0], `${FIXTURES[0]}: Deno on SwiftShader`);
        speeds.push(
          `${FIXTURES[0]}: Deno ${same.tokensPerSecond.toFixed(1)} tokens/s (${same.adapter}, ` +
            `${seconds(t0)})`,
        );
      }
      console.log(`greedy decoding speed, warm (${NEW_TOKENS} tokens):\n  ${speeds.join("\n  ")}`);
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});
