"""Fixtures for tests/delta_fla_test.ts, from flash-linear-attention's torch references
(naive_recurrent_gated_delta_rule, checked against naive_chunk_gated_delta_rule).

Run on the GPU machine (torch, einops installed), from the repository root:
    PYTHONPATH=.peer python3 tests/oracle/gated_delta.py tests/fixtures/gated_delta
Writes one folder per case: `gated` (Gated DeltaNet, log-decays g < 0) and `delta` (DeltaNet,
g = 0), each with float32 .npy files in FLA's layout (q, k [B T H K], v [B T H V], beta, g
[B T H], h0 and the final state hT [B H K V], the output o [B T H V]) and config.json with the
sizes, the scale and the library versions. The references run on the CPU in float32; when CUDA
is there, FLA's Triton chunk_gated_delta_rule is run too and its agreement printed.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import fla
from fla.ops.gated_delta_rule import naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule

root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gated_delta"
B, T, H, K, V = 2, 37, 3, 8, 6
scale = 0.4

for case in ("gated", "delta"):
    out_dir = os.path.join(root, case)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(19 if case == "gated" else 20)
    q = torch.randn(B, T, H, K)
    k = F.normalize(torch.randn(B, T, H, K), p=2, dim=-1)
    v = torch.randn(B, T, H, V)
    beta = torch.sigmoid(torch.randn(B, T, H))
    g = F.logsigmoid(torch.randn(B, T, H) + 2) if case == "gated" else torch.zeros(B, T, H)
    h0 = 0.5 * torch.randn(B, H, K, V)
    o, hT = naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=scale, initial_state=h0,
                                             output_final_state=True)
    oc, hc = naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=16, scale=scale,
                                          initial_state=h0, output_final_state=True)
    rel = lambda a, b: float((a - b).norm() / b.norm())
    print(case, "naive chunk vs recurrent: o", rel(oc, o), "state", rel(hc, hT))
    if not (rel(oc, o) < 1e-4 and rel(hc, hT) < 1e-4):
        print("WARNING: FLA's two torch references disagree beyond 1e-4", file=sys.stderr)
    if torch.cuda.is_available():
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        cu = [x.cuda() for x in (q, k, v, g, beta)]
        ot, ht = chunk_gated_delta_rule(*cu, scale=scale, initial_state=h0.cuda(),
                                        output_final_state=True)
        print(case, "Triton chunk vs naive: o", rel(ot.cpu().float(), o),
              "state", rel(ht.cpu().float(), hT))

    def save(name, t):
        np.save(os.path.join(out_dir, name + ".npy"), t.detach().cpu().numpy().astype(np.float32))

    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta), ("g", g), ("h0", h0),
                    ("o", o), ("hT", hT)):
        save(name, t)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"B": B, "T": T, "H": H, "K": K, "V": V, "scale": scale, "gated": case == "gated",
                   "torch": torch.__version__, "fla": getattr(fla, "__version__", "unknown")},
                  f, indent=1)
    print("wrote", out_dir, "o", tuple(o.shape))
