"""The Gated DeltaNet inputs the FLA peers time (bench/delta_peer.py, bench/delta_grad_peer.py),
as bench/delta_bench.ts draws its own: k L2-normalized, beta in (0, 1), g = log alpha < 0."""

import torch
import torch.nn.functional as F


def gated_delta_inputs(shape):
    """(B, T, H, D) and q, k, v, beta, g on the GPU for a shape "BxTxHxD", seeded."""
    B, T, H, D = (int(x) for x in shape.split("x"))
    torch.manual_seed(0)
    q = torch.rand(B, T, H, D, device="cuda") * 2 - 1
    k = F.normalize(torch.rand(B, T, H, D, device="cuda") * 2 - 1, p=2, dim=-1)
    v = torch.rand(B, T, H, D, device="cuda") * 2 - 1
    beta = torch.rand(B, T, H, device="cuda") * 0.9 + 0.05
    g = -(torch.rand(B, T, H, device="cuda") * 0.3 + 0.001)
    return (B, T, H, D), (q, k, v, beta, g)
