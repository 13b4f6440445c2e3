"""Trains the tiny Mamba of `deno task demo` on the induction-heads task (Mamba paper, §4.1.2).

A sequence of random data tokens contains the special token once, followed by a random data
token X; the sequence ends with the special token again, and the model must predict X. Trained
at length 256 only; the demo evaluates much longer sequences. Uses HF transformers'
MambaForCausalLM (torch path), so the checkpoint is a plain HF checkpoint.

    python3 models/induction/train.py OUT_DIR [--steps N] [--seed S]
Writes OUT_DIR/{config.json, model.safetensors, train_log.json}.
"""

import argparse
import json
import os
import time

import torch
from transformers import MambaConfig, MambaForCausalLM

DATA_TOKENS = 16          # ids 1..16
SPECIAL = DATA_TOKENS + 1  # id 17
VOCAB = DATA_TOKENS + 2    # id 0 unused


def batch(n, length, gen, device):
    seq = torch.randint(1, DATA_TOKENS + 1, (n, length), generator=gen, device=device)
    pos = torch.randint(0, length - 3, (n,), generator=gen, device=device)
    target = torch.randint(1, DATA_TOKENS + 1, (n,), generator=gen, device=device)
    rows = torch.arange(n, device=device)
    seq[rows, pos] = SPECIAL
    seq[rows, pos + 1] = target
    seq[:, -1] = SPECIAL
    return seq, target


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=420.0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = "cuda"
    config = MambaConfig(vocab_size=VOCAB, hidden_size=64, state_size=16, num_hidden_layers=2,
                         expand=2, conv_kernel=4, time_step_rank=4, tie_word_embeddings=True,
                         eos_token_id=0, pad_token_id=0, bos_token_id=0)
    model = MambaForCausalLM(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps,
                                                pct_start=0.05)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    log = []
    start = time.time()
    for step in range(1, args.steps + 1):
        seq, target = batch(64, 256, gen, device)
        logits = model(seq).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                seq, target = batch(256, 256, gen, device)
                acc = (model(seq).logits[:, -1].argmax(-1) == target).float().mean().item()
            log.append({"step": step, "loss": loss.item(), "acc_256": acc,
                        "seconds": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)
            if acc >= 0.995 and step >= 500:
                break
        if time.time() - start > args.seconds:
            break
    os.makedirs(args.out, exist_ok=True)
    model.float().cpu().save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"seed": args.seed, "batch": 64, "length": 256, "lr": 2e-3,
                   "data_tokens": DATA_TOKENS, "special_token": SPECIAL, "log": log}, f, indent=1)


if __name__ == "__main__":
    main()
