// The selective scan's best WGSL design ("ST" in scan_hand.ts), written in CUDA C++ as a yardstick:
// what the same algorithm reaches when NVIDIA's own compiler sees it (no WGSL bounds clamps, no
// SPIR-V), timed against a copy kernel in the same run. A diagnostic for issue 3, not part of
// ssmkit; built and run on the GPU machine by bench/scan_cuda.sh.
//
//   nvcc -O3 -arch=sm_90 -Xptxas -v -o /tmp/scan_cuda bench/scan_cuda.cu && /tmp/scan_cuda [b]
//
// Shape b×4096×1536, n = 16, f32; inputs in the ranges of bench/scan_inputs.ts (own generator).
// Every kernel's output is checked against a float64 kernel (one thread per channel).
#include <cmath>

#include "cuda_bench.cuh"

constexpr int NL = 4096, ND = 1536, NN = 16;
constexpr float LOG2E = 1.44269504f;

__device__ __forceinline__ float softplus(float v) {
  float e = __expf(v), w = 1.0f + e;
  float r = __logf(w) * e * __frcp_rn(w - 1.0f);
  return v > 20.0f ? v : (w == 1.0f ? e : r);
}
__device__ __forceinline__ float silu(float v) { return v * __frcp_rn(1.0f + __expf(-v)); }

// One lane's R = 16 / L states of B or C, read as one vector.
template <int R>
struct LaneVec;
template <>
struct LaneVec<4> {
  using T = float4;
};
template <>
struct LaneVec<2> {
  using T = float2;
};
template <typename V>
__device__ __forceinline__ float comp(const V& v, int r) {
  return reinterpret_cast<const float*>(&v)[r];
}

// ST: a block holds CH channels × L lanes (16 / L states each) and walks the sequence in T-step
// tiles: stage Δ, Δ·x of the tile's (step, channel) items and the tile's B, C in shared memory,
// barrier, T steps per lane with partial sums C·h to shared memory, barrier, epilogue per item.
// GROUPED (4 lanes only): the step loop in groups of 4 steps, each group's shared reads first,
// then its decay exponentials (independent of h), then the recurrences, then one vector store
// of the 4 partial sums; ptxas keeps source order closely, and otherwise each step's reads wait
// for the last step.
template <int CH, int L, int T, bool GROUPED>
__global__ void __launch_bounds__(CH * L) st_kernel(
    const float* __restrict__ x, const float* __restrict__ dt, const float* __restrict__ z,
    const typename LaneVec<16 / L>::T* __restrict__ Bv,
    const typename LaneVec<16 / L>::T* __restrict__ Cv, const float* __restrict__ A,
    const float* __restrict__ Dv, const float* __restrict__ bias, float* __restrict__ y) {
  constexpr int R = 16 / L, WG = CH * L, E = T / L, NT = NL / T, G = 4;
  using V = typename LaneVec<R>::T;
  static_assert(T * L <= WG, "one vector of B and C per thread and tile");
  static_assert(!GROUPED || (L == 4 && T % G == 0), "groups of 4 steps need 4 lanes");
  __shared__ float2 sD[T][CH];
  __shared__ V sB[T][L], sC[T][L];
  // Partial sums of (step, thread): [step][thread], or grouped [step / 4][thread][step % 4]
  // (vector stores: 16-byte aligned; ungrouped keeps 4, as measured: no vector loads of it).
  __shared__ alignas(GROUPED ? 16 : 4) float yP[T * WG];
  const int lid = threadIdx.x, c0 = blockIdx.x * CH, b = c0 / ND, d0 = c0 % ND;
  const int cl = lid / L, j = lid % L, cs = lid % CH, ts0 = lid / CH;
  float a[R], h[R];
  for (int r = 0; r < R; r++) a[r] = A[(d0 + cl) * NN + j * R + r] * LOG2E, h[r] = 0;
  const size_t xb = (size_t)b * NL * ND + d0 + cs;
  const size_t bb = (size_t)b * NL * L;
  const float ds = Dv[d0 + cs], bs = bias[d0 + cs];
  const bool bcLoader = lid < T * L;
  float cx[E], cdt[E], cz[E], nx[E], ndt[E], nz[E];
  V cB = {}, cC = {}, nB = {}, nC = {};
  for (int i = 0; i < E; i++) {
    size_t at = xb + (size_t)(ts0 + i * L) * ND;
    cx[i] = x[at], cdt[i] = dt[at], cz[i] = z[at];
  }
  if (bcLoader) cB = Bv[bb + lid], cC = Cv[bb + lid];
  for (int k = 0; k < NT; k++) {
    const int kn = min(k + 1, NT - 1);
    for (int i = 0; i < E; i++) {
      size_t at = xb + (size_t)(kn * T + ts0 + i * L) * ND;
      nx[i] = x[at], ndt[i] = dt[at], nz[i] = z[at];
    }
    if (bcLoader) nB = Bv[bb + kn * T * L + lid], nC = Cv[bb + kn * T * L + lid];
    for (int i = 0; i < E; i++) {
      float dl = softplus(cdt[i] + bs);
      sD[ts0 + i * L][cs] = make_float2(dl, dl * cx[i]);
    }
    if (bcLoader) sB[lid / L][lid % L] = cB, sC[lid / L][lid % L] = cC;
    __syncthreads();
    if constexpr (GROUPED) {
#pragma unroll
      for (int g = 0; g < T / G; g++) {
        float2 dv[G];
        float4 bv[G], cv[G];
        float e[G][4], yp[G];
#pragma unroll
        for (int s = 0; s < G; s++) dv[s] = sD[g * G + s][cl], bv[s] = sB[g * G + s][j];
#pragma unroll
        for (int s = 0; s < G; s++) cv[s] = sC[g * G + s][j];
#pragma unroll
        for (int s = 0; s < G; s++)
#pragma unroll
          for (int r = 0; r < 4; r++) e[s][r] = exp2f(dv[s].x * a[r]);
#pragma unroll
        for (int s = 0; s < G; s++) {
#pragma unroll
          for (int r = 0; r < 4; r++) h[r] = e[s][r] * h[r] + dv[s].y * comp(bv[s], r);
          yp[s] = cv[s].x * h[0] + cv[s].y * h[1] + cv[s].z * h[2] + cv[s].w * h[3];
        }
        reinterpret_cast<float4*>(yP)[g * WG + lid] = make_float4(yp[0], yp[1], yp[2], yp[3]);
      }
    } else {
#pragma unroll
      for (int u = 0; u < T; u++) {
        float2 dv = sD[u][cl];
        V bv = sB[u][j], cv = sC[u][j];
#pragma unroll
        for (int r = 0; r < R; r++) h[r] = exp2f(dv.x * a[r]) * h[r] + dv.y * comp(bv, r);
        float acc = comp(cv, 0) * h[0];
#pragma unroll
        for (int r = 1; r < R; r++) acc += comp(cv, r) * h[r];
        yP[u * WG + lid] = acc;
      }
    }
    __syncthreads();
    for (int i = 0; i < E; i++) {
      const int step = ts0 + i * L;
      // The item's L partial sums, `stride` apart.
      const int stride = GROUPED ? G : 1;
      const float* p = GROUPED ? yP + ((step / G) * WG + cs * L) * G + step % G
                               : yP + step * WG + cs * L;
      float s;
      if constexpr (L == 8) {
        s = ((p[0] + p[stride]) + (p[2 * stride] + p[3 * stride])) +
            ((p[4 * stride] + p[5 * stride]) + (p[6 * stride] + p[7 * stride]));
      } else {
        s = p[0];
        for (int jj = 1; jj < L; jj++) s += p[jj * stride];
      }
      y[xb + (size_t)(k * T + step) * ND] = (s + ds * cx[i]) * silu(cz[i]);
    }
    for (int i = 0; i < E; i++) cx[i] = nx[i], cdt[i] = ndt[i], cz[i] = nz[i];
    cB = nB, cC = nC;
  }
}

// The float64 reference: one thread per channel, all 16 states.
__global__ void ref_kernel(const float* x, const float* dt, const float* z, const float* B,
                           const float* C, const float* A, const float* Dv, const float* bias,
                           float* y, int nb) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= nb * ND) return;
  int b = c / ND, d = c % ND;
  double h[NN] = {};
  for (int t = 0; t < NL; t++) {
    size_t at = ((size_t)b * NL + t) * ND + d;
    double v = (double)dt[at] + bias[d];
    double dl = v > 20 ? v : log1p(exp(v));
    double acc = 0;
    for (int n = 0; n < NN; n++) {
      size_t bn = ((size_t)b * NL + t) * NN + n;
      h[n] = exp(dl * A[d * NN + n]) * h[n] + dl * B[bn] * x[at];
      acc += C[bn] * h[n];
    }
    double zz = z[at];
    y[at] = (float)((acc + Dv[d] * x[at]) * zz / (1 + exp(-zz)));
  }
}

// One ST kernel over nb batches: CH channels × L lanes per block.
template <int CH, int L, int T, bool GROUPED>
static void launchSt(int nb, const float* x, const float* dt, const float* z, const float* B,
                     const float* C, const float* A, const float* Dv, const float* bias,
                     float* y) {
  using V = typename LaneVec<16 / L>::T;
  st_kernel<CH, L, T, GROUPED><<<nb * ND / CH, CH * L>>>(x, dt, z, (const V*)B, (const V*)C, A,
                                                        Dv, bias, y);
}

int main(int argc, char** argv) {
  const int nb = argc > 1 ? atoi(argv[1]) : 8;
  const size_t nx = (size_t)nb * NL * ND;
  const HostScanInputs in(nb, NL, ND, NN);
  float *x = upload(in.x), *dt = upload(in.dt), *z = upload(in.z), *B = upload(in.B),
        *C = upload(in.C), *A = upload(in.A), *Dv = upload(in.D), *bias = upload(in.bias);
  float *y, *yref;
  CHECK(cudaMalloc(&y, nx * 4));
  CHECK(cudaMalloc(&yref, nx * 4));
  ref_kernel<<<(nb * ND + 127) / 128, 128>>>(x, dt, z, B, C, A, Dv, bias, yref, nb);
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ref(nx), out(nx);
  CHECK(cudaMemcpy(ref.data(), yref, nx * 4, cudaMemcpyDeviceToHost));

  const double copyGBps = copyAnchorGBps();
  const double bytes = scanBytes(nb, NL, ND, NN);

  auto report = [&](const char* name, float ms) {
    CHECK(cudaMemcpy(out.data(), y, nx * 4, cudaMemcpyDeviceToHost));
    double diff = 0, norm = 0;
    for (size_t i = 0; i < nx; i += 7) {
      double e = out[i] - ref[i];
      diff += e * e, norm += (double)ref[i] * ref[i];
    }
    double gbps = bytes / ms / 1e6;
    printf("{\"bench\":\"cuda_scan\",\"name\":\"%s\",\"b\":%d,\"ms\":%.4f,\"GBps\":%.1f,"
           "\"fracCopy\":%.4f,\"relL2\":%.3g}\n",
           name, nb, ms, gbps, gbps / copyGBps, sqrt(diff / norm));
  };
  auto run = [&](const char* name, auto launch) {
    report(name, timeMs([&] { launch(nb, x, dt, z, B, C, A, Dv, bias, y); }, 20));
  };
  run("ST_CH16_T16", launchSt<16, 4, 16, false>);
  run("ST_CH32_T16", launchSt<32, 4, 16, false>);
  run("ST_CH32_T32", launchSt<32, 4, 32, false>);
  run("ST_CH64_T16", launchSt<64, 4, 16, false>);
  run("ST8_CH16_T16", launchSt<16, 8, 16, false>);
  run("ST8_CH32_T16", launchSt<32, 8, 16, false>);
  run("ST8_CH32_T32", launchSt<32, 8, 32, false>);
  run("STG4_CH16_T16", launchSt<16, 4, 16, true>);
  run("STG4_CH32_T16", launchSt<32, 4, 16, true>);
  run("STG4_CH32_T32", launchSt<32, 4, 32, true>);
  CHECK(cudaGetLastError());
  return 0;
}
