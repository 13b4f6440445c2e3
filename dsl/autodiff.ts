/**
 * Reverse-mode automatic differentiation as a graph transform, JAX-style, inside traced
 * programs. `valueAndGrad(f)(params)` calls `f` in the current trace, then walks the IR from
 * f's result back to the parameters (reverse creation order) and builds the gradient as more
 * IR: the result compiles with `compile` like every other op.
 *
 * ```ts
 * const step = await compile(inputs, (t) => {
 *   const [loss, g] = valueAndGrad((p: { W: Tensor<"d e">; b: Tensor<"e"> }) =>
 *     mse(model(p, t.x), t.y)
 *   )({ W: t.W, b: t.b });
 *   return { loss, dW: g.W, db: g.b };
 * }, sizes);
 * ```
 *
 * Tensors `f` closes over (t.x, t.y above) are constants. Each parameter is differentiated as
 * a fresh node, so a parameter that `f` also reaches through a closure (say `t.W` itself) is a
 * constant there too. The transpose rule of every node kind is in {@link ./vjp_rules.ts}.
 *
 * @module
 */

import { showAxes } from "./axes.ts";
import { binary, constant, materializeAs, sizedAxes } from "./grad_builders.ts";
import { collectNodes, makeNode, type Node, nodeInputs } from "./ir.ts";
import { Tensor } from "./tensor.ts";
import { transposeRule } from "./vjp_rules.ts";

/** The parameters of a differentiated function: a record of tensors. */
export type Params = Record<string, Tensor>;

/** What a function given to {@link vjp} may return: one tensor or a record of tensors. */
export type Outputs = Tensor | Record<string, Tensor>;

/** A scalar tensor (no axes): the value of a function given to {@link valueAndGrad}. */
export type Scalar = Tensor<"">;

/**
 * Turns `f` (a record of tensors → a scalar tensor) into a function returning `[value, grads]`:
 * `value` is f's result and `grads` has f's keys, each with the axes, sizes and layout order of
 * its parameter.
 */
export function valueAndGrad<P extends Params>(
  f: (params: P) => Tensor,
): (params: P) => [Scalar, P] {
  return (params: P) => {
    const [value, pullback] = vjpFor("valueAndGrad", f, params);
    if (value.axes.length !== 0) {
      throw new Error(
        `valueAndGrad: the function must return a scalar (a tensor with no axes), got ` +
          `${showAxes(value.axes)}; reduce it (sum, mean) or use vjp`,
      );
    }
    return [value as Scalar, pullback(new Tensor(constant(1)))];
  };
}

/** Like {@link valueAndGrad}, returning only the gradients. */
export function grad<P extends Params>(f: (params: P) => Tensor): (params: P) => P {
  const vg = valueAndGrad(f);
  return (params: P) => vg(params)[1];
}

/**
 * Calls `f` on `primals` and returns its outputs and the pullback: given cotangents shaped like
 * the outputs (the same axes and sizes, any layout order; a record when f returns one), the
 * pullback returns the cotangents of the primals, shaped like them. The pullback may be called
 * several times.
 */
export function vjp<P extends Params, R extends Outputs>(
  f: (params: P) => R,
  primals: P,
): [R, (cotangents: R) => P] {
  return vjpFor("vjp", f, primals);
}

/** {@link vjp}, with errors naming `context` (the API function the user called). */
function vjpFor<P extends Params, R extends Outputs>(
  context: string,
  f: (params: P) => R,
  primals: P,
): [R, (cotangents: R) => P] {
  const params = wrapParams(primals, context);
  const result = f(params.tensors as P);
  const outputs = outputNodes(result, context);
  const pullback = (cotangents: R): P => {
    const seeds = seedCotangents(outputs, cotangents, context);
    const grads = backward(seeds, params.nodes);
    const out: Record<string, Tensor> = {};
    params.names.forEach((name, i) => {
      const p = params.nodes[i];
      out[name] = new Tensor(grads[i] ? materializeAs(grads[i]!, p) : constant(0, sizedAxes(p)));
    });
    return out as P;
  };
  return [result, pullback];
}

/** Each parameter as a fresh node (an identity permute): what the derivative is taken of. */
function wrapParams(primals: Params, context: string) {
  if (typeof primals !== "object" || primals === null || primals instanceof Tensor) {
    throw new Error(`${context}: the parameters must be a record of tensors, e.g. { W: t.W }`);
  }
  const names = Object.keys(primals);
  const nodes: Node[] = [];
  const tensors: Record<string, Tensor> = {};
  for (const name of names) {
    const t = primals[name];
    if (!(t instanceof Tensor)) {
      throw new Error(`${context}: parameter "${name}" is not a Tensor`);
    }
    if (t.node.dtype !== "f32") {
      throw new Error(
        `${context}: parameter "${name}" ${showAxes(t.axes)} has dtype ${t.node.dtype}; ` +
          `only f32 tensors can be differentiated`,
      );
    }
    const x = t.node;
    const node = makeNode({ kind: "permute", x, axes: x.axes, shape: x.shape, dtype: "f32" });
    nodes.push(node);
    tensors[name] = new Tensor(node);
  }
  return { names, nodes, tensors };
}

/** The output tensors of f by key ("" for a single tensor). */
function outputNodes(result: Outputs, context: string): Map<string, Node> {
  const out = new Map<string, Node>();
  if (result instanceof Tensor) {
    out.set("", result.node);
  } else if (result && typeof result === "object") {
    for (const [k, t] of Object.entries(result)) {
      if (!(t instanceof Tensor)) throw new Error(`${context}: output "${k}" is not a Tensor`);
      out.set(k, t.node);
    }
  } else {
    throw new Error(`${context}: the function must return a Tensor or a record of Tensors`);
  }
  for (const [k, n] of out) {
    if (n.dtype !== "f32") {
      throw new Error(`${context}: output${k ? ` "${k}"` : ""} has dtype ${n.dtype}, not f32`);
    }
  }
  return out;
}

/** Pairs each output with its cotangent, checking axes and sizes. */
function seedCotangents(outputs: Map<string, Node>, cotangents: Outputs, context: string) {
  const given = new Map<string, unknown>();
  if (outputs.has("")) {
    given.set("", cotangents);
  } else {
    if (!cotangents || typeof cotangents !== "object" || cotangents instanceof Tensor) {
      throw new Error(`${context}: the cotangents must be a record with the outputs' keys`);
    }
    for (const [k, v] of Object.entries(cotangents)) {
      if (!outputs.has(k)) throw new Error(`${context}: cotangent "${k}" matches no output`);
      given.set(k, v);
    }
  }
  const seeds: { node: Node; ct: Node }[] = [];
  for (const [k, node] of outputs) {
    const label = k ? `the cotangent of output "${k}"` : "the cotangent";
    const ct = given.get(k);
    if (ct === undefined) throw new Error(`${context}: ${label} is missing`);
    if (!(ct instanceof Tensor)) throw new Error(`${context}: ${label} is not a Tensor`);
    const same = ct.axes.length === node.axes.length &&
      node.axes.every((a, i) => ct.node.axes.includes(a) && ct.size(a) === node.shape[i]);
    if (!same || ct.node.dtype !== "f32") {
      throw new Error(
        `${context}: ${label} is ${ct} but the output is ${new Tensor(node)} (f32)`,
      );
    }
    seeds.push({ node, ct: ct.node });
  }
  return seeds;
}

/**
 * The backward pass: the cotangents of `wrt` given cotangents of some nodes, or undefined for a
 * node no seed depends on. A cotangent may lack axes of its node (constant along them).
 */
export function backward(
  seeds: readonly { node: Node; ct: Node }[],
  wrt: readonly Node[],
): (Node | undefined)[] {
  const nodes = collectNodes(seeds.map((s) => s.node));
  // Nodes on a path from a parameter: only they carry cotangents.
  const targets = new Set(wrt.map((n) => n.id));
  const active = new Set<number>(targets);
  for (const n of nodes) {
    if (n.dtype !== "i32" && nodeInputs(n).some((m) => active.has(m.id))) active.add(n.id);
  }
  const cts = new Map<number, Node>();
  const accumulate = (node: Node, ct: Node) => {
    const prev = cts.get(node.id);
    cts.set(node.id, prev ? addCotangents(node, prev, ct) : ct);
  };
  for (const s of seeds) if (active.has(s.node.id)) accumulate(s.node, s.ct);
  const wanted = (n: Node) => active.has(n.id);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    const ct = cts.get(node.id);
    if (!ct || targets.has(node.id)) continue;
    for (const [input, c] of transposeRule(node, ct, wanted, backward)) accumulate(input, c);
  }
  return wrt.map((n) => cts.get(n.id));
}

/** a + b for two cotangents of `node` (each possibly lacking some of its axes). */
function addCotangents(node: Node, a: Node, b: Node): Node {
  const aInB = a.axes.every((x) => b.axes.includes(x));
  const bInA = b.axes.every((x) => a.axes.includes(x));
  if (aInB || bInA) return binary("add", a, b);
  // Neither nests in the other: give one every axis of the node, so they do.
  return binary("add", materializeAs(a, node), b);
}
