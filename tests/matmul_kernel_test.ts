/**
 * Runs emitted matmul kernels on the WebGPU adapter (lavapipe here) for awkward shapes, through
 * the hooks and the direct fast paths, against a float64 reference computed here.
 */
import assert from "node:assert/strict";
import {
  emitMatmul,
  MATMUL_TILES,
  type MatmulDirectA,
  type MatmulDirectB,
  type MatmulKernelSpec,
  type MatmulLimits,
  type MatmulTile,
  selectMatmulTile,
} from "../codegen/matmul_kernel.ts";
import { preferVulkanOnLinux } from "../runtime/gpu_device.ts";

const { MAP_READ, COPY_SRC, COPY_DST, STORAGE } = GPUBufferUsage;

let devicePromise: Promise<GPUDevice> | undefined;

/** One device for the whole file, created with the adapter's own limits. */
function device(): Promise<GPUDevice> {
  devicePromise ??= (async () => {
    preferVulkanOnLinux();
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) throw new Error("no WebGPU adapter");
    const l = adapter.limits;
    return await adapter.requestDevice({
      requiredLimits: {
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      },
    });
  })();
  return devicePromise;
}

function limitsOf(dev: GPUDevice): MatmulLimits {
  return {
    maxComputeWorkgroupStorageSize: dev.limits.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: dev.limits.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupsPerDimension: dev.limits.maxComputeWorkgroupsPerDimension,
    maxComputeWorkgroupSizeX: dev.limits.maxComputeWorkgroupSizeX,
  };
}

/** Dispatches `wgsl` with read-only storage inputs at bindings 0, 1 and a zeroed output at 2. */
async function runKernel(
  dev: GPUDevice,
  kernel: { wgsl: string; entryPoint: string; workgroups: [number, number, number] },
  a: Float32Array<ArrayBuffer>,
  b: Float32Array<ArrayBuffer>,
  outLen: number,
): Promise<Float32Array> {
  const make = (data: Float32Array<ArrayBuffer>) => {
    const buf = dev.createBuffer({
      size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
      usage: STORAGE | COPY_DST,
    });
    dev.queue.writeBuffer(buf, 0, data);
    return buf;
  };
  const bufA = make(a), bufB = make(b);
  const outBytes = outLen * 4;
  const bufC = dev.createBuffer({
    size: outBytes,
    usage: STORAGE | COPY_SRC,
  });
  const read = dev.createBuffer({
    size: outBytes,
    usage: MAP_READ | COPY_DST,
  });
  dev.pushErrorScope("validation");
  const module = dev.createShaderModule({ code: kernel.wgsl });
  const pipeline = await dev.createComputePipelineAsync({
    layout: "auto",
    compute: { module, entryPoint: kernel.entryPoint },
  });
  const bind = dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [bufA, bufB, bufC].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(...kernel.workgroups);
  pass.end();
  enc.copyBufferToBuffer(bufC, 0, read, 0, outBytes);
  dev.queue.submit([enc.finish()]);
  const err = await dev.popErrorScope();
  if (err) throw new Error(`WebGPU validation: ${err.message}\n${kernel.wgsl}`);
  await read.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(read.getMappedRange().slice(0));
  read.unmap();
  for (const buf of [bufA, bufB, bufC, read]) buf.destroy();
  return out;
}

/** Element strides of an operand: A uses (batch, m, k), B uses (batch, k, n). */
interface Layout {
  offset: number;
  batchStride: number;
  s1: number;
  s2: number;
  /** Elements the backing array needs. */
  length: number;
}

/** Row-major [batch, d1, d2] or its transpose in the last two dims, with an offset/padding. */
function layout(
  batch: number,
  d1: number,
  d2: number,
  opts: { transposed?: boolean; offset?: number; broadcast?: boolean; pad?: number } = {},
): Layout {
  const offset = opts.offset ?? 0, pad = opts.pad ?? 0;
  const [s1, s2] = opts.transposed ? [1, d1 + pad] : [d2 + pad, 1];
  const mat = opts.transposed ? (d1 + pad) * d2 : d1 * (d2 + pad);
  const batchStride = opts.broadcast ? 0 : mat;
  return { offset, batchStride, s1, s2, length: offset + (opts.broadcast ? 1 : batch) * mat };
}

function randomArray(n: number): Float32Array<ArrayBuffer> {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.random() * 2 - 1;
  return x;
}

interface Case {
  batch: number;
  M: number;
  N: number;
  K: number;
  la: Layout;
  lb: Layout;
  /** Use aDirect / bDirect instead of the hooks. */
  directA?: boolean;
  directB?: boolean;
  tile?: MatmulTile;
  /** Overrides the grid-dimension limit (to force folding into y/z). */
  maxDim?: number;
  /** A fused epilogue: C = relu(acc) * 2 + 1 (checked by the reference too). */
  epilogue?: boolean;
}

/** Emits, runs and checks one case; returns the kernel for further assertions. */
async function check(c: Case): Promise<ReturnType<typeof emitMatmul>> {
  const dev = await device();
  const { batch, M, N, K, la, lb } = c;
  const a = randomArray(la.length), b = randomArray(lb.length);
  const idxA = (bi: number, m: number, k: number) =>
    la.offset + bi * la.batchStride + m * la.s1 + k * la.s2;
  const idxB = (bi: number, k: number, n: number) =>
    lb.offset + bi * lb.batchStride + k * lb.s1 + n * lb.s2;
  const decl = [
    c.directA ? "" : "@group(0) @binding(0) var<storage, read> a_in: array<f32>;",
    c.directB ? "" : "@group(0) @binding(1) var<storage, read> b_in: array<f32>;",
    "@group(0) @binding(2) var<storage, read_write> c_out: array<f32>;",
  ].join("\n");
  const aDirect: MatmulDirectA = {
    binding: 0,
    offset: la.offset,
    batchStride: la.batchStride,
    mStride: la.s1,
    kStride: la.s2,
  };
  const bDirect: MatmulDirectB = {
    binding: 1,
    offset: lb.offset,
    batchStride: lb.batchStride,
    kStride: lb.s1,
    nStride: lb.s2,
  };
  const spec: MatmulKernelSpec = {
    name: "matmul_test",
    batch,
    M,
    N,
    K,
    declarations: decl,
    loadA: `return a_in[${la.offset}u + bi * ${la.batchStride}u + m * ${la.s1}u + k * ${la.s2}u];`,
    loadB: `return b_in[${lb.offset}u + bi * ${lb.batchStride}u + k * ${lb.s1}u + n * ${lb.s2}u];`,
    storeC: c.epilogue
      ? `c_out[(bi * ${M}u + m) * ${N}u + n] = max(acc, 0.0) * 2.0 + 1.0;`
      : `c_out[(bi * ${M}u + m) * ${N}u + n] = acc;`,
    aDirect: c.directA ? aDirect : undefined,
    bDirect: c.directB ? bDirect : undefined,
    tile: c.tile,
  };
  const limits = limitsOf(dev);
  if (c.maxDim) limits.maxComputeWorkgroupsPerDimension = c.maxDim;
  const kernel = emitMatmul(spec, limits);
  const out = await runKernel(dev, kernel, a, b, batch * M * N);
  let worst = 0;
  for (let bi = 0; bi < batch; bi++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let sum = 0, mag = 0;
        for (let k = 0; k < K; k++) {
          const p = a[idxA(bi, m, k)] * b[idxB(bi, k, n)];
          sum += p;
          mag += Math.abs(p);
        }
        const want = c.epilogue ? Math.max(sum, 0) * 2 + 1 : sum;
        const scale = c.epilogue ? 2 * mag + 1 : mag;
        const err = Math.abs(out[(bi * M + m) * N + n] - want) / (scale + 1e-30);
        worst = Math.max(worst, Number.isNaN(err) ? Infinity : err);
      }
    }
  }
  assert.ok(
    worst <= 1e-4,
    `batch ${batch} M ${M} N ${N} K ${K} tile ${JSON.stringify(kernel.tile)} loads ` +
      `${JSON.stringify(kernel.loads)}: relative error ${worst}`,
  );
  return kernel;
}

/** Shorthand for a case with row-major operands. */
function rowMajor(batch: number, M: number, N: number, K: number): Case {
  return { batch, M, N, K, la: layout(batch, M, K), lb: layout(batch, K, N) };
}

Deno.test("hooks: awkward shapes with the default tile", async () => {
  for (const [batch, M, N, K] of [[3, 37, 19, 129], [1, 1, 33, 70], [2, 45, 1, 9], [2, 5, 7, 1]]) {
    await check(rowMajor(batch, M, N, K));
  }
});

Deno.test("hooks: several tiles with remainders in every dim and a fused epilogue", async () => {
  const c = rowMajor(2, 150, 133, 37);
  await check({ ...c, tile: MATMUL_TILES.t64x128k8, epilogue: true });
});

Deno.test("direct vec4 paths: row-major, transposed, offset and broadcast operands", async () => {
  const [batch, M, N, K] = [2, 68, 44, 40];
  const variants: [Layout, Layout, string][] = [
    [layout(batch, M, K), layout(batch, K, N), "vec4/vec4"],
    [
      layout(batch, M, K, { transposed: true }),
      layout(batch, K, N, { transposed: true }),
      "vec4/vec4",
    ],
    [
      layout(batch, M, K, { offset: 8, pad: 4 }),
      layout(batch, K, N, { broadcast: true }),
      "vec4/vec4",
    ],
  ];
  for (const [la, lb, want] of variants) {
    const k = await check({ batch, M, N, K, la, lb, directA: true, directB: true });
    assert.equal(`${k.loads.a}/${k.loads.b}`, want);
  }
});

Deno.test("direct scalar paths: unaligned offsets, odd sizes and no unit stride", async () => {
  const [batch, M, N, K] = [3, 37, 19, 129];
  const variants: [Layout, Layout][] = [
    [layout(batch, M, K, { offset: 3 }), layout(batch, K, N, { offset: 1 })],
    [layout(batch, M, K, { transposed: true }), layout(batch, K, N, { transposed: true, pad: 1 })],
    [
      { offset: 0, batchStride: M * K * 2, s1: K * 2, s2: 2, length: batch * M * K * 2 },
      { offset: 5, batchStride: 0, s1: N * 3, s2: 3, length: 5 + K * N * 3 },
    ],
  ];
  for (const [la, lb] of variants) {
    const k = await check({ batch, M, N, K, la, lb, directA: true, directB: true });
    assert.equal(`${k.loads.a}/${k.loads.b}`, "scalar/scalar");
  }
});

Deno.test("decode and degenerate shapes: M = 1, N = 1, K = 1 on both paths", async () => {
  for (
    const [batch, M, N, K] of [[1, 1, 72, 256], [2, 1, 40, 33], [1, 64, 1, 100], [3, 9, 12, 1]]
  ) {
    await check(rowMajor(batch, M, N, K));
    const la = layout(batch, M, K), lb = layout(batch, K, N);
    await check({ batch, M, N, K, la, lb, directA: true, directB: true });
  }
});

Deno.test("every shipped tile config, forced, on a shape above one tile", async () => {
  const dev = await device();
  const limits = limitsOf(dev);
  const fitsHere = (tile: MatmulTile) => {
    try {
      emitMatmul({ ...rowMajor(1, 4, 4, 4), ...hookSpec(4, 4, 4), tile }, limits);
      return true;
    } catch (e) {
      if (/workgroup memory/.test((e as Error).message)) return false;
      throw e;
    }
  };
  for (const shipped of Object.values(MATMUL_TILES)) {
    // A config over this adapter's workgroup memory (32 KiB on lavapipe, 48 KiB on the H100) is
    // run with one stage, then with a halved K slice: the same emitter paths at a smaller size.
    let tile: MatmulTile = shipped;
    if (!fitsHere(tile)) tile = { ...tile, stages: 1 };
    while (!fitsHere(tile)) tile = { ...tile, tileK: tile.tileK / 2 };
    const M = tile.tileM + 3, N = tile.tileN + 5, K = tile.tileK * 2 + 3;
    await check({ ...rowMajor(2, M, N, K), tile });
    const la = layout(2, M, K + 1), lb = layout(2, K, N + 3);
    await check({ batch: 2, M, N, K, la, lb, directA: true, directB: true, tile });
  }
});

/** Minimal hook bodies for emit-only checks. */
function hookSpec(M: number, N: number, K: number): MatmulKernelSpec {
  return {
    name: "probe",
    batch: 1,
    M,
    N,
    K,
    declarations: "",
    loadA: "return 0.0;",
    loadB: "return 0.0;",
    storeC: "",
  };
}

Deno.test("K slice counts 1 to 5 (odd and even) with one and two stages", async () => {
  for (const stages of [1, 2] as const) {
    for (const K of [5, 20, 33, 64, 80]) {
      const tile: MatmulTile = { tileM: 32, tileN: 32, tileK: 16, threadM: 2, threadN: 2, stages };
      await check({ ...rowMajor(1, 21, 30, K), tile });
    }
  }
});

Deno.test("grid folds into y and z under a small per-dimension limit", async () => {
  const c = rowMajor(5, 70, 40, 12);
  const k = await check({ ...c, tile: MATMUL_TILES.t32x32k32s4, maxDim: 4 });
  assert.ok(k.workgroups[1] > 1 && k.workgroups[2] > 1);
  assert.ok(k.workgroups.every((w) => w <= 4));
});

Deno.test("grouped tile order (groupM) covers every tile, including a short last group", async () => {
  await check({ ...rowMajor(2, 150, 100, 20), tile: { ...MATMUL_TILES.t64x64k16, groupM: 2 } });
});

Deno.test("tile selection fits the limits and adapts to skinny shapes", () => {
  const limits: MatmulLimits = {
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupsPerDimension: 65535,
  };
  const big = selectMatmulTile({ batch: 1, M: 4096, N: 4096, K: 4096 }, limits);
  assert.ok(big.tileM >= 64 && big.tileN >= 64);
  const decode = selectMatmulTile({ batch: 1, M: 1, N: 4096, K: 4096 }, limits);
  assert.ok(decode.tileM <= 4, `decode tile ${JSON.stringify(decode)}`);
  const tinyK = selectMatmulTile({ batch: 1, M: 512, N: 512, K: 3 }, limits);
  assert.equal(tinyK.tileK, 4);
});

Deno.test("bad input gets a clear error", () => {
  const limits: MatmulLimits = {
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupsPerDimension: 65535,
  };
  const spec: MatmulKernelSpec = {
    name: "main",
    batch: 1,
    M: 4,
    N: 4,
    K: 4,
    declarations: "",
    loadA: "return 0.0;",
    loadB: "return 0.0;",
    storeC: "",
  };
  assert.throws(() => emitMatmul({ ...spec, M: 0 }, limits), /M must be an integer ≥ 1/);
  assert.throws(() => emitMatmul({ ...spec, K: 2.5 }, limits), /K must be an integer/);
  assert.throws(() => emitMatmul({ ...spec, name: "9x" }, limits), /not a WGSL identifier/);
  assert.throws(() => emitMatmul({ ...spec, loadA: undefined }, limits), /loadA is required/);
  assert.throws(
    () => emitMatmul({ ...spec, tile: MATMUL_TILES.t128x128k32 }, limits),
    /bytes of workgroup memory, the limit is 16384/,
  );
  assert.throws(
    () => emitMatmul({ ...spec, tile: { ...MATMUL_TILES.t64x64k16, threadM: 1 } }, limits),
    /threads per workgroup, the limit is 256/,
  );
  assert.throws(
    () => emitMatmul({ ...spec, tile: { ...MATMUL_TILES.t64x64k16, threadM: 3 } }, limits),
    /must divide tileM/,
  );
  assert.throws(
    () =>
      emitMatmul({ ...spec, M: 4096, N: 4096 }, { ...limits, maxComputeWorkgroupsPerDimension: 4 }),
    /exceed the grid limit/,
  );
});
