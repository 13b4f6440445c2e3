/**
 * The float64 CPU interpreter of the IR: the oracle every GPU kernel is tested against, and
 * the fallback when no GPU adapter exists. Plain loops, written for clarity, not speed.
 *
 * @module
 */

import { collectNodes, type Graph, type Node, numel, type ScanNode, stridesOf } from "../dsl/ir.ts";
import { checkHostInputs, type HostArray } from "./host_inputs.ts";
import { roundToBf16, roundToF16 } from "./half.ts";
import { BINARY_F64, UNARY_F64 } from "./scalar_math.ts";
import { evalDelta, evalDeltaGrad } from "./delta_interpreter.ts";
import { evalAttention, evalAttentionGrad } from "./attention_interpreter.ts";
import { evalAssocScan } from "./assoc_interpret.ts";

export type { HostArray } from "./host_inputs.ts";

/** Strides of `src` for each axis of `axes` (0 where `src` lacks the axis: broadcasting). */
function aligned(src: Node, axes: readonly string[]): number[] {
  const s = stridesOf(src);
  return axes.map((a) => s[a] ?? 0);
}

/**
 * Visits every multi-index of `shape` in row-major order, tracking one linear offset per
 * stride set. `visit(i, offsets)` gets the flat output index.
 */
function forEachIndex(
  shape: readonly number[],
  strideSets: number[][],
  bases: number[],
  visit: (flat: number, offsets: number[]) => void,
): void {
  const rank = shape.length;
  const total = shape.reduce((p, s) => p * s, 1);
  const idx = new Array(rank).fill(0);
  const offs = [...bases];
  for (let flat = 0; flat < total; flat++) {
    visit(flat, offs);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      for (let k = 0; k < offs.length; k++) offs[k] += strideSets[k][d];
      if (idx[d] < shape[d]) break;
      for (let k = 0; k < offs.length; k++) offs[k] -= strideSets[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

/** Decodes a flat row-major index into a map axis → index. */
function decode(flat: number, axes: readonly string[], shape: readonly number[]) {
  const env: Record<string, number> = {};
  for (let d = axes.length - 1; d >= 0; d--) {
    env[axes[d]] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return env;
}

function offsetOf(node: Node, env: Record<string, number>): number {
  const s = stridesOf(node);
  let o = 0;
  for (const a of node.axes) o += env[a] * s[a];
  return o;
}

/**
 * Evaluates every output of `graph` on the given inputs, in float64. Every input is checked
 * first (kind, length, i32 integers), as the GPU program checks them.
 */
export function interpret(
  graph: Graph,
  inputs: Record<string, HostArray>,
): Record<string, Float64Array> {
  checkHostInputs(graph.inputs, inputs);
  const values = new Map<number, Float64Array>();
  for (const inp of graph.inputs) {
    const data = Float64Array.from(inputs[inp.name]);
    // A 16-bit input holds what its GPU buffer would: each value rounded to its type.
    if (inp.dtype === "f16" || inp.dtype === "bf16") {
      const round = inp.dtype === "f16" ? roundToF16 : roundToBf16;
      for (let i = 0; i < data.length; i++) data[i] = round(data[i]);
    }
    values.set(inp.id, data);
  }
  const order = collectNodes(Object.values(graph.outputs));
  for (const node of order) {
    if (!values.has(node.id)) values.set(node.id, evalNode(node, (n) => values.get(n.id)!));
  }
  const out: Record<string, Float64Array> = {};
  for (const [name, node] of Object.entries(graph.outputs)) out[name] = values.get(node.id)!;
  return out;
}

/** Evaluates one node given its inputs' values. */
function evalNode(node: Node, get: (n: Node) => Float64Array): Float64Array {
  const out = new Float64Array(numel(node));
  const shape = node.shape;
  switch (node.kind) {
    case "input":
      throw new Error(`internal: input "${node.name}" was not bound`);
    case "const":
      out.fill(node.value);
      return out;
    case "arange":
      for (let i = 0; i < out.length; i++) out[i] = i;
      return out;
    case "literal":
      out.set(node.values);
      return out;
    case "unary": {
      const x = get(node.x);
      const f = UNARY_F64[node.op];
      for (let i = 0; i < out.length; i++) out[i] = f(x[i]);
      return out;
    }
    case "binary": {
      const a = get(node.a), b = get(node.b);
      const f = BINARY_F64[node.op];
      forEachIndex(shape, [aligned(node.a, node.axes), aligned(node.b, node.axes)], [0, 0], (
        i,
        o,
      ) => out[i] = f(a[o[0]], b[o[1]]));
      return out;
    }
    case "where": {
      const c = get(node.cond), a = get(node.a), b = get(node.b);
      const strides = [node.cond, node.a, node.b].map((n) => aligned(n, node.axes));
      forEachIndex(shape, strides, [0, 0, 0], (i, o) => out[i] = c[o[0]] !== 0 ? a[o[1]] : b[o[2]]);
      return out;
    }
    case "permute": {
      const x = get(node.x);
      forEachIndex(shape, [aligned(node.x, node.axes)], [0], (i, o) => out[i] = x[o[0]]);
      return out;
    }
    case "contract": {
      const a = get(node.a), b = get(node.b);
      const sumShape = node.summed.map((ax) => node.a.shape[node.a.axes.indexOf(ax)]);
      const aSum = aligned(node.a, node.summed), bSum = aligned(node.b, node.summed);
      forEachIndex(shape, [aligned(node.a, node.axes), aligned(node.b, node.axes)], [0, 0], (
        i,
        o,
      ) => {
        let acc = 0;
        forEachIndex(sumShape, [aSum, bSum], [o[0], o[1]], (_, p) => acc += a[p[0]] * b[p[1]]);
        out[i] = acc;
      });
      return out;
    }
    case "reduce": {
      const x = get(node.x);
      const overShape = node.over.map((ax) => node.x.shape[node.x.axes.indexOf(ax)]);
      const xOver = aligned(node.x, node.over);
      const init = node.op === "sum" ? 0 : node.op === "max" ? -Infinity : Infinity;
      const f = node.op === "sum"
        ? (p: number, v: number) => p + v
        : node.op === "max"
        ? Math.max
        : Math.min;
      forEachIndex(shape, [aligned(node.x, node.axes)], [0], (i, o) => {
        let acc = init;
        forEachIndex(overShape, [xOver], [o[0]], (_, p) => acc = f(acc, x[p[0]]));
        out[i] = acc;
      });
      return out;
    }
    case "slice":
    case "flip": {
      const x = get(node.x);
      const s = stridesOf(node.x);
      const src = node.kind === "slice" ? node.axis : node.axis;
      const strides = node.axes.map((a) => {
        if (node.kind === "slice" && a === node.newAxis) return s[src];
        if (node.kind === "flip" && a === node.axis) return -s[src];
        return s[a];
      });
      const base = node.kind === "slice"
        ? node.start * s[src]
        : (node.x.shape[node.x.axes.indexOf(src)] - 1) * s[src];
      forEachIndex(shape, [strides], [base], (i, o) => out[i] = x[o[0]]);
      return out;
    }
    case "regroup": {
      const x = get(node.x);
      for (let i = 0; i < out.length; i++) {
        const env = decode(i, node.axes, shape);
        const elem: Record<string, number> = {};
        node.outGroups.forEach((g, k) => {
          let v = env[node.axes[k]];
          for (let j = g.length - 1; j >= 0; j--) {
            elem[g[j]] = v % node.sizes[g[j]];
            v = Math.floor(v / node.sizes[g[j]]);
          }
        });
        const srcEnv: Record<string, number> = {};
        node.inGroups.forEach((g, k) => {
          let v = 0;
          for (const e of g) v = v * node.sizes[e] + elem[e];
          srcEnv[node.x.axes[k]] = v;
        });
        out[i] = x[offsetOf(node.x, srcEnv)];
      }
      return out;
    }
    case "concat": {
      const parts = node.parts.map(get);
      for (let i = 0; i < out.length; i++) {
        const env = decode(i, node.axes, shape);
        const t = env[node.newAxis];
        let k = node.offsets.length - 1;
        while (node.offsets[k] > t) k--;
        const part = node.parts[k];
        const srcEnv = { ...env, [node.partAxes[k]]: t - node.offsets[k] };
        out[i] = parts[k][offsetOf(part, srcEnv)];
      }
      return out;
    }
    case "gather": {
      const table = get(node.table), ids = get(node.indices);
      const rows = node.table.shape[node.table.axes.indexOf(node.axis)];
      for (let i = 0; i < out.length; i++) {
        const env = decode(i, node.axes, shape);
        const id = ids[offsetOf(node.indices, env)];
        if (!(id >= 0 && id < rows)) {
          throw new Error(`gather: index ${id} is out of range for axis "${node.axis}" (${rows})`);
        }
        out[i] = table[offsetOf(node.table, { ...env, [node.axis]: id })];
      }
      return out;
    }
    case "pick": {
      const x = get(node.x);
      const s = stridesOf(node.x);
      forEachIndex(
        shape,
        [aligned(node.x, node.axes)],
        [node.index * s[node.axis]],
        (i, o) => out[i] = x[o[0]],
      );
      return out;
    }
    case "scan":
      return evalScan(node, get);
    case "delta":
      return evalDelta(node, get).y;
    case "delta_state":
      // Recomputed from the operands: the interpreter is an oracle, not a fast path.
      return evalDelta(node.x, get).state;
    case "delta_grad":
      return evalDeltaGrad(node, get);
    case "assocScan":
      return evalAssocScan(node, get);
    case "attention":
      return evalAttention(node, get);
    case "attention_grad":
      return evalAttentionGrad(node, get);
    case "conv1d": {
      const x = get(node.x), w = get(node.w);
      const taps = node.w.shape[node.w.axes.indexOf(node.tapAxis)];
      for (let i = 0; i < out.length; i++) {
        const env = decode(i, node.axes, shape);
        const t = env[node.axis];
        let acc = 0;
        for (let j = 0; j < taps; j++) {
          const src = t - (taps - 1) + j;
          if (src < 0) continue;
          acc += w[offsetOf(node.w, { ...env, [node.tapAxis]: j })] *
            x[offsetOf(node.x, { ...env, [node.axis]: src })];
        }
        out[i] = acc;
      }
      return out;
    }
  }
}

/** The plain sequential loop: h[t] = decay[t] · h[t − 1] + input[t]. */
function evalScan(node: ScanNode, get: (n: Node) => Float64Array): Float64Array {
  const out = new Float64Array(numel(node));
  const decay = get(node.decay), input = get(node.input);
  const init = node.init ? get(node.init) : undefined;
  const k = node.axes.indexOf(node.axis);
  const len = node.shape[k];
  const stateAxes = node.axes.filter((a) => a !== node.axis);
  const stateShape = node.shape.filter((_, i) => i !== k);
  const outStrides = stridesOf(node);
  const sets = [
    aligned(node.decay, stateAxes),
    aligned(node.input, stateAxes),
    stateAxes.map((a) => outStrides[a]),
    init ? aligned(node.init!, stateAxes) : stateAxes.map(() => 0),
  ];
  const step = [node.decay, node.input, node].map((n) => stridesOf(n)[node.axis] ?? 0);
  forEachIndex(stateShape, sets, [0, 0, 0, 0], (_, o) => {
    let h = init ? init[o[3]] : 0;
    for (let j = 0; j < len; j++) {
      const t = node.reverse ? len - 1 - j : j;
      h = decay[o[0] + t * step[0]] * h + input[o[1] + t * step[1]];
      out[o[2] + t * step[2]] = h;
    }
  });
  return out;
}
