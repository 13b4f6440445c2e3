"""The command line of the FLA peer scripts (bench/delta_peer.py, bench/gla_peer.py).

Import it before torch: with `--f32-dot ieee` it sets TRITON_F32_DEFAULT=ieee, which Triton reads
when it is imported, so that f32 `tl.dot`s multiply in full f32 instead of Triton's default TF32.
"""

import argparse
import os


def peer_args():
    """Parses `--shapes` and `--f32-dot`; sets Triton's f32 dot precision for `ieee`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="1x8192x32x128,8x2048x16x64")
    parser.add_argument("--f32-dot", choices=("tf32", "ieee"), default="tf32")
    args = parser.parse_args()
    if args.f32_dot == "ieee":
        os.environ["TRITON_F32_DEFAULT"] = "ieee"
    return args


def peer_dtypes(args):
    """(torch dtype, row name) pairs to time: f32 (TF32 dots) and bf16, or f32_ieee alone."""
    import torch

    if args.f32_dot == "ieee":
        return ((torch.float32, "f32_ieee"),)
    return ((torch.float32, "f32"), (torch.bfloat16, "bf16"))
