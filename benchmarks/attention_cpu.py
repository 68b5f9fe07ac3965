"""Where the SSAT step's excess over its FLOP ratio goes on a CPU: the attention cores, forward + backward.

    .venv/bin/python benchmarks/attention_cpu.py [--batch 128] [--reps 15]

Times one attention core (q, k, v from a bf16 qkv projection, as under `--precision bf16`) in the shapes of the
ViT-T/32 px/patch 4 SSAT step: the encoder's primary (65 tokens) and masked (17) streams, 3 heads of 64 dims, and
the MAE decoder (65 tokens, the reference's 16 heads of 8 dims), with the implementations one could use:
ssat's (`models.layers.attention`: SDPA in fp32), SDPA in bf16, and the explicit softmax(QK^T)V in fp32. Prints
one JSON line per shape with the median milliseconds of each."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ssat.models.layers import attention


def sdpa_math_fp32(q, k, v):
    with sdpa_kernel(SDPBackend.MATH), torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float())


def explicit(q, k, v):
    q, k, v = q.float(), k.float(), v.float()
    return ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1) @ v


IMPLEMENTATIONS = {"ssat": attention, "sdpa_math_fp32": sdpa_math_fp32, "sdpa_bf16": F.scaled_dot_product_attention,
                   "explicit_fp32": explicit}
SHAPES = {"encoder, 65 tokens": (65, 3, 64), "encoder, 17 visible tokens": (17, 3, 64),
          "decoder, 65 tokens": (65, 16, 8), "decoder, 64 tokens (for comparison)": (64, 16, 8)}


def median_ms(fn, reps: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, (tokens, heads, dim) in SHAPES.items():
        qkv = torch.randn(args.batch, tokens, 3, heads, dim, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(args.batch, tokens, heads * dim, dtype=torch.bfloat16)

        def step(impl):  # the layouts of models.layers.Attention
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            impl(q, k, v).to(torch.bfloat16).transpose(1, 2).reshape(grad.shape).backward(grad)

        flops = 3 * 4 * args.batch * heads * tokens * tokens * dim  # QK^T and AV, forward + ~2x backward
        row = {"shape": name, "batch": args.batch, "tokens": tokens, "heads": heads, "head_dim": dim}
        for impl_name, impl in IMPLEMENTATIONS.items():
            row[f"{impl_name}_ms"] = median_ms(lambda: step(impl), args.reps)
        row["ssat_gflops_per_s"] = round(flops / row["ssat_ms"] / 1e6, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
