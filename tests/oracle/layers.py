"""Fixtures for tests/layers_fla_test.ts, from flash-linear-attention's torch references for
the linear-attention layers of models/layers/:

  retention       fla.ops.retention.naive_retention (o), naive_recurrent_simple_gla with
                  g = log(1 - 2^(-5-h)) (final state; its o checked against naive_retention)
  simple_gla      fla.ops.simple_gla.naive.naive_recurrent_simple_gla, from a state h0
  gla             fla.ops.gla.naive.naive_recurrent_gla, from a state h0
  hgrn2           HGRN2Attention's gate algebra (q = swish(q~), g = logaddexp(log lb,
                  log1p(-lb) + logsigmoid(f~)), k = 1 - exp(g)) then naive_recurrent_gla
  gated_deltanet  fla.ops.gated_delta_rule.naive_recurrent_gated_delta_rule, q and k
                  L2-normalized (the layer normalizes them again: the same to 1e-6)
  mamba3          mamba_ssm's Triton mamba3_siso_combined (CUDA only; skipped without it).
                  It has no torch reference and computes in bf16 (it casts q, k, v, trap,
                  angles and z to bf16), so config.json sets a tolerance of 3e-2: a check of
                  the conventions (pairing, trapezoid, angle and state layout), not of f32
                  accuracy. Needs mamba_ssm on PYTHONPATH with an empty __init__.py.

Run on the GPU machine (torch, einops installed), from the repository root:
    PYTHONPATH=.peer python3 tests/oracle/layers.py tests/fixtures/layers
Writes tests/fixtures/layers/<case>/ with float32 .npy files in FLA's layout ([B T H K] for
q, k, gates; [B T H V] for v and o; [B H K V] for states) and config.json (sizes, scale,
library versions). The references run on the CPU in float32 at awkward sizes; when CUDA is
there, FLA's Triton chunk kernels are run too and their agreement printed.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import fla
from fla.ops.gated_delta_rule import naive_recurrent_gated_delta_rule
from fla.ops.gla.naive import naive_recurrent_gla
from fla.ops.retention.naive import naive_retention
from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

if torch.cuda.is_available():  # FLA's Triton chunk kernels, only to print their agreement
    from fla.ops.gla import chunk_gla
    from fla.ops.simple_gla import chunk_simple_gla

root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/layers"
B, T, H, K, V = 2, 37, 3, 7, 10
rel = lambda a, b: float((a - b).norm() / b.norm())


def write(case, tensors, extra):
    out_dir = os.path.join(root, case)
    os.makedirs(out_dir, exist_ok=True)
    for name, t in tensors.items():
        np.save(os.path.join(out_dir, name + ".npy"), t.detach().cpu().float().numpy())
    config = {"B": B, "T": T, "H": H, "K": K, "V": V, "torch": torch.__version__,
              "fla": getattr(fla, "__version__", "unknown"), **extra}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    print("wrote", out_dir, {k: tuple(v.shape) for k, v in tensors.items()})


def cuda_check(case, fn, want):
    """Runs FLA's Triton kernel `fn` on CUDA when there is one and prints its agreement."""
    if torch.cuda.is_available():
        try:
            got = fn()
            print(case, "Triton vs naive:", rel(got.cpu().float(), want))
        except Exception as e:  # informational only: the fixture is the torch reference's
            print(case, "Triton check failed:", type(e).__name__, e, file=sys.stderr)


torch.manual_seed(20)
q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
h0 = 0.5 * torch.randn(B, H, K, V)

# RetNet's retention: o from the parallel form, the state from the recurrent one.
log_gamma = torch.log(1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32)))
o = naive_retention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
o_rec, hT = naive_recurrent_simple_gla(q, k, v, log_gamma.expand(B, T, H).contiguous(),
                                       output_final_state=True)
print("retention: naive parallel vs recurrent", rel(o_rec, o))
write("retention", {"q": q, "k": k, "v": v, "o": o, "hT": hT}, {"scale": K ** -0.5})

# Simple GLA (scalar data-dependent gate), from a state, with a non-default scale.
g = F.logsigmoid(torch.randn(B, T, H) + 2)
o, hT = naive_recurrent_simple_gla(q, k, v, g, scale=0.3, initial_state=h0.clone(),
                                   output_final_state=True)
cuda_check("simple_gla", lambda: chunk_simple_gla(
    q.cuda(), k.cuda(), v.cuda(), g.cuda(), scale=0.3, initial_state=h0.cuda())[0], o)
write("simple_gla", {"q": q, "k": k, "v": v, "g": g, "h0": h0, "o": o, "hT": hT}, {"scale": 0.3})

# GLA: the gate as the GLA layer makes it (logsigmoid / 16).
gk = F.logsigmoid(torch.randn(B, T, H, K)) / 16
o, hT = naive_recurrent_gla(q, k, v, gk, initial_state=h0.clone(), output_final_state=True)
cuda_check("gla", lambda: chunk_gla(
    q.cuda(), k.cuda(), v.cuda(), gk.cuda(), initial_state=h0.cuda())[0], o)
write("gla", {"q": q, "k": k, "v": v, "gk": gk, "h0": h0, "o": o, "hT": hT}, {"scale": K ** -0.5})

# HGRN2: raw projections q~, f~, i and a lower bound per (head, key) as in HGRN2Attention.
fq, ff = torch.randn(B, T, H, K), 2 * torch.randn(B, T, H, K)
lb = torch.rand(H, K) * 0.8
gh = torch.logaddexp(lb.log(), torch.log1p(-lb) + F.logsigmoid(ff))
o, hT = naive_recurrent_gla(F.silu(fq), 1 - gh.exp(), v, gh, initial_state=h0.clone(),
                            output_final_state=True)
write("hgrn2", {"q": fq, "f": ff, "i": v, "lb": lb, "h0": h0, "o": o, "hT": hT},
      {"scale": K ** -0.5})

# Gated DeltaNet: unit q and k, β in (0, 1), log-decays g < 0.
qn, kn = F.normalize(q, p=2, dim=-1), F.normalize(k, p=2, dim=-1)
beta = torch.sigmoid(torch.randn(B, T, H))
o, hT = naive_recurrent_gated_delta_rule(qn, kn, v, beta, g, scale=0.4, initial_state=h0.clone(),
                                         output_final_state=True)
write("gated_deltanet", {"q": qn, "k": kn, "v": v, "beta": beta, "g": g, "h0": h0, "o": o,
                         "hT": hT}, {"scale": 0.4})


# Mamba-3 SISO through the authors' Triton kernel, from given states.
def mamba3_case():
    from mamba_ssm.ops.triton.mamba3.mamba3_siso_combined import mamba3_siso_combined

    Bm, Tm, Hm, P, N, M = 2, 37, 3, 8, 16, 4  # powers of two for the kernel's TMA; M even
    torch.manual_seed(21)
    bf = lambda t: t.to(torch.bfloat16).float()  # inputs the kernel sees, exactly
    x, z = bf(torch.randn(Bm, Tm, Hm, P)), bf(torch.randn(Bm, Tm, Hm, P))
    Braw, Craw = torch.randn(Bm, Tm, N), torch.randn(Bm, Tm, N)
    dt, a = torch.rand(Bm, Tm, Hm) * 3.5 - 3, torch.randn(Bm, Tm, Hm)
    trap, theta = bf(torch.randn(Bm, Tm, Hm)), bf(torch.randn(Bm, Tm, M))
    dt_bias, D = torch.rand(Hm) - 0.5, torch.randn(Hm)
    normB, normC = torch.rand(N) + 0.5, torch.rand(N) + 0.5
    biasB, biasC = torch.rand(Hm, N) + 0.5, torch.rand(Hm, N) + 0.5
    ssm0, angle0 = 0.5 * torch.randn(Bm, Hm, P, N), torch.rand(Bm, Hm, M) * 6
    x0, B0 = bf(torch.randn(Bm, Hm, P)), bf(torch.randn(Bm, Hm, N))
    rms = lambda v, w: v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    DT = F.softplus(dt + dt_bias)
    A = -torch.clamp(a.clamp_min(0) + 1 / (1 - a.clamp_max(0)), min=1e-4)
    cu = lambda t: t.contiguous().cuda()
    y, angT, ssmT, kT, vT = mamba3_siso_combined(
        Q=cu(rms(Craw, normC)[:, :, None]), K=cu(rms(Braw, normB)[:, :, None]), V=cu(x),
        ADT=cu((A * DT).permute(0, 2, 1)), DT=cu(DT.permute(0, 2, 1)),
        Trap=cu(trap.permute(0, 2, 1)), Q_bias=cu(biasC), K_bias=cu(biasB),
        Angles=cu(theta[:, :, None].expand(Bm, Tm, Hm, M)), D=cu(D), Z=cu(z),
        Input_States=(cu(angle0), cu(ssm0), cu(B0), cu(x0)), return_final_states=True)
    global B, T, H, K, V
    B, T, H, K, V = Bm, Tm, Hm, N, P
    write("mamba3", {"x": x, "z": z, "B": Braw, "C": Craw, "dt": dt, "a": a, "trap": trap,
                     "theta": theta, "dtBias": dt_bias, "D": D, "normB": normB, "normC": normC,
                     "biasB": biasB, "biasC": biasC, "ssm0": ssm0, "angle0": angle0, "x0": x0,
                     "B0": B0, "y": y, "angleT": angT, "ssmT": ssmT, "BT": kT.reshape(Bm, Hm, N),
                     "xT": vT},
          {"P": P, "N": N, "M": M, "tolerance": 3e-2, "kernel": "mamba3_siso_combined (bf16)"})


if torch.cuda.is_available():
    try:
        mamba3_case()
    except Exception as e:  # the FLA fixtures above stand without it
        print("mamba3: not written:", type(e).__name__, e, file=sys.stderr)
else:
    print("mamba3: skipped (mamba_ssm's Mamba-3 kernel needs CUDA)")
