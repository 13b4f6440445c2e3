"""Fixtures for the Mamba-1 mixer test, from HF transformers' torch path (MambaMixer on CPU).

Run on the GPU machine (torch + transformers installed), from the repository root:
    python3 tests/oracle/mamba_mixer.py tests/fixtures/mamba_mixer
Writes float32 .npy files: one per parameter (HF names, dots replaced by '_'), the input
`hidden.npy`, the output `out.npy`, and `config.json` with the sizes and the library versions.
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer

out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mamba_mixer"
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(1234)

config = MambaConfig(hidden_size=48, state_size=16, expand=2, conv_kernel=4,
                     time_step_rank=3, use_conv_bias=True, use_bias=False)
mixer = MambaMixer(config, layer_idx=0).float().eval()
with torch.no_grad():
    # Random, non-default parameters so every path matters (A_log, D, dt bias, conv bias).
    for name, p in mixer.named_parameters():
        p.copy_(torch.randn_like(p) * (0.5 if p.dim() > 1 else 0.3))
    mixer.A_log.copy_(torch.log(torch.rand_like(mixer.A_log) * 2 + 0.2))
    mixer.dt_proj.bias.copy_(torch.rand_like(mixer.dt_proj.bias) * -3)

batch, length = 2, 37
hidden = torch.randn(batch, length, config.hidden_size)
with torch.no_grad():
    # On the CPU, MambaMixer.forward takes the pure torch path (the CUDA kernels need a GPU).
    out = mixer(hidden)


def save(name, t):
    np.save(os.path.join(out_dir, name + ".npy"), t.detach().cpu().numpy().astype(np.float32))


for name, p in mixer.named_parameters():
    save(name.replace(".", "_"), p)
save("hidden", hidden)
save("out", out)
with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump({"hidden": config.hidden_size, "inner": config.intermediate_size,
               "state": config.state_size, "dtRank": config.time_step_rank,
               "convKernel": config.conv_kernel, "batch": batch, "length": length,
               "torch": torch.__version__, "transformers": transformers.__version__}, f, indent=1)
print("wrote", out_dir, "out", tuple(out.shape))
