/**
 * Shared prologues of a short scan: a per-state value that every channel of a workgroup
 * shares (Mamba-2's B and C behind the causal conv and SiLU: one value per sequence, step and
 * state element, read by all 1,536 channels) is computed once per workgroup, before the step
 * loop, into workgroup memory, and each lane reads its states' values from there.
 *
 * Why: a decode step's scan has one step, so the lane kernel evaluates its inputs' prologues
 * once per lane: each of Mamba-2's lanes recomputed the conv taps and SiLU of its 16 B and 16
 * C values (about 400 loads and 32 exponentials a lane), though the 32 channels of a
 * workgroup all need the same 256 values. Here the workgroup's threads compute those 256
 * together, one each, and the loop reads them with one workgroup-memory load per state.
 *
 * Only short unchunked scans use it (the values of every step must fit the workgroup's
 * memory at once), and only for computed values (a plain load stays a load): a subtree whose
 * indices mention the step, one state slot of the lane, and channel indices that are constant
 * over the workgroup's channels.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { decodeIndex, type Env, ExprEmitter, valueKey } from "./expr.ts";
import { interceptLoop, type ScanMath } from "./scan_loop.ts";
import { u32Literal } from "./wgsl_math.ts";

/** Node kinds worth computing once per workgroup (a view or a load is not). */
const COMPUTED = new Set<Node["kind"]>(["unary", "binary", "where", "conv1d"]);

/** What the shared prologue needs to know about the scan kernel. */
export interface SharedPrologueContext {
  /** Steps of the scan (all staged at once). */
  readonly steps: number;
  /** The state axes and their sizes (a lane's slot r has flat state index `s{r}`). */
  readonly stateAxes: readonly string[];
  readonly stateSizes: readonly number[];
  /** Threads per workgroup. */
  readonly workgroup: number;
  /** The channel index variables (`ch_<axis>`). */
  readonly channelVariables: readonly string[];
  /** Matches the channel variables that vary over a workgroup's channels. */
  readonly varyingChannel: RegExp;
  /** Whether a node has a buffer (asked without registering a binding). */
  readonly buffered: (node: Node) => boolean;
  /** Where materialized nodes live (registers the binding: the fill's reads only). */
  readonly lookup: (node: Node) => string | undefined;
  /** The step loop's spelling of softplus, silu… */
  readonly math: ScanMath;
  /** Workgroup memory the staged values may take, in bytes. */
  readonly maxBytes: number;
}

/** One staged value: a node at an index pattern (the fill's variables in place of the lane's). */
interface Entry {
  readonly node: Node;
  readonly env: Env;
}

/**
 * Collects the shared values while the loop body is emitted (`read`, an intercept of the
 * loop's emitter) and emits the workgroup array and its cooperative fill afterwards.
 */
export class SharedPrologue {
  readonly #entries: Entry[] = [];
  readonly #byKey = new Map<string, number>();
  readonly #ctx: SharedPrologueContext;
  readonly #states: number;

  /** A collector for the scan kernel described by `ctx`. */
  constructor(ctx: SharedPrologueContext) {
    this.#ctx = ctx;
    this.#states = ctx.stateSizes.reduce((p, s) => p * s, 1);
  }

  /** Number of staged values (nodes at distinct index patterns). */
  get count(): number {
    return this.#entries.length;
  }

  /** Elements of one staged value: every step and state. */
  get #tile(): number {
    return this.#ctx.steps * this.#states;
  }

  /** Workgroup memory used, in bytes. */
  get bytes(): number {
    return 4 * this.count * this.#tile;
  }

  /**
   * The workgroup-memory read of `node` at `env` when it is a shared computed value (the loop
   * emitter binds it to a let), or undefined to compute it in the lane as usual.
   */
  read(node: Node, env: Env): string | undefined {
    const ctx = this.#ctx;
    if (!COMPUTED.has(node.kind) || ctx.buffered(node)) return undefined;
    let slot: string | undefined;
    let step: string | undefined;
    for (const a of node.axes) {
      for (const id of env[a].match(/\b[A-Za-z_]\w*\b/g) ?? []) {
        const r = /^st(\d+)_/.exec(id)?.[1] ?? /^s(\d+)$/.exec(id)?.[1];
        if (r !== undefined) {
          if (slot !== undefined && slot !== r) return undefined;
          slot = r;
        } else if (/^t\d+$/.test(id)) {
          if (step !== undefined && step !== id) return undefined;
          step = id;
        } else if (!ctx.channelVariables.includes(id) || ctx.varyingChannel.test(id)) {
          return undefined;
        }
      }
    }
    // A value without the state is computed once per lane anyway; one without the step is
    // loop-invariant (hoisted before the loop).
    if (slot === undefined || step === undefined) return undefined;
    const rename = (v: string) =>
      v.replace(new RegExp(`\\bst${slot}_(\\w+)`, "g"), "pk_st_$1")
        .replace(new RegExp(`\\bs${slot}\\b`, "g"), "pks")
        .replace(new RegExp(`\\b${step}\\b`, "g"), "pkt");
    const fillEnv: Env = Object.fromEntries(node.axes.map((a) => [a, rename(env[a])]));
    const key = valueKey(node, fillEnv);
    let k = this.#byKey.get(key);
    if (k === undefined) {
      if (4 * (this.count + 1) * this.#tile > ctx.maxBytes) return undefined;
      k = this.#entries.length;
      this.#entries.push({ node, env: fillEnv });
      this.#byKey.set(key, k);
    }
    const base = k * this.#tile;
    const at = this.#ctx.steps === 1
      ? `${u32Literal(base)} + s${slot}`
      : `${u32Literal(base)} + ${step} * ${u32Literal(this.#states)} + s${slot}`;
    return `sk_pro[${at}]`;
  }

  /** The workgroup array (empty when nothing is staged). */
  declaration(): string {
    return this.count === 0 ? "" : `var<workgroup> sk_pro: array<f32, ${this.count * this.#tile}>;`;
  }

  /**
   * The cooperative fill, before the loop: thread e computes elements e, e + workgroup, … of
   * the array (value k, step t, state s at k·steps·states + t·states + s), then a barrier.
   */
  fill(): string[] {
    if (this.count === 0) return [];
    const ctx = this.#ctx;
    const tile = this.#tile;
    const cases = this.#entries.map((e, k) => {
      const em = interceptLoop(new ExprEmitter(ctx.lookup, `pk${k}_`), {
        math: ctx.math,
        lookup: ctx.lookup,
        buffered: ctx.buffered,
      });
      const value = em.emit(e.node, e.env);
      return [
        `  case ${u32Literal(k)}: {`,
        ...em.lines.map((l) => `    ${l}`),
        `    pkv = ${value};`,
        `  }`,
      ];
    });
    const state = decodeIndex("pks", ctx.stateAxes, ctx.stateSizes, "pk_st_");
    return [
      `for (var pkq: u32 = lid; pkq < ${u32Literal(this.count * tile)}; pkq += ${
        u32Literal(ctx.workgroup)
      }) {`,
      `  let pkt = (pkq % ${u32Literal(tile)}) / ${u32Literal(this.#states)};`,
      `  let pks = pkq % ${u32Literal(this.#states)};`,
      ...state.lines.map((l) => `  ${l}`),
      `  var pkv: f32 = 0.0;`,
      `  switch pkq / ${u32Literal(tile)} {`,
      ...cases.flat(),
      `    default: {}`,
      `  }`,
      `  sk_pro[pkq] = pkv;`,
      `}`,
      `workgroupBarrier();`,
    ];
  }
}
