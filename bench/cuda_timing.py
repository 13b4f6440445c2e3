"""CUDA-event timing shared by the torch anchors and peer timers in bench/ (median of runs)."""

import statistics

import torch


def cuda_time_ms(fn, warmup=5, iters=20):
    """Median milliseconds of `fn()` over `iters` runs after `warmup` runs, by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
