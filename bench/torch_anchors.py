"""Torch anchors for ssmkit benchmarks, timed on the same GPU in the same run.

Prints one JSON object per line: {"anchor": name, ...}. Times with CUDA events, median of
repeated runs after warm-up. Run: python3 bench/torch_anchors.py [--only NAME,...]
"""

import argparse
import json

import torch
from cuda_timing import cuda_time_ms


def copy_bandwidth():
    n = 256 * 1024 * 1024 // 4
    src = torch.rand(n, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), warmup=5, iters=30)
    return {"anchor": "torch_copy_256MiB", "ms": ms, "GBps": 2 * n * 4 / ms / 1e6}


def matmul_f32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n = 4096
    a = torch.rand(n, n, device="cuda")
    b = torch.rand(n, n, device="cuda")
    ms = cuda_time_ms(lambda: a @ b, warmup=5, iters=20)
    return {"anchor": "torch_matmul_f32_4096", "ms": ms, "TFLOPs": 2 * n**3 / ms / 1e9}


def hf_selective_scan(b=8, l=4096, d=1536, n=16):
    """The selective scan of HF transformers' Mamba torch path (MambaMixer.slow_forward),
    on the same shapes: discretize, a Python loop over time, D skip and SiLU gate."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(b, d, l, device="cuda", generator=g)
    dt = torch.rand(b, d, l, device="cuda", generator=g) * 0.1
    z = torch.randn(b, d, l, device="cuda", generator=g)
    B = torch.randn(b, l, n, device="cuda", generator=g)
    C = torch.randn(b, l, n, device="cuda", generator=g)
    A = -torch.rand(d, n, device="cuda", generator=g) - 0.5
    D = torch.randn(d, device="cuda", generator=g)

    def run():
        # Lines as in transformers' MambaMixer.slow_forward (section 3.c and 3.d).
        discrete_A = torch.exp(A[None, :, None, :] * dt[:, :, :, None])
        deltaB_u = dt[:, :, :, None] * B[:, None, :, :].float()
        deltaB_u = deltaB_u * x[:, :, :, None].float()
        ssm_state = torch.zeros(b, d, n, device="cuda")
        outs = []
        for i in range(l):
            ssm_state = discrete_A[:, :, i, :] * ssm_state + deltaB_u[:, :, i, :]
            outs.append(torch.matmul(ssm_state, C[:, i, :].unsqueeze(-1))[:, :, 0])
        y = torch.stack(outs, dim=-1)
        y = y + x * D[None, :, None]
        return y * torch.nn.functional.silu(z)

    ms = cuda_time_ms(run, warmup=1, iters=3)
    return {"anchor": "hf_torch_selective_scan", "shape": [b, l, d, n], "ms": ms}


ANCHORS = {"copy": copy_bandwidth, "matmul": matmul_f32, "scan": hf_selective_scan}

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(ANCHORS))
    args = parser.parse_args()
    print(json.dumps({"anchor": "device", "name": torch.cuda.get_device_name(0),
                      "torch": torch.__version__}), flush=True)
    for name in args.only.split(","):
        print(json.dumps(ANCHORS[name]()), flush=True)
        torch.cuda.empty_cache()
