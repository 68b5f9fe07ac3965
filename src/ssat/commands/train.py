"""`ssat train` and `ssat pretrain`: options (defaults < --preset < --config YAML < flags) -> ssat.training.train,
one JSON line out."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Optional

from ssat import hostmem
from ssat.auxtasks import AUX_TASKS, task_names
from ssat.commands import add_config_flags, registry_epilog
from ssat.config import RESUMABLE, Config, config_type, load_yaml
from ssat.errors import UserError
from ssat.methods import METHODS
from ssat.runs import load_checkpoint
from ssat.training import train

PRINTED = ("method", "model", "dataset", "epochs", "test_acc1", "test_acc5", "test_acc1_selected", "selected_epoch",
           "test_acc1_max", "train_time_s")


def config_from_args(args: argparse.Namespace) -> tuple[Config, Optional[dict]]:
    """Merge defaults < preset < YAML < flags. With --resume, the run's own config is the base and only RESUMABLE
    options may be given; the loaded checkpoint is returned so it is read once."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_type()) if hasattr(args, f.name)}
    if args.resume:
        fixed = sorted(set(given) - RESUMABLE) + (["config"] if args.config else [])
        if fixed:
            raise UserError(f"--resume continues a run with its own settings, so {', '.join(fixed)} cannot be "
                            f"changed; start a new run with --out to change them")
        # The run continues where its files are now, even if the directory was moved since.
        run_dir = Path(args.resume) if Path(args.resume).is_dir() else Path(args.resume).parent
        staged = run_dir / "config.yaml"
        if Path(args.resume).is_dir() and not (run_dir / "checkpoint-last.pt").exists() and staged.is_file():
            # SSL+FT stopped in its pre-training stage: OUT holds only its config; the stage resumes itself.
            cfg = Config.from_dict({**load_yaml(staged), **given, "out": str(run_dir)}, source=str(staged))
            if METHODS[cfg.method].pretrained_init and cfg.pretrain_epochs > 0:
                return cfg, None
        state = load_checkpoint(args.resume)
        return Config.from_dict({**state["config"], **given, "out": str(run_dir)}, source="command line"), state
    base = load_yaml(args.config) if args.config else {}
    Config.from_dict({**base}, source=args.config or "config")  # its own errors name the file
    return Config.from_dict({**base, **given}, source="command line"), None


def run(args: argparse.Namespace, cfg: Config, state: Optional[dict]) -> int:
    if args.keep_freed_memory:
        hostmem.keep_freed_memory()
    cfg = dataclasses.replace(cfg, out=cfg.out or cfg.default_out())
    summary = train(cfg, resume=args.resume if state is not None else None, state=state)
    if summary:  # under torchrun only rank 0 returns one
        print(json.dumps({k: summary.get(k) for k in PRINTED} | {"run": cfg.out}))
    return 0


def main(args: argparse.Namespace) -> int:
    cfg, state = config_from_args(args)
    return run(args, cfg, state)


def main_pretrain(args: argparse.Namespace) -> int:
    """`ssat pretrain --method TASK`: --method names the self-supervised task; the run's method is `pretrain`."""
    cfg, state = config_from_args(args)
    if not args.resume:
        task = getattr(args, "method", "pretrain")
        if task != "pretrain" and not all(n in AUX_TASKS for n in task_names(task)):
            raise UserError(f"`ssat pretrain --method` names the self-supervised task(s): one of "
                            f"{', '.join(AUX_TASKS)} or several joined by '+', got '{task}'")
        cfg = dataclasses.replace(cfg, method="pretrain", aux=cfg.aux if task == "pretrain" else task)
    return run(args, cfg, state)


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    train = sub.add_parser("train", help="train a model (scratch or ssat) into a run directory",
                           description="Train one run. Defaults are the reference implementation's.",
                           epilog=registry_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", help="YAML file of options (flags given here override it)")
    train.add_argument("--resume", metavar="RUN", help="continue a killed run: its directory or checkpoint-last.pt "
                       f"(only {', '.join(sorted('--' + r.replace('_', '-') for r in RESUMABLE))} may change)")
    add_config_flags(train)

    pt = sub.add_parser("pretrain", help="self-supervised pre-training of the encoder (first stage of SSL+FT)",
                        description="Train the encoder with an auxiliary task alone (no labels): `--method mae|simclr|"
                                    "dino` names the task. Fine-tune the result with `ssat train --method sslft "
                                    "--init RUN_DIR`.", epilog=registry_epilog(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pt.add_argument("--config", help="YAML file of options (flags given here override it)")
    pt.add_argument("--resume", metavar="RUN", help="continue a killed pre-training run")
    for p in (train, pt):
        p.add_argument("--keep-freed-memory", action="store_true",
                       help="CPU: let glibc keep freed memory mapped for the whole process, so each step's "
                            "activations are not faulted back in page by page (a few per cent faster steps)")
    add_config_flags(pt)
    train.set_defaults(handler=main)
    pt.set_defaults(handler=main_pretrain)
