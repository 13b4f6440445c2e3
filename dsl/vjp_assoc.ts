/**
 * Transpose rules of the built-in associative scans. Each is a linear scan in the opposite
 * direction (see {@link ./vjp_scan.ts}); below, "next" is one step toward the scan's end
 * (t+1 forward, t−1 reverse) and "previous" one step toward its start.
 *
 * - cumsum (on the chunked kernels): a cumsum the other way; cumprod: the linear scan's rule.
 * - cummax / cummin: a position is a *record* when it raises the running extreme (the first
 *   position always is; a tie is not, so the cotangent goes to the first position attaining
 *   each extreme). y[t]'s cotangent goes to the last record at or before t:
 *   g[t] = c[t] + (1 − record[next])·g[next], ∂x[t] = record[t]·g[t].
 * - logcumsumexp: ∂x[s] = Σ_{t ≥ s} c[t]·e^{x[s] − y[t]} = e^{x[s] − y[s]}·k[s] with
 *   k[s] = c[s] + e^{y[s] − y[next]}·k[next]; y never decreases, so every factor is ≤ 1.
 *
 * - A user's combine ⊕ (c components): y[t] = y[prev] ⊕ x[t] (x[t] ⊕ y[prev] reversed: the left
 *   operand holds the earlier positions), so with A[t] and B[t] the derivatives of the combine
 *   with respect to its y and its x operand at (y[prev], x[t]) (c × c, from the combine's own
 *   graph, differentiated by the backward pass and evaluated on y and x), the cotangent ḡ of y
 *   obeys
 *   ḡ[t] = c[t] + A[next]ᵀ ḡ[next], and ∂x[t] = B[t]ᵀ ḡ[t] (at the first position, where y = x,
 *   ∂x = ḡ). One component: a linear scan the other way; several: an associative scan the
 *   other way over affine maps (M, u) ∘ (M′, u′) = (M·M′, u + M·u′), M[t] = A[next]ᵀ.
 *
 * @module
 */

import {
  binary,
  constant,
  type Contribution,
  type Differentiate,
  materializeAs,
  select,
  shiftAlong,
  sizedAxes,
  sizeOf,
  sumTo,
  unary,
} from "./grad_builders.ts";
import { type AssocScanNode, makeNode, type NewNode, type Node, type ScanNode } from "./ir.ts";
import { associativeScan, cumprodAsLinearScan, cumsumNode } from "./assoc_scan.ts";
import { Tensor } from "./tensor.ts";
import { scanRule } from "./vjp_scan.ts";
import { showAxes } from "./axes.ts";

function reverseScan(node: AssocScanNode, decay: Node, input: Node): Node {
  return makeNode({
    kind: "scan",
    axis: node.axis,
    decay,
    input: materializeAs(input, node),
    reverse: !node.reverse,
    axes: node.axes,
    shape: node.shape,
    dtype: "f32",
  });
}

/** The cotangent an associative scan sends to its element. */
export function assocScanRule(
  node: AssocScanNode,
  ct: Node,
  wanted: (input: Node) => boolean,
  differentiate?: Differentiate,
): Contribution[] {
  if (node.op === undefined) {
    if (!differentiate) {
      throw new Error(
        `associativeScan: no gradient for a user-defined combine here (scan along "${node.axis}" ` +
          `of ${showAxes(node.axes)}, component "${node.combine.names[node.component]}")`,
      );
    }
    return userCombineRule(node, ct, wanted, differentiate);
  }
  const x = node.elems[0];
  if (!wanted(x)) return [];
  const { axis } = node;
  // shiftAlong(v, axis, +1) reads v[t−1]: "previous" going forward.
  const toStart = node.reverse ? -1 : 1;
  const next = (v: Node, fill: number) => shiftAlong(v, axis, -toStart, fill);
  const previous = (v: Node, fill: number) => shiftAlong(v, axis, toStart, fill);
  const y: Node = node;
  if (node.op === "sum") {
    return [[x, sumTo(cumsumNode(materializeAs(ct, node), axis, !node.reverse), x.axes)]];
  }
  if (node.op === "prod") {
    // The linear scan's rule, on the same recurrence (its values recomputed by a linear scan).
    return scanRule(cumprodAsLinearScan(x, axis, node.reverse) as ScanNode, ct, wanted);
  }
  if (node.op === "logsumexp") {
    // The value shifted in at the end multiplies the zero state; min(·, 0) keeps it finite.
    const decay = unary("exp", binary("min", binary("sub", y, next(y, 0)), constant(0)));
    const k = reverseScan(node, decay, ct);
    return [[x, sumTo(binary("mul", unary("exp", binary("sub", x, y)), k), x.axes)]];
  }
  // raises[t]: position next(t) is a record. Its value at the end is never used.
  const raises = binary(node.op === "max" ? "gt" : "lt", next(y, 0), y);
  const record = previous(raises, 1);
  const g = reverseScan(node, binary("sub", constant(1), raises), ct);
  return [[x, sumTo(binary("mul", record, g), x.axes)]];
}

/** The rule of a user's combine (see the module documentation). */
function userCombineRule(
  node: AssocScanNode,
  ct: Node,
  wanted: (input: Node) => boolean,
  differentiate: Differentiate,
): Contribution[] {
  const { axis, combine, elems } = node;
  if (!elems.some(wanted)) return [];
  const c = combine.names.length;
  const toStart = node.reverse ? -1 : 1;
  const next = (v: Node, fill: number) => shiftAlong(v, axis, -toStart, fill);
  // Every component of y (the others are the same scan's sibling nodes), and y one step back.
  const y = combine.names.map((_, k) =>
    k === node.component ? node : makeNode({ ...node, component: k } as NewNode) as Node
  );
  const yPrev = y.map((v) => shiftAlong(v, axis, toStart, 0));
  // ∂ result_i / ∂ left_j and / ∂ right_j, as the combine's graph differentiated, then
  // evaluated at (y[prev], x[t]).
  // The left operand holds the earlier positions: y[t] = y[t−1] ⊕ x[t] forward, but
  // y[t] = x[t] ⊕ y[t+1] reversed.
  const [accumulated, element] = node.reverse
    ? [combine.right, combine.left]
    : [combine.left, combine.right];
  const at = new Map<Node, Node>([
    ...accumulated.map((p, j): [Node, Node] => [p, yPrev[j]]),
    ...element.map((p, j): [Node, Node] => [p, elems[j]]),
  ]);
  const A: Node[][] = [], B: Node[][] = [];
  combine.results.forEach((result) => {
    const d = differentiate([{ node: result, ct: constant(1) }], [...accumulated, ...element]);
    // Over y's axes: a derivative may be a constant, which the shifts below need an axis of.
    const value = (n: Node | undefined) => materializeAs(n ? evaluateAt(n, at) : constant(0), node);
    A.push(d.slice(0, c).map(value));
    B.push(d.slice(c).map(value));
  });
  // The adjoint ḡ: ḡ[t] = c[t] + Σ_i A[next][i][·] ḡ_i[next] (c = the cotangent of this
  // component; the value shifted in at the end multiplies the zero state).
  const seed = materializeAs(ct, node);
  let g: Node[];
  if (c === 1) {
    g = [reverseScan(node, next(A[0][0], 0), seed)];
  } else {
    const record: Record<string, Tensor> = {};
    for (let i = 0; i < c; i++) {
      record[`u${i}`] = new Tensor(i === node.component ? seed : constant(0, sizedAxes(node)));
      for (let j = 0; j < c; j++) {
        // M[t][i][j] = A[next][j][i] (transposed), over y's axes.
        record[`m${i}_${j}`] = new Tensor(next(A[j][i], 0));
      }
    }
    // ḡ[t] = f_t(ḡ[next]) with f_t(z) = u[t] + M[t]·z: the later position's map (in the
    // adjoint's order) is applied last. For a forward scan the adjoint is reversed, and its
    // left operand (the earlier position, toward the end of the axis) is outermost; for a
    // reversed scan the adjoint runs forward, and its right operand is.
    const composed = associativeScan(
      axis,
      (earlier, later) => {
        const [l, r] = node.reverse ? [later, earlier] : [earlier, later];
        const out: Record<string, Tensor> = {};
        const mul = (a: Tensor, b: Tensor) => new Tensor(binary("mul", a.node, b.node));
        const add = (a: Tensor, b: Tensor) => new Tensor(binary("add", a.node, b.node));
        for (let i = 0; i < c; i++) {
          let u = l[`u${i}`];
          for (let k = 0; k < c; k++) u = add(u, mul(l[`m${i}_${k}`], r[`u${k}`]));
          out[`u${i}`] = u;
          for (let j = 0; j < c; j++) {
            let m = mul(l[`m${i}_0`], r[`m0_${j}`]);
            for (let k = 1; k < c; k++) m = add(m, mul(l[`m${i}_${k}`], r[`m${k}_${j}`]));
            out[`m${i}_${j}`] = m;
          }
        }
        return out;
      },
      record,
      { reverse: !node.reverse },
    );
    g = Array.from({ length: c }, (_, i) => composed[`u${i}`].node);
  }
  // ∂x_j[t] = Σ_i B[t][i][j] ḡ_i[t], and ḡ_j itself at the scan's first position.
  const first = firstPosition(node);
  const out: Contribution[] = [];
  elems.forEach((x, j) => {
    if (!wanted(x)) return;
    let sum: Node = binary("mul", B[0][j], g[0]);
    for (let i = 1; i < c; i++) sum = binary("add", sum, binary("mul", B[i][j], g[i]));
    out.push([x, sumTo(select(first, g[j], sum), x.axes)]);
  });
  return out;
}

/** 1 at the scan's first position along its axis (the last, reversed), else 0. */
function firstPosition(node: AssocScanNode): Node {
  const len = sizeOf(node, node.axis);
  const index = makeNode({
    kind: "arange",
    axis: node.axis,
    axes: [node.axis],
    shape: [len],
    dtype: "f32",
  });
  return binary("eq", index, constant(node.reverse ? len - 1 : 0));
}

/**
 * `n`, an elementwise expression over the combine's placeholders, rebuilt over the nodes `at`
 * maps them to (the combine's graph holds only elementwise nodes, constants and placeholders).
 */
function evaluateAt(n: Node, at: ReadonlyMap<Node, Node>): Node {
  const memo = new Map<Node, Node>(at);
  const visit = (m: Node): Node => {
    const done = memo.get(m);
    if (done) return done;
    let rebuilt: Node;
    switch (m.kind) {
      case "unary":
        rebuilt = unary(m.op, visit(m.x));
        break;
      case "binary":
        rebuilt = binary(m.op, visit(m.a), visit(m.b));
        break;
      case "where":
        rebuilt = select(visit(m.cond), visit(m.a), visit(m.b));
        break;
      case "const":
        rebuilt = m;
        break;
      case "permute":
        rebuilt = makeNode({ ...m, x: visit(m.x) });
        break;
      default:
        throw new Error(`internal: a combine's derivative holds a ${m.kind} node`);
    }
    memo.set(m, rebuilt);
    return rebuilt;
  };
  return visit(n);
}
