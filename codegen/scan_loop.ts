/**
 * Helpers of the fused scan kernel's step loop (scan_kernel.ts): branch-free spellings of the
 * transcendental ops, and the prefetcher that issues a block's loads loop iterations early.
 *
 * Why: each warp runs thousands of dependent steps, so the loop body's latency is the kernel's
 * time. A branch in the body (the prelude's softplus has two early returns) splits it into
 * basic blocks the driver schedules one after the other, so the step loads cannot be issued
 * before the per-channel math; and loads issued at the top of a block still stall the block
 * for a full memory latency. Measured on the H100 in bench/scan_tune.ts.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { loadWgsl, storageDtype, valueType } from "./dtypes.ts";
import { numel, stridesOf } from "../dsl/ir.ts";
import { type AffineView, affineView } from "./affine_view.ts";
import type { BindingRegistry } from "./artifact.ts";
import { type EmitSteps, type Env, type ExprEmitter, offsetExpr, offsetTerms } from "./expr.ts";
import { u32Literal } from "./wgsl_math.ts";

/** How the step loop spells softplus, silu, sigmoid (and exp, with `fast-exp2`). */
export type ScanMath = "prelude" | "exact" | "fast" | "fast-exp2";

/** WGSL helpers the `exact` and `fast` spellings call (included once per scan shader). */
export const SCAN_MATH_PRELUDE = `
fn sk_softplus_nb(x: f32) -> f32 {
  // The prelude's softplus without branches: log1p(e) as log(w) * e / (w - 1) (Goldberg).
  let e = exp(x);
  let w = 1.0 + e;
  let r = log(w) * (e / (w - 1.0));
  return select(select(r, e, w == 1.0), x, x > 20.0);
}
fn sk_recip_pos(v: f32) -> f32 {
  // 1 / v for v > 0 without a division: inverseSqrt(v)² (a few ulp, no slow-path branch).
  let r = inverseSqrt(v);
  return r * r;
}
fn sk_softplus_fast(x: f32) -> f32 {
  let e = exp(x);
  let w = 1.0 + e;
  let r = log(w) * e * sk_recip_pos(w - 1.0);
  return select(select(r, e, w == 1.0), x, x > 20.0);
}
fn sk_exp(x: f32) -> f32 {
  // exp as exp2(x · log2 e): the hardware's base-2 exponential with one multiply in front
  // (some drivers expand exp into a longer, more exact sequence).
  return exp2(x * 1.44269504);
}
`;

/**
 * The `exact`/`fast` spelling of a unary node (softplus, silu, sigmoid) whose operand is the
 * WGSL expression `x`, or undefined to keep the standard spelling.
 */
export function scanUnary(math: ScanMath, node: Node, x: string): string | undefined {
  if (math === "prelude" || node.kind !== "unary") return undefined;
  const fast = math === "fast" || math === "fast-exp2";
  const exp = math === "fast-exp2" ? "sk_exp" : "exp";
  switch (node.op) {
    case "exp":
      return math === "fast-exp2" ? `sk_exp(${x})` : undefined;
    case "softplus":
      return fast ? `sk_softplus_fast(${x})` : `sk_softplus_nb(${x})`;
    case "silu":
      return fast ? `(${x} * sk_recip_pos(1.0 + ${exp}(-${x})))` : undefined;
    case "sigmoid":
      return fast ? `sk_recip_pos(1.0 + ${exp}(-${x}))` : undefined;
    default:
      return undefined;
  }
}

/** Which loads the prefetcher takes: none, those without state indices, or all of them. */
export type ScanPrefetch = "none" | "own" | "all";

/**
 * Where per-state prefetched loads (B, C…) live: registers loaded at the top of the body
 * (`"early"`), registers loaded at its end, after the current block's values are used
 * (`"late"`: one register set instead of two), or workgroup memory (`"staged"`: the
 * workgroup loads a block's values once, a thread one or a few vectors, and every lane reads
 * its own from there).
 */
export type ScanStateLoads = "early" | "late" | "staged";

/** How the prefetcher treats the loads it takes. */
export interface PrefetchOptions {
  /** Which loads to take. */
  readonly mode: ScanPrefetch;
  /** Matches the step-position identifiers (renamed per block). */
  readonly steps: RegExp;
  /** Matches any identifier that varies inside the loop. */
  readonly loopVar: RegExp;
  /** Matches the state-index identifiers (`own` leaves those loads alone). */
  readonly stateVar: RegExp;
  /** Blocks ahead for loads without a state index (default 1). */
  readonly depth?: number;
  /** Where per-state loads live (default `"early"`). */
  readonly stateLoads?: ScanStateLoads;
  /** Whether a per-state load has the same value in every channel of a workgroup. */
  readonly stageable?: (load: string) => boolean;
  /** The expression reading staged load `k` (for this lane, from the current buffer). */
  readonly stagedRead?: (k: number) => string;
  /**
   * With `stateLoads: "staged"`, what becomes of a per-state load that cannot be staged:
   * `"register"` (default: prefetched into registers) or `"direct"` (not taken: read where used).
   */
  readonly unstaged?: "register" | "direct";
}

/**
 * Collects the step loads of a loop body and turns them into values fetched ahead of use:
 * `var pfK` holds the current block's value, `let nfK` loads a later block's (at the top of
 * the body, or at its end for `late` loads), and the rotation at its end shifts the registers
 * down by one block. A load qualifies when its index mentions no loop value other than the
 * step positions (no gathered ids): it can then be evaluated for another block by renaming
 * those positions.
 *
 * Loads without a state index (x, Δ, z: streamed from memory once per channel) are issued
 * `depth` blocks ahead, per-state loads (B, C: shared by every channel, served by the caches)
 * one block ahead: a deeper stream keeps more bytes in flight for a few registers each.
 * Staged loads are only collected here; scan_kernel.ts emits their cooperative loads.
 */
export class Prefetcher {
  readonly #loads: {
    name: string;
    dtype: string;
    load: string;
    depth: number;
    late: boolean;
  }[] = [];
  readonly #staged: { load: string; dtype: string }[] = [];
  readonly #byLoad = new Map<string, string>();
  readonly #o: PrefetchOptions;

  /** A prefetcher with options `o`. */
  constructor(o: PrefetchOptions) {
    this.#o = o;
  }

  /**
   * The register (or staged read) holding `load` (a WGSL load expression of type `dtype`), or
   * undefined when the load is not taken.
   */
  take(load: string, dtype: string): string | undefined {
    const o = this.#o;
    if (o.mode === "none") return undefined;
    const rest = load.replace(new RegExp(o.steps.source, "g"), "");
    if (!o.steps.test(load) || o.loopVar.test(rest)) return undefined;
    const perState = o.stateVar.test(load);
    if (o.mode === "own" && perState) return undefined;
    let name = this.#byLoad.get(load);
    if (name !== undefined) return name;
    const placement = perState ? o.stateLoads ?? "early" : "early";
    const stageable = placement === "staged" && o.stageable?.(load) && o.stagedRead &&
      (this.#staged.length === 0 || this.#staged[0].dtype === dtype);
    if (placement === "staged" && !stageable && o.unstaged === "direct") return undefined;
    if (stageable) {
      name = o.stagedRead(this.#staged.length);
      this.#staged.push({ load, dtype });
    } else {
      name = `pf${this.#loads.length}`;
      this.#loads.push({
        name,
        dtype,
        load,
        depth: perState ? 1 : o.depth ?? 1,
        late: placement === "late",
      });
    }
    this.#byLoad.set(load, name);
    return name;
  }

  /** Number of loads taken (registers and staged). */
  get size(): number {
    return this.#loads.length + this.#staged.length;
  }

  /** The staged loads, in the order of their index k. */
  get staged(): readonly { load: string; dtype: string }[] {
    return this.#staged;
  }

  /** The distinct prefetch distances of register loads in use, ascending. */
  get depths(): number[] {
    const all = this.#loads.map((l) => l.depth);
    if (this.#staged.length > 0) all.push(1);
    return [...new Set(all)].sort((a, b) => a - b);
  }

  /** `load` with its step names suffixed by `suffix` (the same load for another block). */
  renamed(load: string, suffix: string): string {
    return load.replace(new RegExp(this.#o.steps.source, "g"), (m) => `${m}${suffix}`);
  }

  /** Register of `l` holding the block `k` blocks after the current one. */
  #register(l: { name: string }, k: number): string {
    return k === 0 ? l.name : `${l.name}_${k}`;
  }

  /**
   * Declarations before the loop: the first blocks' values; block k's step names carry the
   * suffix `suffix(k)`.
   */
  declare(suffix: (block: number) => string): string[] {
    return this.#loads.flatMap((l) =>
      Array.from(
        { length: l.depth },
        (_, k) => `var ${this.#register(l, k)}: ${l.dtype} = ${this.renamed(l.load, suffix(k))};`,
      )
    );
  }

  /**
   * Loads at the top of the body (`late` false) or at its end (true) of the block `depth`
   * ahead; that block's step names carry the suffix `suffix(depth)`.
   */
  next(suffix: (depth: number) => string, late = false): string[] {
    return this.#loads.filter((l) => l.late === late).map((l) =>
      `let n${l.name.slice(1)}: ${l.dtype} = ${this.renamed(l.load, suffix(l.depth))};`
    );
  }

  /** The register rotation at the end of the body. */
  rotate(): string[] {
    return this.#loads.flatMap((l) => [
      ...Array.from(
        { length: l.depth - 1 },
        (_, k) => `${this.#register(l, k)} = ${this.#register(l, k + 1)};`,
      ),
      `${this.#register(l, l.depth - 1)} = n${l.name.slice(1)};`,
    ]);
  }
}

/** A lane's state slots: slot r holds state element j·R + r (R = slots per lane). */
export interface StateSlots {
  /** Slot r's index variable per state axis (`st{r}_{axis}`). */
  readonly envs: readonly Env[];
  /** The state axes, outermost first. */
  readonly axes: readonly string[];
  /** Size of the innermost state axis. */
  readonly innerSize: number;
}

/** How a vector load's index is spelled (see `ScanStrategy.vectorIndex`). */
export type VectorIndex = "whole" | "split";

/**
 * Vector loads of per-state operands (B, C…): when a lane holds R consecutive state elements,
 * a tensor whose innermost state axis has stride 1 is read K = 4 or 2 elements per load
 * through an `array<vecK<f32>>` binding, one load per K slots instead of K loads (fewer
 * load and address instructions per state update). A tensor bound that way is read with
 * `[i / K][i % K]` wherever its index is not such a group.
 */
export class VectorLoads {
  readonly width: number;
  readonly #index: VectorIndex;
  readonly #declared = new Map<Node, string>();
  readonly #declarations: string[] = [];
  readonly #slotOf = new Map<string, { r: number; axis: string }>();
  readonly #slotVar: RegExp;
  readonly #lets = new WeakMap<ExprEmitter, Map<string, string>>();
  #count = 0;

  /**
   * @param registry  the kernel's bindings (vector bindings are reserved there)
   * @param candidate whether a node is a plain read-only buffer of this kernel
   * @param slots     the lane's state slots (consecutive elements)
   * @param width     elements per vector load (see {@link vectorWidth})
   * @param index     how a vector load's index is spelled
   */
  constructor(
    readonly registry: BindingRegistry,
    readonly candidate: (node: Node) => boolean,
    readonly slots: StateSlots,
    width: number,
    index: VectorIndex = "whole",
  ) {
    this.width = width;
    this.#index = index;
    slots.envs.forEach((env, r) => {
      for (const axis of slots.axes) this.#slotOf.set(env[axis], { r, axis });
    });
    const names = [...this.#slotOf.keys()];
    this.#slotVar = new RegExp(`\\b(${names.join("|") || "$^"})\\b`);
  }

  /** WGSL declarations of the vector bindings. */
  declarations(): string {
    return this.#declarations.join("\n");
  }

  /**
   * The slot group of a read of `node` (through `view`, its map into the bound buffer) at
   * `env`: the env of its first slot and the lane's component.
   */
  #group(node: Node, view: AffineView, env: Env): { env: Env; component: number } | undefined {
    const k = this.width;
    if (k < 2 || storageDtype(view.base) !== "f32" || numel(view.base) % k !== 0) return undefined;
    if (view.offset % k !== 0) return undefined;
    const strides = view.strides;
    const inner = this.#innerAxis;
    let slot: number | undefined;
    let innerSeen = false;
    for (const [i, a] of node.axes.entries()) {
      const v = env[a];
      const s = this.#slotOf.get(v);
      if (s !== undefined) {
        if (slot !== undefined && slot !== s.r) return undefined;
        slot = s.r;
        if (s.axis === inner) {
          if (strides[a] !== 1) return undefined;
          innerSeen = true;
          continue;
        }
      } else if (this.#slotVar.test(v)) return undefined;
      if (node.shape[i] > 1 && strides[a] % k !== 0) return undefined;
    }
    if (slot === undefined || !innerSeen) return undefined;
    const first = slot - (slot % k);
    const g: Record<string, string> = {};
    for (const a of node.axes) {
      const s = this.#slotOf.get(env[a]);
      g[a] = s ? this.slots.envs[first][s.axis] : env[a];
    }
    return { env: g, component: slot - first };
  }

  /**
   * How to read `node` at `env`: a vector load and the component wanted, a scalar read through
   * the vector binding, or undefined for an ordinary binding. `node` is a bound buffer or a
   * view of one (permute, slice, pick, regroup: see {@link affineView}).
   */
  describe(node: Node, env: Env): { load: string; dtype: string; component?: number } | undefined {
    const view = affineView(node, this.candidate);
    if (!view) return undefined;
    const k = this.width;
    const group = this.#group(node, view, env);
    let name = this.#declared.get(view.base);
    if (name === undefined) {
      // Decided at the first read: a tensor already bound as scalars stays scalar.
      if (!group || this.registry.reads.includes(view.base)) return undefined;
      const index = this.registry.reserveExternal(view.base);
      name = `b${index}v`;
      this.#declared.set(view.base, name);
      this.#declarations.push(
        `@group(0) @binding(${index}) var<storage, read> ${name}: array<vec${k}<f32>>;`,
      );
    }
    if (group) {
      const index = this.#index === "split"
        ? splitVectorIndex(
          node,
          group.env,
          k,
          (a) => this.#slotOf.get(group.env[a])?.axis === this.#innerAxis,
          view,
        )
        : `(${viewOffset(node, view, group.env)}) / ${k}u`;
      return { load: `${name}[${index}]`, dtype: `vec${k}<f32>`, component: group.component };
    }
    const offset = viewOffset(node, view, env);
    return { load: `${name}[(${offset}) / ${k}u][(${offset}) % ${k}u]`, dtype: "f32" };
  }

  /** The innermost state axis. */
  get #innerAxis(): string {
    return this.slots.axes[this.slots.axes.length - 1];
  }

  /** A `let` of `load` in `em`'s statements (once per emitter), returning its name. */
  bind(em: ExprEmitter, load: string, dtype: string): string {
    let lets = this.#lets.get(em);
    if (!lets) this.#lets.set(em, lets = new Map());
    let name = lets.get(load);
    if (name === undefined) {
      name = `vl${this.#count++}`;
      em.lines.push(`let ${name}: ${dtype} = ${load};`);
      lets.set(load, name);
    }
    return name;
  }
}

/**
 * The index into an array of K-element vectors of `node`'s element at `env`, spelled
 * Σ idx·(stride / K) + inner / K (+ offset / K), where `isInner` picks the axis whose index is a
 * multiple of K (stride 1) and every other axis's stride is a multiple of K: the element offset
 * divided by K, with each term left linear so the compiler can fold constant ones. `view` maps
 * a view of a buffer to the buffer (default: `node` is the buffer).
 */
export function splitVectorIndex(
  node: Node,
  env: Env,
  k: number,
  isInner: (axis: string) => boolean,
  view?: AffineView,
): string {
  const strides = view?.strides ?? stridesOf(node);
  const terms: string[] = [];
  for (const [i, a] of node.axes.entries()) {
    if (node.shape[i] === 1) continue;
    if (isInner(a)) terms.push(`${env[a]} / ${k}u`);
    else if (strides[a] === k) terms.push(env[a]);
    else terms.push(`${env[a]} * ${strides[a] / k}u`);
  }
  if (view && view.offset !== 0) terms.push(`${view.offset / k}u`);
  return terms.length ? terms.join(" + ") : "0u";
}

/** The element offset in `view.base` of `node`'s element at `env` (`node` read through `view`). */
function viewOffset(node: Node, view: AffineView, env: Env): string {
  const terms = offsetExpr(node, env, view.strides);
  return view.offset === 0 ? terms : `${terms} + ${u32Literal(view.offset)}`;
}

/**
 * Elements per vector load for `perLane` consecutive slots of a state whose innermost axis has
 * `innerSize` elements: 4 or 2 when they divide both (a group never wraps the axis), else 1.
 */
export function vectorWidth(perLane: number, innerSize: number): number {
  return [4, 2].find((k) => perLane % k === 0 && innerSize % k === 0) ?? 1;
}

/**
 * exp(a·b) with b loop-invariant as exp2(a·b′), b′ = b·log2 e computed once before the loop:
 * the hardware exponential is base 2, so this saves the multiply by log2 e in every state
 * update (the decay exp(Δ·A) of a selective scan). Holds the hoisted products.
 */
export class Log2eFold {
  readonly #scaled = new Map<string, string>();

  /**
   * @param pre          the emitter of the values computed before the loop
   * @param loopVariable matches any identifier that varies inside the loop
   */
  constructor(readonly pre: ExprEmitter, readonly loopVariable: RegExp) {}

  /**
   * The steps spelling `node` = exp(a·b) at `env` folded (the emitter answers their operand
   * requests), or undefined when `node` does not have that form.
   */
  spell(node: Node, env: Env, buffered: (n: Node) => boolean): EmitSteps | undefined {
    if (node.kind !== "unary" || node.op !== "exp") return undefined;
    const x = node.x;
    if (x.kind !== "binary" || x.op !== "mul" || buffered(x)) return undefined;
    const invariant = (n: Node) => !n.axes.some((a) => this.loopVariable.test(env[a]));
    const [inv, other] = invariant(x.b) ? [x.b, x.a] : invariant(x.a) ? [x.a, x.b] : [];
    if (!inv || !other || inv.kind === "const") return undefined;
    return this.#folded(inv, other, env);
  }

  *#folded(inv: Node, other: Node, env: Env): EmitSteps {
    const b = yield [inv, env];
    let scaled = this.#scaled.get(b);
    if (scaled === undefined) {
      scaled = `${b}_log2e`;
      this.pre.lines.push(`let ${scaled}: f32 = ${b} * 1.44269504;`);
      this.#scaled.set(b, scaled);
    }
    return `exp2(${yield [other, env]} * ${scaled})`;
  }
}

/** Steps that put the value of `operand` at `env` where `spelled` has U+0000. */
function* spellWith(spelled: string, operand: Node, env: Env): EmitSteps {
  return spelled.replaceAll("\u0000", yield [operand, env]);
}

/**
 * Element offsets whose loop-invariant part (two or more terms: the channel's, fixed per
 * thread) is computed once, as a `let` among `pre`'s lines before the loop, and whose loop part
 * (the step's) is added where used: `ib0 + t * D` for `b * S + t * D + d`. A load with an index
 * matching `stateVariable` keeps its plain offset: the staging fill renames state indices inside
 * the text of such loads.
 * Measured 0.6405 against 0.6493 ms for the tiled kernel on the H200 (bench/RESULTS.md,
 * 2026-12-03).
 */
export function invariantOffsets(
  pre: ExprEmitter,
  loopVariable: RegExp,
  stateVariable?: RegExp,
): (node: Node, env: Env) => string {
  const bases = new Map<string, string>();
  return (node, env) => {
    const terms = offsetTerms(node, env);
    // A load at a state index keeps its plain text: staging matches and renames it.
    if (stateVariable && terms.some((t) => stateVariable.test(t.index))) {
      return offsetExpr(node, env);
    }
    const varying = terms.filter((t) => loopVariable.test(t.index)).map((t) => t.term);
    const fixed = terms.filter((t) => !loopVariable.test(t.index)).map((t) => t.term);
    if (fixed.length < 2 || varying.length === 0) return offsetExpr(node, env);
    const text = fixed.join(" + ");
    let base = bases.get(text);
    if (base === undefined) {
      bases.set(text, base = `ib${bases.size}`);
      pre.lines.push(`let ${base}: u32 = ${text};`);
    }
    return [base, ...varying].join(" + ");
  };
}

/** What the loop intercepts use. */
export interface LoopTools {
  readonly math: ScanMath;
  /** Folds log2 e into loop-invariant exp factors (see {@link Log2eFold}). */
  readonly fold?: Log2eFold;
  readonly prefetch?: Prefetcher;
  readonly vectors?: VectorLoads;
  /** The array name of a materialized node (the registry's lookup; registers its binding). */
  readonly lookup: (node: Node) => string | undefined;
  /**
   * Whether a node has a buffer, asked without registering a binding (a registered scalar
   * binding would keep the node from being read as vectors).
   */
  readonly buffered: (node: Node) => boolean;
  /** The element offset of a scalar load (default {@link offsetExpr}). */
  readonly offset?: (node: Node, env: Env) => string;
}

/**
 * Installs the loop intercepts on `em`: first `first` (e.g. the lane-transposed redirect),
 * then the math spellings, then loads (vector groups, prefetched registers). Returns `em`.
 */
export function interceptLoop(
  em: ExprEmitter,
  tools: LoopTools,
  first?: (node: Node, env: Env) => string | undefined,
): ExprEmitter {
  return em.interceptWith((node, env) => {
    const redirected = first?.(node, env);
    if (redirected !== undefined) return redirected;
    const folded = tools.fold?.spell(node, env, tools.buffered);
    if (folded !== undefined) return folded;
    // A unary with a buffer is read, not recomputed in the scan's own spelling.
    if (node.kind === "unary" && !tools.buffered(node)) {
      const spelled = scanUnary(tools.math, node, "\u0000");
      if (spelled !== undefined) return spellWith(spelled, node.x, env);
    }
    if (node.kind === "const") return undefined;
    const vector = tools.vectors?.describe(node, env);
    if (vector) {
      const held = tools.prefetch?.take(vector.load, vector.dtype);
      if (vector.component === undefined) return held ?? vector.load;
      // A register is read as is; a load (or a staged read) is bound once per emitter.
      const whole = held !== undefined && /^pf\d+$/.test(held)
        ? held
        : tools.vectors!.bind(em, held ?? vector.load, vector.dtype);
      return `${whole}[${vector.component}]`;
    }
    const buffer = tools.lookup(node);
    if (buffer === undefined || !tools.prefetch) return undefined;
    const offset = (tools.offset ?? offsetExpr)(node, env);
    const load = loadWgsl(buffer, offset, storageDtype(node));
    return tools.prefetch.take(load, valueType(node.dtype));
  });
}
