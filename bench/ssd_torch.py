"""Torch anchors for bench/ssd_bench.ts, on the same shapes (b=4, h=80, p=64, n=128, g=1;
l=2048 and 8192), f32, CUDA events (median of 20 after 5 warm-up runs):

1. an eager torch implementation of the four-step chunked SSD algorithm (our own code, the
   `ssd_minimal_discrete` math: intra-chunk masked products, chunk states, state passing over
   chunks, state-to-output), with Δ = softplus(dt + dt_bias) and the D skip, q = 64 and 256;
2. HF transformers' Mamba2 torch path: `mamba2_chunk_scan`, the chunked torch SSD that
   Mamba2Mixer runs without CUDA kernels (q = 256, as its config); it materializes
   (b, chunks, q, q, h, n) products, so b = 4 runs as 4 calls of b = 1;
3. Triton's mamba_chunk_scan_combined (mamba_ssm), bf16 and f32, when importable.

    python3 bench/ssd_torch.py [--json FILE] [--lengths 2048,8192]
"""

import argparse
import json
import math

import torch
import torch.nn.functional as F
from cuda_timing import cuda_time_ms as time_ms

parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--lengths", default="2048,8192")
args = parser.parse_args()
dev = "cuda"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def tril_exp_diff(cs):
    """exp(cs_i - cs_j) for j <= i, 0 above the diagonal: exponents never positive."""
    T = cs.size(-1)
    diff = cs[..., :, None] - cs[..., None, :]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=cs.device))
    return torch.exp(diff.masked_fill(~mask, -math.inf))


def ssd_eager(x, dt, A, B, C, D, dt_bias, q):
    """Four-step chunked SSD, g = 1. x (b l h p), dt (b l h), A (h), B/C (b l n) -> y (b l h p)."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    delta = F.softplus(dt + dt_bias)
    xd = x * delta[..., None]
    a = delta * A
    pad = (q - l % q) % q
    if pad:
        xd = F.pad(xd, (0, 0, 0, 0, 0, pad))
        a = F.pad(a, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    c = (l + pad) // q
    X = xd.reshape(b, c, q, h, p)
    Bc = B.reshape(b, c, q, n)
    Cc = C.reshape(b, c, q, n)
    cs = torch.cumsum(a.reshape(b, c, q, h).permute(0, 3, 1, 2), dim=-1)  # b h c q
    # 1. intra-chunk outputs: (C B^T ∘ decay mask) X
    Lmask = tril_exp_diff(cs)  # b h c q q
    CB = torch.einsum("bcln,bcsn->bcls", Cc, Bc)
    y_diag = torch.einsum("bcls,bhcls,bcshp->bclhp", CB, Lmask, X)
    # 2. chunk states
    decay_states = torch.exp(cs[..., -1:] - cs)  # b h c q
    states = torch.einsum("bcln,bhcl,bclhp->bchpn", Bc, decay_states, X)
    # 3. state passing over chunks (from a zero state)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    # Decay from the end of chunk c' to the start of chunk z: exp of a difference of cumulative
    # chunk totals (b h c+1 c+1).
    chunk_decay = tril_exp_diff(torch.cumsum(F.pad(cs[..., -1], (1, 0)), dim=-1))
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)[:, :-1]
    # 4. outputs from the states entering each chunk
    y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, states, torch.exp(cs))
    y = (y_diag + y_off).reshape(b, c * q, h, p)[:, :l]
    return y + D[:, None] * x


def ssd_reference(x, dt, A, B, C, D, dt_bias):
    """The plain recurrence in float64 (correctness check of ssd_eager at a small size)."""
    x, dt, A, B, C, D, dt_bias = (t.double() for t in (x, dt, A, B, C, D, dt_bias))
    b, l, h, p = x.shape
    n = B.shape[-1]
    delta = F.softplus(dt + dt_bias)
    state = torch.zeros(b, h, p, n, dtype=torch.float64, device=x.device)
    ys = []
    for t in range(l):
        a = torch.exp(delta[:, t] * A)[..., None, None]
        u = (delta[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        state = a * state + u
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1)


def make_inputs(b, l, h, p, n, dtype=torch.float32):
    g = torch.Generator(device=dev).manual_seed(0)

    def u(*shape, lo=-1.0, hi=1.0):
        return (torch.rand(*shape, generator=g, device=dev) * (hi - lo) + lo).to(dtype)

    return dict(x=u(b, l, h, p), dt=u(b, l, h, lo=-4, hi=0), A=u(h, lo=-8, hi=-1).float(),
                B=u(b, l, n), C=u(b, l, n), D=u(h, lo=0.5, hi=1.5).float(),
                dt_bias=u(h, lo=-1, hi=0).float())


results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}
print("device", results["device"], "torch", torch.__version__)

# Correctness of the eager implementation (small, odd length).
small = make_inputs(2, 37, 3, 8, 16)
err = ((ssd_eager(**small, q=8).double() - ssd_reference(**small)).norm()
       / ssd_reference(**small).norm()).item()
print(f"eager SSD vs float64 recurrence (l=37, q=8): rel err {err:.2e}")
results["eager_check_rel_err"] = err

with torch.no_grad():
    for l in [int(v) for v in args.lengths.split(",")]:
        b, h, p, n = 4, 80, 64, 128
        inp = make_inputs(b, l, h, p, n)
        for q in (64, 256):
            try:
                ms = time_ms(lambda: ssd_eager(**inp, q=q))
                results["runs"].append({"what": "eager_ssd", "l": l, "q": q, "ms": ms})
                print(f"eager torch SSD       l={l} q={q}: {ms:.3f} ms")
            except torch.OutOfMemoryError:
                results["runs"].append({"what": "eager_ssd", "l": l, "q": q, "ms": None,
                                        "note": "out of memory"})
                print(f"eager torch SSD       l={l} q={q}: out of memory")
            torch.cuda.empty_cache()
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
            for dtype in (torch.bfloat16, torch.float32):
                xs = {k: (v.to(dtype) if k in ("x", "dt", "B", "C") else v) for k, v in inp.items()}

                def triton_run():
                    return mamba_chunk_scan_combined(
                        xs["x"], xs["dt"], xs["A"], xs["B"][:, :, None], xs["C"][:, :, None],
                        chunk_size=256, D=xs["D"], dt_bias=xs["dt_bias"], dt_softplus=True)

                ms = time_ms(triton_run)
                results["runs"].append({"what": f"triton_{str(dtype)[6:]}", "l": l, "ms": ms})
                print(f"triton {str(dtype)[6:]:14} l={l} q=256: {ms:.3f} ms")
        except Exception as e:  # noqa: BLE001 - an anchor that cannot run is reported, not fatal
            print(f"triton unavailable: {type(e).__name__}: {str(e)[:200]}")
        del inp
        torch.cuda.empty_cache()

        # HF transformers' Mamba2 torch path: its chunked SSD function (what Mamba2Mixer calls
        # without CUDA kernels). It materializes (b, chunks, q, q, h, n) products, so b = 4 runs
        # as 4 calls of b = 1.
        try:
            from transformers.models.mamba2 import modeling_mamba2 as hf
            one = make_inputs(1, l, h, p, n)

            def hf_run():
                return hf.mamba2_chunk_scan(
                    one["x"], one["dt"], one["A"], one["B"][:, :, None], one["C"][:, :, None],
                    chunk_size=256, D=one["D"], dt_bias=one["dt_bias"], dt_softplus=True)

            ms = time_ms(hf_run, warmup=1, iters=3)
            results["runs"].append({"what": "hf_mamba2_chunk_scan", "l": l, "batch_calls": 4,
                                    "ms": 4 * ms, "per_b1_ms": ms})
            print(f"HF mamba2_chunk_scan  l={l} q=256: 4 x b=1 = {4 * ms:.1f} ms")
            del one
        except torch.OutOfMemoryError:
            results["runs"].append({"what": "hf_mamba2_chunk_scan", "l": l, "ms": None,
                                    "note": "out of memory at b=1"})
            print(f"HF mamba2_chunk_scan  l={l}: out of memory at b=1")
        except Exception as e:  # noqa: BLE001 - an anchor that cannot run is reported, not fatal
            print(f"HF mamba2_chunk_scan  l={l}: failed: {type(e).__name__}: {str(e)[:300]}")
        torch.cuda.empty_cache()

if args.json:
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
