"""Tiny random HF checkpoints with reference logits and greedy tokens, for the model tests.

Run on the GPU machine (torch + transformers installed), from the repository root:
    python3 tests/oracle/tiny_models.py tests/fixtures/models
Each model directory holds config.json and model.safetensors written by transformers'
save_pretrained, and reference.json: prompts, HF logits of every position (float32, from the
torch path on the CPU) and HF greedy continuations (generate with the state cache).
"""

import json
import os
import sys

import torch
import transformers
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

out_root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models"
os.makedirs(out_root, exist_ok=True)

PROMPTS = [[3, 17, 42, 5, 99], [7, 1, 88, 23, 64, 12, 9, 41, 30, 2, 77, 15, 60]]


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                # Decays exp(-Δ·exp(A_log)) spread over (0, 1).
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 3 + 0.3))
            elif name.endswith("dt_proj.bias") or name.endswith("dt_bias"):
                p.copy_(torch.rand(p.shape, generator=g) * -4)
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.2))


def write(name, model, dtype=torch.float32):
    path = os.path.join(out_root, name)
    # The reference runs in float32 on the weights as stored (rounded when f16/bf16).
    stored = model.to(dtype)
    stored.save_pretrained(path, safe_serialization=True)
    ref_model = stored.float().eval()
    ref = {"prompts": PROMPTS, "logits": [], "greedy": [], "transformers": transformers.__version__}
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([prompt])
            ref["logits"].append(ref_model(ids).logits[0].tolist())
            gen = ref_model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
            ref["greedy"].append(gen[0, len(prompt):].tolist())
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(ref, f)
    print("wrote", path, sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path)))


torch.manual_seed(0)
base = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, expand=2, conv_kernel=4,
            time_step_rank=4, eos_token_id=0, pad_token_id=0, bos_token_id=0)
for name, extra, seed, dtype in [
    ("mamba_tied_n8", dict(state_size=8, tie_word_embeddings=True), 1, torch.float32),
    ("mamba_untied_n16", dict(state_size=16, tie_word_embeddings=False), 2, torch.float32),
    ("mamba_f16", dict(state_size=8, tie_word_embeddings=True), 3, torch.float16),
    ("mamba_bf16", dict(state_size=8, tie_word_embeddings=True), 4, torch.bfloat16),
]:
    model = MambaForCausalLM(MambaConfig(**base, **extra)).eval()
    randomize(model, seed)
    write(name, model, dtype)

m2 = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, expand=2, head_dim=16,
          num_heads=4, conv_kernel=4, eos_token_id=0, pad_token_id=0, bos_token_id=0)
for name, extra, seed in [
    ("mamba2_tied_g1_n8_q8", dict(state_size=8, n_groups=1, chunk_size=8, tie_word_embeddings=True), 5),
    ("mamba2_untied_g2_n16_q4", dict(state_size=16, n_groups=2, chunk_size=4, tie_word_embeddings=False), 6),
]:
    model = Mamba2ForCausalLM(Mamba2Config(**m2, **extra)).eval()
    randomize(model, seed)
    write(name, model)
