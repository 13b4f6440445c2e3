"""Decode anchor for issue 22: mamba_ssm's own generation with CUDA graphs (`generate(cg=True)`),
on the GPU machine, for bench/lm_bench.ts to compare against in the same call.

Builds mamba_ssm's MambaLMHeadModel with random weights at the Mamba and Mamba-2 130M shapes
(d_model 768, 24 layers) and, with `--sizes 130m,1.4b`, the 1.4B shapes (d_model 2048, 48
layers); vocabulary 50280. For each batch size and dtype it runs one warm-up `generate` (which
captures the decode step's CUDA graph), then times:
  - `generate_tok_s`: a whole greedy `generate` of 128 new tokens after a 16-token prompt
    (wall clock, prompt included), batch × 128 / seconds;
  - `step_ms`: the captured decode graph replayed 128 times with greedy sampling on the GPU
    (CUDA events), milliseconds per step, and its tokens/s (batch / step).
Mamba-1's prompt runs through `selective_scan_ref` (the CUDA scan is not built here); Mamba-2
blocks run with `use_mem_eff_path=False` (REFERENCE.md). Also, for Mamba-2 (whose prompt runs
mamba_ssm's Triton SSD kernels), `prefill_ms`: a batch-1 forward over `--prefill` tokens (default
2048; CUDA events, median of 5 after 2 warm-ups), the anchor of lm_bench.ts's `prefill_2048_s`.
Mamba-1's forward here is the torch reference scan, no anchor. Prints one JSON object per line.

    PYTHONPATH=.peer python3 bench/decode_peer.py [--kinds mamba,mamba2] [--sizes 130m]
      [--batches 1,8,64] [--dtypes f32,bf16]
"""

import argparse
import json
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--kinds", default="mamba,mamba2")
parser.add_argument("--sizes", default="130m")
parser.add_argument("--batches", default="1,8,64")
parser.add_argument("--dtypes", default="f32,bf16")
parser.add_argument("--tokens", type=int, default=128)
parser.add_argument("--prefill", type=int, default=2048,
                    help="also time a batch-1 forward over this many tokens (Mamba-2 only; 0: off)")
args = parser.parse_args()

from mamba_ssm.models.config_mamba import MambaConfig  # noqa: E402
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel  # noqa: E402
from mamba_ssm.modules import mamba_simple  # noqa: E402
from mamba_ssm.ops.selective_scan_interface import selective_scan_ref  # noqa: E402

mamba_simple.selective_scan_fn = selective_scan_ref
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

SHAPES = {"130m": (768, 24), "1.4b": (2048, 48)}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
PROMPT = 16


def build(kind, size, dtype):
    d_model, n_layer = SHAPES[size]
    if kind == "mamba":
        ssm_cfg = {"layer": "Mamba1", "d_state": 16, "use_fast_path": False}
    else:
        ssm_cfg = {"layer": "Mamba2", "d_state": 128, "headdim": 64, "use_mem_eff_path": False}
    cfg = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=50280, ssm_cfg=ssm_cfg,
                      rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                      pad_vocab_size_multiple=8, tie_embeddings=True)
    torch.manual_seed(0)
    return MambaLMHeadModel(cfg, device="cuda", dtype=dtype).eval()


@torch.inference_mode()
def measure(model, batch, tokens):
    prompt = torch.randint(1, 50000, (batch, PROMPT), device="cuda")
    max_length = PROMPT + tokens
    model.generate(prompt, max_length=max_length, cg=True)  # warm-up: captures the graph
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(prompt, max_length=max_length, cg=True)
    torch.cuda.synchronize()
    whole = time.perf_counter() - t0
    cache = model._decoding_cache
    token = prompt[:, -1:].clone()
    position = torch.full((batch, 1), PROMPT, dtype=torch.long, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(3):  # warm replays
        cache.run(token, position, PROMPT + i)
    start.record()
    for i in range(tokens - 1):
        logits = cache.run(token, position, PROMPT + i)
        token = logits[:, -1, :].argmax(dim=-1, keepdim=True)
    end.record()
    torch.cuda.synchronize()
    step_ms = start.elapsed_time(end) / (tokens - 1)
    return batch * tokens / whole, step_ms


@torch.inference_mode()
def prefill_ms(model, length):
    ids = torch.randint(1, 50000, (1, length), device="cuda")
    times = []
    for i in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(ids)
        end.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


print(json.dumps({"anchor": "device", "name": torch.cuda.get_device_name(),
                  "torch": torch.__version__}), flush=True)
for size in args.sizes.split(","):
    for kind in args.kinds.split(","):
        for dname in args.dtypes.split(","):
            model = build(kind, size, DTYPES[dname])
            if kind == "mamba2" and args.prefill > 0:
                row = {"bench": "prefill_mamba_ssm", "kind": kind, "size": size, "dtype": dname,
                       "length": args.prefill}
                try:
                    row["prefill_ms"] = round(prefill_ms(model, args.prefill), 3)
                except Exception as e:
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                print(json.dumps(row), flush=True)
            for batch in (int(b) for b in args.batches.split(",")):
                row = {"bench": "decode_mamba_ssm_cg", "kind": kind, "size": size,
                       "dtype": dname, "batch": batch}
                try:
                    tok_s, step_ms = measure(model, batch, args.tokens)
                    row.update(generate_tok_s=round(tok_s, 1), step_ms=round(step_ms, 4),
                               step_tok_s=round(batch * 1000 / step_ms, 1))
                except Exception as e:  # one failing case still lets the others run
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                print(json.dumps(row), flush=True)
            del model
            torch.cuda.empty_cache()
