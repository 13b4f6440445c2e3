/**
 * Transpose (backward) rules of the IR's node kinds: given a node and the cotangent of its
 * value, the cotangents of its inputs. This file holds the elementwise ops, contractions and
 * reductions and dispatches the views ({@link ./vjp_views.ts}) and the scan
 * ({@link ./vjp_scan.ts}).
 *
 * A cotangent may lack axes of its node: it is then the same at every position of those axes
 * (the cotangent of `sum(x, "l")` reaches x without an `l`). Rules that need every axis add them
 * with `materializeAs`; rules that sum over an axis the cotangent lacks multiply by its size
 * (`sumForOperand`).
 *
 * Ties: `max`/`min` (elementwise and reductions) split the cotangent evenly among the tied
 * operands or positions; `relu` and `abs` have derivative 0 at 0; comparisons have none.
 *
 * @module
 */

import {
  binary,
  constant,
  type Contribution,
  type Differentiate,
  productForOperand,
  productTo,
  scale,
  select,
  sumForOperand,
  sumTo,
  unary,
} from "./grad_builders.ts";
import { type BinaryNode, type Node, nodeInputs, type ReduceNode, type UnaryNode } from "./ir.ts";
import { scanRule } from "./vjp_scan.ts";
import { attentionRule } from "./vjp_attention.ts";
import { deltaRuleTranspose } from "./vjp_delta.ts";
import { assocScanRule } from "./vjp_assoc.ts";
import { viewRule } from "./vjp_views.ts";

export type { Contribution } from "./grad_builders.ts";

/**
 * The cotangents `node` sends to its inputs, given the cotangent `ct` of its value. `wanted`
 * says which inputs lead to the differentiated arguments: others get nothing built.
 * `differentiate` is the backward pass, for rules that need one.
 */
export function transposeRule(
  node: Node,
  ct: Node,
  wanted: (input: Node) => boolean,
  differentiate?: Differentiate,
): Contribution[] {
  switch (node.kind) {
    case "input":
    case "const":
    case "arange":
    case "literal":
      return [];
    case "unary":
      // stopGradient: the identity forward, no cotangent backward (not even a zero node).
      if (node.op === "stop_gradient") return [];
      return wanted(node.x) ? [[node.x, binary("mul", ct, unaryDerivative(node))]] : [];
    case "binary":
      return binaryRule(node, ct, wanted);
    case "where": {
      const out: Contribution[] = [];
      const zero = constant(0);
      const routed = (x: Node, part: Node) => sumForOperand(x, node, part);
      if (wanted(node.a)) out.push([node.a, routed(select(node.cond, ct, zero), node.a)]);
      if (wanted(node.b)) out.push([node.b, routed(select(node.cond, zero, ct), node.b)]);
      return out;
    }
    case "contract": {
      const out: Contribution[] = [];
      if (wanted(node.a)) out.push([node.a, productTo(ct, node.b, node.a.axes)]);
      if (wanted(node.b)) out.push([node.b, productTo(ct, node.a, node.b.axes)]);
      return out;
    }
    case "reduce":
      return wanted(node.x) ? [[node.x, reduceCotangent(node, ct)]] : [];
    case "scan":
      return scanRule(node, ct, wanted);
    case "delta":
      return deltaRuleTranspose(node, ct, undefined, wanted);
    case "delta_state":
      return deltaRuleTranspose(node.x, undefined, { ct, state: node }, wanted);
    case "delta_grad":
      if (!nodeInputs(node).some(wanted)) return [];
      throw new Error(
        `valueAndGrad: deltaRule's gradient (node ${node.id}) has no derivative: no second ` +
          `derivatives of deltaRule yet`,
      );
    case "assocScan":
      return assocScanRule(node, ct, wanted, differentiate);
    case "attention":
      return attentionRule(node, ct, wanted);
    case "attention_grad":
      if (!nodeInputs(node).some(wanted)) return [];
      throw new Error(
        `valueAndGrad: attention's gradient (node ${node.id}) has no derivative: no second ` +
          `derivatives of attention yet`,
      );
    case "permute":
    case "regroup":
    case "slice":
    case "flip":
    case "concat":
    case "gather":
    case "conv1d":
    case "pick":
      return viewRule(node, ct, wanted);
  }
}

/** d out / d x of a unary node, as a node over x's axes. */
function unaryDerivative(node: UnaryNode): Node {
  const { x } = node;
  const out = node as Node;
  switch (node.op) {
    case "neg":
      return constant(-1);
    case "exp":
      return out;
    case "log":
      return binary("div", constant(1), x);
    case "sqrt":
      return binary("div", constant(0.5), out);
    case "rsqrt":
      // d x^(-1/2) = -x^(-3/2) / 2 = -out³ / 2.
      return scale(binary("mul", out, binary("mul", out, out)), -0.5);
    case "abs":
      // sign(x), 0 at 0.
      return binary("sub", binary("gt", x, constant(0)), binary("lt", x, constant(0)));
    case "sigmoid":
      return binary("mul", out, binary("sub", constant(1), out));
    case "silu": {
      // d x·σ(x) = σ(x) · (1 + x·(1 − σ(x))).
      const s = unary("sigmoid", x);
      const inner = binary("mul", x, binary("sub", constant(1), s));
      return binary("mul", s, binary("add", constant(1), inner));
    }
    case "softplus":
      // Past the linear threshold σ(x) is 1 in f32 and 1 − 2e−9 in float64: the same slope.
      return unary("sigmoid", x);
    case "tanh":
      return binary("sub", constant(1), binary("mul", out, out));
    case "relu":
      return binary("gt", x, constant(0));
    case "sin":
      return unary("cos", x);
    case "cos":
      return unary("neg", unary("sin", x));
    case "tan":
      return binary("add", constant(1), binary("mul", out, out));
    // Rounding passes the cotangent straight through (as PyTorch's dtype casts do).
    case "round_f16":
    case "round_bf16":
      return constant(1);
    case "erf":
      // 2/√π · e^(−x²).
      return scale(unary("exp", unary("neg", binary("mul", x, x))), 2 / Math.sqrt(Math.PI));
    // Piecewise constant: zero almost everywhere (as in JAX and PyTorch).
    case "floor":
    case "ceil":
    case "round":
    case "sign":
    case "stop_gradient":
      return constant(0);
  }
}

/** What one operand of a binary op gets: a local derivative, or ±1 (no product needed). */
type Partial = Node | 1 | -1 | undefined;

/** The partial derivatives of a binary node with respect to a and b. */
function binaryPartials(node: BinaryNode, wantA: boolean, wantB: boolean): [Partial, Partial] {
  const { a, b } = node;
  const out = node as Node;
  const half = (x: Node, y: Node) => scale(binary("add", x, y), 0.5);
  switch (node.op) {
    case "add":
      return [1, 1];
    case "sub":
      return [1, -1];
    case "mul":
      return [b, a];
    case "div":
      return [
        wantA ? binary("div", constant(1), b) : undefined,
        wantB ? unary("neg", binary("div", out, b)) : undefined,
      ];
    case "pow":
      return [
        wantA ? powBase(a, b) : undefined,
        wantB ? binary("mul", out, unary("log", a)) : undefined,
      ];
    // Ties split evenly (what central differences see): 1 where a wins, ½ on a tie.
    case "max":
      return [
        wantA ? half(binary("ge", a, b), binary("gt", a, b)) : undefined,
        wantB ? half(binary("le", a, b), binary("lt", a, b)) : undefined,
      ];
    case "min":
      return [
        wantA ? half(binary("le", a, b), binary("lt", a, b)) : undefined,
        wantB ? half(binary("ge", a, b), binary("gt", a, b)) : undefined,
      ];
    case "mod":
      // a − b·⌊a/b⌋: 1 for a, −⌊a/b⌋ for b (almost everywhere).
      return [1, wantB ? unary("neg", unary("floor", binary("div", a, b))) : undefined];
    case "lt":
    case "le":
    case "gt":
    case "ge":
    case "eq":
    case "ne":
      return [undefined, undefined];
  }
}

/** d a^b / d a = b · a^(b−1), with the exponent folded when b is a constant. */
function powBase(a: Node, b: Node): Node | undefined {
  if (b.kind === "const" && b.axes.length === 0) {
    if (b.value === 0) return undefined;
    if (b.value === 1) return constant(1);
    return scale(binary("pow", a, constant(b.value - 1)), b.value);
  }
  return binary("mul", b, binary("pow", a, binary("sub", b, constant(1))));
}

function binaryRule(node: BinaryNode, ct: Node, wanted: (n: Node) => boolean): Contribution[] {
  const wantA = wanted(node.a), wantB = wanted(node.b);
  const [da, db] = binaryPartials(node, wantA, wantB);
  const out: Contribution[] = [];
  const apply = (operand: Node, d: Partial) => {
    if (d === undefined) return;
    const summed = (x: Node) => sumForOperand(x, node, operand);
    if (d === 1) out.push([operand, summed(ct)]);
    else if (d === -1) out.push([operand, unary("neg", summed(ct))]);
    else out.push([operand, productForOperand(ct, d, node, operand)]);
  };
  if (wantA) apply(node.a, da);
  if (wantB) apply(node.b, db);
  return out;
}

/**
 * Sum: the cotangent reaches every position unchanged. Max and min: it goes to the positions
 * equal to the result, split evenly among ties (mask / count).
 */
function reduceCotangent(node: ReduceNode, ct: Node): Node {
  if (node.op === "sum") return ct;
  const mask = binary("eq", node.x, node);
  const share = binary("div", mask, sumTo(mask, node.axes));
  return binary("mul", ct, share);
}
