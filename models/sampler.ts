/**
 * The on-GPU token sampler: after each decode step one kernel chooses every row's next token
 * (greedy argmax, or temperature / top-k / top-p sampling with a counter-based RNG) and writes
 * it where the next step's embedding lookup reads it, so generation never waits for a readback.
 * `sampleOnCpu` is the same algorithm in TypeScript, float32 operation for operation.
 *
 * Algorithm, per row (one workgroup of 256 threads):
 * 1. One pass over the logits: the largest logit and its lowest index, the smallest valid logit
 *    and the number of valid logits (NaN and -inf are invalid: never chosen), and how many are
 *    NaN or ±inf: the first step with any is recorded in the row's state, for the host to
 *    report (a model's logits are finite unless its weights or activations overflow).
 * 2. Greedy stops here. Otherwise tokens are ranked by an order-preserving u32 key of the logit
 *    (the same order as logit / temperature), and the top-k and top-p sets are found as key
 *    thresholds: the smallest key c with F(c) < target, where F(c) counts (top-k) or weighs
 *    (top-p) the tokens with key ≥ c. A 16-way search evaluates 15 candidate keys per pass, so
 *    at most ~10 passes pin the exact threshold; each pass skips the tokens below its bracket.
 * 3. The kept weights exp((x − max) / T) are summed over per-thread contiguous chunks, a two-level
 *    scan gives each chunk its interval of the cumulative mass, and the thread whose interval
 *    holds u · total walks its chunk to the sampled token.
 *
 * Every float sum has a fixed order (a fixed workgroup size makes it device-independent), so the
 * CPU reference reproduces it; only `exp` differs in the last bits between GPU and CPU, which can
 * change a choice only when u lands within rounding of a boundary.
 *
 * @module
 */

/** Sampling options, following HF transformers' generation conventions. */
export interface SamplingOptions {
  /** Softmax temperature; 0 (the default) is greedy argmax (lowest index on ties). */
  temperature?: number;
  /** Keep only the k largest logits (ties with the k-th are kept); 0 (default) = off. */
  topK?: number;
  /**
   * Keep the smallest set of most probable tokens whose probability reaches p (tokens tied with
   * the last one are kept, and always at least one); 1 (default) = off. Applied after top-k.
   */
  topP?: number;
  /** RNG seed (any safe integer; default 0). The draw of (row, step) depends only on it. */
  seed?: number;
}

/** A sampler kernel: WGSL module (entry point `main`) and its workgroup count. */
export interface SamplerKernel {
  /** Kernel name, for errors and timings. */
  name: string;
  /** The WGSL module. */
  wgsl: string;
  /** Workgroups to dispatch: one per row, folded into x/y when the batch is large. */
  workgroups: [number, number, number];
}

/** Device limits the sampler depends on (a `GpuContext`'s `limits` will do). */
export interface SamplerLimits {
  /** At least 256 (the sampler's workgroup size). */
  maxComputeInvocationsPerWorkgroup: number;
  /** Largest workgroup count per dispatch dimension. */
  maxComputeWorkgroupsPerDimension: number;
  /** Workgroup memory in bytes (the sampler uses about 10.4 KiB). */
  maxComputeWorkgroupStorageSize: number;
  /** Checked when given: at least 256. */
  maxComputeWorkgroupSizeX?: number;
}

/**
 * u32 words per row in the sampler's `state` buffer (start them all at 0): [0] the step counter
 * (tokens written so far), [1] the last token, [2] how many tokens the last step's top-k/top-p
 * kept (1 when greedy), [3] the last step's 24-bit random draw (u = word / 2²⁴), [4] 1 + the
 * first step whose logits held a NaN or an infinity (0: none so far), [5] how many of that
 * step's logits were not finite.
 */
export const STATE_WORDS = 6;

/** u32 words made by {@link encodeSamplerParams}. */
export const PARAM_WORDS = 8;

/** Threads per row. Fixed (not the device maximum) so the float summation order is too. */
const WG = 256;
/** The sampling scan runs in SCAN × SCAN (= WG) groups. */
const SCAN = 16;
/** Weights exp(z) with z below this are 0: exp stays a normal float (no flush-to-zero drift). */
const Z_MIN = -87;
const FLT_MAX = 3.4028234663852886e38;
/** Smallest encoded top-p: every p below 1e-30 keeps exactly the top tokens, like this one. */
const TOP_P_FLOOR = 1e-30;
const NONE = 0xffffffff;
/** Workgroup memory of the kernel in bytes (see the `var<workgroup>` declarations). */
const SHARED_BYTES = WG * 16 + WG * 16 + WG * 8 + (SCAN + 1) * 8 + 16 + 8 + 4 + 4 + 4;
/** Largest vocabulary: counts are summed in f32 and must stay exact. */
const MAX_VOCAB = 2 ** 24 - 1;

// ---------------------------------------------------------------------------------------------
// Options

/**
 * Validates `o` and packs it for the kernel's params binding (8 u32 words: mode, 1/T as f32 bits,
 * top-k, top-p as f32 bits, top-p on, seed low and high words, `maxSteps`: the tokens each row
 * may write, the row stride of the tokens binding). Fields other than the four sampling options
 * are ignored, so a larger options object can be passed as is.
 */
export function encodeSamplerParams(o: SamplingOptions, maxSteps: number): Uint32Array {
  const words = checkedParams(o);
  if (!Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > 0xffffffff) {
    throw new Error(`sampler: maxSteps must be an integer in [1, 2³²), got ${describe(maxSteps)}`);
  }
  words[7] = maxSteps;
  return words;
}

/** The params words of `o` (validated), with word 7 (maxSteps) left 0. */
function checkedParams(o: SamplingOptions): Uint32Array {
  if (o === null || typeof o !== "object") {
    throw new Error(`sampling options must be an object, got ${o === null ? "null" : typeof o}`);
  }
  const temperature = o.temperature ?? 0;
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) {
    throw new Error(
      `temperature must be a finite number ≥ 0 (0 = greedy), got ${describe(temperature)}`,
    );
  }
  const topK = o.topK ?? 0;
  if (typeof topK !== "number" || !Number.isInteger(topK) || topK < 0 || topK > 0xffffffff) {
    throw new Error(`topK must be an integer ≥ 0 (0 = off), got ${describe(topK)}`);
  }
  const topP = o.topP ?? 1;
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) {
    throw new Error(`topP must be a number with 0 < topP ≤ 1 (1 = off), got ${describe(topP)}`);
  }
  const seed = o.seed ?? 0;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    throw new Error(`seed must be a safe integer, got ${describe(seed)}`);
  }
  const words = new Uint32Array(PARAM_WORDS);
  const bits = new Float32Array(words.buffer);
  words[0] = temperature > 0 ? 1 : 0;
  // A temperature so small that 1/T overflows f32 behaves like the largest finite 1/T.
  const inv = Math.fround(1 / temperature);
  bits[1] = temperature > 0 ? (Number.isFinite(inv) ? inv : FLT_MAX) : 0;
  words[2] = topK;
  const p = Math.fround(Math.max(topP, TOP_P_FLOOR));
  bits[3] = p;
  words[4] = p < 1 ? 1 : 0;
  const s = BigInt.asUintN(64, BigInt(seed));
  words[5] = Number(s & 0xffffffffn);
  words[6] = Number(s >> 32n);
  return words;
}

function describe(v: unknown): string {
  return typeof v === "number" ? String(v) : `${typeof v} ${JSON.stringify(v)}`;
}

// ---------------------------------------------------------------------------------------------
// Kernel

/**
 * Emits the sampler for `batch` rows of `vocab` logits. Bindings: 0 logits (f32 [batch, vocab],
 * read), 1 params (u32 [8], read; from `encodeSamplerParams`, whose `maxSteps` bounds the tokens
 * per row), 2 state (u32 [batch · STATE_WORDS], read_write), 3 ids (i32 [batch], read_write: the
 * next input token of each row), 4 tokens (i32 [batch, maxSteps], read_write). Each dispatch
 * writes tokens[row, step] and ids[row] for step = state's counter and increments it; a row whose
 * counter reached `maxSteps` is left untouched. A step whose logits hold a NaN or an infinity is
 * recorded in the row's state (see {@link STATE_WORDS}) and still gets a token, chosen as usual.
 * The kernel depends on the batch and vocabulary only, so one pipeline serves every `maxSteps`.
 */
export function emitSamplerKernel(
  batch: number,
  vocab: number,
  limits: SamplerLimits,
): SamplerKernel {
  const positive = (name: string, v: number, max: number) => {
    if (!Number.isInteger(v) || v < 1 || v > max) {
      throw new Error(`sampler: ${name} must be an integer in [1, ${max}], got ${v}`);
    }
  };
  positive("batch", batch, 0xffffffff);
  positive("vocab", vocab, MAX_VOCAB);
  if (batch * vocab > 2 ** 32 || batch * STATE_WORDS > 2 ** 32) {
    throw new Error(`sampler: batch × vocab = ${batch * vocab} logits exceed u32 indexing (2³²)`);
  }
  if (limits === null || typeof limits !== "object") {
    throw new Error("sampler: limits must be the device's limits object");
  }
  const need = (name: keyof SamplerLimits, min: number, optional = false) => {
    const v = limits[name];
    if (v === undefined && optional) return;
    if (typeof v !== "number" || !(v >= min)) {
      throw new Error(
        `sampler: needs device limit ${name} ≥ ${min}, got ${v === undefined ? "none" : v}`,
      );
    }
  };
  need("maxComputeInvocationsPerWorkgroup", WG);
  need("maxComputeWorkgroupSizeX", WG, true);
  need("maxComputeWorkgroupStorageSize", SHARED_BYTES);
  need("maxComputeWorkgroupsPerDimension", 1);
  const maxDim = Math.floor(limits.maxComputeWorkgroupsPerDimension);
  const gridX = Math.min(batch, maxDim);
  const gridY = Math.ceil(batch / gridX);
  if (gridY > maxDim) {
    throw new Error(
      `sampler: batch ${batch} needs ${gridX} × ${gridY} workgroups, over the device's ` +
        `maxComputeWorkgroupsPerDimension ${maxDim}`,
    );
  }
  return {
    name: `sample_b${batch}_v${vocab}`,
    wgsl: samplerWgsl(batch, vocab, gridX),
    workgroups: [gridX, gridY, 1],
  };
}

/** The strided loop over the row with four independent loads per iteration (memory-level
 * parallelism), visiting each thread's elements in increasing index order. */
function stridedLoop(body: (i: string, k: string) => string): string {
  const parts = [0, 1, 2, 3].map((u) =>
    `    let i${u} = i + ${u}u * WG;
    let k${u} = select(0u, key_at(base, min(i${u}, V - 1u)), i${u} < V);`
  ).join("\n");
  const bodies = [0, 1, 2, 3].map((u) => body(`i${u}`, `k${u}`)).join("\n");
  return `  for (var i = lid; i < V; i = i + 4u * WG) {
${parts}
${bodies}
  }`;
}

/** F at 16 keys per pass (count or weight of the tokens with key ≥ c), then the reductions. */
function tallyFn(mode: "count" | "mass"): string {
  const e = mode === "count" ? "1.0" : "weight(KEY, m, inv_t)";
  const accumulate = (k: string) =>
    `    if (${k} >= lo) {
      let e = vec4<f32>(${e.replace("KEY", k)});
      let kv = vec4<u32>(${k});
      a0 = a0 + select(vec4<f32>(0.0), e, kv >= c0);
      a1 = a1 + select(vec4<f32>(0.0), e, kv >= c1);
      a2 = a2 + select(vec4<f32>(0.0), e, kv >= c2);
      a3 = a3 + select(vec4<f32>(0.0), e, kv >= c3);
    }`;
  return `
// F(c_j) for c_j = min(lo + j·st, hi), j = 0..15 (slot 0 is F(lo)); every key below lo adds 0.
fn tally_${mode}(lid: u32, base: u32, lo: u32, hi: u32, m: f32, inv_t: f32) -> array<vec4<f32>, 4> {
  let st = max((hi - lo) >> 4u, 1u);
  let j = vec4<u32>(0u, 1u, 2u, 3u);
  let c0 = min(vec4<u32>(lo) + j * st, vec4<u32>(hi));
  let c1 = min(vec4<u32>(lo) + (j + 4u) * st, vec4<u32>(hi));
  let c2 = min(vec4<u32>(lo) + (j + 8u) * st, vec4<u32>(hi));
  let c3 = min(vec4<u32>(lo) + (j + 12u) * st, vec4<u32>(hi));
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
${stridedLoop((_i, k) => accumulate(k))}
  var r: array<vec4<f32>, 4>;
  r[0] = reduce_sum(lid, a0);
  r[1] = reduce_sum(lid, a1);
  r[2] = reduce_sum(lid, a2);
  r[3] = reduce_sum(lid, a3);
  return r;
}

// The smallest key c in (lo0, hi0] with F(c) < goal (F(lo0) ≥ goal > F(hi0) hold); returns c − 1,
// the key threshold of the kept set. A negative goal means p · F(lo0), known after one pass.
fn search_${mode}(lid: u32, base: u32, lo0: u32, hi0: u32, goal0: f32, p: f32, m: f32, inv_t: f32) -> u32 {
  workgroupBarrier();
  if (lid == 0u) {
    bounds = vec2<u32>(lo0, hi0);
    goal = goal0;
  }
  var thr = 0u;
  loop {
    let b = workgroupUniformLoad(&bounds);
    if (b.y - b.x <= 1u) {
      thr = b.y - 1u;
      break;
    }
    var r = tally_${mode}(lid, base, b.x, b.y, m, inv_t);
    if (lid == 0u) {
      var g = goal;
      if (g < 0.0) {
        g = p * r[0].x;
        goal = g;
      }
      let st = max((b.y - b.x) >> 4u, 1u);
      var lo = b.x;
      var hi = b.y;
      for (var j = 1u; j < 16u; j = j + 1u) {
        let c = min(b.x + j * st, b.y);
        if (r[j / 4u][j % 4u] < g) {
          hi = c;
          break;
        }
        lo = c;
      }
      bounds = vec2<u32>(lo, hi);
    }
  }
  return thr;
}`;
}

function samplerWgsl(batch: number, vocab: number, gridX: number): string {
  const chunk = Math.ceil(vocab / WG);
  return `// ssmkit token sampler: ${batch} row(s) × ${vocab} logits.
const WG: u32 = ${WG}u;
const V: u32 = ${vocab}u;
const BATCH: u32 = ${batch}u;
const GRID_X: u32 = ${gridX}u;
const CHUNK: u32 = ${chunk}u;
const SW: u32 = ${STATE_WORDS}u;
const SCAN: u32 = ${SCAN}u;
const Z_MIN: f32 = ${Z_MIN}.0;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> params: array<u32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> ids: array<i32>;
@group(0) @binding(4) var<storage, read_write> tokens: array<i32>;

var<workgroup> ured: array<vec4<u32>, WG>;
var<workgroup> fred: array<vec4<f32>, WG>;
var<workgroup> scan: array<vec2<f32>, WG>;
var<workgroup> offs: array<vec2<f32>, ${SCAN + 1}>;
var<workgroup> hdr: vec4<u32>;
var<workgroup> bounds: vec2<u32>;
var<workgroup> goal: f32;
var<workgroup> pick: u32;
var<workgroup> nonfinite: atomic<u32>;

// Order-preserving key of logits[base + i]; 0 for NaN and -inf (never chosen). -0 counts as +0
// and +inf as the largest finite float. Bit tests, not float compares: robust to fast math.
fn key_at(base: u32, i: u32) -> u32 {
  var b = bitcast<u32>(logits[base + i]);
  if (b == 0x80000000u) { b = 0u; }
  if (b == 0x7f800000u) { b = 0x7f7fffffu; }
  if ((b & 0x7fffffffu) > 0x7f800000u || b == 0xff800000u) { return 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Whether logits[base + i] is NaN or ±inf (all exponent bits set).
fn not_finite(base: u32, i: u32) -> bool {
  return (bitcast<u32>(logits[base + i]) & 0x7f800000u) == 0x7f800000u;
}

fn value_of(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, k >= 0x80000000u));
}

// exp((x − max) / T), the unnormalized probability; 0 below Z_MIN and for invalid keys.
fn weight(k: u32, m: f32, inv_t: f32) -> f32 {
  let z = (value_of(k) - m) * inv_t;
  return select(0.0, exp(z), k != 0u && z >= Z_MIN);
}

// High and low words of a · b (WGSL has no 64-bit integers).
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  return vec2<u32>(a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u), a * b);
}

// Philox4x32-10 (Salmon et al. 2011): a counter-based RNG, so (seed, row, step) → draw.
fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < 10u; r = r + 1u) {
    let x = mulhilo(0xD2511F53u, c.x);
    let y = mulhilo(0xCD9E8D57u, c.z);
    c = vec4<u32>(y.x ^ c.y ^ k.x, y.y, x.x ^ c.w ^ k.y, x.y);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}

// Largest key (lowest index on ties), smallest key, number of valid tokens.
fn combine_stats(a: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
  let take = b.x > a.x || (b.x == a.x && b.y < a.y);
  return vec4<u32>(select(a.xy, b.xy, take), min(a.z, b.z), a.w + b.w);
}

// Tree sum over the workgroup (fixed order: sampleOnCpu mirrors it).
fn reduce_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
  fred[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { fred[lid] = fred[lid] + fred[lid + s]; }
    workgroupBarrier();
  }
  let r = fred[0];
  workgroupBarrier();
  return r;
}
${tallyFn("count")}
${tallyFn("mass")}

fn finish(row: u32, step: u32, tok: u32, kept: u32, draw: u32) {
  tokens[row * params[7] + step] = i32(tok);
  ids[row] = i32(tok);
  let s = row * SW;
  state[s] = step + 1u;
  state[s + 1u] = tok;
  state[s + 2u] = kept;
  state[s + 3u] = draw;
  // The first step with non-finite logits stays recorded (the host reads it with the tokens).
  let bad = atomicLoad(&nonfinite);
  if (bad != 0u && state[s + 4u] == 0u) {
    state[s + 4u] = step + 1u;
    state[s + 5u] = bad;
  }
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * GRID_X + wid.x;
  if (row >= BATCH) { return; }
  if (lid == 0u) {
    hdr = vec4<u32>(state[row * SW], params[0], params[2], params[4]);
    pick = NONE;
    atomicStore(&nonfinite, 0u);
  }
  let h = workgroupUniformLoad(&hdr);
  let step = h.x;
  if (step >= params[7]) { return; }
  let base = row * V;
  let inv_t = bitcast<f32>(params[1]);
  let top_p = bitcast<f32>(params[3]);
  let draw = philox(vec4<u32>(step, row, 0u, 0u), vec2<u32>(params[5], params[6])).x >> 8u;

  // 1. Statistics of the row.
  var best = vec2<u32>(0u, NONE);
  var low = NONE;
  var n = 0u;
  var bad = 0u;
${
    stridedLoop((i, k) =>
      `    if (${k} > best.x) { best = vec2<u32>(${k}, ${i}); }
    if (${k} != 0u) {
      low = min(low, ${k});
      n = n + 1u;
    }
    if (${i} < V && not_finite(base, ${i})) { bad = bad + 1u; }`
    )
  }
  if (bad != 0u) { atomicAdd(&nonfinite, bad); }
  ured[lid] = vec4<u32>(best, low, n);
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { ured[lid] = combine_stats(ured[lid], ured[lid + s]); }
    workgroupBarrier();
  }
  let stats = workgroupUniformLoad(&ured[0]);
  if (h.y == 0u || stats.w == 0u) {
    // Greedy; a row without any valid logit gives token 0 (argmax of all -inf).
    if (lid == 0u) { finish(row, step, select(0u, stats.y, stats.w != 0u), 1u, draw); }
    return;
  }

  // 2. Thresholds: top-k on counts, then top-p on weights among the top-k.
  let m = value_of(stats.x);
  var thr = 1u;
  if (h.z != 0u && h.z < stats.w) {
    thr = search_count(lid, base, stats.z, stats.x + 1u, f32(h.z), 0.0, m, inv_t);
  }
  if (h.w != 0u) {
    thr = search_mass(lid, base, thr, stats.x + 1u, -1.0, top_p, m, inv_t);
  }

  // 3. Inverse CDF over per-thread contiguous chunks.
  let start = min(lid * CHUNK, V);
  let end = min(start + CHUNK, V);
  var acc = vec2<f32>(0.0);
  for (var i = start; i < end; i = i + 1u) {
    let k = key_at(base, i);
    if (k >= thr) { acc = acc + vec2<f32>(weight(k, m, inv_t), 1.0); }
  }
  scan[lid] = acc;
  workgroupBarrier();
  // Two-level inclusive scan: SCAN groups scanned sequentially, then their offsets. Monotone in
  // float: each thread's interval [prev, mine) is well formed and the intervals tile [0, total).
  if (lid < SCAN) {
    var run = vec2<f32>(0.0);
    for (var j = 0u; j < SCAN; j = j + 1u) {
      run = run + scan[lid * SCAN + j];
      scan[lid * SCAN + j] = run;
    }
  }
  workgroupBarrier();
  if (lid == 0u) {
    var o = vec2<f32>(0.0);
    offs[0] = o;
    for (var g = 0u; g < SCAN; g = g + 1u) {
      o = o + scan[g * SCAN + SCAN - 1u];
      offs[g + 1u] = o;
    }
  }
  workgroupBarrier();
  let mine = offs[lid / SCAN] + scan[lid];
  workgroupBarrier();
  scan[lid] = mine;
  workgroupBarrier();
  let total = offs[SCAN];
  let prev = select(0.0, scan[max(lid, 1u) - 1u].x, lid > 0u);
  let aim = f32(draw) * (1.0 / 16777216.0) * total.x;
  // The interval holding the target; if rounding put it at the total, the last non-empty one.
  let hit = (prev <= aim && aim < mine.x) ||
    (aim >= total.x && prev < total.x && mine.x >= total.x);
  if (hit) {
    var run = prev;
    var tok = NONE;
    var last = NONE;
    for (var i = start; i < end; i = i + 1u) {
      let k = key_at(base, i);
      if (k >= thr) {
        let w = weight(k, m, inv_t);
        if (w > 0.0) {
          run = run + w;
          last = i;
          if (aim < run) {
            tok = i;
            break;
          }
        }
      }
    }
    pick = select(tok, last, tok == NONE);
  }
  workgroupBarrier();
  if (lid == 0u) {
    // pick is always set (the top token has weight 1); the argmax is a guard, not a path.
    finish(row, step, select(pick, stats.y, pick == NONE), u32(total.y), draw);
  }
}
`;
}

// ---------------------------------------------------------------------------------------------
// CPU reference

/** What {@link sampleOnCpuDetailed} found, with how close the choice was to flipping. */
export interface CpuSample {
  /** The chosen token. */
  token: number;
  /** The 24-bit random draw (u = draw / 2²⁴), as the kernel stores in state word 3. */
  draw: number;
  /** Tokens kept by top-k/top-p (1 when greedy), as the kernel stores in state word 2. */
  kept: number;
  /** How many logits are NaN or ±inf (the kernel records this count, see STATE_WORDS). */
  nonFinite: number;
  /**
   * Where u · total fell inside the chosen token's interval of the cumulative mass, as the
   * distance to the nearer end over the token's weight (0.5 = middle, 0 = on a boundary;
   * Infinity when greedy).
   */
  positionMargin: number;
  /**
   * How far the top-p decision was from tipping: the distance of p · mass to the nearer of the
   * cumulative masses just above and at the threshold, over the weight of the tokens at the
   * threshold (0 = on the boundary; Infinity without top-p).
   */
  thresholdMargin: number;
}

/**
 * The kernel's choice for one row of `logits` at (`step`, `row`), computed on the CPU with the
 * same keys, RNG, float32 summation order and tie-breaking. It can differ from the GPU only where
 * the GPU's `exp` rounding tips a boundary (see the margins of {@link sampleOnCpuDetailed}).
 */
export function sampleOnCpu(
  logits: Float32Array,
  o: SamplingOptions,
  step: number,
  row: number,
): number {
  return sampleOnCpuDetailed(logits, o, step, row).token;
}

/** {@link sampleOnCpu} with the kept-set size, the random draw and the margins of the choice. */
export function sampleOnCpuDetailed(
  logits: Float32Array,
  o: SamplingOptions,
  step: number,
  row: number,
): CpuSample {
  const words = checkedParams(o);
  if (!(logits instanceof Float32Array)) {
    throw new Error(
      `sampleOnCpu: logits must be a Float32Array (one row), got ${describe(logits)}`,
    );
  }
  if (logits.length < 1 || logits.length > MAX_VOCAB) {
    throw new Error(`sampleOnCpu: a row must hold 1..${MAX_VOCAB} logits, got ${logits.length}`);
  }
  for (const [name, v] of [["step", step], ["row", row]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new Error(`sampleOnCpu: ${name} must be an integer in [0, 2³²), got ${v}`);
    }
  }
  const floats = new Float32Array(words.buffer);
  const invT = floats[1], topK = words[2], topP = floats[3];
  const draw = philox4x32([step, row, 0, 0], [words[5], words[6]])[0] >>> 8;
  const V = logits.length;
  const keys = keysOf(logits);
  const nonFinite = logits.filter((v) => !Number.isFinite(v)).length;

  // 1. Statistics.
  let maxKey = 0, arg = NONE, minKey = NONE, n = 0;
  for (let i = 0; i < V; i++) {
    const k = keys[i];
    if (k > maxKey) [maxKey, arg] = [k, i];
    if (k !== 0) [minKey, n] = [Math.min(minKey, k), n + 1];
  }
  if (words[0] === 0 || n === 0) {
    const token = n === 0 ? 0 : arg;
    const margins = { positionMargin: Infinity, thresholdMargin: Infinity };
    return { token, draw, kept: 1, nonFinite, ...margins };
  }

  // 2. Thresholds.
  const m = valueOfKey(maxKey);
  const w = new Float32Array(V);
  for (let i = 0; i < V; i++) w[i] = weightOf(keys[i], m, invT);
  let thr = 1;
  if (topK !== 0 && topK < n) {
    const count = (c: number) => {
      let f = 0;
      for (let i = 0; i < V; i++) if (keys[i] >= c) f++;
      return f;
    };
    thr = smallestBelow(count, minKey, maxKey + 1, topK) - 1;
  }
  let thresholdMargin = Infinity;
  if (words[4] !== 0 && maxKey + 1 - thr > 1) {
    const mass = (c: number) => stridedTreeSum(keys, w, c);
    const total = mass(thr);
    const goal = Math.fround(topP * total);
    const c0 = smallestBelow(mass, thr, maxKey + 1, goal);
    const [below, at] = [mass(c0), mass(c0 - 1)];
    thresholdMargin = Math.min(goal - below, at - goal) / (at - below);
    thr = c0 - 1;
  }

  // 3. Inverse CDF, chunk by chunk as the kernel's threads do.
  const chunk = Math.ceil(V / WG);
  const sums = new Float32Array(WG);
  let kept = 0;
  for (let t = 0; t < WG; t++) {
    let acc = 0;
    for (let i = Math.min(t * chunk, V); i < Math.min((t + 1) * chunk, V); i++) {
      if (keys[i] >= thr) {
        acc = Math.fround(acc + w[i]);
        kept++;
      }
    }
    sums[t] = acc;
  }
  const ends = twoLevelScan(sums);
  const total = ends[WG - 1];
  const target = Math.fround(Math.fround(draw / 2 ** 24) * total);
  for (let t = 0; t < WG; t++) {
    const prev = t === 0 ? 0 : ends[t - 1];
    const hit = (prev <= target && target < ends[t]) ||
      (target >= total && prev < total && ends[t] >= total);
    if (!hit) continue;
    let run = prev, last = NONE;
    for (let i = t * chunk; i < Math.min((t + 1) * chunk, V); i++) {
      if (keys[i] < thr || w[i] <= 0) continue;
      const before = run;
      run = Math.fround(run + w[i]);
      last = i;
      if (target < run) {
        const positionMargin = Math.min(target - before, run - target) / w[i];
        return { token: i, draw, kept, nonFinite, positionMargin, thresholdMargin };
      }
    }
    return { token: last, draw, kept, nonFinite, positionMargin: 0, thresholdMargin };
  }
  throw new Error("sampleOnCpu: internal error: no chunk holds the target");
}

/** The kernel's per-thread strided sums of the weights with key ≥ c, then its tree sum. */
function stridedTreeSum(keys: Uint32Array, w: Float32Array, c: number): number {
  const red = new Float32Array(WG);
  for (let t = 0; t < WG; t++) {
    let acc = 0;
    for (let i = t; i < keys.length; i += WG) if (keys[i] >= c) acc = Math.fround(acc + w[i]);
    red[t] = acc;
  }
  for (let s = WG / 2; s > 0; s >>= 1) {
    for (let t = 0; t < s; t++) red[t] = Math.fround(red[t] + red[t + s]);
  }
  return red[0];
}

/** The kernel's inclusive scan: SCAN groups sequentially, then the group offsets. */
function twoLevelScan(sums: Float32Array): Float32Array {
  const local = new Float32Array(WG);
  for (let g = 0; g < SCAN; g++) {
    let run = 0;
    for (let j = 0; j < SCAN; j++) {
      local[g * SCAN + j] = run = Math.fround(run + sums[g * SCAN + j]);
    }
  }
  const offs = new Float32Array(SCAN + 1);
  for (let g = 0; g < SCAN; g++) offs[g + 1] = Math.fround(offs[g] + local[g * SCAN + SCAN - 1]);
  return local.map((v, t) => Math.fround(offs[Math.floor(t / SCAN)] + v));
}

/**
 * The smallest c in (lo, hi] with f(c) < goal, for f non-increasing with f(lo) ≥ goal > f(hi).
 * Unique, so it equals the kernel's 16-way search whatever path either takes.
 */
function smallestBelow(f: (c: number) => number, lo: number, hi: number, goal: number): number {
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (f(mid) < goal) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** The kernel's order-preserving keys (0 = NaN or -inf; -0 → +0; +inf → largest finite). */
function keysOf(logits: Float32Array): Uint32Array {
  const bits = new Uint32Array(Float32Array.from(logits).buffer);
  const keys = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    let b = bits[i];
    if (b === 0x80000000) b = 0;
    if (b === 0x7f800000) b = 0x7f7fffff;
    if ((b & 0x7fffffff) >>> 0 > 0x7f800000 || b === 0xff800000) keys[i] = 0;
    else keys[i] = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
  }
  return keys;
}

const scratch = new Uint32Array(1);
const scratchF = new Float32Array(scratch.buffer);

function valueOfKey(k: number): number {
  scratch[0] = k >= 0x80000000 ? k & 0x7fffffff : ~k >>> 0;
  return scratchF[0];
}

function weightOf(k: number, m: number, invT: number): number {
  if (k === 0) return 0;
  const z = Math.fround(Math.fround(valueOfKey(k) - m) * invT);
  return z >= Z_MIN ? Math.fround(Math.exp(z)) : 0;
}

/** High and low 32-bit words of a · b for u32 a, b. */
function mulhilo(a: number, b: number): [number, number] {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const p01 = a0 * b1, p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const hi =
    (a1 * b1 + Math.floor(p01 / 65536) + Math.floor(p10 / 65536) + Math.floor(mid / 65536)) >>>
    0;
  return [hi, Math.imul(a, b) >>> 0];
}

/**
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) of a
 * 4-word counter under a 2-word key; the kernel draws u from word 0 of ((step, row, 0, 0), seed).
 */
export function philox4x32(
  counter: readonly [number, number, number, number],
  key: readonly [number, number],
): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo(0xd2511f53, c0);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}
