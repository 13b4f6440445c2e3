"""Torch peers of the training benchmark (bench/train_bench.ts), timed on the GPU machine.

    PYTHONPATH=.peer python3 bench/train_peer.py [--cases ID,...] [--peers NAME,...] [--steps N]
        [--scale full|tiny] [--peer-timeout S] [--batch B]

One training step (forward, mean next-token cross-entropy, backward, gradient clipping at 1,
AdamW with weight decay 0.1) of the Mamba-2 and Mamba-1 130M shapes (24 layers, d_model 768,
vocab 50280, tied embeddings; Mamba-2: expand 2, headdim 64, d_state 128, ngroups 1; Mamba-1:
d_state 16), random weights, f32 parameters, on the same cases as train_bench.ts (ids
`name@BxL`), by:
  - mamba_ssm (.peer): a stack of its Mamba2 blocks (Triton SSD, use_mem_eff_path=False) with
    its Triton RMSNorm, in f32 and under bf16 autocast; for Mamba-1 its Mamba block with
    selective_scan_ref (the CUDA scan is not built here: a Python loop over time);
  - HF transformers' torch path (Mamba2ForCausalLM / MambaForCausalLM, f32; the mixers are
    routed to torch_forward / slow_forward; where mamba_ssm is importable, in a child process
    without it, since newer transformers would route to its fused kernels; out of memory, at
    half the batch, and so on, its row naming the batch that ran);
and the Mamba-1 selective scan's value and gradient alone (HF's torch scan as in
MambaMixer.slow_forward, f32, loss Σ y·w, gradients of every input).

Times: CUDA events around whole steps, median of N after two warm-up steps. Memory:
torch.cuda.max_memory_allocated over the warm-up and timed steps (weights, gradients, AdamW
state and activations). Prints one JSON line per peer and case; a failing case (an import, out
of memory) prints its one-line `error` and the others still run.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import subprocess
import signal
import statistics
import sys
import traceback

from hf_torch_path import without_mamba_ssm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

MAMBA2 = dict(d_model=768, n_layer=24, vocab=50280, d_state=128, expand=2, headdim=64, ngroups=1)
MAMBA1 = dict(d_model=768, n_layer=24, vocab=50280, d_state=16, expand=2)
TINY2 = dict(MAMBA2, d_model=32, n_layer=2, vocab=64, d_state=8, headdim=16)
TINY1 = dict(MAMBA1, d_model=32, n_layer=2, vocab=64, d_state=8)


def cases(scale):
    """(id, kind, shape): the same ids as trainCases in bench/train_bench.ts."""
    if scale == "tiny":
        return [("mamba2_tiny_step@2x16", "mamba2", TINY2, 2, 16),
                ("mamba_tiny_step@2x16", "mamba", TINY1, 2, 16),
                ("scan_tiny_bwd@2x32", "scan", dict(d=8, n=4), 2, 32)]
    return [("mamba2_130m_step@8x2048", "mamba2", MAMBA2, 8, 2048),
            ("mamba_130m_step@8x2048", "mamba", MAMBA1, 8, 2048),
            ("scan_bwd@8x4096", "scan", dict(d=1536, n=16), 8, 4096),
            ("mamba2_130m_step@1x256", "mamba2", MAMBA2, 1, 256),
            ("mamba_130m_step@1x256", "mamba", MAMBA1, 1, 256),
            ("scan_bwd@1x512", "scan", dict(d=1536, n=16), 1, 512)]


# ---------------------------------------------------------------------------------------------
# mamba_ssm models: embedding, pre-norm residual blocks, final norm, tied head.

class PeerLM(nn.Module):
    def __init__(self, cfg, mixer, norm):
        super().__init__()
        self.embedding = nn.Embedding(cfg["vocab"], cfg["d_model"])
        self.norms = nn.ModuleList([norm(cfg["d_model"]) for _ in range(cfg["n_layer"])])
        self.mixers = nn.ModuleList([mixer(i) for i in range(cfg["n_layer"])])
        self.norm_f = norm(cfg["d_model"])

    def forward(self, ids):
        x = self.embedding(ids)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return F.linear(self.norm_f(x), self.embedding.weight)


def mamba_ssm_model(kind, cfg):
    from mamba_ssm.ops.triton.layer_norm import RMSNorm
    if kind == "mamba2":
        from mamba_ssm.modules.mamba2 import Mamba2

        def mixer(i):
            return Mamba2(d_model=cfg["d_model"], d_state=cfg["d_state"], expand=cfg["expand"],
                          headdim=cfg["headdim"], ngroups=cfg["ngroups"], chunk_size=256,
                          use_mem_eff_path=False, layer_idx=i)
    else:
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
        # The CUDA scan is not built on this machine: the reference scan (REFERENCE.md §3).
        mamba_simple.selective_scan_fn = selective_scan_ref

        def mixer(i):
            return mamba_simple.Mamba(d_model=cfg["d_model"], d_state=cfg["d_state"],
                                      expand=cfg["expand"], use_fast_path=False, layer_idx=i)
    return PeerLM(cfg, mixer, lambda d: RMSNorm(d, eps=1e-5))


def hf_model(kind, cfg):
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM
    from transformers.models.mamba import modeling_mamba
    from transformers.models.mamba2 import modeling_mamba2
    # HF's torch path only: no kernels looked up (a mamba_ssm on PYTHONPATH is ignored) and every
    # mixer routed to its pure-torch forward.
    for module in (modeling_mamba, modeling_mamba2):
        if hasattr(module, "lazy_load_kernel"):
            module.lazy_load_kernel = lambda *args, **kwargs: None
    if kind == "mamba2":
        config = Mamba2Config(vocab_size=cfg["vocab"], hidden_size=cfg["d_model"],
                              num_hidden_layers=cfg["n_layer"], state_size=cfg["d_state"],
                              expand=cfg["expand"], head_dim=cfg["headdim"],
                              num_heads=cfg["expand"] * cfg["d_model"] // cfg["headdim"],
                              n_groups=cfg["ngroups"], conv_kernel=4, chunk_size=256,
                              tie_word_embeddings=True, use_cache=False)
        model = Mamba2ForCausalLM(config)
    else:
        config = MambaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["d_model"],
                             num_hidden_layers=cfg["n_layer"], state_size=cfg["d_state"],
                             expand=cfg["expand"], conv_kernel=4, tie_word_embeddings=True,
                             use_cache=False)
        model = MambaForCausalLM(config)
    # Older transformers name the torch paths (torch_forward, slow_forward); newer ones (seen on
    # the GPU machine, 2026-12-06) have no torch_forward and take the torch path in forward
    # itself when no kernels were loaded (the lazy_load_kernel stub above).
    for module in model.modules():
        if isinstance(module, modeling_mamba2.Mamba2Mixer):
            module.forward = getattr(module, "torch_forward", module.forward)
        elif isinstance(module, modeling_mamba.MambaMixer):
            module.forward = getattr(module, "slow_forward", module.forward)

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids):
            return self.inner(input_ids=ids, use_cache=False).logits

    return Logits(model)


# ---------------------------------------------------------------------------------------------
# Timing.

def cuda_steps_ms(step, steps, warmup=2):
    """Median ms of `steps` calls after `warmup` warm-up calls, and the peak memory in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20


def train_step_row(build, vocab, b, l, steps, autocast=None):
    torch.manual_seed(0)
    model = build().cuda().float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    seq = torch.randint(0, vocab, (b, l + 1), device="cuda")
    ids, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        if autocast:
            with torch.autocast("cuda", dtype=autocast):
                logits = model(ids)
        else:
            logits = model(ids)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())

    ms, peak = cuda_steps_ms(step, steps)
    first, last = losses[0].item(), losses[-1].item()
    if not (math.isfinite(first) and math.isfinite(last)):
        raise RuntimeError(f"non-finite loss {first} → {last}")
    return {"ms": ms, "tokPerS": b * l / (ms / 1000), "peakMiB": peak, "firstLoss": first,
            "lastLoss": last}


def hf_scan_row(shape, b, l, steps):
    """Value and gradient of Σ y·w through HF's torch selective scan (slow_forward's loop)."""
    d, n = shape["d"], shape["n"]
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*s, lo=-1.0, hi=1.0):
        return (torch.rand(*s, device="cuda", generator=g) * (hi - lo) + lo).requires_grad_()

    x, dt, z = rand(b, d, l), rand(b, d, l, lo=-3, hi=0), rand(b, d, l)
    B, C = rand(b, l, n), rand(b, l, n)
    A, D, bias = rand(d, n, lo=-1.5, hi=-0.5), rand(d), rand(d)
    w = torch.rand(b, d, l, device="cuda", generator=g)
    inputs = [x, dt, z, B, C, A, D, bias]

    def step():
        for t in inputs:
            t.grad = None
        # As in transformers' MambaMixer.slow_forward (3.b and 3.c), with Δ = softplus(dt + bias).
        delta = F.softplus(dt + bias[None, :, None])
        discrete_A = torch.exp(A[None, :, None, :] * delta[:, :, :, None])
        deltaB_u = delta[:, :, :, None] * B[:, None, :, :] * x[:, :, :, None]
        state = torch.zeros(b, d, n, device="cuda")
        outs = []
        for i in range(l):
            state = discrete_A[:, :, i, :] * state + deltaB_u[:, :, i, :]
            outs.append(torch.matmul(state, C[:, i, :].unsqueeze(-1))[:, :, 0])
        y = (torch.stack(outs, dim=-1) + x * D[None, :, None]) * F.silu(z)
        (y * w).sum().backward()

    # Its Python loop over l steps with autograd takes tens of seconds a step at l = 4096 (a
    # 100 s limit ended 2 warm-ups and 5 steps on 2026-12-07): one warm-up, at most two steps.
    ms, peak = cuda_steps_ms(step, min(steps, 2), warmup=1)
    return {"ms": ms, "tokPerS": b * l / (ms / 1000), "peakMiB": peak}


def halving_on_oom(run, b):
    """run(b), or run(b // 2), run(b // 4), … while each fails out of memory, down to batch 1.

    Returns (row, batch that ran). Any other failure, or running out of memory at batch 1, is
    raised. HF's torch path materializes a (b, chunks, 256, 256, heads, d_state) product in
    Mamba-2's SSD (48 GiB at b = 8, l = 2048), more than an H100 holds: at a smaller batch its
    tokens/s is still an anchor, labelled with the batch that ran.
    """
    batch = b
    while True:
        try:
            return run(batch), batch
        except Exception as e:  # noqa: BLE001 - only running out of memory retries
            if batch == 1 or "out of memory" not in str(e).lower():
                raise
            print(f"HF step out of memory at batch {batch}; trying {batch // 2}", file=sys.stderr)
            batch //= 2
            gc.collect()
            torch.cuda.empty_cache()


def hf_step_row(case_id, kind, cfg, b, l, args):
    """HF's torch training step (in a child process where mamba_ssm is importable), at batch b or
    the largest halving of it that fits (`halving_on_oom`); `--batch` fixes it (the child)."""
    def run(batch):
        if mamba_ssm_importable():
            return hf_step_in_child(case_id, args, batch)
        return train_step_row(lambda: hf_model(kind, cfg), cfg["vocab"], batch, l, args.steps)

    if args.batch > 0:
        return run(args.batch)
    row, ran = halving_on_oom(run, b)
    if ran != b:
        row["batch"] = ran
        row["note"] = f"batch {ran} of {b}: out of memory at {2 * ran}"
    return row


def hf_step_in_child(case_id, args, batch):
    """HF's torch training step in a child process that cannot import mamba_ssm.

    Newer transformers (seen on the GPU machine, 2026-12-07) find an importable mamba_ssm through
    their hub-kernel integration and route Mamba2's forward to its fused Triton path, which needs
    causal_conv1d's CUDA build (absent there), whatever the mixers were routed to. The child's
    PYTHONPATH lacks every folder holding mamba_ssm; it prints its row as JSON.
    """
    paths = without_mamba_ssm(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    cmd = [sys.executable, os.path.abspath(__file__), "--cases", case_id, "--peers",
           "hf_torch_f32", "--steps", str(args.steps), "--scale", args.scale,
           "--batch", str(batch)]
    # The child is killed a little before this peer's own limit (SIGALRM in this process).
    limit = max(1, args.peer_timeout - 5) if args.peer_timeout > 0 else None
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        raise PeerTimeout(f"no result within {limit} s (child process)") from e
    sys.stderr.write(done.stderr)
    for line in done.stdout.splitlines():
        row = json.loads(line) if line.startswith("{") else {}
        if row.get("case") == case_id:
            if "error" in row:
                raise RuntimeError(row["error"])
            return {k: v for k, v in row.items() if k not in ("anchor", "case", "shape")}
    raise RuntimeError(f"the child process exited with {done.returncode} and printed no row")


def mamba_ssm_importable():
    """Whether this process could import mamba_ssm (then HF's step runs in a child process)."""
    import importlib.util
    return importlib.util.find_spec("mamba_ssm") is not None


class PeerTimeout(Exception):
    """A peer ran past --peer-timeout on one case."""


@contextlib.contextmanager
def time_limit(seconds):
    """Raises PeerTimeout in the main thread after `seconds` (0: no limit), via SIGALRM."""
    if seconds <= 0:
        yield
        return

    def expire(_signum, _frame):
        raise PeerTimeout(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scale", default="full", choices=["full", "tiny"])
    parser.add_argument("--peers", default="",
                        help="comma-separated peers to run (default: all), e.g. mamba_ssm_f32")
    parser.add_argument("--batch", type=int, default=0,
                        help="HF's step at this batch (0: the case's, halved while out of "
                             "memory)")
    parser.add_argument("--peer-timeout", type=int, default=0,
                        help="seconds one peer may take on one case (0: no limit); past it the "
                             "row reports a timeout and the next peer runs")
    args = parser.parse_args()
    chosen = [p for p in args.peers.split(",") if p]
    all_cases = cases(args.scale)
    # ssmkit-only variants (the `_walk`, `_autotuned`, `_lanes1` options) are timed against their base case.
    wanted = [c.replace("_walk", "").replace("_autotuned", "").replace("_lanes1", "") for c in args.cases.split(",") if c]
    # The induction step is ssmkit's alone (its torch trainer is models/induction/train.py).
    wanted = [c for c in wanted if not c.startswith("induction_step@")]
    unknown = [c for c in wanted if c not in [x[0] for x in all_cases]]
    if unknown:
        sys.exit(f"train_peer.py: unknown case(s) {unknown}; known: {[x[0] for x in all_cases]}")
    print(json.dumps({"anchor": "device", "name": torch.cuda.get_device_name(0),
                      "torch": torch.__version__}), flush=True)
    # The scan cases first: they take seconds, and a call's time limit should cut the model
    # steps (mamba_ssm's first f32 step compiles its Triton kernels for minutes) instead.
    for case_id, kind, cfg, b, l in sorted(all_cases, key=lambda c: c[1] != "scan"):
        if args.cases and case_id not in wanted:
            continue
        if kind == "scan":
            peers = [("hf_torch_f32", lambda: hf_scan_row(cfg, b, l, args.steps))]
        else:
            peers = [
                ("mamba_ssm_f32",
                 lambda: train_step_row(lambda: mamba_ssm_model(kind, cfg), cfg["vocab"], b, l,
                                        args.steps)),
                ("mamba_ssm_bf16_autocast",
                 lambda: train_step_row(lambda: mamba_ssm_model(kind, cfg), cfg["vocab"], b, l,
                                        args.steps, autocast=torch.bfloat16)),
                ("hf_torch_f32", lambda: hf_step_row(case_id, kind, cfg, b, l, args)),
            ]
        for peer, run in peers:
            if chosen and peer not in chosen:
                continue
            row = {"anchor": peer, "case": case_id, "shape": {"b": b, "l": l}}
            try:
                with time_limit(args.peer_timeout):
                    row.update(run())
            except Exception as e:  # noqa: BLE001 - every failure is reported, per case
                message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                row["error"] = message
                traceback.print_exc(file=sys.stderr)
            print(json.dumps(row), flush=True)
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
