/**
 * WGSL helper functions through which the chunked SSD kernels reach the fused expressions of a
 * scan: the log-decay, the scale, value and key factors of the input, the C operands, the
 * init state, the epilogue stores and the final-state stores. Each takes flat indices (head,
 * cb, value, state; the time index as is), decodes them into named axes and emits the fused
 * tree there with the expression emitter, so every prologue and epilogue the fusion pass
 * attached to the scan works unchanged. Only the hooks a kernel calls are generated, so its
 * bindings are exactly what it reads.
 *
 * @module
 */

import type { Node } from "../dsl/ir.ts";
import type { BindingRegistry } from "./artifact.ts";
import { decodeIndex, type Env, ExprEmitter, offsetExpr } from "./expr.ts";
import type { SsdForm } from "./ssd_plan.ts";
import type { ScanSpec } from "./scan_spec.ts";
import { storeEnv, storeViews } from "./store_view.ts";

/** Index groups a hook takes: flat index name → axes it decodes into. */
type Params = [string, readonly string[]][];

/** Builds the hook functions of one kernel. */
export class SsdHooks {
  readonly #form: SsdForm;
  readonly #spec: ScanSpec;
  readonly #registry: BindingRegistry;
  readonly #fns = new Map<string, string>();

  /** Hooks reading through `registry` (bindings are registered as hooks are generated). */
  constructor(form: SsdForm, spec: ScanSpec, registry: BindingRegistry) {
    this.#form = form;
    this.#spec = spec;
    this.#registry = registry;
  }

  #size(axis: string): number {
    const s = this.#form.scan;
    return s.shape[s.axes.indexOf(axis)];
  }

  #env(params: Params, prefix: string): { lines: string[]; env: Record<string, string> } {
    const lines: string[] = [];
    let env: Record<string, string> = {};
    for (const [flat, axes] of params) {
      if (flat === "t") {
        env[this.#form.scan.axis] = "t";
        continue;
      }
      const d = decodeIndex(flat, axes, axes.map((a) => this.#size(a)), `${prefix}${flat}_`);
      lines.push(...d.lines);
      env = { ...env, ...d.env };
    }
    return { lines, env };
  }

  #define(
    name: string,
    params: Params,
    extra: string,
    ret: string,
    body: (em: ExprEmitter, env: Env) => string[],
    core?: { node: Node; value: string },
  ): string {
    if (this.#fns.has(name)) return name;
    const { lines, env } = this.#env(params, `${name}_`);
    const em = new ExprEmitter(this.#registry.lookup, `${name}_v`, core);
    const tail = body(em, env);
    const args = params.map(([p]) => `${p}: u32`).join(", ") + extra;
    const sig = `fn ${name}(${args})${ret ? ` -> ${ret}` : ""}`;
    this.#fns.set(
      name,
      [`${sig} {`, ...[...lines, ...em.lines, ...tail].map((l) => `  ${l}`), "}"]
        .join("\n"),
    );
    return name;
  }

  #product(em: ExprEmitter, nodes: readonly Node[], env: Env): string {
    return nodes.length ? nodes.map((n) => em.emit(n, env)).join(" * ") : "1.0";
  }

  /** `ld_dec(hd, t)`: the log-decay at head `hd`, time `t`. */
  logDecay(): string {
    const f = this.#form;
    return this.#define("ld_dec", [["hd", f.headAxes], ["t", []]], "", "f32", (em, env) => [
      `return ${em.emit(f.logDecay, env)};`,
    ]);
  }

  /** `ld_decs(hd, t, s)`: a vector decay's log at head `hd`, time `t`, state element `s`. */
  logDecayAt(): string {
    const f = this.#form;
    return this.#define(
      "ld_decs",
      [["hd", f.headAxes], ["t", []], ["s", f.stateAxes]],
      "",
      "f32",
      (em, env) => [`return ${em.emit(f.logDecay, env)};`],
    );
  }

  /** `ld_w(hd, t)`: the product of the scale factors (Δ). */
  scale(): string {
    const f = this.#form;
    return this.#define("ld_w", [["hd", f.headAxes], ["t", []]], "", "f32", (em, env) => [
      `return ${this.#product(em, f.scaleFactors, env)};`,
    ]);
  }

  /** `ld_v(hd, t, pv)`: the product of the value factors (x). */
  value(): string {
    const f = this.#form;
    return this.#define(
      "ld_v",
      [["hd", f.headAxes], ["t", []], ["pv", f.valueAxes]],
      "",
      "f32",
      (em, env) => [`return ${this.#product(em, f.valueFactors, env)};`],
    );
  }

  /** `ld_k(cb, t, s)`: the product of the key factors (B). */
  key(): string {
    const f = this.#form;
    return this.#define(
      "ld_k",
      [["cb", f.cbAxes], ["t", []], ["s", f.stateAxes]],
      "",
      "f32",
      (em, env) => [`return ${this.#product(em, f.keyFactors, env)};`],
    );
  }

  /** `ld_q(k, cb, t, s)`: output k's C operand (a uniform switch over the outputs). */
  query(): string {
    const f = this.#form;
    const names = f.queries.map((q, k) =>
      this.#define(
        `ld_q${k}`,
        [["cb", f.cbAxes], ["t", []], ["s", f.stateAxes]],
        "",
        "f32",
        (em, env) => [`return ${em.emit(q, env)};`],
      )
    );
    if (!this.#fns.has("ld_q")) {
      const cases = names.slice(0, -1).map((n, k) =>
        `  if (k == ${k}u) { return ${n}(cb, t, s); }`
      );
      this.#fns.set(
        "ld_q",
        [
          "fn ld_q(k: u32, cb: u32, t: u32, s: u32) -> f32 {",
          ...cases,
          `  return ${names[names.length - 1]}(cb, t, s);`,
          "}",
        ].join("\n"),
      );
    }
    return "ld_q";
  }

  /** `cb_of(hd)`: the cb index (C·Bᵀ product) a head uses. */
  cbOf(): string {
    const f = this.#form;
    if (this.#fns.has("cb_of")) return "cb_of";
    const { lines, env } = this.#env([["hd", f.headAxes]], "cb_of_");
    let expr = "0u";
    let stride = 1;
    for (let i = f.cbAxes.length - 1; i >= 0; i--) {
      const a = f.cbAxes[i];
      expr = `${expr} + ${env[a]} * ${stride}u`;
      stride *= this.#size(a);
    }
    this.#fns.set(
      "cb_of",
      ["fn cb_of(hd: u32) -> u32 {", ...lines.map((l) => `  ${l}`), `  return ${expr};`, "}"]
        .join("\n"),
    );
    return "cb_of";
  }

  /** `ld_init(hd, s, pv)`: the init state (only when the scan has one). */
  init(): string {
    const f = this.#form;
    const init = f.scan.init!;
    return this.#define(
      "ld_init",
      [["hd", f.headAxes], ["s", f.stateAxes], ["pv", f.valueAxes]],
      "",
      "f32",
      (em, env) => [`return ${em.emit(init, env)};`],
    );
  }

  /** `st_y{k}(hd, t, pv, acc)`: output k's epilogue and store into write binding `out`. */
  storeOutput(k: number, out: string): string {
    const f = this.#form;
    const o = this.#spec.outputs[k];
    return this.#define(
      `st_y${k}`,
      [["hd", f.headAxes], ["t", []], ["pv", f.valueAxes]],
      ", acc: f32",
      "",
      (em, env) => {
        const v = em.emit(storeViews(o.root).base, env);
        return [`${out}[${offsetExpr(o.root, storeEnv(o.root, env))}] = ${v};`];
      },
      { node: o.contract!, value: "acc" },
    );
  }

  /** `st_fin{k}(hd, s, pv, v)`: final state k's store into write binding `out`. */
  storeFinal(k: number, out: string): string {
    const f = this.#form;
    const pick = this.#spec.finals[k];
    return this.#define(
      `st_fin${k}`,
      [["hd", f.headAxes], ["s", f.stateAxes], ["pv", f.valueAxes]],
      ", v: f32",
      "",
      (_em, env) => [`${out}[${offsetExpr(pick, env)}] = v;`],
    );
  }

  /** All generated functions. */
  text(): string {
    return [...this.#fns.values()].join("\n");
  }
}
