"""Peer timings for bench/delta_bench.ts: flash-linear-attention's Triton chunk_gated_delta_rule
(the Gated DeltaNet forward) on the same shapes, f32 and bf16, CUDA events (median of 20 after
5 warm-up runs). Inputs as the ssmkit bench: k L2-normalized, beta in (0, 1), g = log alpha < 0,
scale 1/sqrt(D), no initial state. Prints one JSON object per line.

Triton computes an f32 `tl.dot` in TF32 on tensor cores unless told otherwise: the "f32" rows
are that default; `--f32-dot ieee` sets TRITON_F32_DEFAULT=ieee (before Triton is imported) and
times f32 only, as "f32_ieee", with full-precision products like ssmkit's.

    PYTHONPATH=.peer python3 bench/delta_peer.py [--shapes 1x8192x32x128,8x2048x16x64]
"""

import json

from fla_peer_args import peer_args, peer_dtypes

args = peer_args()  # before torch: it may set Triton's f32 dot precision

import torch  # noqa: E402

from fla.ops.gated_delta_rule import chunk_gated_delta_rule
from cuda_timing import cuda_time_ms as timed
from gated_delta_inputs import gated_delta_inputs

torch.backends.cuda.matmul.allow_tf32 = False


for text in args.shapes.split(","):
    (B, T, H, D), (q, k, v, beta, g) = gated_delta_inputs(text)
    for dtype, name in peer_dtypes(args):
        args_ = [x.to(dtype) for x in (q, k, v)]
        # g stays f32 (FLA's convention for the cumulative log-decays); beta follows the inputs.
        fn = lambda: chunk_gated_delta_rule(*args_, g, beta.to(dtype), scale=D ** -0.5)
        row = {"bench": "fla_chunk_gated_delta_rule", "shape": {"b": B, "t": T, "h": H, "d": D},
               "dtype": name, "device": torch.cuda.get_device_name()}
        try:
            with torch.no_grad():
                row["ms"] = timed(fn)
        except Exception as e:  # one failing dtype must not hide the other's timing
            row["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(row), flush=True)
