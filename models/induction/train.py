"""Trains the tiny Mamba of `deno task demo` on the induction-heads task (Mamba paper, §4.1.2).

A sequence of random data tokens contains the special token once, followed by a random data
token X; the sequence ends with the special token again, and the model must predict X. Trained
at length 256 only; the demo evaluates much longer sequences.

The model is HF's Mamba (MambaForCausalLM: same parameter names, same math) written here with
a chunked parallel scan so training is fast; the script checks that HF transformers loads the
saved checkpoint and gives the same logits before it finishes.

    python3 models/induction/train.py OUT_DIR [--steps N] [--seed S] [--seconds T]
Writes OUT_DIR/{config.json, model.safetensors, train_log.json}.

    python3 models/induction/train.py CHECKPOINT_DIR --eval 256,1024,4096 [--sequences N]
Evaluates a saved checkpoint with this torch model instead (one JSON line per length): the
reference for the accuracies `deno task demo` reports.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

DATA_TOKENS = 16           # ids 1..16
SPECIAL = DATA_TOKENS + 1  # id 17
VOCAB = DATA_TOKENS + 2    # id 0 unused
HIDDEN, INNER, STATE, RANK, CONV, LAYERS = 64, 128, 16, 4, 4, 2


def chunked_scan(dA, u, q=16):
    """h[t] = exp(dA[t]) h[t-1] + u[t] over dim 1, with exponents of non-positive numbers only."""
    b, l, d, n = dA.shape
    c = l // q
    dA = dA.reshape(b, c, q, d, n)
    u = u.reshape(b, c, q, d, n)
    cs = dA.cumsum(2)
    diff = cs[:, :, :, None] - cs[:, :, None, :]
    mask = torch.tril(torch.ones(q, q, dtype=torch.bool, device=dA.device))[None, None, :, :, None, None]
    w = torch.exp(diff.masked_fill(~mask, -math.inf))
    intra = (w * u[:, :, None]).sum(3)
    carry = torch.zeros(b, d, n, device=dA.device)
    carries = []
    for k in range(c):
        carries.append(carry)
        carry = torch.exp(cs[:, k, -1]) * carry + intra[:, k, -1]
    h = intra + torch.exp(cs) * torch.stack(carries, 1)[:, :, None]
    return h.reshape(b, l, d, n)


class Mixer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.in_proj = torch.nn.Linear(HIDDEN, 2 * INNER, bias=False)
        self.conv1d = torch.nn.Conv1d(INNER, INNER, CONV, groups=INNER, padding=CONV - 1)
        self.x_proj = torch.nn.Linear(INNER, RANK + 2 * STATE, bias=False)
        self.dt_proj = torch.nn.Linear(RANK, INNER)
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, STATE + 1).float()).repeat(INNER, 1))
        self.D = torch.nn.Parameter(torch.ones(INNER))
        self.out_proj = torch.nn.Linear(INNER, HIDDEN, bias=False)
        with torch.no_grad():  # HF's dt initialization: softplus(bias) in [1e-3, 1e-1]
            dt = torch.exp(torch.rand(INNER) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            torch.nn.init.uniform_(self.dt_proj.weight, -RANK ** -0.5, RANK ** -0.5)

    def forward(self, h):
        l = h.shape[1]
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :l].transpose(1, 2))
        dt_low, B, C = torch.split(self.x_proj(x), [RANK, STATE, STATE], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low))
        A = -torch.exp(self.A_log)
        hs = chunked_scan(dt[..., None] * A, dt[..., None] * B[:, :, None] * x[..., None])
        y = (hs * C[:, :, None]).sum(-1) + x * self.D
        return self.out_proj(y * F.silu(z))


class RMSNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(HIDDEN))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = RMSNorm()
        self.mixer = Mixer()

    def forward(self, x):
        return x + self.mixer(self.norm(x))


class Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = torch.nn.Embedding(VOCAB, HIDDEN)
        self.layers = torch.nn.ModuleList([Block() for _ in range(LAYERS)])
        self.norm_f = RMSNorm()


class TinyMamba(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()

    def forward(self, ids):
        x = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            x = layer(x)
        return self.backbone.norm_f(x) @ self.backbone.embeddings.weight.T  # tied head


def task(n, length, gen, device):
    seq = torch.randint(1, DATA_TOKENS + 1, (n, length), generator=gen, device=device)
    pos = torch.randint(0, length - 3, (n,), generator=gen, device=device)
    target = torch.randint(1, DATA_TOKENS + 1, (n,), generator=gen, device=device)
    rows = torch.arange(n, device=device)
    seq[rows, pos] = SPECIAL
    seq[rows, pos + 1] = target
    seq[:, -1] = SPECIAL
    return seq, target


def evaluate(ckpt, lengths, sequences, seed):
    from safetensors.torch import load_file
    device = "cuda"
    model = TinyMamba().to(device)
    model.load_state_dict(load_file(os.path.join(ckpt, "model.safetensors")))
    gen = torch.Generator(device=device).manual_seed(seed)
    for length in lengths:
        correct, start = 0, time.time()
        # Chunked-scan memory grows with length: a few sequences per batch at long lengths.
        per_batch = max(1, min(sequences, (1 << 16) // length))
        for first in range(0, sequences, per_batch):
            n = min(per_batch, sequences - first)
            seq, target = task(n, length, gen, device)
            with torch.no_grad():
                correct += (model(seq)[:, -1].argmax(-1) == target).sum().item()
        print(json.dumps({"torch_eval_length": length, "accuracy": correct / sequences,
                          "sequences": sequences, "seconds": round(time.time() - start, 2)}),
              flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=360.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval", help="comma-separated lengths: evaluate OUT as a checkpoint")
    parser.add_argument("--sequences", type=int, default=32)
    args = parser.parse_args()
    if args.eval:
        evaluate(args.out, [int(v) for v in args.eval.split(",")], args.sequences, args.seed)
        return
    torch.manual_seed(args.seed)
    device = "cuda"
    model = TinyMamba().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    log, start, step = [], time.time(), 0
    while step < args.steps and time.time() - start < args.seconds:
        step += 1
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, step / 200)
        seq, target = task(64, 256, gen, device)
        loss = F.cross_entropy(model(seq)[:, -1], target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                seq, target = task(512, 256, gen, device)
                acc = (model(seq)[:, -1].argmax(-1) == target).float().mean().item()
            log.append({"step": step, "loss": round(loss.item(), 4), "acc_256": acc,
                        "seconds": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)
            if acc >= 0.998:
                break
    os.makedirs(args.out, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], "vocab_size": VOCAB,
              "hidden_size": HIDDEN, "intermediate_size": INNER, "state_size": STATE,
              "num_hidden_layers": LAYERS, "conv_kernel": CONV, "time_step_rank": RANK,
              "expand": INNER // HIDDEN, "layer_norm_epsilon": 1e-5, "use_bias": False,
              "use_conv_bias": True, "tie_word_embeddings": True, "eos_token_id": 0,
              "pad_token_id": 0, "bos_token_id": 0}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    # The checkpoint must be a real HF one: transformers loads it and agrees on logits.
    from transformers import MambaForCausalLM
    hf = MambaForCausalLM.from_pretrained(args.out).float().eval()
    seq, _ = task(4, 64, gen, device)
    with torch.no_grad():
        ours = model(seq).cpu()
        theirs = hf(seq.cpu()).logits
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"seed": args.seed, "batch": 64, "length": 256, "lr": args.lr,
                   "data_tokens": DATA_TOKENS, "special_token": SPECIAL,
                   "hf_logits_relative_error": rel, "log": log}, f, indent=1)
    print(json.dumps({"saved": args.out, "steps": step, "hf_logits_relative_error": rel}))


if __name__ == "__main__":
    main()
