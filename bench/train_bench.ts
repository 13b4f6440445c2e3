/**
 * Training benchmark (`deno task bench --only train`): one training step (forward, backward,
 * AdamW) of the Mamba-2 and Mamba-1 130M shapes with random weights, the Mamba-1 selective
 * scan's value and gradient alone, and the induction model's step as `train-induction` runs it.
 * Model steps also report a per-kind kernel profile of one step. Prints one JSON row per case; a case that fails to compile
 * or run (e.g. a buffer over the device's binding limit) gets a row with its one-line reason and
 * the other cases still run. bench/train_peer.py times the torch peers on the same shapes and
 * bench/train_round.sh prints both as one table.
 *
 * - Step time: wall clock per step of a `ResidentProgram` (weights and AdamW moments stay on
 *   the device, updated in place; each step uploads ids and targets), averaged over `steps`
 *   steps after two warm-up steps, synchronized by reading the loss back at the end.
 * - Scan time: the sum of the kernels' median GPU times (timestamp queries, `benchmark`).
 * - Memory: WebGPU cannot query the device's memory use, so `bufferMiB` is the sum of the sizes
 *   of every buffer the program allocates (`bufferBytes`: weights, moments, inputs, outputs,
 *   and intermediates, which share buffers where their lifetimes allow; in-place outputs share
 *   their input's buffer). The runtime's staging buffers for uploads and readback are not
 *   counted.
 *
 * @module
 */

import { valueAndGrad } from "../dsl/autodiff.ts";
import { einsum } from "../dsl/einsum.ts";
import type { Tensor } from "../dsl/tensor.ts";
import { elementsOf, type KernelArtifact } from "../codegen/artifact.ts";
import { storageBytes } from "../codegen/dtypes.ts";
import { mamba2Definition, mambaDefinition, type ModelDefinition } from "../models/definitions.ts";
import { mambaConfigFromHF } from "../models/mamba.ts";
import { mamba2ConfigFromHF } from "../models/mamba2.ts";
import { SELECTIVE_SCAN_INPUTS, selectiveScan } from "../models/selective_scan.ts";
import {
  adamw,
  adamwOutputs,
  type AdamWScalarInputs,
  adamwScalars,
  adamwState,
} from "../models/train/adamw.ts";
import { lmLossAndGrads, lmLossInputs } from "../models/train/lm_loss.ts";
import { compile } from "../runtime/compile.ts";
import type { GpuContext } from "../runtime/gpu_device.ts";
import { ResidentProgram } from "../runtime/resident_program.ts";
import { INDUCTION_CONFIG, seededRandom, taskBatch } from "../models/induction/task.ts";
import { initParams } from "../models/train/init.ts";
import { Trainer } from "../models/train/trainer.ts";

/** One benchmark case: a model's training step or the scan's value and gradient. */
export type TrainCase =
  | {
    name: string;
    kind: "mamba" | "mamba2";
    config: Record<string, unknown>;
    b: number;
    l: number;
    /** Keep the fused scan-backward walk for Mamba-2 (`ssdBackward: false`; default chunked). */
    walk?: boolean;
    /** Autotune the step's tunable kernels first (a fresh cache: the tuning is not timed). */
    autotune?: boolean;
  }
  | {
    name: string;
    kind: "scan";
    b: number;
    l: number;
    d: number;
    n: number;
    /** Threads per channel of the fused walk (default: the compiler's choice). */
    lanes?: number;
  }
  | {
    name: string;
    /** The induction model's step as `train-induction` runs it (`Trainer`, target "last"). */
    kind: "induction";
    b: number;
    l: number;
    /** Steps per submit. */
    perSubmit: number;
  };

const MAMBA2_130M = {
  model_type: "mamba2",
  hidden_size: 768,
  num_hidden_layers: 24,
  state_size: 128,
  expand: 2,
  head_dim: 64,
  num_heads: 24,
  n_groups: 1,
  conv_kernel: 4,
  vocab_size: 50280,
  tie_word_embeddings: true,
};
const MAMBA_130M = {
  model_type: "mamba",
  hidden_size: 768,
  num_hidden_layers: 24,
  state_size: 16,
  expand: 2,
  conv_kernel: 4,
  vocab_size: 50280,
  tie_word_embeddings: true,
};
/** Tiny shapes with the same structure, for a dry run on lavapipe. */
const TINY = {
  mamba2: {
    ...MAMBA2_130M,
    hidden_size: 32,
    num_hidden_layers: 2,
    state_size: 8,
    head_dim: 16,
    num_heads: 4,
    vocab_size: 64,
  },
  mamba: { ...MAMBA_130M, hidden_size: 32, num_hidden_layers: 2, state_size: 8, vocab_size: 64 },
};

/**
 * The cases: `full` is the official set (b=8, l=2048 steps; the scan at b=8 l=4096 d=1536 n=16;
 * the induction step at b=8, l=256, 16 steps per submit)
 * followed by smaller ones that fit today's materializing scan backward (b=1, l=256; the scan
 * at b=1, l=512); `tiny` keeps the structure at toy sizes. Mamba-2 compiles with the default
 * chunked SSD backward; the `_walk` cases keep the fused scan-backward walk (`ssdBackward:
 * false`, 18 s per step at b=8, l=2048 on an H100: only at b=1, l=256).
 */
export function trainCases(scale: "full" | "tiny"): TrainCase[] {
  if (scale === "tiny") {
    return [
      { name: "mamba2_tiny_step", kind: "mamba2", config: TINY.mamba2, b: 2, l: 16 },
      {
        name: "mamba2_tiny_step_walk",
        kind: "mamba2",
        config: TINY.mamba2,
        b: 2,
        l: 16,
        walk: true,
      },
      { name: "mamba_tiny_step", kind: "mamba", config: TINY.mamba, b: 2, l: 16 },
      { name: "scan_tiny_bwd", kind: "scan", b: 2, l: 32, d: 8, n: 4 },
      { name: "induction_step", kind: "induction", b: 2, l: 16, perSubmit: 4 },
    ];
  }
  return [
    { name: "mamba2_130m_step", kind: "mamba2", config: MAMBA2_130M, b: 8, l: 2048 },
    {
      name: "mamba2_130m_step_autotuned",
      kind: "mamba2",
      config: MAMBA2_130M,
      b: 8,
      l: 2048,
      autotune: true,
    },
    { name: "mamba_130m_step", kind: "mamba", config: MAMBA_130M, b: 8, l: 2048 },
    {
      name: "mamba_130m_step_autotuned",
      kind: "mamba",
      config: MAMBA_130M,
      b: 8,
      l: 2048,
      autotune: true,
    },
    { name: "scan_bwd", kind: "scan", b: 8, l: 4096, d: 1536, n: 16 },
    { name: "scan_bwd_lanes1", kind: "scan", b: 8, l: 4096, d: 1536, n: 16, lanes: 1 },
    { name: "induction_step", kind: "induction", b: 8, l: 256, perSubmit: 16 },
    { name: "mamba2_130m_step", kind: "mamba2", config: MAMBA2_130M, b: 1, l: 256 },
    {
      name: "mamba2_130m_step_walk",
      kind: "mamba2",
      config: MAMBA2_130M,
      b: 1,
      l: 256,
      walk: true,
    },
    { name: "mamba_130m_step", kind: "mamba", config: MAMBA_130M, b: 1, l: 256 },
    { name: "scan_bwd", kind: "scan", b: 1, l: 512, d: 1536, n: 16 },
  ];
}

/** A case's id, `name@BxL` (e.g. `mamba2_130m_step@8x2048`): what `--train-cases` selects. */
export function trainCaseId(c: TrainCase): string {
  return `${c.name}@${c.b}x${c.l}`;
}

/** A fast seeded generator of uniform floats in [0, 1) (xorshift32). */
function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** Random weights in the ranges a trained model has (decays in (0, 1), unit norms). */
function randomWeights(def: ModelDefinition, seed: number): Record<string, Float32Array> {
  const next = uniform(seed);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of def.weightShapes()) {
    const n = shape.reduce((a, b) => a * b, 1);
    const fill = (lo: number, hi: number) => {
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * next();
      return a;
    };
    if (name.endsWith("A_log")) out[name] = fill(0, 1.5);
    else if (name.endsWith("dt_bias") || name.endsWith("dt_proj.bias")) out[name] = fill(-4.5, -2);
    else if (
      name.endsWith(".D") || name.endsWith("norm.weight") || name.endsWith("norm_f.weight")
    ) {
      out[name] = fill(1, 1);
    } else if (name.endsWith("conv1d.bias")) out[name] = fill(0, 0);
    else if (name === "backbone.embeddings.weight" || name === "lm_head.weight") {
      out[name] = fill(-0.02, 0.02);
    } else {
      const s = 1 / Math.sqrt(shape[shape.length - 1]);
      out[name] = fill(-s, s);
    }
  }
  return out;
}

const MiB = 1024 * 1024;

/** Runs `f` inside validation and out-of-memory error scopes; a captured error is thrown. */
async function scoped<T>(ctx: GpuContext, what: string, f: () => Promise<T>): Promise<T> {
  ctx.device.pushErrorScope("out-of-memory");
  ctx.device.pushErrorScope("validation");
  let result: T | undefined, thrown: unknown;
  try {
    result = await f();
  } catch (e) {
    thrown = e;
  }
  const validation = await ctx.device.popErrorScope();
  const memory = await ctx.device.popErrorScope();
  if (thrown) throw thrown;
  if (memory) throw new Error(`${what}: out of GPU memory: ${memory.message}`);
  if (validation) throw new Error(`${what}: ${validation.message}`);
  return result as T;
}

/**
 * The induction model's training step through `Trainer` (AdamW without weight decay, lr 1e-3,
 * `perSubmit` steps per submit): wall clock per step over whole submits after a warm-up, and
 * one step's kernel profile.
 */
async function inductionStep(
  ctx: GpuContext,
  c: Extract<TrainCase, { kind: "induction" }>,
  steps: number,
  kernelDump?: string,
): Promise<Record<string, unknown>> {
  const config = { ...INDUCTION_CONFIG };
  const t0 = performance.now();
  const trainer = await Trainer.create({
    config,
    params: initParams(config, { seed: 1 }),
    batch: c.b,
    length: c.l,
    target: "last",
    optimizer: { weightDecay: 0 },
    lr: 1e-3,
    blockSize: 4096,
    stepsPerSubmit: c.perSubmit,
    gpu: ctx,
    onProgress: () => {},
  });
  const compileS = (performance.now() - t0) / 1000;
  try {
    const rand = seededRandom(5);
    const batches = Array.from({ length: c.perSubmit }, () => taskBatch(c.b, c.l, rand));
    const run = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const { ids, answers } = batches[i % batches.length];
        await trainer.step(ids, answers);
      }
      await trainer.flush();
    };
    await run(2 * c.perSubmit);
    // Whole submits: at least `steps` steps, rounded up to a multiple of perSubmit.
    const n = Math.ceil(steps / c.perSubmit) * c.perSubmit;
    const t1 = performance.now();
    await run(n);
    const ms = (performance.now() - t1) / n;
    const { ids, answers } = batches[0];
    const timed = await trainer.program.benchmark(
      {
        ids,
        targets: answers,
        slot: Float32Array.of(0),
        ...adamwScalars(trainer.optimizerStep + 1, 1e-3, { weightDecay: 0 }),
      },
      { warmup: 2, iterations: 5 },
    );
    const profile = kernelProfile(timed.kernels);
    if (kernelDump) {
      dumpKernels(`${kernelDump}/${trainCaseId(c)}.json`, trainer.program.kernels, timed.kernels);
    }
    return {
      ms,
      tokPerS: (c.b * c.l) / (ms / 1000),
      bufferMiB: trainer.program.bufferBytes / MiB,
      kernels: trainer.program.kernels.length,
      compileS,
      compileTimes: trainer.program.compileTimes,
      kernelMs: timed.totalNs / 1e6,
      profile: profile.slice(0, 12),
      timing: `wall clock, mean of ${n} steps, ${c.perSubmit} per submit`,
    };
  } finally {
    trainer.destroy();
  }
}

/**
 * Writes one step's kernels to `path` as JSON, for reading offline where the time goes: each
 * kernel's name, kind, median ms, workgroups, bytes read and written, and an index into the
 * distinct WGSL texts (written once each).
 */
function dumpKernels(
  path: string,
  kernels: readonly KernelArtifact[],
  times: readonly { name: string; medianNs: number }[],
): void {
  const texts: string[] = [];
  const textIndex = new Map<string, number>();
  const rows = kernels.map((k, i) => {
    let text = textIndex.get(k.wgsl);
    if (text === undefined) {
      text = texts.push(k.wgsl) - 1;
      textIndex.set(k.wgsl, text);
    }
    return {
      name: k.name,
      kind: k.kind,
      ms: (times[i]?.medianNs ?? NaN) / 1e6,
      workgroups: k.workgroups,
      readBytes: k.reads.map(storageBytes),
      writeBytes: k.writes.map(storageBytes),
      text,
    };
  });
  // A missing folder would fail the case after all its timing was done.
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || ".", { recursive: true });
  Deno.writeTextFileSync(path, JSON.stringify({ kernels: rows, texts }));
}

/**
 * Kernel medians summed per kind (the name without its `k<N>_` prefix and split suffix), the
 * most expensive first.
 */
function kernelProfile(
  kernels: readonly { name: string; medianNs: number }[],
): { kernel: string; count: number; ms: number }[] {
  const byKind = new Map<string, { kernel: string; count: number; ms: number }>();
  for (const k of kernels) {
    const kind = k.name.replace(/^k\d+_/, "").replace(/(_bwd)[ab]+$/, "$1");
    const entry = byKind.get(kind) ?? { kernel: kind, count: 0, ms: 0 };
    entry.count++;
    entry.ms += k.medianNs / 1e6;
    byKind.set(kind, entry);
  }
  return [...byKind.values()].sort((a, b) => b.ms - a.ms);
}

async function modelStep(
  ctx: GpuContext,
  c: Extract<TrainCase, { kind: "mamba" | "mamba2" }>,
  steps: number,
  kernelDump?: string,
): Promise<Record<string, unknown>> {
  const def = c.kind === "mamba"
    ? mambaDefinition(mambaConfigFromHF(c.config))
    : mamba2Definition(mamba2ConfigFromHF(c.config));
  const names = Object.keys(def.weightInputs());
  const inputs: Record<string, string | { axes: string; dtype: "i32" }> = {
    ...lmLossInputs(def) as Record<string, string | { axes: string; dtype: "i32" }>,
    lr: "",
    bc1: "",
    bc2: "",
  };
  for (const [k, decl] of Object.entries(def.weightInputs())) {
    inputs[`m.${k}`] = decl as string;
    inputs[`v.${k}`] = decl as string;
  }
  const state = adamwState(names);
  const t0 = performance.now();
  const prog = await scoped(
    ctx,
    "compile",
    () =>
      ResidentProgram.create(
        inputs,
        (t: Record<string, Tensor>) => {
          const { loss, grads } = lmLossAndGrads(def, t, {
            maxLogitsBytes: ctx.limits.maxStorageBufferBindingSize,
          });
          const pick = (prefix: string) => Object.fromEntries(names.map((k) => [k, t[prefix + k]]));
          const scalars = { lr: t.lr, bc1: t.bc1, bc2: t.bc2 } as AdamWScalarInputs;
          const step = adamw({ params: pick(""), grads, m: pick("m."), v: pick("v.") }, scalars, {
            weightDecay: 0.1,
            maxGradNorm: 1,
          });
          return { ...adamwOutputs(step), loss };
        },
        def.sizes(c.b, c.l),
        {
          state,
          gpu: ctx,
          ...(c.walk ? { ssdBackward: false as const } : {}),
          ...(c.autotune
            ? {
              autotune: {
                // Kept beside the kernel dump (the choices made), else thrown away.
                cacheFile: `${kernelDump ?? Deno.makeTempDirSync()}/${
                  trainCaseId(c)
                }.autotune.json`,
                iterations: 5,
              },
            }
            : {}),
        },
      ),
  );
  const compileS = (performance.now() - t0) / 1000;
  const times = prog.compileTimes;
  // On stderr as it happens: a run cut off by a time limit still shows where it was.
  console.error(
    `${c.name}@${c.b}x${c.l}: compiled in ${compileS.toFixed(1)} s (codegen ${
      (times.codegenMs / 1000).toFixed(1)
    } s, ${times.pipelines} pipelines ${(times.pipelinesMs / 1000).toFixed(1)} s, buffers ${
      (times.buffersMs / 1000).toFixed(1)
    } s), ${prog.kernels.length} kernels`,
  );
  try {
    const weights = randomWeights(def, 1234);
    for (const k of names) prog.write(k, weights[k]);
    const next = uniform(99);
    const tokens = () =>
      Int32Array.from({ length: c.b * c.l }, () => Math.floor(next() * def.vocab));
    const ids = tokens(), targets = tokens();
    let stepNo = 0;
    const run = () => prog.step({ ids, targets, ...adamwScalars(++stepNo, 1e-4) });
    const tFirst = performance.now();
    const firstLoss = await scoped(ctx, "first step", async () => {
      await run();
      return (await prog.read(["loss"])).loss[0];
    });
    console.error(`  first step ${((performance.now() - tFirst) / 1000).toFixed(2)} s`);
    await run();
    await prog.read(["loss"]);
    const t1 = performance.now();
    for (let i = 0; i < steps; i++) await run();
    const lastLoss = (await prog.read(["loss"])).loss[0];
    const ms = (performance.now() - t1) / steps;
    const bytes = prog.bufferBytes;
    // Where a step's GPU time goes: kernel medians (timestamp queries), summed per kernel kind.
    const timed = await prog.benchmark({ ids, targets, ...adamwScalars(++stepNo, 1e-4) }, {
      warmup: 1,
      iterations: 3,
    });
    const profile = kernelProfile(timed.kernels);
    if (kernelDump) {
      dumpKernels(`${kernelDump}/${trainCaseId(c)}.json`, prog.kernels, timed.kernels);
    }
    console.error(
      `  step kernels ${(timed.totalNs / 1e6).toFixed(1)} ms; most: ${
        profile.slice(0, 6).map((p) => `${p.kernel} ×${p.count} ${p.ms.toFixed(1)} ms`).join(", ")
      }`,
    );
    return {
      ms,
      tokPerS: (c.b * c.l) / (ms / 1000),
      bufferMiB: bytes / MiB,
      kernels: prog.kernels.length,
      compileS,
      compileTimes: times,
      kernelMs: timed.totalNs / 1e6,
      profile: profile.slice(0, 12),
      timing: `wall clock, mean of ${steps} steps`,
      firstLoss,
      lastLoss,
    };
  } finally {
    prog.destroy();
  }
}

async function scanBackward(
  ctx: GpuContext,
  c: Extract<TrainCase, { kind: "scan" }>,
  iterations: number,
): Promise<Record<string, unknown>> {
  const wrt = Object.keys(SELECTIVE_SCAN_INPUTS) as (keyof typeof SELECTIVE_SCAN_INPUTS)[];
  const inputs = { ...SELECTIVE_SCAN_INPUTS, w: "b l d" } as const;
  const t0 = performance.now();
  const prog = await scoped(ctx, "compile", () =>
    compile(
      inputs,
      (t) => {
        const params = Object.fromEntries(wrt.map((k) => [k, t[k]])) as Parameters<
          typeof selectiveScan
        >[0];
        const [value, grads] = valueAndGrad((p: typeof params) =>
          einsum("b l d, b l d -> ", selectiveScan(p).y, t.w)
        )(params);
        const out: Record<string, Tensor> = { value };
        for (const k of wrt) out[`d_${k}`] = grads[k];
        return out;
      },
      { b: c.b, l: c.l, d: c.d, n: c.n },
      { gpu: ctx, ...(c.lanes ? { scanBackward: { lanes: c.lanes } } : {}) },
    ));
  const compileS = (performance.now() - t0) / 1000;
  try {
    const next = uniform(7);
    const data: Record<string, Float32Array> = {};
    for (const inp of prog.graph.inputs) {
      const n = elementsOf(inp);
      const [lo, hi] = inp.name === "A" ? [-1.5, -0.5] : inp.name === "dt" ? [-3, 0] : [-1, 1];
      data[inp.name] = Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
    }
    const r = await scoped(ctx, "run", () => prog.benchmark(data, { warmup: 2, iterations }));
    const ms = r.totalNs / 1e6;
    return {
      ms,
      tokPerS: (c.b * c.l) / (ms / 1000),
      bufferMiB: prog.bufferBytes / MiB,
      kernels: prog.kernels.length,
      compileS,
      timing: `sum of kernel medians, ${iterations} iterations`,
    };
  } finally {
    prog.destroy();
  }
}

/** The first line of an error, shortened: what a table cell can show. */
function reason(e: unknown): string {
  const line = (e instanceof Error ? e.message : String(e)).split("\n")[0];
  return line.length > 300 ? line.slice(0, 297) + "..." : line;
}

/**
 * Runs every case, each in its own try: one JSON row per case (`error` holds the one-line
 * reason of a case that failed). `only` filters cases by name.
 */
export async function trainBench(
  ctx: GpuContext,
  options: {
    scale: "full" | "tiny";
    steps: number;
    only?: (c: TrainCase) => boolean;
    /** A folder for each model step's kernel list (see `dumpKernels`). */
    kernelDump?: string;
  },
  report: (row: Record<string, unknown>) => void,
): Promise<void> {
  for (const c of trainCases(options.scale)) {
    if (options.only && !options.only(c)) continue;
    const shape = c.kind === "scan" ? { b: c.b, l: c.l, d: c.d, n: c.n } : { b: c.b, l: c.l };
    const row: Record<string, unknown> = { bench: `train_${c.name}`, case: trainCaseId(c), shape };
    try {
      Object.assign(
        row,
        c.kind === "scan"
          ? await scanBackward(ctx, c, options.steps)
          : c.kind === "induction"
          ? await inductionStep(ctx, c, options.steps, options.kernelDump)
          : await modelStep(ctx, c, options.steps, options.kernelDump),
      );
    } catch (e) {
      row.error = reason(e);
    }
    report(row);
  }
}
