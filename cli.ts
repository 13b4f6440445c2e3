/**
 * The ssmkit command line.
 *
 * - `info [--json]`: the WebGPU adapter, its features and limits.
 * - `wgsl FILE.ts [--program NAME] [--default-limits]`: compiles every program the module
 *   exports (values made with `defineProgram`) and prints the generated kernels.
 * - `logits --model DIR --tokens 5,17,300 --out FILE.npy`: float32 logits [tokens, vocab].
 * - `generate --model DIR (--prompt TEXT | --tokens IDS) --max-new N [--temperature T]
 *   [--top-k K] [--top-p P] [--seed S] [--json]`: generation on the GPU.
 *
 * @module
 */

import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { isProgramDef } from "./dsl/define.ts";
import { trace } from "./dsl/trace.ts";
import { generateKernels } from "./codegen/compile_graph.ts";
import { DEFAULT_LIMITS, limitsFrom } from "./codegen/limits.ts";
import { getGpu, NoAdapterError } from "./runtime/gpu_device.ts";
import { describeGpu } from "./runtime/gpu_info.ts";
import { loadModel } from "./models/language_model.ts";
import { encodeNpy } from "./models/checkpoint/npy.ts";
import { loadTokenizer } from "./models/checkpoint/tokenizer.ts";

const USAGE = `ssmkit — state-space models compiled to WebGPU

usage:
  deno task cli info [--json]
      Print the WebGPU adapter, its features and limits.
  deno task cli wgsl FILE.ts [--program NAME] [--default-limits]
      Compile the programs FILE.ts exports (made with defineProgram) and print their kernels.
      A relative FILE.ts is relative to the directory you ran the command from.
      --default-limits generates for WebGPU's default limits instead of this machine's adapter.
  deno task cli logits --model DIR --tokens 5,17,300 --out FILE.npy
      Write the float32 logits of every position, shape [tokens, vocab], as NumPy .npy.
  deno task cli generate --model DIR (--prompt TEXT | --tokens IDS) --max-new N
                         [--temperature T] [--top-k K] [--top-p P] [--seed S] [--json]
      Generate on the GPU (temperature 0, the default, is greedy). Text streams as tokens
      arrive; --json prints one object {"tokens": [...], "text": ...} instead.
  deno task cli help
      Show this text.
`;

/**
 * The directory a relative path on the command line is relative to: the one the user ran the
 * command from. `deno task` runs tasks in the config's directory and passes the user's
 * directory as INIT_CWD; a plain `deno run` keeps it as the working directory.
 */
function userDirectory(): string {
  const granted = Deno.permissions.querySync({ name: "env", variable: "INIT_CWD" }).state;
  return (granted === "granted" ? Deno.env.get("INIT_CWD") : undefined) || Deno.cwd();
}

/** The absolute, normalized path of a path given on the command line. */
function resolveUserPath(path: string): string {
  return resolve(userDirectory(), path);
}

/** A usage problem: printed with the usage text, exit code 2. */
class UsageError extends Error {}

async function info(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" } }, strict: true });
  const ctx = await getGpu();
  const d = describeGpu(ctx);
  if (values.json) {
    console.log(JSON.stringify(d, null, 2));
    return;
  }
  console.log(`adapter:  ${d.adapter.description || "(no description)"}`);
  console.log(`features: ${Object.entries(d.features).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  console.log("limits:");
  for (const [k, v] of Object.entries(d.limits)) console.log(`  ${k.padEnd(44)} ${v}`);
}

async function wgsl(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: { program: { type: "string" }, "default-limits": { type: "boolean" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError("wgsl needs exactly one FILE.ts");
  const file = resolveUserPath(positionals[0]);
  try {
    if (!(await Deno.stat(file)).isFile) throw new Error("not a file");
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new Error(`wgsl: cannot read ${file}: ${why}`);
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    throw new Error(`wgsl: importing ${file} failed: ${(e as Error).message.split("\n")[0]}`);
  }
  const programs = Object.entries(mod).filter(([, v]) => isProgramDef(v));
  if (programs.length === 0) {
    throw new Error(`wgsl: ${file} exports no programs (export values made with defineProgram)`);
  }
  const chosen = values.program ? programs.filter(([k]) => k === values.program) : programs;
  if (chosen.length === 0) {
    throw new Error(
      `wgsl: ${file} exports no program "${values.program}"; it exports ` +
        programs.map(([k]) => k).join(", "),
    );
  }
  let limits = DEFAULT_LIMITS;
  if (!values["default-limits"]) {
    try {
      const ctx = await getGpu();
      limits = limitsFrom(ctx.limits, ctx.features);
    } catch (e) {
      if (!(e instanceof NoAdapterError)) throw e;
      console.error("ssmkit: no WebGPU adapter; generating for WebGPU's default limits");
    }
  }
  for (const [name, def] of chosen) {
    if (!isProgramDef(def)) continue;
    const graph = trace(def.inputs, def.fn, def.sizes);
    const program = generateKernels(graph, limits);
    console.log(`// ===== program ${name}: ${program.kernels.length} kernel(s) =====`);
    for (const k of program.kernels) {
      console.log(`// ----- ${k.name} (${k.kind}), workgroups ${k.workgroups.join("×")} -----`);
      console.log(k.wgsl);
    }
  }
}

function parseTokens(text: string): number[] {
  const ids = text.split(",").map((t) => t.trim());
  if (ids.some((t) => !/^\d+$/.test(t))) {
    throw new UsageError(`--tokens must be comma-separated token ids, got "${text}"`);
  }
  return ids.map(Number);
}

function parseNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v)) {
    throw new UsageError(`--${name} must be a number, got "${text}"`);
  }
  return v;
}

async function logitsCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { model: { type: "string" }, tokens: { type: "string" }, out: { type: "string" } },
    strict: true,
  });
  if (!values.model || !values.tokens || !values.out) {
    throw new UsageError("logits needs --model DIR --tokens IDS --out FILE.npy");
  }
  const tokens = parseTokens(values.tokens);
  const model = await loadModel(values.model);
  const logits = await model.logits([tokens]);
  await Deno.writeFile(values.out, encodeNpy(logits, [tokens.length, model.definition.vocab]));
  console.error(`wrote ${values.out}: float32 [${tokens.length}, ${model.definition.vocab}]`);
  model.destroy();
}

async function generateCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      tokens: { type: "string" },
      "max-new": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      json: { type: "boolean" },
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("generate needs --model DIR");
  if ((values.prompt === undefined) === (values.tokens === undefined)) {
    throw new UsageError("generate needs exactly one of --prompt TEXT or --tokens IDS");
  }
  if (values["max-new"] === undefined) throw new UsageError("generate needs --max-new N");
  const maxNew = parseNumber("max-new", values["max-new"], 0);
  const tokenizer = await loadTokenizer(values.model);
  let prompt: number[];
  if (values.prompt !== undefined) {
    if (!tokenizer) {
      throw new Error(`${values.model} has no tokenizer.json: pass token ids with --tokens`);
    }
    prompt = tokenizer.encode(values.prompt);
    if (prompt.length === 0) throw new Error("the prompt encodes to no tokens");
  } else {
    prompt = parseTokens(values.tokens!);
  }
  const model = await loadModel(values.model);
  const all: number[] = [];
  let shown = "";
  const stream = !values.json;
  const out = await model.generate([prompt], {
    maxNew,
    temperature: parseNumber("temperature", values.temperature, 0),
    topK: parseNumber("top-k", values["top-k"], 0),
    topP: parseNumber("top-p", values["top-p"], 1),
    seed: parseNumber("seed", values.seed, 0),
    onTokens: (rows) => {
      if (!stream) return;
      all.push(...rows[0]);
      if (tokenizer) {
        // Hold back a trailing partial character (a token can end inside a UTF-8 sequence).
        const text = tokenizer.decode(all).replace(/\uFFFD+$/, "");
        if (text.startsWith(shown)) {
          Deno.stdout.writeSync(new TextEncoder().encode(text.slice(shown.length)));
          shown = text;
        }
      } else {
        console.log(rows[0].join(" "));
      }
    },
  });
  model.destroy();
  const text = tokenizer ? tokenizer.decode(out[0]) : null;
  if (values.json) console.log(JSON.stringify({ tokens: out[0], text }));
  else if (tokenizer) console.log();
}

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "info":
        await info(rest);
        return 0;
      case "wgsl":
        await wgsl(rest);
        return 0;
      case "logits":
        await logitsCommand(rest);
        return 0;
      case "generate":
        await generateCommand(rest);
        return 0;
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return 0;
      default:
        throw new UsageError(command ? `unknown command "${command}"` : "no command given");
    }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`ssmkit: ${message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`ssmkit: ${message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
