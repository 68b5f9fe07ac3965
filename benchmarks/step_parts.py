"""Where the SSAT step's time goes: the scratch step P, the SSAT step S and the auxiliary-only step A, timed in turns.

    .venv/bin/python benchmarks/step_parts.py [--precision bf16] [--steps 30] [--decoder-heads 16 4]

A is the step `ssat pretrain` runs (masked encoder pass, MAE decoder, reconstruction loss, optimizer), so S ~ P + A
minus one optimizer step when the two streams do not slow each other down. S/(P+A) near 1 says the SSAT step's
excess over its FLOP ratio is the auxiliary stream's own cost; A/P against the FLOP share says how efficiently that
stream runs. `--decoder-heads` adds an SSAT step per head count (the reference's decoder has 16) to show what the
decoder's attention, 16 heads of 8 dims by default, costs on this machine.

Prints one JSON line per SSAT variant."""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from ssat.commands.bench import StepTimer, paired_ratio, paired_ratio_quartiles, time_steps
from ssat.config import Config
from ssat.hostmem import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--steps", type=int, default=30,
                        help="timed steps of each kind, taking turns in rounds of ~0.2 s")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--decoder-heads", type=int, nargs="+", default=[Config.decoder_heads])
    args = parser.parse_args()
    device = torch.device("cpu")
    keep_freed_memory()  # as `ssat train` on a CPU

    def timer(method: str, heads: int = Config.decoder_heads) -> StepTimer:
        cfg = Config(model="vit_tiny", img_size=32, patch_size=4, batch_size=args.batch, method=method,
                     precision=args.precision, decoder_heads=heads, device="cpu").validate()
        return StepTimer(cfg, device, classes=10)

    timers = [timer("scratch"), timer("pretrain")] + [timer("ssat", h) for h in args.decoder_heads]
    _, times = time_steps(timers, steps=args.steps, warmup=2)
    (p, a), flops_p = times[:2], timers[0].flops
    for heads, s in zip(args.decoder_heads, times[2:]):
        print(json.dumps({
            "precision": args.precision, "decoder_heads": heads, "rounds": len(s),
            "ms_per_step": {name: round(statistics.median(x) * 1000)
                            for name, x in (("scratch", p), ("aux_only", a), ("ssat", s))},
            "ssat_over_scratch": round(paired_ratio(s, p), 3),
            "ssat_over_scratch_quartiles": [round(q, 3) for q in paired_ratio_quartiles(s, p)],
            "aux_only_over_scratch": round(paired_ratio(a, p), 3),
            "aux_only_flops_over_scratch": round(timers[1].flops / flops_p, 3),
            "ssat_over_scratch_plus_aux_only": round(statistics.median(
                x / (y + z) for x, y, z in zip(s, p, a)), 3),
        }))


if __name__ == "__main__":
    main()
