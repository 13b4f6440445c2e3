"""Reference gradients of the language-model loss from HF transformers, for tests/lm_grads_test.ts.

Run on the GPU machine (torch + transformers installed; everything runs on the CPU), from the
repository root:
    python3 tests/oracle/lm_grads.py [tests/fixtures/models] [--out DIR]
For each fixture checkpoint in MODELS (made by tests/oracle/tiny_models.py) it loads the model
with HF transformers, casts it to float64, and on fixed token ids (batch 2, length 13, seeded;
targets are the next tokens) computes the mean cross-entropy of the logits and every
parameter's gradient by torch autograd through HF's torch path. It writes, next to the
checkpoint:
    grads.safetensors  one F64 tensor per parameter, named as in model.safetensors (a tied head
                       is the embedding's parameter: its gradient is the sum of both uses)
    grads.json         ids, targets, the loss, the seed and the library versions

HF's torch path casts to float32 in places (RMSNorm, the gated norm, `.float()` before the SSD,
the fp32 residual); in a float64 model those casts would round to f32. `KeepFloat64` turns each
cast of a float64 tensor to float32 into a no-op, and fails on any other float32 result, so the
whole forward and backward pass is float64. Deterministic: same files on every run.
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from transformers import Mamba2ForCausalLM, MambaForCausalLM  # noqa: E402
from transformers.models.mamba import modeling_mamba  # noqa: E402
from transformers.models.mamba2 import modeling_mamba2  # noqa: E402

# Keep the list equal to MODELS in tests/lm_grads_test.ts.
MODELS = ["mamba_tied_n8", "mamba2_tied_g1_n8_q8", "mamba2_untied_g2_n16_q4"]
BATCH, LENGTH, SEED = 2, 13, 20261204

parser = argparse.ArgumentParser()
parser.add_argument("root", nargs="?", default="tests/fixtures/models", help="fixture models")
parser.add_argument("--out", help="write DIR/<model>/grads.* here instead of next to the model")
args = parser.parse_args()
root = args.root
torch.use_deterministic_algorithms(True)

# Never the CUDA/Triton kernels: HF's torch path only (a mamba_ssm on PYTHONPATH is ignored).
for module in (modeling_mamba, modeling_mamba2):
    if hasattr(module, "lazy_load_kernel"):
        module.lazy_load_kernel = lambda *args, **kwargs: None

CASTS = {torch.Tensor.to, torch.Tensor.float, torch.Tensor.type}


def tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors_in(v)


class KeepFloat64(TorchFunctionMode):
    """float64 → float32 casts become no-ops; any other float32 (or lower) result is an error."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        src = args[0] if args else None
        if (func in CASTS and isinstance(src, torch.Tensor) and src.dtype == torch.float64
                and isinstance(out, torch.Tensor) and out.dtype == torch.float32):
            return src
        for t in tensors_in(out):
            if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
                raise RuntimeError(f"{getattr(func, '__name__', func)} made a {t.dtype} tensor "
                                   "inside the float64 reference")
        return out


def torch_path_only(model):
    """Routes every mixer to HF's pure-torch forward (never the fused kernels).

    The method's name differs between transformers versions (`torch_forward`, `slow_forward`);
    where a mixer has neither, its `forward` picks the torch path by itself on the CPU, which is
    where this script runs the model.
    """
    for module in model.modules():
        if isinstance(module, (modeling_mamba2.Mamba2Mixer, modeling_mamba.MambaMixer)):
            for name in ("torch_forward", "slow_forward"):
                if hasattr(module, name):
                    module.forward = getattr(module, name)
                    break
            else:
                if any(p.device.type != "cpu" for p in module.parameters()):
                    raise RuntimeError("the reference must run on the CPU (torch path)")


def reference(name):
    path = os.path.join(root, name)
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f)["model_type"]
    cls = {"mamba": MambaForCausalLM, "mamba2": Mamba2ForCausalLM}[model_type]
    model = cls.from_pretrained(path).eval()
    for p in model.parameters():
        if p.dtype != torch.float32:
            raise RuntimeError(f"{name}: parameter of dtype {p.dtype}; the fixture must be F32")
    tied = model.config.tie_word_embeddings
    if tied and model.lm_head.weight is not model.backbone.embeddings.weight:
        raise RuntimeError(f"{name}: tie_word_embeddings is set but the head is not the embedding")
    model = model.double()
    torch_path_only(model)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    seq = torch.randint(0, vocab, (BATCH, LENGTH + 1), generator=g)
    ids, targets = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    model.zero_grad(set_to_none=True)
    torch.set_default_dtype(torch.float64)  # tensors the forward pass creates from scratch
    try:
        with KeepFloat64():
            logits = model(input_ids=ids, use_cache=False).logits
            if logits.dtype != torch.float64:
                raise RuntimeError(f"{name}: logits are {logits.dtype}")
            loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
            loss.backward()
    finally:
        torch.set_default_dtype(torch.float32)
    # Sanity: the float64 model reproduces the fixture's float32 reference logits.
    with open(os.path.join(path, "reference.json")) as f:
        ref = json.load(f)
    torch.set_default_dtype(torch.float64)
    try:
        with KeepFloat64(), torch.no_grad():
            got = model(input_ids=torch.tensor([ref["prompts"][1]]), use_cache=False).logits[0]
    finally:
        torch.set_default_dtype(torch.float32)
    want = torch.tensor(ref["logits"][1], dtype=torch.float64)
    err = ((got - want).norm() / want.norm()).item()
    if not err <= 1e-4:
        raise RuntimeError(f"{name}: float64 logits differ from reference.json by {err:.2e}")
    grads, seen = {}, set()
    # A tied head is the embedding's parameter: saved once, under the embedding's name.
    for pname, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.grad is None:
            raise RuntimeError(f"{name}: {pname} got no gradient")
        grads[pname] = p.grad.detach().contiguous()
    if tied and "lm_head.weight" in grads:
        grads["backbone.embeddings.weight"] = grads.pop("lm_head.weight")
    dest = os.path.join(args.out, name) if args.out else path
    os.makedirs(dest, exist_ok=True)
    save_file(grads, os.path.join(dest, "grads.safetensors"), metadata={"format": "pt"})
    meta = {
        "ids": ids.tolist(),
        "targets": targets.tolist(),
        "loss": loss.item(),
        "seed": SEED,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    with open(os.path.join(dest, "grads.json"), "w") as f:
        json.dump(meta, f)
    norms = ", ".join(f"{k.split('.')[-2] if k.endswith('weight') else k.split('.')[-1]}"
                      f"={v.norm().item():.3e}" for k, v in list(grads.items())[:4])
    print(f"wrote {dest}/grads.safetensors ({len(grads)} gradients) and grads.json: "
          f"loss {loss.item():.15f}; {norms}, ...", flush=True)


for model_name in MODELS:
    reference(model_name)
