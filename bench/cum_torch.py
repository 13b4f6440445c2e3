"""Torch anchors of bench/cum_bench.ts: torch.cumsum and torch.cummax over one long f32 axis.

Prints one JSON object per line, like bench/torch_anchors.py (CUDA events, median after warm-up).
Bandwidth counts one read and one write of the tensor (cummax also writes its int64 indices;
`GBps_all` counts them). Run: python3 bench/cum_torch.py [--elements N]
"""

import argparse
import json

import torch
from cuda_timing import cuda_time_ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    n = args.elements
    x = torch.rand(n, device="cuda") * 2 - 1
    dst = torch.empty_like(x)
    ms = cuda_time_ms(lambda: dst.copy_(x))
    print(json.dumps({"anchor": "torch_copy", "elements": n, "ms": ms, "GBps": 2 * n * 4 / ms / 1e6}))
    ms = cuda_time_ms(lambda: torch.cumsum(x, 0))
    print(json.dumps({"anchor": "torch_cumsum", "elements": n, "ms": ms, "GBps": 2 * n * 4 / ms / 1e6}))
    ms = cuda_time_ms(lambda: torch.cummax(x, 0))
    print(
        json.dumps(
            {
                "anchor": "torch_cummax",
                "elements": n,
                "ms": ms,
                "GBps": 2 * n * 4 / ms / 1e6,
                "GBps_all": (2 * n * 4 + n * 8) / ms / 1e6,
            }
        )
    )


if __name__ == "__main__":
    main()
