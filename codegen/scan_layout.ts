/**
 * What the scan kernels (scan_kernel.ts, scan_tiled.ts) share: the chosen strategy with its
 * derived sizes, a lane's channel and state indices with its vector loads and loop-invariant
 * emitter, the state update and contraction of one step, final-state stores, guarded stores.
 *
 * @module
 */

import type { ContractNode, Node } from "../dsl/ir.ts";
import { stridesOf } from "../dsl/ir.ts";
import { storageDtype } from "./dtypes.ts";
import type { BindingRegistry } from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter, offsetExpr } from "./expr.ts";
import type { ScanSpec } from "./scan_spec.ts";
import { interceptLoop, splitVectorIndex, VectorLoads } from "./scan_loop.ts";
import { otherOperand } from "./scan_plan.ts";
import { type ChosenScanStrategy, sizeOf } from "./scan_strategy.ts";
import { u32Literal } from "./wgsl_math.ts";

/** The chosen strategy and the sizes derived from it. */
export interface Layout extends Omit<ChosenScanStrategy, "vector"> {
  perLane: number;
  ns: number;
  nc: number;
  len: number;
  chunkLen: number;
  /** Elements per vector load of per-state operands (1: scalar loads, strided slots). */
  vectorWidth: number;
  /** False to compute shared prologue values in every lane (scan_shared_prologue.ts). */
  sharedPrologue?: boolean;
}

/**
 * The per-lane state element indices, and their decoded state axes, for the lane index
 * variable `lane` (names prefixed with `prefix`).
 */
export function stateLanes(spec: ScanSpec, layout: Layout, lane = "j", prefix = "") {
  const lines: string[] = [];
  const envs: Env[] = [];
  const owned: boolean[] = [];
  const sizes = spec.stateAxes.map((a) => sizeOf(spec.scan, a));
  // Lane j holds elements j, j + lanes, … (one load instruction covers consecutive elements
  // across the lanes), or with K-element vector loads the groups (g·lanes + j)·K + 0…K−1: a
  // lane's slots gK … gK + K − 1 are one vector, and one load instruction still covers
  // lanes·K consecutive elements. (Each lane's R slots in one run, j·R + r, put the lanes of
  // an instruction R elements apart: half of each sector read at R = 16.)
  const width = layout.vectorWidth;
  const { lanes, perLane } = layout;
  const element = (j: number, r: number) =>
    width > 1 ? ((r - (r % width)) * lanes + j * width + (r % width)) : j + lanes * r;
  for (let r = 0; r < perLane; r++) {
    const raw = width > 1
      ? `(${lane} * ${u32Literal(width)} + ${u32Literal(element(0, r))})`
      : r === 0
      ? lane
      : `(${lane} + ${u32Literal(lanes * r)})`;
    lines.push(`let ${prefix}s${r} = min(${raw}, ${u32Literal(Math.max(layout.ns - 1, 0))});`);
    // Whether every lane's r-th element exists: then no select is needed.
    owned.push(element(lanes - 1, r) < layout.ns);
    if (!owned[r]) lines.push(`let ${prefix}own${r} = ${raw} < ${u32Literal(layout.ns)};`);
    const d = decodeIndex(`${prefix}s${r}`, spec.stateAxes, sizes, `${prefix}st${r}_`);
    lines.push(...d.lines);
    envs.push(d.env);
  }
  return { lines, envs, owned };
}

/** `lines` under `if (all of guard)`, or bare when the guard is empty. */
export function guarded(guard: string[], lines: string[]): string[] {
  if (guard.length === 0) return lines;
  return [`if (${guard.join(" && ")}) {`, ...lines.map((l) => `  ${l}`), `}`];
}

/** A lane's view of a scan kernel (see {@link laneContext}). */
export interface LaneContext {
  /** The channel index `c` decoded into one `ch_<axis>` per channel axis. */
  readonly ch: { lines: string[]; env: Record<string, string> };
  /** The lane's state elements (see {@link stateLanes}). */
  readonly st: ReturnType<typeof stateLanes>;
  /** Vector loads of per-state operands, when the layout has them. */
  readonly vectors?: VectorLoads;
  /** The emitter of values computed before the loop. */
  readonly pre: ExprEmitter;
  /** Matches the state-index identifiers. */
  readonly stateIndex: RegExp;
  /** Channel identifiers that vary over a workgroup's `perGroup` channels. */
  readonly varying: string[];
  /** Matches those identifiers (a load without them has one value per workgroup). */
  readonly varyingChannel: RegExp;
}

/**
 * The channel and state indices of a lane of `layout` (channel index `c`, lane `j`), its vector
 * loads of per-state operands read from `registry` (`readable`: nodes that may be bound as
 * vectors), the loop-invariant emitter, and which channel indices vary over a workgroup of
 * `perGroup` channels (a per-state load can be shared by the workgroup when every channel
 * variable it mentions is constant over it: the inner channel sizes are multiples of
 * `perGroup`).
 */
export function laneContext(
  spec: ScanSpec,
  layout: Layout,
  registry: BindingRegistry,
  readable: (node: Node) => boolean,
  perGroup: number,
): LaneContext {
  const { scan } = spec;
  const ch = decodeIndex(
    "c",
    spec.channelAxes,
    spec.channelAxes.map((a) => sizeOf(scan, a)),
    "ch_",
  );
  const st = stateLanes(spec, layout);
  const vectors = layout.vectorWidth > 1
    ? new VectorLoads(
      registry,
      readable,
      {
        envs: st.envs,
        axes: spec.stateAxes,
        innerSize: sizeOf(scan, spec.stateAxes[spec.stateAxes.length - 1]),
      },
      layout.vectorWidth,
      layout.vectorIndex,
    )
    : undefined;
  const pre = new ExprEmitter(registry.lookup, "q");
  interceptLoop(pre, {
    math: "prelude",
    vectors,
    lookup: registry.lookup,
    buffered: registry.buffered,
  });
  const stateNames = [...new Set(st.envs.flatMap((e) => Object.values(e)))];
  const stateIndex = new RegExp(
    `\\b(${[...stateNames, ...st.envs.map((_, r) => `s${r}`)].join("|") || "$^"})\\b`,
  );
  const varying: string[] = [];
  spec.channelAxes.forEach((a, k) => {
    const inner = spec.channelAxes.slice(k + 1).reduce((p, b) => p * sizeOf(scan, b), 1);
    if (inner % perGroup !== 0) varying.push(ch.env[a]);
  });
  const varyingChannel = new RegExp(`\\b(${varying.join("|") || "$^"})\\b`);
  return { ch, st, vectors, pre, stateIndex, varying, varyingChannel };
}

/**
 * The state updates `h_r = a·h_r + x` of step `t` for each of the lane's states, emitted in
 * `loop`; with `live`, a dead step keeps the state (decay 1, input 0). Also returns the decays.
 */
export function stateUpdates(
  loop: ExprEmitter,
  spec: ScanSpec,
  lane: LaneContext,
  t: string,
  live?: string,
): { lines: string[]; decays: string[] } {
  const lines: string[] = [];
  const decays: string[] = [];
  lane.st.envs.forEach((stateEnv, r) => {
    const env = { ...lane.ch.env, [spec.scan.axis]: t, ...stateEnv };
    let a = loop.emit(spec.scan.decay, env);
    let x = loop.emit(spec.scan.input, env);
    if (live) {
      a = `select(1.0, ${a}, ${live})`;
      x = `select(0.0, ${x}, ${live})`;
    }
    lines.push(`h${r} = ${a} * h${r} + ${x};`);
    decays.push(a);
  });
  return { lines, decays };
}

/** The lane's part of contraction `contract` at step `t`: Σ over its states of w·h. */
export function contractionPart(
  loop: ExprEmitter,
  spec: ScanSpec,
  lane: LaneContext,
  contract: ContractNode,
  t: string,
): string {
  const other = otherOperand(contract, spec.scan);
  return lane.st.envs.map((stateEnv, r) => {
    const w = loop.emit(other, { ...lane.ch.env, [spec.scan.axis]: t, ...stateEnv });
    return lane.st.owned[r] ? `${w} * h${r}` : `select(0.0, ${w} * h${r}, own${r})`;
  }).join(" + ");
}

/**
 * Stores of the lane's final states into the final-state outputs (guarded by `valid`): whole
 * vectors where the lane's states are consecutive elements of the output (vector layout, every
 * slot owned, the inner state axis contiguous there and every other stride a multiple of the
 * width): a warp's scalar stores of 16 consecutive states a lane touch 16 times the lines.
 */
export function finalStores(spec: ScanSpec, registry: BindingRegistry, lane: LaneContext) {
  return spec.finals.flatMap((f, k) => {
    const index = spec.outputs.length + k;
    const width = vectorStoreWidth(spec, lane, f);
    const w = width > 1 ? registry.writeVectors(index, width) : undefined;
    if (w !== undefined) {
      return lane.st.envs.flatMap((stateEnv, r) => {
        if (r % width !== 0) return [];
        const parts = Array.from({ length: width }, (_, q) => `h${r + q}`).join(", ");
        const env = { ...lane.ch.env, ...stateEnv };
        const at = splitVectorIndex(f, env, width, (a) => a === inner(spec));
        return [`if (valid) { ${w}[${at}] = vec${width}<f32>(${parts}); }`];
      });
    }
    const scalar = registry.writeName(index);
    return lane.st.envs.map((stateEnv, r) => {
      const cond = lane.st.owned[r] ? "valid" : `valid && own${r}`;
      const at = offsetExpr(f, { ...lane.ch.env, ...stateEnv });
      return `if (${cond}) { ${scalar}[${at}] = h${r}; }`;
    });
  });
}

/** The innermost state axis. */
function inner(spec: ScanSpec): string {
  return spec.stateAxes[spec.stateAxes.length - 1];
}

/** The vector width of the final-state stores of `f` (1: scalar stores). */
function vectorStoreWidth(spec: ScanSpec, lane: LaneContext, f: Node): number {
  const width = lane.vectors?.width ?? 1;
  const perLane = lane.st.envs.length;
  if (width < 2 || perLane % width !== 0 || !lane.st.owned.every((o) => o)) return 1;
  if (storageDtype(f) !== "f32" || spec.stateAxes.length === 0) return 1;
  const axis = inner(spec);
  const strides = stridesOf(f);
  if (strides[axis] !== 1 || sizeOf(spec.scan, axis) % width !== 0) return 1;
  const aligned = f.axes.every((a, i) =>
    a === axis || f.shape[i] === 1 || strides[a] % width === 0
  );
  return aligned ? width : 1;
}
