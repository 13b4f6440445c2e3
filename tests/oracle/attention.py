"""Fixtures for tests/attention_torch_test.ts, from torch's scaled_dot_product_attention.

Cases (batch 2, 6 query heads over 2 key/value heads: GQA with enable_gqa, query head
h = g * 3 + r reads key/value head g):

  prefill   causal, T = S = 37, d = 16 (is_causal=True)
  cache     3 queries after 38 cached keys (S = 41), the causal diagonal at the end (an explicit
            bottom-right mask: torch's is_causal aligns it at the top left)
  window    T = S = 37, causal with a sliding window of 5 (explicit mask)
  values    non-causal, d = 8, value size 12, scale 0.3

Each case also has the gradients dq, dk, dv of sum(o * w) by torch's autograd. Everything runs
on the CPU in float64 (the math backend), so the fixtures are exact to f32 rounding.

Run anywhere with torch and numpy, from the repository root:
    python3 tests/oracle/attention.py tests/fixtures/attention
Writes tests/fixtures/attention/<case>/ with float32 .npy files (q [B Hq T D], k [B Hkv S D],
v [B Hkv S E], w and o [B Hq T E], dq, dk, dv) and config.json.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/attention"
B, HQ, HKV = 2, 6, 2


def band(t, s, window=None):
    """Bottom-right causal mask (query i sits at key position i + s - t), optional window."""
    i = torch.arange(t)[:, None] + (s - t)
    j = torch.arange(s)[None, :]
    keep = j <= i
    if window is not None:
        keep &= j > i - window
    return keep


def sdpa(q, k, v, mask, causal, scale):
    r = q.shape[1] // k.shape[1]
    try:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=scale, enable_gqa=True)
    except TypeError:  # torch < 2.5: repeat the key/value heads
        k, v = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=scale)


CASES = {
    "prefill": dict(t=37, s=37, d=16, e=16, causal=True, window=None, scale=None),
    "cache": dict(t=3, s=41, d=16, e=16, causal=True, window=None, scale=None),
    "window": dict(t=37, s=37, d=16, e=16, causal=True, window=5, scale=None),
    "values": dict(t=9, s=13, d=8, e=12, causal=False, window=None, scale=0.3),
}

torch.manual_seed(20)
for name, c in CASES.items():
    t, s, d, e = c["t"], c["s"], c["d"], c["e"]
    q = (2 * torch.randn(B, HQ, t, d, dtype=torch.float64)).requires_grad_()
    k = torch.randn(B, HKV, s, d, dtype=torch.float64).requires_grad_()
    v = torch.randn(B, HKV, s, e, dtype=torch.float64).requires_grad_()
    w = torch.randn(B, HQ, t, e, dtype=torch.float64)
    # is_causal for the square case (torch's own path); an explicit mask otherwise.
    square = c["causal"] and t == s and c["window"] is None
    mask = band(t, s, c["window"]) if c["causal"] and not square else None
    o = sdpa(q, k, v, mask, square, c["scale"])
    dq, dk, dv = torch.autograd.grad((o * w).sum(), (q, k, v))
    out_dir = os.path.join(root, name)
    os.makedirs(out_dir, exist_ok=True)
    tensors = dict(q=q, k=k, v=v, w=w, o=o, dq=dq, dk=dk, dv=dv)
    for key, x in tensors.items():
        np.save(os.path.join(out_dir, key + ".npy"), x.detach().float().numpy())
    config = {"B": B, "G": HKV, "R": HQ // HKV, "T": t, "S": s, "D": d, "E": e,
              "causal": c["causal"], "window": c["window"], "scale": c["scale"],
              "torch": torch.__version__}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print("wrote", out_dir)
