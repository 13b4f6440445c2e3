"""Keeping HF transformers on its torch path where mamba_ssm's sources are on the path.

Newer transformers (seen on the GPU machine, 2026-12-07) route Mamba and Mamba-2 to an
importable mamba_ssm's fused kernels, whose CUDA builds (the selective scan, causal_conv1d) are
absent there; the peers' PYTHONPATH (.peer) makes mamba_ssm importable. HF's anchors drop every
folder that holds mamba_ssm from their path first (bench/lm_hf.py, bench/train_peer.py).
"""

import os


def without_mamba_ssm(paths):
    """The entries of `paths` (sys.path or PYTHONPATH entries) that hold no mamba_ssm folder."""
    return [p for p in paths if not os.path.isdir(os.path.join(p or ".", "mamba_ssm"))]
