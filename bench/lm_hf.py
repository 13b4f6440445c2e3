"""HF transformers anchor for the language-model benchmark (issue 5), on the GPU machine.

Creates 130M-shape models with random weights (Mamba: d_model 768, 24 layers, vocab 50280,
n=16; Mamba-2: n=128, head_dim 64), saves them as HF checkpoints for ssmkit to load in the
same run, and times HF's torch path: batch-1 decode tokens/s (128 new tokens, greedy) and
prefill time at l=2048, float32. Prints one JSON line per measurement. With the size `1.4b`
(d_model 2048, 48 layers) it only writes the checkpoints: HF's torch path is no anchor at that size
(bench/decode_peer.py times mamba_ssm there), and its Python-loop scan would take minutes.

    python3 bench/lm_hf.py OUT_DIR [mamba,mamba2] [130m|1.4b]
"""

import json
import os
import sys
import time

from hf_torch_path import without_mamba_ssm

# HF's torch path only: folders holding mamba_ssm leave the path before transformers is imported.
sys.path = without_mamba_ssm(sys.path)

import torch  # noqa: E402
from transformers import (  # noqa: E402
    Mamba2Config,
    Mamba2ForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

out_root = sys.argv[1]
kinds = (sys.argv[2] if len(sys.argv) > 2 else "mamba,mamba2").split(",")
size = sys.argv[3] if len(sys.argv) > 3 else "130m"
d_model, n_layer = {"130m": (768, 24), "1.4b": (2048, 48)}[size]
torch.manual_seed(0)


def build(kind):
    if kind == "mamba":
        cfg = MambaConfig(vocab_size=50280, hidden_size=d_model, num_hidden_layers=n_layer,
                          state_size=16, expand=2, conv_kernel=4, eos_token_id=0)
        return MambaForCausalLM(cfg)
    cfg = Mamba2Config(vocab_size=50280, hidden_size=d_model, num_hidden_layers=n_layer,
                       state_size=128, expand=2, head_dim=64, num_heads=2 * d_model // 64,
                       n_groups=1, conv_kernel=4,
                       chunk_size=256, eos_token_id=0)
    return Mamba2ForCausalLM(cfg)


def timed(fn, repeat=1):
    fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best.append(time.perf_counter() - t)
    return sorted(best)[len(best) // 2]


for kind in kinds:
    model = build(kind).float().eval()
    path = os.path.join(out_root, kind)
    model.save_pretrained(path, safe_serialization=True)
    if size != "130m":
        print(json.dumps({"saved": path, "size": size}), flush=True)
        continue
    model = model.cuda()
    prompt = torch.randint(1, 50280, (1, 16), device="cuda")
    long = torch.randint(1, 50280, (1, 2048), device="cuda")
    with torch.no_grad():
        prefill = timed(lambda: model(long), repeat=2)
        gen = timed(lambda: model.generate(prompt, max_new_tokens=128, min_new_tokens=128,
                                           do_sample=False, use_cache=True))
    print(json.dumps({"anchor": f"hf_{kind}_130m", "prefill_2048_s": prefill,
                      "decode_128_s": gen, "decode_tok_s": 128 / gen}), flush=True)
    del model
    torch.cuda.empty_cache()
