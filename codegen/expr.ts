/**
 * The expression emitter: turns a fused subgraph into WGSL statements evaluated at one index
 * environment (axis name → WGSL u32 expression). Materialized nodes become buffer loads;
 * everything else (elementwise math, views, gathers, the short conv) is computed inline. Each
 * (node, projected environment) is emitted once as a `let`, so shared subexpressions are
 * computed once per thread.
 *
 * Emission walks the graph with an explicit stack, not JavaScript recursion: each value is
 * computed by a generator ({@link EmitSteps}) that yields a request for every operand value it
 * needs, so an expression tens of thousands of ops deep emits without overflowing the stack.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import { stridesOf } from "../dsl/ir.ts";
import { binaryWgsl, f32Literal, u32Literal, unaryWgsl } from "./wgsl_math.ts";
import { loadWgsl, storageDtype, valueType } from "./dtypes.ts";

/** Axis name → WGSL u32 expression of its index. */
export type Env = Readonly<Record<string, string>>;

/** How the emitter reaches materialized nodes: the WGSL array name, if the node has a buffer. */
export type BufferLookup = (node: Node) => string | undefined;

/** A request for the WGSL value of `node` at `env`, yielded by {@link EmitSteps}. */
export type ValueRequest = readonly [node: Node, env: Env];

/**
 * The steps that compute one value: a generator that yields a {@link ValueRequest} for each
 * operand value it needs (the emitter answers with that value's WGSL expression) and returns
 * its own expression.
 */
export type EmitSteps = Generator<ValueRequest, string, string>;

/**
 * What an intercept returns for a node: its WGSL value, steps that compute it from operand
 * values (so deep chains of intercepted nodes emit without recursion), or undefined to
 * decline.
 */
export type Intercepted = string | EmitSteps | undefined;

/** The cache key of `node` at `env`: its id and the indices of its own axes. */
export function valueKey(node: Node, env: Env): string {
  return `${node.id}|${node.axes.map((a) => env[a]).join(",")}`;
}

/**
 * Builds the offset expression of `node` at `env`: row-major in its own layout, or with the
 * given element `strides` (a view addressing the buffer behind it).
 */
export function offsetExpr(
  node: Node,
  env: Env,
  strides: Readonly<Record<string, number>> = stridesOf(node),
): string {
  const terms = offsetTerms(node, env, strides).map((t) => t.term);
  return terms.length ? terms.join(" + ") : "0u";
}

/**
 * The terms of {@link offsetExpr}, one per axis of extent > 1 (`index * stride`, or the index
 * alone for stride 1), with their index expressions: callers split them (e.g. a loop-invariant
 * base computed once before a loop).
 */
export function offsetTerms(
  node: Node,
  env: Env,
  strides: Readonly<Record<string, number>> = stridesOf(node),
): { index: string; term: string }[] {
  const terms: { index: string; term: string }[] = [];
  for (const a of node.axes) {
    const idx = env[a];
    if (idx === undefined) throw new Error(`internal: no index for axis ${a} of node ${node.id}`);
    if (node.shape[node.axes.indexOf(a)] === 1) continue;
    terms.push({ index: idx, term: strides[a] === 1 ? idx : `${idx} * ${u32Literal(strides[a])}` });
  }
  return terms;
}

/** Emits WGSL statements for fused expressions into `lines`. */
export class ExprEmitter {
  /** The statements emitted so far (each a `let`). */
  readonly lines: string[] = [];
  #cache = new Map<string, string>();
  #counter = 0;
  #prefix: string;
  #buffers: BufferLookup;
  #core?: { node: Node; value: string };
  #hoist?: { emitter: ExprEmitter; variant: RegExp };
  #intercept?: (node: Node, env: Env) => Intercepted;
  #split?: { lanes: number; lane: string; applies: (node: Node, env: Env) => boolean };

  /**
   * @param buffers where materialized nodes live
   * @param prefix  name prefix for the lets (unique per scope in one shader)
   * @param core    a node whose value at the kernel's own index is already in a variable
   *                (the accumulator of a matmul or reduction, for epilogues)
   */
  constructor(buffers: BufferLookup, prefix = "v", core?: { node: Node; value: string }) {
    this.#buffers = buffers;
    this.#prefix = prefix;
    this.#core = core;
  }

  /**
   * A child emitter for a nested block: it reuses every value already bound here (those lets
   * are in scope inside the block) but writes its own statements.
   */
  fork(prefix: string, core?: { node: Node; value: string }): ExprEmitter {
    const child = new ExprEmitter(this.#buffers, prefix, core ?? this.#core);
    for (const [k, v] of this.#cache) child.#cache.set(k, v);
    child.#hoist = this.#hoist;
    return child;
  }

  /**
   * Sends every node whose index expressions avoid the loop's variables to `outer` (emitted
   * before the loop): a node's value depends only on the indices of its own axes, so when
   * none of those mentions a loop variable, the value is loop-invariant. `loopVariables` are
   * regular-expression alternatives matching whole identifiers (the loop's lets included).
   */
  hoistTo(outer: ExprEmitter, loopVariables: readonly string[]): this {
    this.#hoist = { emitter: outer, variant: new RegExp(`\\b(${loopVariables.join("|")})\\b`) };
    return this;
  }

  /**
   * Splits the loops of inline contractions for which `applies` holds over a group of `lanes`
   * threads (lane index `lane`, aligned within a subgroup): each sums every lanes-th term and a
   * butterfly of subgroup shuffles gives every lane the total. Only for statements every lane
   * of the group runs (not inherited by forks, whose statements may sit under a guard).
   */
  splitContractions(
    lanes: number,
    lane: string,
    applies: (node: Node, env: Env) => boolean,
  ): this {
    if (lanes > 1) this.#split = { lanes, lane, applies };
    return this;
  }

  /**
   * Lets `fn` supply a node's value instead of computing it here (return undefined to
   * decline); checked after hoisting. Values it returns (or its steps compute) are bound to a
   * `let` and cached.
   */
  interceptWith(fn: (node: Node, env: Env) => Intercepted): this {
    this.#intercept = fn;
    return this;
  }

  /**
   * An index expression as a `let`, or itself when it is already a name or a literal (a let
   * of a loop-invariant name would keep its users from being hoisted).
   */
  #bindIndex(expr: string): string {
    return /^([A-Za-z_]\w*|\d+u)$/.test(expr) ? expr : this.#bind(expr, "u32");
  }

  #bind(expr: string, type = "f32"): string {
    const name = `${this.#prefix}${this.#counter++}`;
    this.lines.push(`let ${name}: ${type} = ${expr};`);
    return name;
  }

  /** WGSL expression of `node`'s value at `env`. */
  emit(node: Node, env: Env): string {
    const key = valueKey(node, env);
    const hit = this.#cache.get(key);
    if (hit !== undefined) return hit;
    // Depth-first over operand requests, with an explicit stack: each frame is the steps of
    // one value; a finished frame's value answers the frame below it.
    const stack: { key: string; steps: EmitSteps }[] = [{ key, steps: this.#steps(node, env) }];
    let answer = "";
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const step = top.steps.next(answer);
      if (step.done) {
        this.#cache.set(top.key, step.value);
        stack.pop();
        answer = step.value;
        continue;
      }
      const [operand, operandEnv] = step.value;
      const operandKey = valueKey(operand, operandEnv);
      const cached = this.#cache.get(operandKey);
      if (cached !== undefined) {
        answer = cached;
        continue;
      }
      stack.push({ key: operandKey, steps: this.#steps(operand, operandEnv) });
      answer = "";
    }
    return answer;
  }

  /** The steps computing `node` at `env` (not cached yet). */
  *#steps(node: Node, env: Env): EmitSteps {
    if (this.#core && node === this.#core.node) return this.#core.value;
    if (
      this.#hoist && node.kind !== "const" &&
      !node.axes.some((a) => this.#hoist!.variant.test(env[a]))
    ) {
      // Another emitter, with its own stack: one level of nesting however deep the chain.
      return this.#hoist.emitter.emit(node, env);
    }
    const supplied = this.#intercept?.(node, env);
    if (supplied !== undefined) {
      return this.#bind(
        typeof supplied === "string" ? supplied : yield* supplied,
        valueType(node.dtype),
      );
    }
    const buffer = this.#buffers(node);
    if (buffer !== undefined) {
      const at = offsetExpr(node, env);
      return this.#bind(loadWgsl(buffer, at, storageDtype(node)), valueType(node.dtype));
    }
    switch (node.kind) {
      case "const":
        return f32Literal(node.value);
      case "arange":
        return this.#bind(`f32(${env[node.axis]})`);
      case "literal": {
        const values = node.values;
        if (values.every((v) => v === values[0])) return f32Literal(values[0]);
        return this.#bind(literalSelect(values, this.#bind(offsetExpr(node, env), "u32")));
      }
      case "unary":
        return this.#bind(unaryWgsl(node.op, yield [node.x, env]));
      case "binary": {
        const bConst = node.b.kind === "const" ? node.b.value : undefined;
        const a = yield [node.a, env];
        const b = yield [node.b, env];
        return this.#bind(binaryWgsl(node.op, a, b, bConst));
      }
      case "where": {
        const b = yield [node.b, env];
        const a = yield [node.a, env];
        const cond = yield [node.cond, env];
        return this.#bind(`select(${b}, ${a}, ${cond} != 0.0)`);
      }
      case "permute":
        return yield [node.x, env];
      case "slice": {
        const { [node.newAxis]: idx, ...rest } = env;
        const shifted = node.start === 0 ? idx : `(${idx} + ${u32Literal(node.start)})`;
        return yield [node.x, { ...rest, [node.axis]: shifted }];
      }
      case "flip": {
        const size = node.shape[node.axes.indexOf(node.axis)];
        return yield [node.x, {
          ...env,
          [node.axis]: `(${u32Literal(size - 1)} - ${env[node.axis]})`,
        }];
      }
      case "regroup":
        return yield [node.x, this.#regroupEnv(node, env)];
      case "pick":
        return yield [node.x, { ...env, [node.axis]: u32Literal(node.index) }];
      case "concat":
        return yield* this.#concat(node, env);
      case "gather": {
        const rows = node.table.shape[node.table.axes.indexOf(node.axis)];
        const id = yield [node.indices, env];
        // Ids outside the table are clamped: the GPU never reads out of bounds.
        const row = this.#bind(`u32(clamp(${id}, 0i, ${rows - 1}i))`, "u32");
        return yield [node.table, { ...env, [node.axis]: row }];
      }
      case "conv1d":
        return yield* this.#conv1d(node, env);
      case "input":
        throw new Error(`internal: input "${node.name}" has no buffer`);
      case "contract":
        return this.#inlineContraction(node, env);
      case "reduce":
      case "scan":
      case "delta":
      case "delta_state":
      case "assocScan":
      case "attention":
      case "attention_grad":
      case "delta_grad":
        throw new Error(`internal: ${node.kind} node ${node.id} must be materialized`);
    }
  }

  /** Σ over the summed axes as a loop (for short contractions the fusion pass inlines). */
  #inlineContraction(node: Extract<Node, { kind: "contract" }>, env: Env): string {
    const id = this.#counter++;
    const acc = `${this.#prefix}acc${id}`;
    const idx = `${this.#prefix}k${id}`;
    const sizes = node.summed.map((a) => node.a.shape[node.a.axes.indexOf(a)]);
    const extent = sizes.reduce((p, s) => p * s, 1);
    const decoded = decodeIndex(idx, node.summed, sizes, `${this.#prefix}k${id}_`);
    // The loop body has its own scope: nothing computed in it is reused outside.
    const body = new ExprEmitter(this.#buffers, `${this.#prefix}c${id}_`);
    const inner = { ...env, ...decoded.env };
    const a = body.emit(node.a, inner);
    const b = body.emit(node.b, inner);
    const split = this.#split?.applies(node, env) ? this.#split : undefined;
    const [start, step] = split ? [split.lane, `${idx} += ${split.lanes}u`] : ["0u", `${idx}++`];
    this.lines.push(
      `var ${acc}: f32 = 0.0;`,
      `for (var ${idx}: u32 = ${start}; ${idx} < ${u32Literal(extent)}; ${step}) {`,
      ...[...decoded.lines, ...body.lines, `${acc} += ${a} * ${b};`].map((l) => `  ${l}`),
      `}`,
    );
    for (let m = (split?.lanes ?? 1) / 2; m >= 1; m /= 2) {
      this.lines.push(`${acc} += subgroupShuffleXor(${acc}, ${m}u);`);
    }
    return this.#bind(acc);
  }

  #regroupEnv(node: Extract<Node, { kind: "regroup" }>, env: Env): Env {
    const elem: Record<string, string> = {};
    node.outGroups.forEach((g, k) => {
      const idx = env[node.axes[k]];
      if (g.length === 1) {
        elem[g[0]] = idx;
        return;
      }
      let inner = 1;
      for (let j = g.length - 1; j >= 0; j--) {
        const size = node.sizes[g[j]];
        const div = inner === 1 ? idx : `(${idx} / ${u32Literal(inner)})`;
        elem[g[j]] = j === 0 ? div : `(${div} % ${u32Literal(size)})`;
        inner *= size;
      }
    });
    const src: Record<string, string> = {};
    node.inGroups.forEach((g, k) => {
      let expr = "";
      let inner = 1;
      for (let j = g.length - 1; j >= 0; j--) {
        const term = inner === 1 ? elem[g[j]] : `${elem[g[j]]} * ${u32Literal(inner)}`;
        expr = expr ? `${term} + ${expr}` : term;
        inner *= node.sizes[g[j]];
      }
      src[node.x.axes[k]] = g.length === 1 ? expr : `(${expr})`;
    });
    return src;
  }

  *#concat(node: Extract<Node, { kind: "concat" }>, env: Env): EmitSteps {
    const t = this.#bindIndex(env[node.newAxis]);
    const { [node.newAxis]: _, ...rest } = env;
    const partAt = (k: number): ValueRequest => {
      const local = node.offsets[k] === 0 ? t : `(${t} - ${u32Literal(node.offsets[k])})`;
      return [node.parts[k], { ...rest, [node.partAxes[k]]: local }];
    };
    // Each part is read at a clamped index when out of its range; select keeps the right one.
    let value = yield partAt(node.parts.length - 1);
    for (let k = node.parts.length - 2; k >= 0; k--) {
      const part = yield partAt(k);
      value = this.#bind(
        `select(${value}, ${part}, ${t} < ${u32Literal(node.offsets[k + 1])})`,
        valueType(node.dtype),
      );
    }
    return value;
  }

  *#conv1d(node: Extract<Node, { kind: "conv1d" }>, env: Env): EmitSteps {
    const taps = node.w.shape[node.w.axes.indexOf(node.tapAxis)];
    const t = this.#bindIndex(env[node.axis]);
    const terms: string[] = [];
    for (let j = 0; j < taps; j++) {
      const back = taps - 1 - j;
      const w = yield [node.w, { ...env, [node.tapAxis]: u32Literal(j) }];
      const src = back === 0 ? t : `(${t} - ${u32Literal(back)})`;
      const x = yield [node.x, { ...env, [node.axis]: src }];
      // Taps before t = 0 read a clamped element and are discarded by the select.
      terms.push(back === 0 ? `${w} * ${x}` : `select(0.0, ${w} * ${x}, ${t} >= ${back}u)`);
    }
    return this.#bind(terms.join(" + "));
  }
}

/**
 * A WGSL expression for `values[index]` (`index` a u32 expression, in range): a balanced tree
 * of selects over the literal values, log₂(n) deep; runs of equal values collapse.
 */
function literalSelect(
  values: readonly number[],
  index: string,
  lo = 0,
  hi = values.length,
): string {
  if (values.slice(lo, hi).every((v) => v === values[lo])) return f32Literal(values[lo]);
  const mid = (lo + hi) >> 1;
  const below = literalSelect(values, index, lo, mid);
  return `select(${below}, ${literalSelect(values, index, mid, hi)}, ${index} >= ${mid}u)`;
}

/** WGSL statements decoding a flat row-major index into one `let` per axis. */
export function decodeIndex(
  flat: string,
  axes: readonly string[],
  shape: readonly number[],
  prefix: string,
): { lines: string[]; env: Record<string, string> } {
  const lines: string[] = [];
  const env: Record<string, string> = {};
  let inner = 1;
  for (let d = axes.length - 1; d >= 0; d--) {
    const name = `${prefix}${axes[d]}`;
    const div = inner === 1 ? flat : `(${flat} / ${u32Literal(inner)})`;
    const expr = d === 0 ? div : `${div} % ${u32Literal(shape[d])}`;
    lines.push(`let ${name}: u32 = ${shape[d] === 1 ? "0u" : expr};`);
    env[axes[d]] = name;
    inner *= shape[d];
  }
  return { lines: lines.reverse(), env };
}
