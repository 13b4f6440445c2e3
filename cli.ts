/**
 * The ssmkit command line.
 *
 * - `info [--json]`: the WebGPU adapter, its features and limits.
 * - `wgsl FILE.ts [--program NAME] [--default-limits]`: compiles every program the module
 *   exports (values made with `defineProgram`) and prints the generated kernels.
 * - `logits --model DIR --tokens 5,17,300 --out FILE.npy [--dtype D]`: float32 logits
 *   [tokens, vocab].
 * - `generate --model DIR (--prompt TEXT | --tokens IDS) --max-new N [--temperature T]
 *   [--top-k K] [--top-p P] [--seed S] [--eos IDS|none] [--dtype D] [--json]`: generation on
 *   the GPU. `--dtype f16|bf16` keeps the weight matrices in 16 bits (`loadModel`'s `dtype`).
 *
 * Options are checked before the model is loaded; `--out` is written whole or not at all.
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
import { loadModel, maxNewTokens } from "./models/language_model.ts";
import type { WeightDtype } from "./models/weight_dtype.ts";
import { encodeNpy } from "./models/checkpoint/npy.ts";
import { readConfig } from "./models/checkpoint/config.ts";
import { loadTokenizer, type TextTokenizer } from "./models/checkpoint/tokenizer.ts";
import { type ModelDefinition, modelDefinitionFor } from "./models/definitions.ts";
import { integerOption, numberOption, tokenIdsOption, UsageError } from "./cli/options.ts";
import { OutputFile } from "./cli/output_file.ts";

const USAGE = `ssmkit — state-space models compiled to WebGPU

usage:
  deno task cli info [--json]
      Print the WebGPU adapter, its features and limits.
  deno task cli wgsl FILE.ts [--program NAME] [--default-limits]
      Compile the programs FILE.ts exports (made with defineProgram) and print their kernels.
      A relative FILE.ts is relative to the directory you ran the command from.
      --default-limits generates for WebGPU's default limits instead of this machine's adapter.
  deno task cli logits --model DIR --tokens 5,17,300 --out FILE.npy [--dtype D]
      Write the float32 logits of every position, shape [tokens, vocab], as NumPy .npy.
  deno task cli generate --model DIR (--prompt TEXT | --tokens IDS) --max-new N
                         [--temperature T] [--top-k K] [--top-p P] [--seed S]
                         [--eos IDS|none] [--dtype D] [--json]
      Generate on the GPU (temperature 0, the default, is greedy). Text streams as tokens
      arrive; --json prints one object {"tokens": [...], "text": ...} instead. Generation
      stops at the config's eos_token_id unless --eos gives other ids (or none).
      --dtype f16|bf16 keeps the weight matrices in 16 bits on the GPU (default f32).
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

/** The `--dtype` option: the weight matrices' precision on the GPU (default f32). */
function dtypeOption(value: string | undefined): WeightDtype {
  if (value === undefined) return "f32";
  if (value === "f32" || value === "f16" || value === "bf16") return value;
  throw new UsageError(`--dtype must be f32, f16 or bf16, got ${JSON.stringify(value)}`);
}

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

/** The model's definition from DIR/config.json alone (cheap: no weights are read). */
async function readDefinition(dir: string): Promise<ModelDefinition> {
  return modelDefinitionFor(await readConfig(dir), dir);
}

async function logitsCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      tokens: { type: "string" },
      out: { type: "string" },
      dtype: { type: "string" },
    },
    strict: true,
  });
  const dtype = dtypeOption(values.dtype);
  if (!values.model || !values.tokens || !values.out) {
    throw new UsageError("logits needs --model DIR --tokens IDS --out FILE.npy");
  }
  // Everything is checked before the weights are loaded.
  const vocab = (await readDefinition(values.model)).vocab;
  const tokens = tokenIdsOption("tokens", values.tokens, vocab);
  const out = await OutputFile.create(values.out);
  try {
    const model = await loadModel(values.model, { dtype });
    let logits: Float32Array;
    try {
      logits = await model.logits([tokens]);
    } finally {
      model.destroy();
    }
    await out.commit(encodeNpy(logits, [tokens.length, vocab]));
  } finally {
    await out.discard();
  }
  console.error(`wrote ${values.out}: float32 [${tokens.length}, ${vocab}]`);
}

/**
 * The text of `ids`, where ids the tokenizer does not know (a vocabulary padded past the
 * tokenizer's, as HF checkpoints often have) show as `<unk:ID>` instead of failing.
 */
function decodeVisible(tokenizer: TextTokenizer, ids: readonly number[]): string {
  let text = "";
  let run: number[] = [];
  const flush = () => {
    if (run.length > 0) text += tokenizer.decode(run);
    run = [];
  };
  for (const id of ids) {
    if (Number.isInteger(id) && id >= 0 && id < tokenizer.vocabSize) {
      run.push(id);
    } else {
      flush();
      text += `<unk:${id}>`;
    }
  }
  flush();
  return text;
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
      eos: { type: "string" },
      dtype: { type: "string" },
      json: { type: "boolean" },
    },
    strict: true,
  });
  if (!values.model) throw new UsageError("generate needs --model DIR");
  if ((values.prompt === undefined) === (values.tokens === undefined)) {
    throw new UsageError("generate needs exactly one of --prompt TEXT or --tokens IDS");
  }
  if (values["max-new"] === undefined) throw new UsageError("generate needs --max-new N");
  // Every option is checked as typed, before the weights are loaded.
  const dtype = dtypeOption(values.dtype);
  const maxNew = integerOption("max-new", values["max-new"], {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
    what: "a positive integer",
  });
  const sampling = {
    temperature: numberOption(
      "temperature",
      values.temperature,
      0,
      "a number ≥ 0 (0 = greedy)",
      (v) => v >= 0,
    ),
    topK: integerOption("top-k", values["top-k"], {
      min: 0,
      max: 0xffffffff,
      fallback: 0,
      what: "an integer ≥ 0 (0 = off)",
    }),
    topP: numberOption("top-p", values["top-p"], 1, "a number in (0, 1] (1 = off)", (v) => {
      return v > 0 && v <= 1;
    }),
    seed: integerOption("seed", values.seed, {
      min: Number.MIN_SAFE_INTEGER,
      max: Number.MAX_SAFE_INTEGER,
      fallback: 0,
      what: `an integer in [-(2^53 - 1), 2^53 - 1]`,
    }),
  };
  const vocab = (await readDefinition(values.model)).vocab;
  const eos = values.eos === undefined
    ? undefined
    : values.eos.trim() === "none"
    ? []
    : tokenIdsOption("eos", values.eos, vocab);
  const limit = maxNewTokens(await getGpu(), 1);
  if (maxNew > limit) {
    throw new Error(
      `--max-new ${values["max-new"]} is too large for this device: at most ${limit} new tokens`,
    );
  }
  const tokenizer = await loadTokenizer(values.model);
  let prompt: number[];
  if (values.prompt !== undefined) {
    if (!tokenizer) {
      throw new Error(`${values.model} has no tokenizer.json: pass token ids with --tokens`);
    }
    prompt = tokenizer.encode(values.prompt);
    if (prompt.length === 0) throw new Error("the prompt encodes to no tokens");
  } else {
    prompt = tokenIdsOption("tokens", values.tokens!, vocab);
  }
  const model = await loadModel(values.model, { dtype });
  const all: number[] = [];
  let shown = "";
  const stream = !values.json;
  let out: number[][];
  try {
    out = await model.generate([prompt], {
      maxNew,
      ...sampling,
      eos,
      onTokens: (rows) => {
        if (!stream) return;
        all.push(...rows[0]);
        if (tokenizer) {
          // Hold back a trailing partial character (a token can end inside a UTF-8 sequence).
          const text = decodeVisible(tokenizer, all).replace(/\uFFFD+$/, "");
          if (text.startsWith(shown)) {
            Deno.stdout.writeSync(new TextEncoder().encode(text.slice(shown.length)));
            shown = text;
          }
        } else {
          console.log(rows[0].join(" "));
        }
      },
    });
  } finally {
    model.destroy();
  }
  const text = tokenizer ? decodeVisible(tokenizer, out[0]) : null;
  if (values.json) console.log(JSON.stringify({ tokens: out[0], text }));
  else if (text !== null) {
    // What was held back (a partial character at the end stays partial).
    if (text.startsWith(shown)) {
      Deno.stdout.writeSync(new TextEncoder().encode(text.slice(shown.length)));
    }
    console.log();
  }
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
