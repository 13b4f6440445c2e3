"""Fixtures for the Mamba-2 mixer test, from HF transformers' torch path (Mamba2Mixer on the CPU).

Run on the GPU machine (torch + transformers installed), from the repository root:
    python3 tests/oracle/mamba2_mixer.py tests/fixtures/mamba2_mixer
Writes one folder per group count (g1, g2): float32 .npy files, one per parameter (HF names,
dots replaced by '_'), the input `hidden.npy`, the output `out.npy`, and `config.json` with the
sizes and the library versions. Runs on the CPU in float32 (the torch path, deterministic).
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import Mamba2Config
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mamba2_mixer"
batch, length = 2, 37

for groups in (1, 2):
    out_dir = os.path.join(root, f"g{groups}")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(2024 + groups)
    config = Mamba2Config(hidden_size=64, expand=1, num_heads=4, head_dim=16, state_size=16,
                          n_groups=groups, chunk_size=16, conv_kernel=4, use_conv_bias=True,
                          use_bias=False, layer_norm_epsilon=1e-5, num_hidden_layers=1)
    mixer = Mamba2Mixer(config, layer_idx=0).float().eval()
    with torch.no_grad():
        # Random, non-default parameters so every path matters (A_log, D, dt bias, norm).
        for name, p in mixer.named_parameters():
            p.copy_(torch.randn_like(p) * (0.4 if p.dim() > 1 else 0.3))
        mixer.A_log.copy_(torch.log(torch.rand_like(mixer.A_log) * 2 + 0.2))
        mixer.dt_bias.copy_(torch.rand_like(mixer.dt_bias) * -3)
        mixer.norm.weight.copy_(1 + 0.3 * torch.randn_like(mixer.norm.weight))
    hidden = torch.randn(batch, length, config.hidden_size)
    with torch.no_grad():
        # On the CPU, eval mode: the pure torch path (older versions name it torch_forward).
        out = getattr(mixer, "torch_forward", mixer.forward)(hidden)

    def save(name, t):
        np.save(os.path.join(out_dir, name + ".npy"), t.detach().cpu().numpy().astype(np.float32))

    for name, p in mixer.named_parameters():
        save(name.replace(".", "_"), p)
    save("hidden", hidden)
    save("out", out)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"hidden": config.hidden_size, "heads": config.num_heads,
                   "headDim": config.head_dim, "state": config.state_size, "groups": groups,
                   "convKernel": config.conv_kernel, "eps": config.layer_norm_epsilon,
                   "chunkSize": config.chunk_size, "batch": batch, "length": length,
                   "torch": torch.__version__, "transformers": transformers.__version__},
                  f, indent=1)
    print("wrote", out_dir, "out", tuple(out.shape))
