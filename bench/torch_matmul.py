"""Prints torch f32 4096^3 matmul TFLOP/s with TF32 off (CUDA events, median of 20 runs).

The anchor of `deno task bench --only matmul`. The GPU is kept busy for about a second first so
its clocks have ramped up, as the benchmark warms up before it times.
"""
import statistics
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
S = 4096
a = torch.rand(S, S, device="cuda", dtype=torch.float32) * 2 - 1
b = torch.rand(S, S, device="cuda", dtype=torch.float32) * 2 - 1
start_warm = time.perf_counter()
while time.perf_counter() - start_warm < 1.0:
    for _ in range(20):
        torch.matmul(a, b)
    torch.cuda.synchronize()
times = []
for _ in range(20):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.matmul(a, b)
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
t = statistics.median(times)
print(f"torch f32 matmul {S}^3 (tf32 off): {2 * S**3 / t / 1e12:.2f} TFLOP/s, median {t * 1e3:.3f} ms "
      f"({torch.cuda.get_device_name()})")
