"""Where the SSAT step's excess over its FLOP ratio goes on a CPU: the attention cores, forward + backward.

    .venv/bin/python benchmarks/attention_cpu.py [--batch 128] [--reps 15]

Times one attention core (q, k, v from a bf16 qkv projection, as under `--precision bf16`) in the shapes of the
ViT-T/32 px/patch 4 SSAT step: the encoder's primary (65 tokens) and masked (17) streams, 3 heads of 64 dims, and
the MAE decoder (65 tokens, the reference's 16 heads of 8 dims), with the implementations one could use:
ssat's (`models.layers.attention`: SDPA in fp32), SDPA's math backend, SDPA in bf16, the explicit softmax(QK^T)V
in fp32, and three exact rewrites of ssat's (last query row apart, keys padded to 16, one cast of qkv). Prints one
JSON line per shape with the median milliseconds of each (implementations taking turns, so drift is shared)."""

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


def last_row_apart(q, k, v):
    """Exact: the last query row through SDPA's math backend, the others through fp32 flash (the CPU flash kernel
    tiles queries by 32, so 65 rows make a third tile of one row)."""
    with torch.autocast("cpu", enabled=False):
        q, k, v = q.float(), k.float(), v.float()
        head = F.scaled_dot_product_attention(q[:, :, :-1], k, v)
        with sdpa_kernel(SDPBackend.MATH):
            tail = F.scaled_dot_product_attention(q[:, :, -1:], k, v)
        return torch.cat([head, tail], dim=2)


def keys_padded_to_16(q, k, v):
    """Exact: keys and values zero-padded to a multiple of 16 tokens, the padding masked out."""
    n = k.shape[-2]
    pad = -n % 16
    keep = (torch.arange(n + pad) < n).expand(q.shape[-2], -1)
    with torch.autocast("cpu", enabled=False):
        k, v = (F.pad(t.float(), (0, 0, 0, pad)) for t in (k, v))
        return F.scaled_dot_product_attention(q.float(), k, v, attn_mask=keep)


def views(qkv):  # the layouts of models.layers.Attention
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def one_cast(qkv):
    """Exact: the whole qkv cast to fp32 once, q/k/v passed to SDPA as strided views, instead of three casts."""
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(*views(qkv.float()))


IMPLEMENTATIONS = {name: (lambda qkv, f=f: f(*views(qkv))) for name, f in {
    "ssat": attention, "sdpa_math_fp32": sdpa_math_fp32, "sdpa_bf16": F.scaled_dot_product_attention,
    "explicit_fp32": explicit, "last_row_apart": last_row_apart, "keys_padded_to_16": keys_padded_to_16}.items()}
IMPLEMENTATIONS["one_cast"] = one_cast
EXACT_REWRITES = ("last_row_apart", "keys_padded_to_16", "one_cast")
SHAPES = {"encoder, 65 tokens": (65, 3, 64), "encoder, 17 visible tokens": (17, 3, 64),
          "decoder, 65 tokens": (65, 16, 8), "decoder, 64 tokens (for comparison)": (64, 16, 8)}


def interleaved_median_ms(fns: dict, reps: int) -> dict:
    """Median ms of each fn over `reps` rounds in which every fn runs once, the order flipped each round."""
    for fn in fns.values():
        fn(), fn()
    names, times = list(fns), {n: [] for n in fns}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - start)
    return {n: round(1e3 * statistics.median(t), 1) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, (tokens, heads, dim) in SHAPES.items():
        qkv = torch.randn(args.batch, tokens, 3, heads, dim, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(args.batch, tokens, heads * dim, dtype=torch.bfloat16)

        def step(impl):
            impl(qkv).to(torch.bfloat16).transpose(1, 2).reshape(grad.shape).backward(grad)

        def input_grad(impl):
            qkv.grad = None
            step(impl)
            return qkv.grad.float()

        flops = 3 * 4 * args.batch * heads * tokens * tokens * dim  # QK^T and AV, forward + ~2x backward
        row = {"shape": name, "batch": args.batch, "tokens": tokens, "heads": heads, "head_dim": dim}
        exact = input_grad(IMPLEMENTATIONS["ssat"])
        for impl_name in EXACT_REWRITES:  # bf16 rounding of the output and gradients only
            diff = (input_grad(IMPLEMENTATIONS[impl_name]) - exact).abs().max().item()
            row[f"{impl_name}_max_grad_diff"] = round(diff, 4)
        steps = {n: (lambda impl=impl: step(impl)) for n, impl in IMPLEMENTATIONS.items()}
        ms = interleaved_median_ms(steps, args.reps)
        row.update({f"{n}_ms": t for n, t in ms.items()})
        row["ssat_gflops_per_s"] = round(flops / row["ssat_ms"] / 1e6, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
