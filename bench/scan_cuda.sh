#!/usr/bin/env bash
# Builds and runs bench/scan_cuda.cu on the GPU machine (nvcc there): register and spill report
# from ptxas, then the CUDA yardstick for the scan design ST at batch 8 and 4.
#   bench/scan_cuda.sh          # logs in $OUT (or /tmp/scan_cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/scan_cuda}"
mkdir -p "$out"
nvcc -O3 -arch=sm_90 -Xptxas -v -o "$out/scan_cuda" bench/scan_cuda.cu > "$out/ptxas.log" 2>&1
grep -E "Compiling|registers|spill" "$out/ptxas.log" | sed 's/^ptxas info *: //' || true
nvcc -O3 -arch=sm_90 -use_fast_math -o "$out/scan_cuda_fm" bench/scan_cuda.cu
for b in 8 4; do "$out/scan_cuda" "$b"; done | tee "$out/cuda.log"
echo "with -use_fast_math (exp2 without the denormal range fix-up):"
"$out/scan_cuda_fm" 8 | tee "$out/cuda_fm.log"
# Opcode histogram of the CH16/T16 kernel (the machine code the WGSL path hides from us).
cuobjdump --dump-sass "$out/scan_cuda" > "$out/scan_cuda.sass" 2>&1 || true
python3 - "$out/scan_cuda.sass" <<'PY' || true
import re, sys, collections
fun, counts = None, collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m: fun = m.group(1)
    m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
    if m and fun: counts[fun][m.group(1)] += 1
for f, c in counts.items():
    if "st_kernel" in f:
        print(f, sum(c.values()), dict(c.most_common(24)))
PY
