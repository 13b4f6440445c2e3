"""Torch anchors of bench/attention_bench.ts: scaled_dot_product_attention, same shapes.

Causal GQA prefill (32 query heads over 8 key/value heads, d = 128, T = 2048 and 8192), decode
of one token against caches of 4K and 32K keys, and forward + backward at T = 2048, in f32 and
bf16. Each SDPA backend
(flash, memory-efficient, cuDNN, math) is timed separately where it runs, so the table says
which kernel the anchor actually was; "default" is torch's own choice. Prints one JSON object
per line (CUDA events, median after warm-up: bench/cuda_timing.py).

Run: python3 bench/attention_torch.py [--cases prefill_2048,decode_4096]
"""

import argparse
import json

import torch
import torch.nn.functional as F
from cuda_timing import cuda_time_ms

CASES = {
    "prefill_2048": (2048, 2048),
    "prefill_8192": (8192, 8192),
    "decode_4096": (1, 4096),
    "decode_32768": (1, 32768),
    # Forward and backward (dq, dk, dv of sum(w * out)), as bench/attention_bench.ts's train_2048.
    "train_2048": (2048, 2048),
}
HEADS, KV_HEADS, D = 32, 8, 128


def sdpa(q, k, v, causal):
    try:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    except TypeError:
        # torch < 2.5: no enable_gqa; repeat the key/value heads (extra traffic, noted in output).
        r = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), is_causal=causal
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    print(json.dumps({"anchor": "device", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}))
    for name in args.cases.split(","):
        t, s = CASES[name]
        # Decode: the one new query sees the whole cache (the causal diagonal is at the end).
        causal = t > 1
        train = name.startswith("train")
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.randn(1, HEADS, t, D, device="cuda", dtype=dtype, requires_grad=train)
            k = torch.randn(1, KV_HEADS, s, D, device="cuda", dtype=dtype, requires_grad=train)
            v = torch.randn(1, KV_HEADS, s, D, device="cuda", dtype=dtype, requires_grad=train)
            w = torch.randn(1, HEADS, t, D, device="cuda", dtype=dtype)
            pairs = t * (s - t) + t * (t + 1) / 2
            flops = 4 * D * HEADS * pairs * (3.5 if train else 1)

            def step():
                if not train:
                    return sdpa(q, k, v, causal)
                return torch.autograd.grad((sdpa(q, k, v, causal) * w).sum(), (q, k, v))

            for label, backend in [("default", None), *backends.items()]:
                row = {"anchor": f"torch_sdpa_{name}", "dtype": str(dtype)[6:], "backend": label}
                try:
                    if backend is None:
                        ms = cuda_time_ms(step)
                    else:
                        with sdpa_kernel(backend):
                            ms = cuda_time_ms(step)
                    row.update(ms=ms, GFLOPs=flops / ms / 1e6, GBps=2 * KV_HEADS * s * D * q.element_size() / ms / 1e6)
                except RuntimeError as e:
                    row["error"] = str(e).splitlines()[0][:160]
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
