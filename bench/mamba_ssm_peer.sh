#!/usr/bin/env bash
# Builds bench/mamba_ssm_peer.cu against a checkout of state-spaces/mamba (not part of this
# repository: pass its root, e.g. a copy carried to the GPU machine) with the peer's own nvcc
# flags (its setup.py: -O3, --use_fast_math, …) and torch's headers and c10 libraries, then times
# the peer's selective-scan forward kernel at batch 8 and 4 (JSON lines; logs in $OUT).
#   bench/mamba_ssm_peer.sh /path/to/mamba
# On the device machine (no network): keep the checkout's csrc/selective_scan under .peer/mamba
# (git-ignored) and run with `carry: [".gpu", ".peer"]`: bench/mamba_ssm_peer.sh .peer/mamba
set -euo pipefail
mamba="${1:?usage: bench/mamba_ssm_peer.sh /path/to/state-spaces/mamba}"
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/mamba_ssm_peer}"
mkdir -p "$out"
torch_dir="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
# The peer checks its launches with c10's macros; ours (found first) avoid linking c10's CUDA
# library, which may be built for another CUDA runtime than this nvcc's.
mkdir -p "$out/shim/c10/cuda"
cat > "$out/shim/c10/cuda/CUDAException.h" <<'H'
#pragma once
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#define C10_CUDA_CHECK(expr)                                              \
  do {                                                                    \
    cudaError_t e_ = (expr);                                              \
    if (e_ != cudaSuccess) {                                              \
      fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e_));        \
      abort();                                                            \
    }                                                                     \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
H
nvcc -O3 -std=c++17 -arch=sm_90 --use_fast_math --expt-relaxed-constexpr --expt-extended-lambda \
  -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__ \
  -U__CUDA_NO_BFLOAT16_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  -I "$out/shim" -I "$mamba/csrc/selective_scan" -I "$torch_dir/include" \
  -L "$torch_dir/lib" -lc10 -Xlinker -rpath="$torch_dir/lib" \
  -o "$out/mamba_ssm_peer" bench/mamba_ssm_peer.cu > "$out/build.log" 2>&1 ||
  { tail -40 "$out/build.log"; exit 1; }
for b in 8 4; do "$out/mamba_ssm_peer" "$b"; done | tee "$out/peer.log"
