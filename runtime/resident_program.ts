/**
 * A GPU program whose state lives on the device between runs and is updated in place: the
 * training step's parameters and optimizer moments. Each `step` uploads only the per-step host
 * inputs (a batch, a learning rate) and submits; nothing is read back until `read` is called,
 * so a training loop reads its losses in blocks, never once per step.
 *
 * ```ts
 * const prog = await ResidentProgram.create(
 *   { w: "d", g: "d", lr: "" },
 *   (t) => ({ w: sub(t.w, mul(t.lr, t.g)) }),
 *   { d: 4 },
 *   { state: { w: "w" } }, // output "w" is written into input "w"'s buffer
 * );
 * prog.write("w", initial);
 * for (const g of grads) await prog.step({ g, lr: [0.1] });
 * const { w } = await prog.read(["w"]);
 * ```
 *
 * In place is safe only where each element is read before it is overwritten, by the thread
 * that overwrites it: `create` checks that every state output is written by an elementwise
 * kernel that reaches its input through elementwise ops only (no view, reduction or
 * contraction: they read other elements), and that no kernel after it reads the old value
 * (code generation orders each state's writer after every other reader of its old value,
 * `codegen/kernel_order.ts`; this check guards that order).
 *
 * @module
 */

import { showAxes } from "../dsl/axes.ts";
import { type Graph, type InputNode, type Node, nodeInputs } from "../dsl/ir.ts";
import {
  type InputSpec,
  type Sizes,
  type TensorsOf,
  trace,
  type TraceResult,
} from "../dsl/trace.ts";
import { generateKernels, type KernelProgram } from "../codegen/compile_graph.ts";
import { deviceLimits, tunedProgram } from "./compile.ts";
import type { AutotuneOptions } from "./autotune.ts";
import { readBuffers, STORAGE_USAGE } from "./gpu_buffers.ts";
import { getGpu, type GpuContext } from "./gpu_device.ts";
import { type DispatchBenchmark, submitDispatches, timeDispatches } from "./gpu_submit.ts";
import type { HostArray } from "./interpreter.ts";
import { checkHostInput, deviceArray, hostOutput, paddedBytes } from "./host_inputs.ts";
import { storageBytes } from "../codegen/dtypes.ts";
import { GpuProgram } from "./program.ts";
import type { SsdBackwardStrategy } from "../codegen/ssd_backward.ts";

/** Options of {@link ResidentProgram.create}. */
export interface ResidentOptions {
  /**
   * Output name → input name: the output is written into the input's buffer, which lives on
   * the device across steps (set it with `write`, read it with `read`).
   */
  state: Record<string, string>;
  /**
   * Inputs that also live on the device across steps but are never updated (frozen weights):
   * set them with `write`, read them with `read`; `step` does not upload them.
   */
  constant?: readonly string[];
  /**
   * Copies of the program's per-step buffers (default 1): `steps` runs up to this many steps
   * in one submit, each copy with its own inputs and intermediates, all sharing the state.
   */
  replicas?: number;
  /** Use this GPU context instead of the shared one. */
  gpu?: GpuContext;
  /** `false`: materialize a scan and its adjoint instead of the fused scan backward. */
  scanBackward?: false;
  /**
   * Merge independent elementwise kernels (e.g. every parameter's optimizer update) into
   * segmented dispatches (default true; see `CodegenOptions.horizontal`).
   */
  horizontal?: boolean;
  /** Scalar-decay scans' backward in chunked form (codegen/ssd_backward.ts; on unless false). */
  ssdBackward?: SsdBackwardStrategy | false;
  /** Time the tunable kernels' candidates on this adapter (see `CompileOptions.autotune`). */
  autotune?: boolean | AutotuneOptions;
}

/** A compiled program with device-resident, in-place-updated state (see the module docs). */
export class ResidentProgram {
  /** The traced IR. */
  readonly graph: Graph;
  /** The generated kernels, in dispatch order. */
  readonly kernels: KernelProgram["kernels"];
  /**
   * Where `create` spent its time, in milliseconds: tracing and code generation (autotuning
   * included), pipelines (those not cached in this process yet), buffers and bind groups;
   * and how many distinct pipelines the kernels use.
   */
  compileTimes = { codegenMs: 0, pipelinesMs: 0, buffersMs: 0, pipelines: 0 };
  readonly #ctx: GpuContext;
  readonly #gpu: GpuProgram;
  /** Further copies for `steps` (the first is #gpu). */
  readonly #replicas: GpuProgram[];
  /** The copy that ran the last step (its buffers hold the outputs `read` returns). */
  #last: GpuProgram;
  /** State input name → its buffer (owned here). */
  readonly #state: Map<string, GPUBuffer>;

  private constructor(
    ctx: GpuContext,
    graph: Graph,
    program: KernelProgram,
    gpu: GpuProgram[],
    state: Map<string, GPUBuffer>,
  ) {
    this.#ctx = ctx;
    this.graph = graph;
    this.kernels = program.kernels;
    this.#gpu = gpu[0];
    this.#replicas = gpu.slice(1);
    this.#last = gpu[0];
    this.#state = state;
  }

  /** Traces and compiles `fn`; state buffers start as zeros. */
  static async create<const S extends InputSpec>(
    inputs: S,
    fn: (tensors: TensorsOf<S>) => TraceResult,
    sizes: Sizes,
    options: ResidentOptions,
  ): Promise<ResidentProgram> {
    const started = performance.now();
    const graph = trace(inputs, fn, sizes);
    const aliases = resolveState(graph, options.state);
    const ctx = options.gpu ?? await getGpu();
    const codegenOptions = {
      aliases,
      scanBackward: options.scanBackward,
      horizontal: options.horizontal ?? true,
      ssdBackward: options.ssdBackward,
    };
    const limits = deviceLimits(ctx);
    let program = generateKernels(graph, limits, codegenOptions);
    if (options.autotune) {
      program = await tunedProgram(ctx, graph, limits, codegenOptions, program, options.autotune);
    }
    const codegenMs = performance.now() - started;
    // A rewrite may have rebuilt the outputs; the program names the nodes it writes.
    const inPlace = (program.aliases ?? aliases) as ReadonlyMap<InputNode, Node>;
    checkInPlace(program, inPlace);
    const state = new Map<string, GPUBuffer>();
    const external = new Map<Node, GPUBuffer>();
    const constant = (options.constant ?? []).map((name) => {
      const input = graph.inputs.find((i) => i.name === name);
      if (!input) throw new Error(`constant: no input named "${name}"`);
      if (aliases.has(input)) throw new Error(`constant: input "${name}" is also state`);
      return input;
    });
    for (const input of [...aliases.keys(), ...constant]) {
      const buffer = ctx.device.createBuffer({
        label: `state ${input.name}`,
        size: Math.max(16, Math.ceil(storageBytes(input) / 16) * 16),
        usage: STORAGE_USAGE,
      });
      state.set(input.name, buffer);
      external.set(input, buffer);
    }
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1) {
      throw new Error(`replicas must be an integer ≥ 1, got ${replicas}`);
    }
    const gpus: GpuProgram[] = [];
    try {
      for (let i = 0; i < replicas; i++) {
        // The copies run one after another in a submit, so they share intermediate buffers.
        gpus.push(await GpuProgram.create(ctx, program, inPlace, external, gpus[0]?.slots));
      }
      const resident = new ResidentProgram(ctx, graph, program, gpus, state);
      const sum = (f: (t: GpuProgram["createTimes"]) => number) =>
        gpus.reduce((a, g) => a + f(g.createTimes), 0);
      resident.compileTimes = {
        codegenMs,
        pipelinesMs: sum((t) => t.pipelinesMs),
        buffersMs: sum((t) => t.buffersMs),
        pipelines: gpus[0].createTimes.pipelines,
      };
      return resident;
    } catch (e) {
      for (const g of gpus) g.destroy();
      for (const b of state.values()) b.destroy();
      throw e;
    }
  }

  /**
   * Bytes of every GPU buffer the program holds: its state and constants, and each replica's
   * inputs, outputs and intermediates (those sharing buffers where their lifetimes allow).
   */
  get bufferBytes(): number {
    let bytes = 0;
    for (const b of this.#state.values()) bytes += b.size;
    for (const g of [this.#gpu, ...this.#replicas]) bytes += g.bufferBytes;
    return bytes;
  }

  /** Sets a state input's values on the device. */
  write(name: string, data: HostArray): void {
    const buffer = this.#state.get(name);
    const node = this.graph.inputs.find((i) => i.name === name);
    if (!buffer || !node) {
      throw new Error(
        `write: "${name}" is not a state input; state: ${[...this.#state.keys()].join(", ")}`,
      );
    }
    checkHostInput(node, data);
    const a = deviceArray(node, data, false);
    this.#ctx.device.queue.writeBuffer(
      buffer,
      0,
      a.buffer as ArrayBuffer,
      a.byteOffset,
      a.byteLength,
    );
  }

  /**
   * Uploads the per-step inputs (every input that is not state) and submits one step; reads
   * nothing back.
   */
  async step(inputs: Record<string, HostArray>): Promise<void> {
    await this.steps([inputs]);
  }

  /**
   * Runs several steps in one submit, in order (at most `replicas` of them): each step's
   * inputs go to a copy of the program's buffers, and every copy reads and updates the same
   * state. Saves the per-submit cost (encoding, validation scopes) of all but one step.
   */
  async steps(inputs: readonly Record<string, HostArray>[]): Promise<void> {
    const gpus = [this.#gpu, ...this.#replicas];
    if (inputs.length === 0 || inputs.length > gpus.length) {
      throw new Error(
        `steps: got ${inputs.length} steps; one submit runs 1 to ${gpus.length} (replicas)`,
      );
    }
    for (const step of inputs) this.#checkStepInputs(step);
    inputs.forEach((step, i) => gpus[i].upload(step));
    this.#last = gpus[inputs.length - 1];
    await submitDispatches(this.#ctx, gpus.slice(0, inputs.length).flatMap((g) => g.dispatches));
  }

  /**
   * Times one step's kernels with timestamp queries: uploads `inputs` once and runs the step
   * `warmup + iterations` times (the state is updated each time, as by `step`); per-kernel
   * medians and their sum.
   */
  async benchmark(
    inputs: Record<string, HostArray>,
    options: { warmup?: number; iterations?: number } = {},
  ): Promise<{ kernels: DispatchBenchmark[]; totalNs: number }> {
    this.#checkStepInputs(inputs);
    this.#gpu.upload(inputs);
    this.#last = this.#gpu;
    const kernels = await timeDispatches(this.#ctx, [...this.#gpu.dispatches], {
      warmup: options.warmup ?? 3,
      iterations: options.iterations ?? 10,
    });
    return { kernels, totalNs: kernels.reduce((s, k) => s + k.medianNs, 0) };
  }

  #checkStepInputs(inputs: Record<string, HostArray>): void {
    for (const name of Object.keys(inputs)) {
      if (this.#state.has(name)) {
        throw new Error(`step: "${name}" is state, kept on the device; set it with write()`);
      }
      if (!this.graph.inputs.some((i) => i.name === name)) {
        const known = this.graph.inputs.filter((i) => !this.#state.has(i.name)).map((i) => i.name);
        throw new Error(`step: unknown input "${name}"; the step takes: ${known.join(", ")}`);
      }
    }
  }

  /**
   * Reads state inputs or outputs back (one copy and one map for all of them); outputs are
   * those of the last step run.
   */
  async read(names: readonly string[]): Promise<Record<string, Float32Array | Int32Array>> {
    const nodes = names.map((name) => {
      const input = this.graph.inputs.find((i) => i.name === name);
      if (input && this.#state.has(name)) return input as Node;
      const output = this.graph.outputs[name];
      if (!output) {
        throw new Error(`read: "${name}" is neither a state input nor an output of the program`);
      }
      return output;
    });
    const raw = await readBuffers(
      this.#ctx,
      nodes.map((n) => ({ buffer: this.#last.bufferOf(n), byteLength: paddedBytes(n) })),
    );
    const out: Record<string, Float32Array | Int32Array> = {};
    names.forEach((name, i) => {
      out[name] = hostOutput(nodes[i], raw[i]);
    });
    return out;
  }

  /** Frees the program's and the state's buffers. */
  destroy(): void {
    this.#gpu.destroy();
    for (const g of this.#replicas) g.destroy();
    for (const b of this.#state.values()) b.destroy();
    this.#state.clear();
  }
}

/** Checks the state pairs' names, layouts and dtypes; returns input node → output node. */
function resolveState(graph: Graph, pairs: Record<string, string>): Map<InputNode, Node> {
  const aliases = new Map<InputNode, Node>();
  const used = new Set<string>();
  for (const [outName, inName] of Object.entries(pairs)) {
    const out = graph.outputs[outName];
    const input = graph.inputs.find((i) => i.name === inName);
    if (!out) throw new Error(`state: no output named "${outName}"`);
    if (!input) throw new Error(`state: no input named "${inName}"`);
    if (used.has(inName)) throw new Error(`state: input "${inName}" is updated by two outputs`);
    used.add(inName);
    if (out === input) {
      throw new Error(`state: output "${outName}" is input "${inName}" itself (nothing to update)`);
    }
    const same = out.dtype === input.dtype && out.axes.length === input.axes.length &&
      out.axes.every((a, i) => a === input.axes[i] && out.shape[i] === input.shape[i]);
    if (!same) {
      throw new Error(
        `state: output "${outName}" ${showAxes(out.axes)} (${out.shape.join("×")}, ` +
          `${out.dtype}) and input "${inName}" ${showAxes(input.axes)} ` +
          `(${input.shape.join("×")}, ${input.dtype}) differ in layout`,
      );
    }
    aliases.set(input, out);
  }
  return aliases;
}

/** Kinds through which element i of a value depends on element i of its operands only. */
const SAME_ELEMENT = new Set(["unary", "binary", "where", "permute"]);

/** Throws unless every in-place update reads each element before overwriting it (see above). */
function checkInPlace(program: KernelProgram, aliases: ReadonlyMap<InputNode, Node>): void {
  const { kernels, plan } = program;
  for (const [input, output] of aliases) {
    const name = input.name;
    const writer = kernels.findIndex((k) => k.writes.includes(output));
    const kernel = kernels[writer];
    if (kernel?.kind !== "elementwise" || !reachesByElement(output, input, plan.materialized)) {
      throw new Error(
        `state "${name}": its new value must be an elementwise function of its old one (no ` +
          `view, reduction or contraction of it: in place, those would read overwritten elements)`,
      );
    }
    const late = kernels.findIndex((k, i) => i > writer && k.reads.includes(input));
    if (late >= 0) {
      throw new Error(
        `state "${name}": kernel ${kernels[late].name} reads its old value after ` +
          `${kernel.name} overwrote it`,
      );
    }
  }
}

/**
 * True when `root`'s kernel tree reaches `input` through same-element ops only (and does reach
 * it, or not at all: a new value independent of the old one is safe too).
 */
function reachesByElement(root: Node, input: Node, materialized: ReadonlySet<Node>): boolean {
  const memo = new Map<Node, "none" | "ok" | "bad">();
  const visit = (n: Node): "none" | "ok" | "bad" => {
    if (n === input) return "ok";
    if (n !== root && materialized.has(n)) return "none";
    const seen = memo.get(n);
    if (seen) return seen;
    let result: "none" | "ok" | "bad" = "none";
    for (const m of nodeInputs(n)) {
      const r = visit(m);
      if (r === "bad") result = "bad";
      else if (r === "ok" && result === "none") result = SAME_ELEMENT.has(n.kind) ? "ok" : "bad";
    }
    memo.set(n, result);
    return result;
  };
  return visit(root) !== "bad";
}
