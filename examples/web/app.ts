/**
 * The script of examples/web/index.html (bundled to dist/web_app.js by `deno task bundle`,
 * served by `deno task serve`). It runs the induction demo on the shipped checkpoint, and any HF
 * Mamba/Mamba-2 model the user drops, picks or names by URL, with streamed text.
 *
 * `?check=URL&prompt=1,2,3&new=N` runs a fixed check instead (tests/browser_test.ts): the
 * model's logits for the prompt and N greedy tokens, timed on a second, warm run. Every result
 * is published as `globalThis.ssmkitPage` and `document.body.dataset.state` ends as "done" or
 * "error".
 *
 * @module
 */

// Page code: the DOM's types also when `deno task check` checks examples/ as Deno code.
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />

import {
  blobSource,
  getGpu,
  type LanguageModel,
  loadModel,
  loadTokenizer,
  type ModelSource,
  type TextTokenizer,
  urlSource,
} from "../../mod.ts";
import {
  type AccuracyRow,
  accuracyTable,
  evaluateInduction,
  seededRandom,
} from "../../models/induction/task.ts";
import { accuracyPlotSvg } from "../plot.ts";

/** What the page publishes for tests and curious users. */
interface PageResult {
  state: "running" | "done" | "error";
  adapter?: string;
  error?: string;
  induction?: AccuracyRow[];
  check?: { logits: number[]; tokens: number[]; tokensPerSecond: number; seconds: number };
  /** The tokens of the last "Generate" on a dropped, picked or URL model. */
  generated?: number[];
}

const result: PageResult = { state: "running" };
(globalThis as { ssmkitPage?: PageResult }).ssmkitPage = result;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function status(text: string, fraction?: number): void {
  $("status").textContent = text;
  const bar = $<HTMLProgressElement>("progress");
  if (fraction === undefined) bar.removeAttribute("value");
  else bar.value = fraction;
}

function fail(e: unknown): void {
  result.state = "error";
  result.error = (e as Error).message ?? String(e);
  status(`error: ${result.error}`, 0);
  $("status").className = "error";
  document.body.dataset.state = "error";
  console.error(e);
}

/** Loads a model with a progress bar for its weights. */
function load(source: ModelSource): Promise<LanguageModel> {
  status(`loading ${source.name}…`, 0);
  return loadModel(source, {
    onProgress: (done, total) =>
      status(
        `loading weights: ${(done / 2 ** 20).toFixed(1)} of ${(total / 2 ** 20).toFixed(1)} MiB`,
        done / total,
      ),
  });
}

async function runInduction(model: LanguageModel, lengths: number[], sequences: number) {
  const rand = seededRandom(1234);
  const rows: AccuracyRow[] = [];
  for (const [i, length] of lengths.entries()) {
    // The first call of each length compiles its kernels: say so, it is most of the wait.
    status(`length ${length}: compiling and running ${sequences} sequences…`, i / lengths.length);
    rows.push(...await evaluateInduction(model, [length], rand, { sequences, progress: false }));
    $("table").textContent = accuracyTable(rows);
    $("plot").innerHTML = accuracyPlotSvg(rows, result.adapter ?? "");
  }
  status(`done: ${lengths.length} lengths`, 1);
  return rows;
}

async function runCheck(params: URLSearchParams): Promise<void> {
  const model = await load(urlSource(params.get("check")!));
  const prompt = (params.get("prompt") ?? "1,2,3").split(",").map(Number);
  const maxNew = Number(params.get("new") ?? "16");
  status("logits…");
  const logits = Array.from(await model.logits([prompt]));
  await model.generate([prompt], { maxNew, eos: -1 }); // compiles the decode programs
  status("generating…");
  const t0 = performance.now();
  const [tokens] = await model.generate([prompt], { maxNew, eos: -1 });
  const seconds = (performance.now() - t0) / 1000;
  result.check = { logits, tokens, tokensPerSecond: maxNew / seconds, seconds };
  $("output").textContent = `check: ${tokens.join(" ")}  (${
    (maxNew / seconds).toFixed(1)
  } tokens/s)`;
  status("done", 1);
  model.destroy();
}

/** Every file under the dropped entries, by path; one dropped folder's files by their path in it. */
async function droppedFiles(items: DataTransferItemList): Promise<Record<string, File>> {
  const files: Record<string, File> = {};
  const walk = async (entry: FileSystemEntry, path: string): Promise<void> => {
    if (entry.isFile) {
      files[path] = await new Promise<File>((ok, bad) =>
        (entry as FileSystemFileEntry).file(ok, bad)
      );
      return;
    }
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((ok, bad) => reader.readEntries(ok, bad));
      if (!batch.length) break;
      for (const e of batch) await walk(e, `${path}/${e.name}`);
    }
  };
  // Entries must be taken before the first await: the list empties once the event is over.
  const entries = [...items].map((i) => i.webkitGetAsEntry()).filter((e) => e !== null);
  for (const e of entries) await walk(e, e.name);
  const names = Object.keys(files);
  const top = names[0]?.split("/")[0];
  if (names.length && names.every((n) => n.startsWith(`${top}/`))) {
    return Object.fromEntries(names.map((n) => [n.slice(top.length + 1), files[n]]));
  }
  return files;
}

let userModel: { model: LanguageModel; tokenizer?: TextTokenizer } | undefined;

async function useModel(source: ModelSource): Promise<void> {
  userModel?.model.destroy();
  userModel = undefined;
  const model = await load(source);
  const tokenizer = await loadTokenizer(source);
  userModel = { model, tokenizer };
  const kind = model.definition.modelType;
  status(`${source.name}: ${kind} loaded${tokenizer ? "" : " (no tokenizer.json: ids only)"}`, 1);
  $<HTMLButtonElement>("generate").disabled = false;
}

async function generate(): Promise<void> {
  if (!userModel) return;
  const { model, tokenizer } = userModel;
  const text = $<HTMLTextAreaElement>("prompt").value;
  const prompt = tokenizer ? tokenizer.encode(text) : text.split(/[\s,]+/).map(Number);
  const maxNew = Number($<HTMLInputElement>("max-new").value);
  const out: number[] = [];
  result.generated = undefined;
  const show = () =>
    $("output").textContent = tokenizer ? text + tokenizer.decode(out) : out.join(" ");
  status("generating…");
  const t0 = performance.now();
  await model.generate([prompt], {
    maxNew,
    onTokens: (block) => {
      out.push(...block[0]);
      show();
      status(`generating: ${out.length} tokens`, out.length / maxNew);
    },
  });
  const s = (performance.now() - t0) / 1000;
  status(`${out.length} tokens in ${s.toFixed(1)} s (${(out.length / s).toFixed(1)} tokens/s)`, 1);
  result.generated = out;
}

function wire(): void {
  const guard = (fn: () => Promise<unknown>) => (ev?: Event) => {
    ev?.preventDefault();
    fn().catch(fail);
  };
  $("induction-form").addEventListener("submit", guard(() => inductionFromForm()));
  $("folder").addEventListener(
    "change",
    guard(() => useModel(blobSource($<HTMLInputElement>("folder").files!))),
  );
  $("url-form").addEventListener(
    "submit",
    guard(() => useModel(urlSource($<HTMLInputElement>("model-url").value))),
  );
  $("generate-form").addEventListener("submit", guard(generate));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    droppedFiles(e.dataTransfer!.items).then((files) =>
      useModel(blobSource(files, "dropped folder"))
    )
      .catch(fail);
  });
}

let induction: LanguageModel | undefined;

async function inductionFromForm(): Promise<void> {
  const lengths = $<HTMLInputElement>("lengths").value.split(/[\s,]+/).filter(Boolean).map(Number);
  const bad = lengths.find((l) => !Number.isInteger(l) || l < 8 || l > 1 << 20);
  if (bad !== undefined || !lengths.length) {
    throw new Error(`lengths: ${bad} is not in [8, 1048576]`);
  }
  const sequences = Number($<HTMLInputElement>("sequences").value);
  induction ??= await load(urlSource("/models/induction/checkpoint/"));
  result.induction = await runInduction(induction, lengths, sequences);
}

async function main(): Promise<void> {
  wire();
  const gpu = await getGpu();
  const info = gpu.adapterInfo;
  result.adapter = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") ||
    "(the browser does not name it)";
  // A software adapter (SwiftShader, lavapipe) is slow: short lengths by default.
  const slow = info.isFallback || /swiftshader|llvmpipe|lavapipe/i.test(result.adapter);
  $("adapter").textContent = `WebGPU adapter: ${result.adapter}${slow ? " (software)" : ""}`;
  const params = new URLSearchParams(location.search);
  if (params.has("check")) await runCheck(params);
  else {
    $<HTMLInputElement>("lengths").value = params.get("lengths") ??
      (slow ? "256, 1024" : "256, 1024, 4096, 16384, 65536");
    $<HTMLInputElement>("sequences").value = params.get("sequences") ?? (slow ? "4" : "32");
    await inductionFromForm();
  }
  result.state = "done";
  document.body.dataset.state = "done";
}

main().catch(fail);
