// What the CUDA benchmark bench/mamba_ssm_peer.cu needs: error checks,
// the scan's inputs (in the ranges of bench/scan_inputs.ts, own generator), uploads, CUDA-event timing and the copy anchor. Header-only, for nvcc.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                     \
  do {                                                                               \
    cudaError_t e = (x);                                                             \
    if (e != cudaSuccess) {                                                          \
      fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));     \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

/** n values in [lo, hi) from a linear congruential generator seeded with `seed`. */
static std::vector<float> fill(size_t n, float lo, float hi, unsigned seed) {
  std::vector<float> v(n);
  unsigned s = seed;
  for (auto& e : v) s = s * 1664525u + 1013904223u, e = lo + (hi - lo) * (s / 4294967296.0f);
  return v;
}

/**
 * The selective scan's inputs on the host for nb batches of `len` steps, `dim` channels and
 * `states` states: x, Δ, z (nb·len·dim each), B, C (nb·len·states each), A (dim·states), D and
 * the Δ bias (dim). Only the counts are fixed here; each benchmark reads them in its layout.
 */
struct HostScanInputs {
  std::vector<float> x, dt, z, B, C, A, D, bias;
  HostScanInputs(int nb, int len, int dim, int states)
      : x(fill((size_t)nb * len * dim, -1, 1, 1)),
        dt(fill((size_t)nb * len * dim, -4, -1, 7)),
        z(fill((size_t)nb * len * dim, -1, 1, 11)),
        B(fill((size_t)nb * len * states, -1, 1, 13)),
        C(fill((size_t)nb * len * states, -1, 1, 17)),
        A(fill((size_t)dim * states, -2, -0.2f, 19)),
        D(fill(dim, -1, 1, 23)),
        bias(fill(dim, -0.5f, 0.5f, 29)) {}
};

/**
 * Bytes the scan must move (as scanBenchBytes in bench/scan_inputs.ts): x, Δ, z read and y
 * written, B and C read, A, D and the Δ bias read once.
 */
static double scanBytes(int nb, int len, int dim, int states) {
  const double items = (double)nb * len * dim, perState = (double)nb * len * states;
  return 4.0 * (4.0 * items + 2.0 * perState + (double)dim * states + 2.0 * dim);
}

/** A device copy of `v`. */
static float* upload(const std::vector<float>& v) {
  float* p;
  CHECK(cudaMalloc(&p, v.size() * 4));
  CHECK(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  return p;
}

/** Milliseconds per `launch()`, over `iters` launches after 20 of warm-up (CUDA events). */
template <typename F>
static float timeMs(F launch, int iters) {
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 20; i++) launch();
  CHECK(cudaEventRecord(e0));
  for (int i = 0; i < iters; i++) launch();
  CHECK(cudaEventRecord(e1));
  CHECK(cudaEventSynchronize(e1));
  float ms;
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return ms / iters;
}

__global__ void copy_kernel(const float4* __restrict__ in, float4* __restrict__ out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = in[i];
}

/**
 * The copy anchor: 256 MiB in, 256 MiB out, 50 timed launches; prints its JSON line and
 * returns its bandwidth in GB/s (bytes read plus written). Its buffers are freed.
 */
static double copyAnchorGBps() {
  const size_t cn = 64ull << 20;
  float4 *ci, *co;
  CHECK(cudaMalloc(&ci, cn * 4));
  CHECK(cudaMalloc(&co, cn * 4));
  const float copyMs = timeMs([&] { copy_kernel<<<132 * 16, 256>>>(ci, co, cn / 4); }, 50);
  CHECK(cudaFree(ci));
  CHECK(cudaFree(co));
  const double copyGBps = 2.0 * cn * 4 / copyMs / 1e6;
  printf("{\"bench\":\"cuda_copy\",\"ms\":%.4f,\"GBps\":%.1f}\n", copyMs, copyGBps);
  return copyGBps;
}
