/**
 * What the chunked delta-rule kernels share (delta_chunked.ts, delta_pass.ts): the sizes of the
 * chunked form, its scratch buffers, and the kernel header and artifact.
 *
 * @module
 */

import type { DeltaNode, DeltaStateNode, Node } from "../dsl/ir.ts";
import {
  BindingRegistry,
  foldWorkgroups,
  type KernelArtifact,
  type ScratchBuffer,
} from "./artifact.ts";
import { batchEnv, clampIndex, DeltaLoads, type DeltaShapes } from "./delta_shapes.ts";
import { type Env, ExprEmitter } from "./expr.ts";
import { header, indent } from "./kernel_header.ts";
import type { DeviceLimits } from "./limits.ts";
import { u32Literal as u } from "./wgsl_math.ts";

/** K slice of the chunked kernels' tile products (L, P, y). */
export const OUT_KT = 8;

/** Sizes of the chunked form. */
export interface Layout {
  /** The delta rule's sizes. */
  s: DeltaShapes;
  /** Chunk length. */
  c: number;
  /** Number of chunks. */
  chunks: number;
  /** Steps rounded up to whole chunks. */
  padded: number;
  /** Row width of `wu` (W, U, G). */
  wuWidth: number;
}

/** The scratch buffers the three kernels share. */
export interface Scratch {
  /** W, U and the cumulative log-decay G per padded step. */
  wu: ScratchBuffer;
  /** U' per padded step. */
  up: ScratchBuffer;
  /** Each chunk's entering state. */
  s0: ScratchBuffer;
}

/** What every kernel of the lowering needs besides its own inputs. */
export interface Context {
  /** The delta rule. */
  node: DeltaNode;
  /** Its chunked sizes. */
  layout: Layout;
  /** The scratch buffers. */
  bufs: Scratch;
  /** Nodes with buffers. */
  materialized: ReadonlySet<Node>;
  /** Device limits. */
  limits: DeviceLimits;
  /** Kernel name prefix. */
  name: string;
  /** In-place aliases. */
  aliases: ReadonlyMap<Node, Node>;
}

/** The artifact of one kernel of the lowering (checks the binding limit). */
export function artifact(
  ctx: Context,
  suffix: string,
  reg: BindingRegistry,
  wgsl: string,
  total: number,
): KernelArtifact {
  reg.checkLimit(ctx.node, ctx.limits.maxStorageBuffersPerShaderStage);
  return {
    name: `${ctx.name}_${suffix}`,
    wgsl,
    workgroups: foldWorkgroups(total, ctx.limits.maxComputeWorkgroupsPerDimension),
    reads: reg.reads,
    writes: reg.writes,
    kind: "scan",
  };
}

/** The autotuner's key of the lowering's tuning point `point` (its shapes; the cache's key). */
export function tuningKey(point: "pass" | "out", { s, c }: Layout): string {
  return `delta-${point} b${s.batches} t${s.len} c${c} dk${s.dk} dv${s.dv}`;
}

/**
 * The artifact of one kernel of the lowering whose `body` runs in workgroups `wid < total` of
 * `threads` threads, with the workgroup arrays `shared`.
 */
export function groupKernel(
  ctx: Context,
  suffix: string,
  reg: BindingRegistry,
  threads: number,
  shared: string[],
  body: string[],
  total: number,
): KernelArtifact {
  // No early return before the barriers: wid is uniform, so this branch is too.
  const wgsl = `${header(reg, threads, shared)}
  if (wid < ${u(total)}) {
${indent(body, "    ")}
  }
}
`;
  return artifact(ctx, suffix, reg, wgsl, total);
}

/** What both forms of the state pass bind and decode: U' and S₀ (and the final state) written. */
export function passBindings(ctx: Context, state: DeltaStateNode | undefined): {
  reg: BindingRegistry;
  top: ExprEmitter;
  wu: string;
  bl: string[];
  env: Env;
  loads: DeltaLoads;
} {
  const { bufs } = ctx;
  const writes = state ? [bufs.up, bufs.s0, state] : [bufs.up, bufs.s0];
  const reg = new BindingRegistry(ctx.materialized, writes, ctx.aliases);
  const top = new ExprEmitter(reg.lookup, "qp");
  const wu = reg.read(bufs.wu);
  const { lines: bl, env } = batchEnv(ctx.layout.s, "bpos");
  return { reg, top, wu, bl, env, loads: new DeltaLoads(ctx.node, env) };
}

/**
 * A tile-product operand load (ssd_gemm.ts's `Stage.load`) of q or k: the vec4 over four chunk
 * rows (tile vec4 column `w4`, steps from `base`) at key `k`, zero past the key size.
 */
export function keyRows(
  top: ExprEmitter,
  loads: DeltaLoads,
  s: DeltaShapes,
  which: "q" | "k",
): (k: string, w4: string, tag: string) => { lines: string[]; value: string } {
  return (k, w4, tag) => {
    const e = top.fork(tag);
    const vs = [0, 1, 2, 3].map((i) =>
      loads.key(e, which, clampIndex(`base + ${w4} * 4u + ${u(i)}`, s.len), clampIndex(k, s.dk))
    );
    return {
      lines: e.lines,
      value: `select(vec4<f32>(0.0), vec4<f32>(${vs.join(", ")}), ${k} < ${u(s.dk)})`,
    };
  };
}
