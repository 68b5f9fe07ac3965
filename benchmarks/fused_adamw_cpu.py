"""Does the fused AdamW kernel speed up the CPU training step? The same SSAT step (`ssat bench`'s StepTimer) with
ssat's optimizer (fused) and with PyTorch's default AdamW loop, taking turns round by round in one process.

    .venv/bin/python benchmarks/fused_adamw_cpu.py [--precision bf16] [--steps 12] [--method ssat]

Prints one JSON line: each variant's images/s and the paired step-time ratio fused / loop (< 1: fused is faster).
"""

import argparse
import json

import torch

from ssat.commands.bench import StepTimer, paired_ratio, paired_ratio_quartiles, time_steps
from ssat.config import Config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--method", default="ssat")
    parser.add_argument("--model", default="vit_tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    cfg = Config.from_dict({"model": args.model, "method": args.method, "precision": args.precision,
                            "img_size": 32, "patch_size": 4, "batch_size": args.batch_size, "device": "cpu"}).validate()
    device = torch.device("cpu")
    fused, loop = StepTimer(cfg, device, 10), StepTimer(cfg, device, 10)
    # the same parameter groups (weight decay skipped on the same tensors), PyTorch's default implementation
    loop.optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k not in ("fused", "foreach")}
                                        for g in loop.optimizer.param_groups], lr=1e-4)
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    assert not any(g["fused"] for g in loop.optimizer.param_groups)
    (a, b), (ta, tb) = time_steps([fused, loop], steps=args.steps, warmup=2)
    print(json.dumps({"model": args.model, "method": args.method, "precision": args.precision,
                      "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                      "fused_images_per_s": a["images_per_s"], "loop_images_per_s": b["images_per_s"],
                      "fused_over_loop_step_time": round(paired_ratio(ta, tb), 3),
                      "quartiles": [round(q, 3) for q in paired_ratio_quartiles(ta, tb)]}))


if __name__ == "__main__":
    main()
