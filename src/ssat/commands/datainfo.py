"""`ssat data info`: what a data set holds, read through the same loader `ssat train` uses."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np

from ssat.commands import Parser, add_config_flags
from ssat.config import Config
from ssat.data.memory import fits_in_memory
from ssat.data.prepare import load_for
from ssat.data.registry import dataset_option_names


def info(cfg: Config) -> dict:
    data = load_for(cfg, log=lambda msg: print(msg, file=sys.stderr))
    first, _ = data.train[0]
    test_labels = getattr(data.test, "labels", None) or [data.test[i][1] for i in range(len(data.test))]
    train_counts, test_counts = Counter(data.train_targets), Counter(test_labels)
    return {
        "dataset": data.name, "classes": data.num_classes, "channels": data.in_chans,
        "image_size": list(first.shape[1:3]) if data.frames else list(first.size[::-1]),
        "native_size": data.native_size, **({"frames": data.frames} if data.frames else {}),
        "splits": {"train": len(data.train), "test": len(data.test)},
        "class_counts": {name: {"train": train_counts.get(c, 0), "test": test_counts.get(c, 0)}
                         for c, name in enumerate(data.classes)},
        "mean": [round(m, 4) for m in data.mean], "std": [round(s, 4) for s in data.std],
        "in_memory": fits_in_memory(data.train) and fits_in_memory(data.test),
        "hflip": data.hflip,
    }


def text(report: dict) -> str:
    counts = report["class_counts"]
    train = np.array([c["train"] for c in counts.values()])
    lines = [f"data set   {report['dataset']}",
             f"splits     train {report['splits']['train']}, test {report['splits']['test']}",
             f"classes    {report['classes']} (train images per class: min {train.min()}, max {train.max()})",
             f"images     {report['image_size'][0]}x{report['image_size'][1]} px (first training image), "
             f"{report['channels']} channel(s); default input {report['native_size']} px",
             f"normalise  mean {report['mean']}, std {report['std']}",
             f"data path  {'in memory (--loader auto)' if report['in_memory'] else 'files via PIL'}",
             "class      train  test"]
    for i, (name, c) in enumerate(counts.items()):
        if i == 30:
            lines.append(f"... and {len(counts) - 30} more classes (--json lists all)")
            break
        lines.append(f"{name[:24]:<24} {c['train']:>6} {c['test']:>5}")
    return "\n".join(lines)


def main(args) -> int:
    names = ["dataset", "data_root", "download", "train_split", "gray_to_rgb", "allow_outside_root",
             *dataset_option_names()]
    cfg = Config.from_dict({k: getattr(args, k) for k in names if getattr(args, k, None) is not None},
                           source="command line").validate()
    report = info(cfg)
    print(json.dumps(report) if args.json else text(report))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    data = sub.add_parser("data", help="inspect a data set (`ssat data info`)")
    data_sub = data.add_subparsers(dest="data_command", metavar="info", parser_class=Parser, required=True)
    di = data_sub.add_parser("info", help="splits, class counts, image size and channels of a data set",
                             description="Read a data set through the loader `ssat train` uses and describe it.")
    di.add_argument("--dataset", default="digits", help="data set name [default: digits]")
    di.add_argument("--data-root", help="folder holding its files")
    di.add_argument("--download", action="store_true", help="download it first if missing (needs internet)")
    di.add_argument("--train-split", help="flowers102 / MedMNIST: train or train+val")
    add_config_flags(di, only=dict.fromkeys(dataset_option_names()))
    di.add_argument("--gray-to-rgb", action="store_true", default=None, help="replicate grayscale to 3 channels")
    di.add_argument("--allow-outside-root", action="store_true", default=None,
                    help="let split files name images outside --data-root")
    di.add_argument("--json", action="store_true", help="one JSON object instead of text")
    di.set_defaults(handler=main)
