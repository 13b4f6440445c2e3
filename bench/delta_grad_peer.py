"""Peer timings for bench/delta_grad_bench.ts: flash-linear-attention's Triton
chunk_gated_delta_rule forward and backward through autograd (the loss Σ o·w, gradients of q, k,
v, beta and g), f32 (Triton's default TF32 dots) and bf16, CUDA events (median of 20 after 5
warm-up runs). Inputs as delta_peer.py's. Prints one JSON object per line.

    PYTHONPATH=.peer:bench python3 bench/delta_grad_peer.py [--shapes 8x2048x16x64]
"""

import json

from fla_peer_args import peer_args, peer_dtypes

args = peer_args()  # before torch: it may set Triton's f32 dot precision

import torch  # noqa: E402

from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: E402
from cuda_timing import cuda_time_ms as timed  # noqa: E402
from gated_delta_inputs import gated_delta_inputs  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False

for text in args.shapes.split(","):
    (B, T, H, D), (q, k, v, beta, g) = gated_delta_inputs(text)
    w = torch.rand(B, T, H, D, device="cuda") * 2 - 1
    for dtype, name in peer_dtypes(args):
        # g stays f32 (FLA's convention for the cumulative log-decays); beta follows the inputs.
        leaves = [x.to(dtype).detach().requires_grad_(True) for x in (q, k, v, beta)]
        g_leaf = g.detach().requires_grad_(True)

        def step():
            for x in (*leaves, g_leaf):
                x.grad = None
            out = chunk_gated_delta_rule(leaves[0], leaves[1], leaves[2], g_leaf, leaves[3],
                                         scale=D ** -0.5)
            o = out[0] if isinstance(out, tuple) else out
            (o.float() * w).sum().backward()

        row = {"bench": "fla_chunk_gated_delta_rule_fwd_bwd", "shape": {"b": B, "t": T, "h": H, "d": D},
               "dtype": name, "device": torch.cuda.get_device_name()}
        try:
            row["ms"] = timed(step)
        except Exception as e:  # one failing dtype must not hide the other's timing
            row["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(row), flush=True)
