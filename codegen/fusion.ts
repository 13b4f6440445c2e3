/**
 * The fusion pass: decides which nodes are materialized (get a buffer) and groups the rest into
 * kernels. Everything that is not a kernel root is computed inline where it is used:
 * - elementwise chains and views fuse into their consumers (recomputed when several kernels
 *   read them: memory traffic costs more than arithmetic);
 * - a contraction or reduction fuses its operands as a prologue and, when its only consumer is
 *   an elementwise chain over the same axes, that chain as an epilogue.
 *
 * @module
 */

import {
  collectNodes,
  type ContractNode,
  type Graph,
  type Node,
  nodeInputs,
  numel,
} from "../dsl/ir.ts";
import type { PickNode, ScanNode } from "../dsl/ir.ts";
import { analyzeScan, type ScanUse } from "./scan_plan.ts";
import { gemvAbsorbsReduce } from "./matmul_lowering.ts";
import { GEMV_MAX_ROWS } from "./gemv_kernel.ts";
import { storeViews } from "./store_view.ts";

/** The heavy node kinds: each is the core of its own kernel. */
export type CoreNode = Extract<
  Node,
  {
    kind:
      | "contract"
      | "reduce"
      | "scan"
      | "delta"
      | "delta_grad"
      | "assocScan"
      | "attention"
      | "attention_grad";
  }
>;

/** One planned kernel: it computes `root` (materialized), around an optional `core`. */
export interface SimpleGroup {
  /** Discriminant. */
  readonly kind: "simple";
  /** The node whose values this kernel writes. */
  readonly root: Node;
  /** A contraction, reduction or scan computed inside the kernel; `root` is its epilogue. */
  readonly core?: CoreNode;
}

/** A scan whose state stays on chip, with every output it feeds. */
export interface ScanGroup {
  /** Discriminant. */
  readonly kind: "scan";
  /** The scan, its state axes and its consumers. */
  readonly use: ScanUse;
  /** Per-step outputs: `root` is `contract` or an elementwise epilogue of it. */
  readonly outputs: readonly { root: Node; contract: ContractNode }[];
  /** Final-state outputs. */
  readonly finals: readonly PickNode[];
}

/** One planned kernel group. */
export type KernelGroup = SimpleGroup | ScanGroup;

/** The fusion plan. */
export interface FusionPlan {
  /** Nodes with their own buffer: inputs, outputs and kernel roots. */
  readonly materialized: ReadonlySet<Node>;
  /** Kernels in execution order. */
  readonly kernels: readonly KernelGroup[];
}

/** Fusion knobs (mostly for tests and the binding-limit splitter). */
export interface FusionOptions {
  /** Nodes that must get their own buffer. */
  forceMaterialize?: ReadonlySet<Node>;
  /** A fused subtree larger than this (in nodes) and read by several kernels is materialized. */
  maxRecomputeNodes?: number;
}

const ELEMENTWISE = new Set(["unary", "binary", "where", "permute", "const"]);

function isCore(n: Node): n is CoreNode {
  if (n.kind === "contract") return !isInlineContraction(n);
  return isHeavy(n);
}

/** Longest summed extent of a contraction computed inline (a short loop) where it is used. */
export const INLINE_CONTRACTION_MAX = 64;

/**
 * A contraction over few elements (e.g. Mamba's dt projection, rank 48) costs less inline than
 * a kernel of its own: its consumers evaluate it as a short loop. Only when its operands are
 * cheap: their trees (down to inputs and other kernels' cores) hold no other short
 * contraction, so inline loops never nest.
 */
export function isInlineContraction(n: Extract<Node, { kind: "contract" }>): boolean {
  // Contractions of a scan's state are the scan kernel's outputs, never loops.
  if (n.a.kind === "scan" || n.b.kind === "scan") return false;
  if (summedExtent(n) > INLINE_CONTRACTION_MAX) return false;
  const seen = new Set<Node>();
  const stack: Node[] = [n.a, n.b];
  while (stack.length) {
    const m = stack.pop()!;
    if (seen.has(m)) continue;
    seen.add(m);
    if (isHeavy(m) || m.kind === "input") continue;
    if (m.kind === "contract") {
      if (summedExtent(m) <= INLINE_CONTRACTION_MAX) return false;
      continue;
    }
    stack.push(...nodeInputs(m));
  }
  return !recomputesCostlyOperand(n);
}

/** Arithmetic nodes an operand's inline tree may hold and still count as cheap to recompute. */
const INLINE_OPERAND_COST = 4;
/** How many times inlining may recompute each element of a costly operand. */
const INLINE_OPERAND_REUSE = 4;

/**
 * Whether inlining `n` would recompute an operand with real arithmetic in it (a convolution,
 * activations) many times per element: every output element evaluates its whole row of each
 * operand, so an element of `a` is computed numel(n)·K / numel(a) times. Mamba's dt projection
 * reads plain buffers and stays inline; the chunk sums of Mamba-2's chunked backward (B·x over a
 * chunk's steps, both behind the causal convolution and SiLU) get a matmul kernel, which
 * computes each operand element once per tile.
 */
function recomputesCostlyOperand(n: Extract<Node, { kind: "contract" }>): boolean {
  const work = numel(n) * summedExtent(n);
  // The operand's inline tree ends at inputs and at other kernels' cores.
  const atCore = (m: Node) => m.kind === "contract" || isHeavy(m);
  return [n.a, n.b].some((op) =>
    work >= INLINE_OPERAND_REUSE * numel(op) &&
    arithmeticCost(op, INLINE_OPERAND_COST, atCore) > INLINE_OPERAND_COST
  );
}

/**
 * Arithmetic nodes in `op`'s tree (unary, binary, `where`, `gather` and `concat` (a select
 * between its parts) count 1, `conv1d` 2 or,
 * with `perTap`, its taps' multiplies and adds: 2 per tap, each tap also a load of the
 * signal), walking down to inputs and to the nodes `stop` names, counted until the count
 * passes `cap`.
 */
function arithmeticCost(
  op: Node,
  cap: number,
  stop: (m: Node) => boolean,
  perTap = false,
): number {
  const seen = new Set<Node>();
  const stack: Node[] = [op];
  let cost = 0;
  while (stack.length && cost <= cap) {
    const m = stack.pop()!;
    if (seen.has(m) || m.kind === "input" || stop(m)) continue;
    seen.add(m);
    if (
      m.kind === "unary" || m.kind === "binary" || m.kind === "where" || m.kind === "gather" ||
      m.kind === "concat"
    ) {
      cost += 1;
    } else if (m.kind === "conv1d") {
      cost += perTap ? 2 * m.w.shape[m.w.axes.indexOf(m.tapAxis)] : 2;
    }
    stack.push(...nodeInputs(m));
  }
  return cost;
}

/**
 * Output elements of contraction `n` per batch index along the axes operand `x` has and `y`
 * lacks: M for (a, b), N for (b, a), the number of times each element of `y` is read.
 */
export function sideExtent(n: ContractNode, x: Node, y: Node): number {
  return n.axes.filter((a) => x.axes.includes(a) && !y.axes.includes(a))
    .reduce((p, a) => p * n.shape[n.axes.indexOf(a)], 1);
}

/**
 * Arithmetic nodes a matmul operand's prologue may hold and still be recomputed per tile: a
 * norm (6–7) or the cross-entropy's softmax gradient (13: its b·l·v would be written) stay
 * prologues; a backward's cotangent (19–83) and Mamba-2's gated norm recomputed from the causal
 * conv's four taps (19; 10.4–17.6 TFLOP/s as the out_proj weight gradient's prologue on an H100)
 * get a buffer.
 */
const MATMUL_PROLOGUE_COST = 16;
/**
 * Reloads from which a cheaper prologue gets a buffer too: an RMSNorm of the residual stream
 * (5–10 operations, a gather and up to 5 buffers) read by Mamba-2's in_proj (N = 3352, 27
 * reloads) ran at 25–31 TFLOP/s on an H100, where the same product's input gradient from
 * buffers ran at 39; the LM head (N = 50280) reloads its norm 393 times. Only an operand of a
 * tile's rows or more (not decode's few rows, which a matrix-vector kernel reads once) and no
 * larger than a buffer it reads (not an outer product).
 */
const MATMUL_MANY_RELOADS = 16;
/** Arithmetic nodes a prologue reloaded {@link MATMUL_MANY_RELOADS} times may hold. */
const MATMUL_CHEAP_PROLOGUE = 4;
/** Output extent along the other side of a matmul per reload of an operand (its tile). */
const MATMUL_RELOAD_TILE = 128;
/** Reloads of an operand from which a costly prologue gets a buffer of its own. */
const MATMUL_MIN_RELOADS = 4;

/**
 * The operands of matmul `core` to materialize: a prologue is evaluated once per output tile
 * along the other side (N / 128 times for `a`), so an operand with real arithmetic in it (a
 * backward's cotangent built from a conv's taps, gates and several buffers; a gated norm) costs
 * that many evaluations per element where a buffer costs one write and cheap reads. On an H100
 * the same 16384×768 products ran at 39 TFLOP/s from buffers and 9–18 TFLOP/s through such
 * prologues (bench/RESULTS.md, 2026-12-06). The operand is materialized below its layout views,
 * so the other products reading it (a weight gradient and an input gradient) share the buffer.
 */
function costlyMatmulOperands(
  core: Extract<Node, { kind: "contract" }>,
  materialized: ReadonlySet<Node>,
): Node[] {
  const out: Node[] = [];
  for (const [op, other] of [[core.a, core.b], [core.b, core.a]]) {
    let base = op;
    while (base.kind === "permute" && !materialized.has(base)) base = base.x;
    if (materialized.has(base) || base.kind === "input") continue;
    const reloads = sideExtent(core, other, op) / MATMUL_RELOAD_TILE;
    if (reloads < MATMUL_MIN_RELOADS) continue;
    // A decode activation (a few rows): its prologue is a few thousand operations per
    // matrix-vector workgroup, less than a dispatch of its own.
    const rows = sideExtent(core, op, other);
    if (rows <= GEMV_MAX_ROWS) continue;
    // The prologue's tree ends at buffers.
    const cost = arithmeticCost(
      base,
      MATMUL_PROLOGUE_COST,
      (m) => m !== base && materialized.has(m),
      true,
    );
    if (cost > MATMUL_PROLOGUE_COST) out.push(base);
    else if (
      reloads >= MATMUL_MANY_RELOADS && cost > MATMUL_CHEAP_PROLOGUE &&
      rows >= MATMUL_RELOAD_TILE &&
      numel(base) <= largestRead(base, materialized)
    ) {
      out.push(base);
    }
  }
  return out;
}

/**
 * Whether `n`, read by several kernels, is costly enough to get a buffer because a tiled
 * kernel (a matmul or a scan) is among its readers: such a kernel evaluates its prologue once
 * per tile, so a subtree with real arithmetic in it (a backward's cotangent through a gated
 * norm and the causal conv's taps: about 40 operations and 13 loads per element in Mamba-2's
 * backward, read by 10 kernels of a layer, 7 of them tiled) costs several evaluations per
 * element in each, where a buffer costs one write and cheap reads. On an H100 that buffer took
 * the 130M step's SSD backward kernels from 156.0 to 119.6 ms (bench/RESULTS.md, 2026-12-06).
 */
function costlyInTiles(
  n: Node,
  kernels: ReadonlySet<Node>,
  tiled: ReadonlySet<Node>,
  materialized: ReadonlySet<Node>,
): boolean {
  const readers = [...kernels].filter((k) => tiled.has(k));
  if (readers.length === 0) return false;
  // A subtree larger than every buffer it reads (an outer product: a scan's input x·Bᵀ over
  // the state axes) is cheaper to recompute than to write.
  if (numel(n) > largestRead(n, materialized)) return false;
  const cost = recomputeCost(n, materialized, MATMUL_PROLOGUE_COST);
  // Read by a kernel 16 or more times its size (Mamba-2's B and C behind the conv, shared by
  // every head of the SSD kernels), as a matmul operand reloaded 16 times: cheaper prologues too.
  const reuse = Math.max(...readers.map((k) => numel(k) / numel(n)));
  return cost > (reuse >= MATMUL_MANY_RELOADS ? MATMUL_CHEAP_PROLOGUE : MATMUL_PROLOGUE_COST);
}

/**
 * What recomputing subtree `n` costs per element, down to buffers: its arithmetic nodes (a conv
 * counting 2 per tap; counting stops above `cap`) and each full-size buffer it reads (a scalar
 * load per element wherever it is evaluated).
 */
function recomputeCost(n: Node, materialized: ReadonlySet<Node>, cap = Infinity): number {
  return arithmeticCost(n, cap, (m) => m !== n && materialized.has(m), true) +
    fullSizeReads(n, materialized);
}

/**
 * A short scan's kernel (decode: one step per lane) evaluates its input's prologue once per
 * lane, so a subtree shared by many of its channels is recomputed that many times: Mamba-2's
 * B and C behind the causal conv (about 13 loads and a SiLU per state element) are shared by
 * all 1,536 channels of a sequence; at batch 64 each of the scan's 786,432 lanes recomputed its
 * 32, and the scan took 7.7 of the step's 9.6 ms on an H100 (bench/RESULTS.md, 2026-12-07).
 * Such a subtree gets a buffer when the scan has at least {@link SCAN_BROADCAST_REUSE} times its
 * elements and the recomputation (the scan's elements × the subtree's arithmetic) is above
 * {@link SCAN_BROADCAST_WORK}: at batch 1 (12,288 lanes) it stays inline, sparing the step a
 * kernel. Only elementwise subtrees (no reduction or inline contraction below them).
 */
function broadcastPrologues(
  scan: ScanNode,
  materialized: ReadonlySet<Node>,
): Node[] {
  if (longScan(scan)) return [];
  const size = numel(scan);
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [...nodeInputs(scan)];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n) || n.kind === "input" || isHeavy(n)) continue;
    seen.add(n);
    stack.push(...nodeInputs(n));
    const arithmetic = n.kind === "unary" || n.kind === "binary" || n.kind === "where";
    if (!arithmetic || size < SCAN_BROADCAST_REUSE * numel(n)) continue;
    if (!onlyElementwiseBelow(n, materialized)) continue;
    const cost = recomputeCost(n, materialized);
    if (cost > MATMUL_CHEAP_PROLOGUE && size * cost >= SCAN_BROADCAST_WORK) out.push(n);
  }
  return outermost(out, materialized);
}

/** Scan elements per element of a prologue from which it may get a buffer. */
const SCAN_BROADCAST_REUSE = 16;
/** Scan elements × prologue operations from which it gets one (about 2^24). */
const SCAN_BROADCAST_WORK = 1 << 24;

/** Whether a scan is long enough for chunked kernels, which load inputs in several tiles. */
function longScan(scan: ScanNode): boolean {
  return scan.shape[scan.axes.indexOf(scan.axis)] >= 64;
}

/** Whether contraction `c` has a side of a few rows (a decode product: read once per workgroup). */
function matrixVector(c: ContractNode): boolean {
  return Math.min(sideExtent(c, c.a, c.b), sideExtent(c, c.b, c.a)) <= GEMV_MAX_ROWS;
}

/** Elements of the largest buffer `root`'s fused tree reads. */
function largestRead(root: Node, materialized: ReadonlySet<Node>): number {
  let largest = 0;
  for (const n of buffersRead(root, materialized)) largest = Math.max(largest, numel(n));
  return largest;
}

/** Each buffer (materialized node) `root`'s fused tree reads, once. */
function* buffersRead(root: Node, materialized: ReadonlySet<Node>): Generator<Node> {
  const seen = new Set<Node>([root]);
  const stack = [...nodeInputs(root)];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    if (materialized.has(n)) yield n;
    else stack.push(...nodeInputs(n));
  }
}

/**
 * Where a contraction that gets a buffer should store: its only consumer instead, when that is
 * an addition over the same axes (a residual add after a projection), so the matmul's
 * kernel writes the sum as its epilogue. The sum costs no kernel of its own, and its readers
 * (the next layer's norm, its reduction, the next residual add) read one buffer instead of
 * recomputing a chain of adds: without it, a Mamba decode step ran each layer's residual and
 * norm as two extra dispatches.
 */
function epilogueTop(
  core: Node,
  root: Node,
  consumers: ReadonlyMap<Node, Node[]>,
  materialized: ReadonlySet<Node>,
): Node {
  if (core.kind !== "contract") return core;
  if (core.a.kind === "scan" || core.b.kind === "scan") {
    return scanEpilogueTop(core, root, consumers, materialized);
  }
  const u = onlyUser(core, root, consumers, materialized);
  if (u?.kind !== "binary" || u.op !== "add") return core;
  // The other summand must not be a core (two products' sum takes the newer as its core).
  if (nodeInputs(u).some((m) => m !== core && (m.kind === "contract" || isHeavy(m)))) return core;
  return u;
}

/**
 * The one consumer of `n` when it could store in `n`'s place: not the kernel's root, without a
 * buffer, over the same axes and sizes.
 */
function onlyUser(
  n: Node,
  root: Node,
  consumers: ReadonlyMap<Node, Node[]>,
  materialized: ReadonlySet<Node>,
): Node | undefined {
  const users = consumers.get(n) ?? [];
  if (users.length !== 1) return undefined;
  const u = users[0];
  if (u === root || materialized.has(u) || u.axes.join(" ") !== n.axes.join(" ")) return undefined;
  return u.shape.every((s, i) => s === n.shape[i]) ? u : undefined;
}

/**
 * Where a one-step scan's output contraction that gets a buffer should store (decode): the top
 * of the chain of elementwise nodes over the same axes that only it feeds (Mamba-2's D skip and
 * output gate, (y + D·x)·silu(z)), so the scan kernel computes them in its epilogue, where x is
 * at hand. Without it the next kernel, a matrix-vector product that evaluates its prologue in
 * every workgroup, recomputed the chain: a decode step's out_proj re-evaluated the causal conv
 * of x for every element in each of its 384 workgroups. The chain stops at a node read twice,
 * at a view, and at an operand reaching another core (two scan directions' outputs are summed
 * by the second one's epilogue). Longer scans, and scans with several output contractions
 * (merged ones), keep their contraction as the store: there the change altered training
 * graphs' plans for no measured gain, and merged scans' plans broke.
 */
function scanEpilogueTop(
  core: Extract<Node, { kind: "contract" }>,
  root: Node,
  consumers: ReadonlyMap<Node, Node[]>,
  materialized: ReadonlySet<Node>,
): Node {
  const scan = [core.a, core.b].find((m) => m.kind === "scan") as ScanNode;
  if (scan.shape[scan.axes.indexOf(scan.axis)] !== 1) return core;
  // One output contraction only: merged scans (mLSTM's C and n) keep their contractions.
  if ((consumers.get(scan) ?? []).filter((c) => c.kind === "contract").length !== 1) return core;
  let top: Node = core;
  for (;;) {
    const u = onlyUser(top, root, consumers, materialized);
    if (!u || !(u.kind === "unary" || u.kind === "binary" || u.kind === "where")) return top;
    if (nodeInputs(u).some((m) => m !== top && reachesCore(m, scan, materialized))) return top;
    top = u;
  }
}

/**
 * Whether `n`'s fused tree (down to buffers) holds a core or a contraction, or another output
 * contraction of `scan` (buffered or not: the scan kernel computes it).
 */
function reachesCore(n: Node, scan: ScanNode, materialized: ReadonlySet<Node>): boolean {
  const seen = new Set<Node>();
  const stack = [n];
  while (stack.length) {
    const m = stack.pop()!;
    if (seen.has(m)) continue;
    seen.add(m);
    if (m.kind === "contract" && (m.a === scan || m.b === scan)) return true;
    if (materialized.has(m)) continue;
    if (m.kind === "contract" || isHeavy(m)) return true;
    stack.push(...nodeInputs(m));
  }
  return false;
}

/** The nodes of `candidates` not inside another one's fused tree. */
function outermost(candidates: readonly Node[], materialized: ReadonlySet<Node>): Node[] {
  const pending = new Set(candidates);
  const inside = new Set<Node>();
  for (const c of candidates) {
    const stack = [...nodeInputs(c)];
    const seen = new Set<Node>();
    while (stack.length) {
      const n = stack.pop()!;
      if (seen.has(n) || materialized.has(n)) continue;
      seen.add(n);
      if (pending.has(n)) inside.add(n);
      stack.push(...nodeInputs(n));
    }
  }
  return candidates.filter((c) => !inside.has(c));
}

/** Whether `m` is a core other than a contraction (each has a kernel family of its own). */
function isHeavy(m: Node): boolean {
  return m.kind === "reduce" || m.kind === "scan" || m.kind === "delta" ||
    m.kind === "delta_grad" ||
    m.kind === "assocScan" || m.kind === "attention" || m.kind === "attention_grad";
}

function summedExtent(n: Extract<Node, { kind: "contract" }>): number {
  return n.summed.reduce((p, a) => p * n.a.shape[n.a.axes.indexOf(a)], 1);
}

/**
 * Whether the work below `n` is elementwise once the cores in it have kernels of their own
 * (which the pass gives them): no reduction and no inline contraction.
 */
function onlyElementwiseBelow(n: Node, materialized: ReadonlySet<Node>): boolean {
  const seen = new Set<Node>();
  const stack = [...nodeInputs(n)];
  while (stack.length) {
    const m = stack.pop()!;
    if (seen.has(m) || materialized.has(m)) continue;
    seen.add(m);
    if (m.kind === "reduce" || m.kind === "contract" && !isCore(m)) return false;
    if (!isCore(m)) stack.push(...nodeInputs(m));
  }
  return true;
}

/** Nodes computed inside the kernel of `root`, stopping at materialized nodes. */
export function fusedTree(root: Node, materialized: ReadonlySet<Node>): Node[] {
  return [...walkTree(root, materialized, Infinity)];
}

/** Whether `fusedTree(root, materialized)` has more than `limit` nodes (stops counting there). */
function treeLarger(root: Node, materialized: ReadonlySet<Node>, limit: number): boolean {
  return walkTree(root, materialized, limit).size > limit;
}

/**
 * Whether the fused tree of `root` reads more than `limit` buffers of at least its size and
 * rank (a weight or norm scale, broadcast over batch and time, has fewer axes: it does not
 * count).
 */
function readsManyBuffers(root: Node, materialized: ReadonlySet<Node>, limit: number): boolean {
  return fullSizeReads(root, materialized, limit) > limit;
}

/**
 * Buffers of at least `root`'s size and rank its fused tree reads (counted up to `limit` + 1).
 */
function fullSizeReads(root: Node, materialized: ReadonlySet<Node>, limit = Infinity): number {
  const size = numel(root);
  let count = 0;
  for (const n of buffersRead(root, materialized)) {
    if (numel(n) >= size && n.axes.length >= root.axes.length && ++count > limit) break;
  }
  return count;
}

/** The fused tree of `root`, or its first `limit + 1` nodes when it is larger. */
function walkTree(root: Node, materialized: ReadonlySet<Node>, limit: number): Set<Node> {
  const seen = new Set<Node>([root]);
  const stack = [...nodeInputs(root)];
  while (stack.length && seen.size <= limit) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n)) continue;
    seen.add(n);
    stack.push(...nodeInputs(n));
  }
  return seen;
}

function sameAxisSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/**
 * Finds the core `root` can wrap as an epilogue: the only heavy node reached from `root`
 * through elementwise ops alone, used once, over the same axes as `root`.
 */
function epilogueCore(
  root: Node,
  materialized: ReadonlySet<Node>,
  users: Map<Node, number>,
  unfused: ReadonlySet<Node> = new Set(),
): CoreNode | undefined {
  // A short contraction with a buffer of its own is read by several kernels: a matmul then.
  if (root.kind === "contract" || isCore(root)) return root;
  if (unfused.has(root)) return undefined;
  // Layout views over a contraction's epilogue (rearrange, flip): the matmul or scan kernel
  // stores through them.
  const { views, base } = storeViews(root);
  if (views.length > 0) {
    if ([...views.slice(1), base].some((n) => materialized.has(n) || users.get(n) !== 1)) {
      return undefined;
    }
    const core = epilogueCore(base, materialized, users);
    return core?.kind === "contract" ? core : undefined;
  }
  if (!ELEMENTWISE.has(root.kind)) return undefined;
  const found: CoreNode[] = [];
  const seen = new Set<Node>([root]);
  // An explicit stack, not recursion: elementwise chains may be thousands of ops deep.
  const stack = [...nodeInputs(root)];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (seen.has(n) || materialized.has(n)) continue;
    seen.add(n);
    if (isCore(n)) found.push(n);
    else if (ELEMENTWISE.has(n.kind)) stack.push(...nodeInputs(n));
  }
  // Several cores (two scans' outputs added, as in a bidirectional layer): the newest one that
  // can be the epilogue's core takes it; the others get buffers of their own (the pass makes
  // every core but this kernel's foreign), so the sum costs no kernel of its own.
  const fits = found.filter((c) => (users.get(c) ?? 0) === 1 && sameAxisSet(c.axes, root.axes));
  if (fits.length === 0) return undefined;
  const core = fits.reduce((a, b) => (b.id > a.id ? b : a));
  // Contractions of the same scan become outputs of one scan kernel, whose epilogue then reads
  // them from registers at its own position (scan_outputs.ts): only elementwise reads may.
  const scanOfCore = (c: Node) =>
    c.kind === "contract" ? [c.a, c.b].find((m) => m.kind === "scan") : undefined;
  const scan = scanOfCore(core);
  const siblings = found.filter((c) => c !== core && scan && scanOfCore(c) === scan);
  if (siblings.length > 0) {
    const tree = fusedTree(root, materialized);
    const bad = tree.some((n) =>
      !ELEMENTWISE.has(n.kind) && nodeInputs(n).some((m) => siblings.includes(m as CoreNode))
    );
    if (bad) return undefined;
  }
  return core;
}

/** The fusable scan a root's kernel computes, if any. */
function scanOf(
  root: Node,
  core: CoreNode | undefined,
  fusable: ReadonlyMap<Node, ScanUse>,
  materialized: ReadonlySet<Node>,
): ScanUse | undefined {
  const candidates = root.kind === "pick"
    ? [root.x]
    : core?.kind === "contract"
    ? [core.a, core.b]
    : [];
  for (const c of candidates) {
    const use = fusable.get(c);
    if (use && !materialized.has(c)) return use;
  }
  return undefined;
}

/** Plans kernels for `graph`. */
export function planFusion(graph: Graph, options: FusionOptions = {}): FusionPlan {
  // A scan kernel's epilogue may read another kernel's output (a bidirectional layer's sum),
  // and two scan kernels may then read each other's: the roots doing so in such a cycle lose
  // their epilogue cores (their kernels become elementwise ones) and the plan is redone.
  const unfused = new Set<Node>();
  for (let attempt = 0;; attempt++) {
    const planned = planWith(graph, options, unfused);
    if (!Array.isArray(planned)) return planned;
    // One kernel's reads at a time: that alone may break the cycle.
    const fresh = planned.find((roots) =>
      roots.some((n) => !unfused.has(n) && n.kind !== "contract" && !isCore(n))
    );
    if (!fresh || attempt > 64) {
      throw new Error("internal: fused kernels read each other's outputs in a cycle");
    }
    for (const n of fresh) unfused.add(n);
  }
}

/**
 * Full-size buffers a subtree that several kernels read may read before it gets a buffer of
 * its own: recomputed in k kernels it costs k·r reads, materialized r + 1 + k.
 */
const MAX_SHARED_READS = 3;

/** The plan, or per kernel in a cycle of kernels the roots that read another one's output. */
function planWith(
  graph: Graph,
  options: FusionOptions,
  unfused: ReadonlySet<Node>,
): FusionPlan | Node[][] {
  const maxRecompute = options.maxRecomputeNodes ?? 48;
  const outputs = Object.values(graph.outputs);
  const nodes = collectNodes(outputs);
  const users = new Map<Node, number>();
  const consumers = new Map<Node, Node[]>();
  for (const n of nodes) {
    for (const i of nodeInputs(n)) {
      users.set(i, (users.get(i) ?? 0) + 1);
      const list = consumers.get(i);
      if (list) list.push(n);
      else consumers.set(i, [n]);
    }
  }

  const materialized = new Set<Node>([...graph.inputs, ...outputs]);
  for (const n of options.forceMaterialize ?? []) materialized.add(n);
  for (const n of nodes) if (n.kind === "input") materialized.add(n);
  // The delta rule's kernel writes y and the final state itself (no epilogue): both get buffers.
  for (const n of nodes) if (n.kind === "delta" || n.kind === "delta_state") materialized.add(n);
  // So does the attention kernel (its output is read by the projection that follows).
  for (const n of nodes) {
    if (n.kind === "attention" || n.kind === "attention_grad" || n.kind === "delta_grad") {
      materialized.add(n);
    }
  }

  // Scans whose state can stay on chip; their final-state picks get buffers of their own.
  const fusable = new Map<Node, ScanUse>();
  for (const n of nodes) {
    if (n.kind !== "scan" || materialized.has(n)) continue;
    const use = analyzeScan(n as ScanNode, consumers.get(n) ?? []);
    if (!use) continue;
    fusable.set(n, use);
    for (const f of use.finals) materialized.add(f);
  }

  // Iterate to a fixpoint: each new root changes what the other kernels contain.
  for (let changed = true; changed;) {
    changed = false;
    const roots = nodes.filter((n) => materialized.has(n) && n.kind !== "input");
    // Which kernels read each node: roots fed by one fusable scan share a kernel.
    const reachedBy = new Map<Node, Set<Node>>();
    // Kernels that evaluate their prologues once per tile (matmuls, scans: the chunked SSD
    // kernels load each operand element in several tiles).
    const tiled = new Set<Node>();
    for (const root of roots) {
      const core = epilogueCore(root, materialized, users, unfused);
      const scan = scanOf(root, core, fusable, materialized)?.scan;
      const tree = fusedTree(root, materialized);
      // Cores this kernel cannot absorb get their own kernels. Only the outermost ones: a
      // core below another one may still fuse into that one's kernel (a scan into the
      // contraction that consumes it).
      // A matrix-vector kernel computes a short reduction of its rows itself (RMSNorm's
      // mean square in decode), saving the reduction its own dispatch.
      const absorbs = (n: Node) =>
        core?.kind === "contract" && !scan && gemvAbsorbsReduce(root, core, n, materialized) &&
        onlyElementwiseBelow(n, materialized);
      const foreign = tree.filter((n) =>
        n !== root && isCore(n) && n !== core && n !== scan && !absorbs(n)
      );
      // A matmul reads each prologue element once per output tile, and the delta rule's
      // kernels evaluate their operands per step in every lane of a value row (recurrent) or
      // per tile (chunked): a short contraction inlined there would be recomputed that many
      // times (Gated DeltaNet's L2 norms of q and k were 64-term loops in each lane's every
      // step), so it gets a kernel of its own.
      const matmul = core?.kind === "contract" && !scan;
      if (matmul || core?.kind === "delta" || core?.kind === "delta_grad") {
        foreign.push(...tree.filter((n) => n !== root && n !== core && n.kind === "contract"));
      }
      if (matmul) foreign.push(...costlyMatmulOperands(core, materialized));
      if (scan) foreign.push(...broadcastPrologues(scan, materialized));
      // What the foreign cores read (one walk for all; a DAG, so no core reaches itself).
      const below = new Set<Node>();
      const stack = foreign.flatMap((m) => nodeInputs(m));
      while (stack.length) {
        const n = stack.pop()!;
        if (below.has(n) || materialized.has(n)) continue;
        below.add(n);
        stack.push(...nodeInputs(n));
      }
      // (A core may be listed twice: as a core and as a contraction in a matmul's prologue.)
      const stores = [...new Set(foreign)].filter((n) => !below.has(n)).map((n) => {
        const top = epilogueTop(n, root, consumers, materialized);
        return below.has(top) ? n : top;
      });
      for (const n of stores) {
        materialized.add(n);
        changed = true;
      }
      const kernel = scan ?? root;
      if (scan ? longScan(scan) : core?.kind === "contract" && !matrixVector(core)) {
        tiled.add(kernel);
      }
      for (const n of tree) {
        if (n !== root) reachedBy.set(n, (reachedBy.get(n) ?? new Set()).add(kernel));
      }
    }
    if (changed) continue;
    // Subtrees read by several kernels: recompute small ones, materialize big ones (and short
    // contractions, whose every recomputation repeats their loop). A subtree reading many
    // full-size buffers is materialized too: each recomputation rereads them all. (A deep
    // model's residual cotangent is the sum of every later layer's contribution; inlined,
    // layer i's kernels read 24 − i such buffers, and each layer's kernels differ.)
    const costly: Node[] = [];
    for (const [n, kernels] of reachedBy) {
      if (kernels.size < 2 || n.kind === "const" || fusable.has(n)) continue;
      if (
        n.kind === "contract" || isCore(n) || treeLarger(n, materialized, maxRecompute) ||
        readsManyBuffers(n, materialized, MAX_SHARED_READS)
      ) {
        materialized.add(n);
        changed = true;
      } else if (costlyInTiles(n, kernels, tiled, materialized)) {
        costly.push(n);
      }
    }
    // Only the outermost costly subtrees: those below one are then read by its kernel alone.
    for (const n of outermost(costly, materialized)) {
      materialized.add(n);
      changed = true;
    }
  }

  // One kernel per root, except that all roots fed by one fusable scan share its kernel.
  const kernels: KernelGroup[] = [];
  const scanGroups = new Map<
    Node,
    { outputs: ScanGroup["outputs"][number][]; finals: PickNode[] }
  >();
  for (const root of nodes.filter((n) => materialized.has(n) && n.kind !== "input")) {
    const core = epilogueCore(root, materialized, users, unfused);
    const use = scanOf(root, core, fusable, materialized);
    if (!use) {
      kernels.push({ kind: "simple", root, core });
      continue;
    }
    let group = scanGroups.get(use.scan);
    if (!group) {
      group = { outputs: [], finals: [] };
      scanGroups.set(use.scan, group);
      kernels.push({ kind: "scan", use, outputs: group.outputs, finals: group.finals });
    }
    if (root.kind === "pick" && root.x === use.scan) group.finals.push(root as PickNode);
    else group.outputs.push({ root, contract: core as ContractNode });
  }
  const ordered = dependencyOrder(kernels, materialized);
  return "blocked" in ordered ? ordered.blocked : { materialized, kernels: ordered.order };
}

function groupRoots(g: KernelGroup): Node[] {
  return g.kind === "simple" ? [g.root] : [...g.outputs.map((o) => o.root), ...g.finals];
}

/**
 * Kernels in an order where each runs after the kernels writing what it reads (stable: the
 * creation order where it already is one). A scan group joins roots created at different
 * times; an output of it may read a tensor that a later kernel writes (a bidirectional
 * layer's sum reading the other direction's output), so the group must wait for that kernel.
 * When kernels wait on each other in a cycle: per waiting kernel, its roots that read another
 * waiting kernel's output.
 */
function dependencyOrder(
  kernels: KernelGroup[],
  materialized: ReadonlySet<Node>,
): { order: KernelGroup[] } | { blocked: Node[][] } {
  const writer = new Map<Node, number>();
  kernels.forEach((g, i) => groupRoots(g).forEach((r) => writer.set(r, i)));
  // Per kernel, per root: the kernels whose outputs it reads.
  const needs = kernels.map((g, i) =>
    groupRoots(g).map((root) => {
      const deps = new Set<number>();
      for (const n of fusedTree(root, materialized)) {
        for (const m of nodeInputs(n)) {
          const w = materialized.has(m) ? writer.get(m) : undefined;
          if (w !== undefined && w !== i) deps.add(w);
        }
      }
      return { root, deps };
    })
  );
  const done = new Set<number>();
  const order: KernelGroup[] = [];
  const ready = (i: number) => needs[i].every(({ deps }) => [...deps].every((d) => done.has(d)));
  while (order.length < kernels.length) {
    const next = kernels.findIndex((_, i) => !done.has(i) && ready(i));
    if (next < 0) {
      const waiting = needs.filter((_, i) => !done.has(i));
      const blocked = waiting.map((roots) =>
        roots.filter(({ deps }) => [...deps].some((d) => !done.has(d))).map(({ root }) => root)
      );
      return { blocked };
    }
    done.add(next);
    order.push(kernels[next]);
  }
  return { order };
}
