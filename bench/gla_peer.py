"""Peer timings for bench/gla_bench.ts: flash-linear-attention's Triton chunk_gla (vector gate
over the key dimension) and chunk_simple_gla (scalar gate per head, the RetNet/Mamba-2 form) on
the same shapes, f32 and bf16, CUDA events (median of 20 after 5 warm-up runs). Inputs as the
ssmkit bench: q, k, v uniform in [-1, 1), log-gates g in [-0.3, -0.001) per head and gk in
[-0.1, -0.001) per key, scale 1/sqrt(D), no initial state. One JSON object per line.

Triton computes an f32 `tl.dot` in TF32 on tensor cores unless told otherwise: the "f32" rows
are that default; `--f32-dot ieee` sets TRITON_F32_DEFAULT=ieee (before Triton is imported) and
times f32 only, as "f32_ieee", with full-precision products like ssmkit's.

    PYTHONPATH=.peer python3 bench/gla_peer.py [--shapes 1x8192x32x128,8x2048x16x64]
"""

import json

from fla_peer_args import peer_args, peer_dtypes

args = peer_args()  # before torch: it may set Triton's f32 dot precision

import torch  # noqa: E402

from fla.ops.gla import chunk_gla
from fla.ops.simple_gla import chunk_simple_gla
from cuda_timing import cuda_time_ms as timed

torch.backends.cuda.matmul.allow_tf32 = False

for text in args.shapes.split(","):
    B, T, H, D = (int(x) for x in text.split("x"))
    torch.manual_seed(0)
    q, k, v = (torch.rand(B, T, H, D, device="cuda") * 2 - 1 for _ in range(3))
    g = -(torch.rand(B, T, H, device="cuda") * 0.299 + 0.001)
    gk = -(torch.rand(B, T, H, D, device="cuda") * 0.099 + 0.001)
    for dtype, name in peer_dtypes(args):
        qd, kd, vd = (x.to(dtype) for x in (q, k, v))
        # The log-gates stay f32 (FLA accumulates them in f32 whatever the inputs' dtype).
        cases = {
            "gla": lambda: chunk_gla(qd, kd, vd, gk, scale=D ** -0.5),
            "simple_gla": lambda: chunk_simple_gla(qd, kd, vd, g, scale=D ** -0.5),
        }
        for layer, fn in cases.items():
            row = {"bench": f"fla_chunk_{layer}", "layer": layer,
                   "shape": {"b": B, "t": T, "h": H, "d": D}, "dtype": name,
                   "device": torch.cuda.get_device_name()}
            try:
                with torch.no_grad():
                    row["ms"] = timed(fn)
            except Exception as e:  # one failing case must not hide the others' timings
                row["error"] = f"{type(e).__name__}: {e}"
            print(json.dumps(row), flush=True)
