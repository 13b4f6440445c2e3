// The strongest peer for issue 3: the selective-scan forward kernel of state-spaces/mamba
// (mamba_ssm's `selective_scan_cuda`, the kernel behind `selective_scan_fn`), timed on the
// benchmark shape against a copy kernel in the same process. Only this harness is ours: the
// peer's source is NOT in this repository; bench/mamba_ssm_peer.sh compiles this file against a
// checkout of it (its csrc/selective_scan folder) with the peer's own nvcc flags.
//
// Shape b×4096×1536, n = 16, f32, in the peer's layout: x, Δ, z, outputs (b, d, l); B, C
// (b, 1, n, l); A (d, n). Inputs in the ranges of bench/scan_inputs.ts. The peer fuses the same
// function as ssmkit's benchmark (softplus(Δ + bias), the scan, C·h + D·x, gating by silu(z));
// it also writes the ungated output and the chunk states for its backward pass. A few channels
// are checked against a float64 loop on the host.
#include <cmath>
#include <cstring>

#include "cuda_bench.cuh"
#include "selective_scan_fwd_kernel.cuh"

constexpr int NL = 4096, ND = 1536, NN = 16;

int main(int argc, char** argv) {
  const int nb = argc > 1 ? atoi(argv[1]) : 8;
  const size_t nx = (size_t)nb * ND * NL;
  // Read in the peer's layout: x, Δ, z as (b, d, l); B, C as (b, 1, n, l).
  const HostScanInputs in(nb, NL, ND, NN);
  const auto &hx = in.x, &hdt = in.dt, &hz = in.z, &hB = in.B, &hC = in.C, &hA = in.A;
  const auto &hD = in.D, &hbias = in.bias;
  float *x = upload(hx), *dt = upload(hdt), *z = upload(hz), *B = upload(hB), *C = upload(hC),
        *A = upload(hA), *Dv = upload(hD), *bias = upload(hbias);
  const int nChunks = (NL + 2047) / 2048;  // the peer's own chunking of long sequences
  float *out, *outZ, *states;
  CHECK(cudaMalloc(&out, nx * 4));
  CHECK(cudaMalloc(&outZ, nx * 4));
  CHECK(cudaMalloc(&states, (size_t)nb * ND * nChunks * NN * 2 * 4));

  SSMParamsBase p;
  memset(&p, 0, sizeof(p));
  p.batch = nb, p.dim = ND, p.seqlen = NL, p.dstate = NN, p.n_groups = 1, p.n_chunks = nChunks;
  p.dim_ngroups_ratio = ND, p.is_variable_B = true, p.is_variable_C = true;
  p.delta_softplus = true;
  p.A_d_stride = NN, p.A_dstate_stride = 1;
  p.B_batch_stride = p.B_group_stride = (uint64_t)NN * NL, p.B_dstate_stride = NL;
  p.C_batch_stride = p.C_group_stride = (uint64_t)NN * NL, p.C_dstate_stride = NL;
  p.u_batch_stride = p.delta_batch_stride = p.z_batch_stride = p.out_batch_stride =
      p.out_z_batch_stride = (uint64_t)ND * NL;
  p.u_d_stride = p.delta_d_stride = p.z_d_stride = p.out_d_stride = p.out_z_d_stride = NL;
  p.A_ptr = A, p.B_ptr = B, p.C_ptr = C, p.D_ptr = Dv, p.u_ptr = x, p.delta_ptr = dt;
  p.delta_bias_ptr = bias, p.out_ptr = out, p.x_ptr = states, p.z_ptr = z, p.out_z_ptr = outZ;

  const double copyGBps = copyAnchorGBps();

  const float ms = timeMs([&] { selective_scan_fwd_cuda<float, float>(p, 0); }, 50);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  // A few whole channels against a float64 loop (softplus, scan, C·h + D·x, silu(z) gate).
  std::vector<float> y(NL);
  double diff = 0, norm = 0;
  const int channels[][2] = {{0, 0}, {0, 777}, {nb / 2, 5}, {nb - 1, ND - 1}};
  for (const auto& bc : channels) {
    const int b = bc[0], d = bc[1];
    const size_t row = ((size_t)b * ND + d) * NL;
    CHECK(cudaMemcpy(y.data(), outZ + row, NL * 4, cudaMemcpyDeviceToHost));
    double h[NN] = {0};
    for (int t = 0; t < NL; t++) {
      double v = (double)hdt[row + t] + hbias[d];
      const double delta = v > 20 ? v : std::log1p(std::exp(v));
      double acc = 0;
      for (int n = 0; n < NN; n++) {
        const size_t bi = ((size_t)b * NN + n) * NL + t;
        h[n] = std::exp(delta * hA[d * NN + n]) * h[n] + delta * hB[bi] * hx[row + t];
        acc += hC[bi] * h[n];
      }
      const double zz = hz[row + t];
      const double want = (acc + hD[d] * hx[row + t]) * zz / (1 + std::exp(-zz));
      diff += (y[t] - want) * (y[t] - want), norm += want * want;
    }
  }
  const double gbps = scanBytes(nb, NL, ND, NN) / ms / 1e6;
  printf("{\"bench\":\"mamba_ssm_selective_scan_fwd\",\"b\":%d,\"ms\":%.4f,\"GBps\":%.1f,"
         "\"fracCopy\":%.4f,\"relL2\":%.3g}\n",
         nb, ms, gbps, gbps / copyGBps, sqrt(diff / norm));
  return 0;
}
