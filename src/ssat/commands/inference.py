"""`ssat eval` (one JSON line: accuracy on a test split, clean or perturbed) and `ssat predict` (one JSON line per
image: its top-k labels)."""

from __future__ import annotations

import argparse
import json

from ssat.errors import UserError
from ssat.inference import evaluate_checkpoint, predict


def main_eval(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.perturb_seed < 0:
        raise UserError(f"--batch-size must be at least 1 and --perturb-seed at least 0, got "
                        f"{args.batch_size} and {args.perturb_seed}")
    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.dataset, args.data_root, args.download,
                                         args.batch_size, args.device, perturb=args.perturb,
                                         perturb_seed=args.perturb_seed, domain=args.domain,
                                         manipulations=args.manipulations)))
    return 0


def main_predict(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}")
    for row in predict(args.checkpoint, args.images, args.topk, args.device):
        print(json.dumps(row))
    return 0
