"""`ssat eval` (one JSON line: accuracy on a test split, clean or perturbed) and `ssat predict` (one JSON line per
image: its top-k labels)."""

from __future__ import annotations

import argparse
import json

from ssat.data.registry import eval_options
from ssat.errors import UserError
from ssat.inference import evaluate_checkpoint, predict


def main_eval(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.perturb_seed < 0:
        raise UserError(f"--batch-size must be at least 1 and --perturb-seed at least 0, got "
                        f"{args.batch_size} and {args.perturb_seed}")
    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.dataset, args.data_root, args.download,
                                         args.batch_size, args.device, perturb=args.perturb,
                                         perturb_seed=args.perturb_seed,
                                         **{name: getattr(args, name) for name in eval_options()})))
    return 0


def main_predict(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise UserError(f"--topk must be at least 1, got {args.topk}")
    for row in predict(args.checkpoint, args.images, args.topk, args.device):
        print(json.dumps(row))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    ev = sub.add_parser("eval", help="top-1/top-5 accuracy of a trained model (prints one JSON line)",
                        description="Evaluate the primary stream (encoder + head) on a data set's test split.")
    ev.add_argument("--checkpoint", required=True, help="run directory, model.safetensors or checkpoint-last.pt")
    ev.add_argument("--dataset", help="data set to evaluate on [default: the one it was trained on]")
    ev.add_argument("--data-root", help="folder of that data set's files [default: the training run's]")
    ev.add_argument("--download", action="store_true", help="download the data set if missing (needs internet)")
    ev.add_argument("--perturb", metavar="KIND[:SEVERITY]", help="evaluate on a seeded perturbed copy of the test "
                    "set: perspective[:0.5], rotate[:30], blur[:1.0], noise[:0.1] or jpeg[:20]; a run's summary.json "
                    "records the result")
    ev.add_argument("--perturb-seed", type=int, default=0, help="seed of the perturbation [default: 0]")
    for name, help_text in eval_options().items():  # what the data sets declare may differ at evaluation
        ev.add_argument(f"--{name.replace('_', '-')}", help=help_text)
    ev.add_argument("--batch-size", type=int, default=256, help="images per batch [default: 256]")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")

    pr = sub.add_parser("predict", help="top-k labels for image files (one JSON line per image)",
                        description="Classify image files with a trained model's primary stream.")
    pr.add_argument("--checkpoint", required=True, help="run directory, model.safetensors or checkpoint-last.pt")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    pr.add_argument("--topk", type=int, default=5, help="labels to print per image [default: 5]")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    ev.set_defaults(handler=main_eval)
    pr.set_defaults(handler=main_predict)
