"""The `ssat` command. `train` flags are generated from `Config`, so every option has exactly one definition.

Precedence: Config defaults < --config YAML < command-line flags. Any UserError -> `ssat: error: ...`, exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

from ssat.config import Config, load_yaml, preset_names
from ssat.errors import UserError, first_line

# What may differ when a run is resumed: where/how it runs and how long, and the step size.
RESUMABLE = {"device", "workers", "quiet", "epochs", "data_root", "download", "compile", "country", "energy",
             "lr", "blr", "clip_grad"}  # the last three: to go on after a divergence


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        default = f.default
        help_text = f.metadata["help"] + ("" if default is None else f" [default: {default}]")
        if f.type in ("bool", "Optional[bool]"):
            group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:  # parsed as text, converted and range-checked by Config (one message style for flags and YAML)
            group.add_argument(flag_of(f), dest=f.name, metavar=flag_of(f)[2:].upper().replace("-", "_"),
                               default=argparse.SUPPRESS,
                               help=help_text)


def registry_epilog() -> str:
    from ssat.auxtasks import AUX_TASKS
    from ssat.data import DATASETS
    from ssat.models import MODELS
    from ssat.objective import METHODS
    lines = ["models:"] + [f"  {n:<12} {s.description}" for n, s in MODELS.items()]
    lines += ["data sets:"] + [f"  {n:<12} {s.description}" for n, s in DATASETS.items()]
    lines += [f"methods: {', '.join(METHODS)}    auxiliary tasks: {', '.join(AUX_TASKS)}"]
    lines += [f"presets (--preset): {', '.join(preset_names())}"]
    return "\n".join(lines)


def build_parser() -> Parser:
    parser = Parser(prog="ssat", description="Train Vision Transformers on small data sets with a "
                    "Self-Supervised Auxiliary Task (SSAT: joint classification + MAE reconstruction).")
    from ssat import __version__
    parser.add_argument("--version", action="version", version=f"ssat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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
    add_config_flags(pt)

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
    ev.add_argument("--domain", help="DomainNet domain to evaluate on [default: the one it was trained on]")
    ev.add_argument("--batch-size", type=int, default=256, help="images per batch [default: 256]")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")

    pr = sub.add_parser("predict", help="top-k labels for image files (one JSON line per image)",
                        description="Classify image files with a trained model's primary stream.")
    pr.add_argument("--checkpoint", required=True, help="run directory, model.safetensors or checkpoint-last.pt")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    pr.add_argument("--topk", type=int, default=5, help="labels to print per image [default: 5]")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")

    tb = sub.add_parser("table", help="side-by-side table of finished runs (from their summary.json)",
                        description="Print a Markdown table of runs; a directory is searched for runs below it.")
    tb.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or directories holding runs")
    data = sub.add_parser("data", help="inspect a data set (`ssat data info`)")
    data_sub = data.add_subparsers(dest="data_command", metavar="info", parser_class=Parser, required=True)
    di = data_sub.add_parser("info", help="splits, class counts, image size and channels of a data set",
                             description="Read a data set through the loader `ssat train` uses and describe it.")
    di.add_argument("--dataset", default="digits", help="data set name [default: digits]")
    di.add_argument("--data-root", help="folder holding its files")
    di.add_argument("--download", action="store_true", help="download it first if missing (needs internet)")
    di.add_argument("--train-split", help="flowers102 / MedMNIST: train or train+val")
    di.add_argument("--domain", help="DomainNet domain")
    di.add_argument("--medmnist-size", type=int, help="MedMNIST release: 28, 64, 128 or 224")
    di.add_argument("--gray-to-rgb", action="store_true", default=None, help="replicate grayscale to 3 channels")
    di.add_argument("--allow-outside-root", action="store_true", default=None,
                    help="let split files name images outside --data-root")
    di.add_argument("--json", action="store_true", help="one JSON object instead of text")

    sw = sub.add_parser("sweep", help="run a grid of runs from a YAML file (resumable)",
                        description="Run every point of a sweep file's grid as its own run directory; finished "
                                    "points are skipped, killed ones resumed. See configs/sweep-*.yaml.")
    sw.add_argument("file", help="sweep YAML: name, out, base (options), grid (option: [values])")
    sw.add_argument("--parallel", type=int, default=1, help="runs at a time, each in its own process [default: 1]")
    sw.add_argument("--dry-run", action="store_true", help="list the runs without training")

    rp = sub.add_parser("report", help="tables (md, csv), plots and index.html from a directory of runs",
                        description="Collect every finished run below RUNS_DIR and write the study's tables and "
                                    "plots.")
    rp.add_argument("runs", metavar="RUNS_DIR", help="directory holding runs (e.g. runs/<sweep name>)")
    rp.add_argument("--out", help="output folder [default: RUNS_DIR/report]")

    gc = sub.add_parser("gradcam", help="Grad-CAM and attention-rollout grid: test images x models",
                        description="For the same seeded test images, each model's Grad-CAM (pytorch-grad-cam, "
                                    "class token left out) and class-token attention rollout, side by side.")
    gc.add_argument("--checkpoint", action="append", required=True, help="run directory (repeat to compare)")
    gc.add_argument("--dataset", help="data set [default: the first model's]")
    gc.add_argument("--data-root", help="its files [default: the first model's]")
    gc.add_argument("--n", type=int, default=8, help="test images [default: 8]")
    gc.add_argument("--out", default="gradcam.png", help="PNG to write [default: gradcam.png]")
    gc.add_argument("--device", default="cpu", help="[default: cpu]")

    rc = sub.add_parser("reconstruct", help="original / masked / reconstructed grid of an SSAT (MAE) run",
                        description="Mask test images as in training and draw the MAE decoder's reconstruction.")
    rc.add_argument("--checkpoint", required=True, help="run directory of an ssat or pretrain run with --aux mae")
    rc.add_argument("--n", type=int, default=8, help="test images [default: 8]")
    rc.add_argument("--seed", type=int, default=0, help="seed of the images and masks [default: 0]")
    rc.add_argument("--out", default="reconstruction.png", help="PNG to write [default: reconstruction.png]")

    md = sub.add_parser("models", help="list the backbones with parameters and GFLOPs",
                        description="Every registered backbone, built for the given input, with its parameter count, "
                                    "inference GFLOPs per image (PyTorch's FLOP counter) and the methods it allows.")
    md.add_argument("--img-size", type=int, default=32, help="input size [default: 32]")
    md.add_argument("--in-chans", type=int, default=3, help="input channels [default: 3]")
    md.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    md.add_argument("--json", action="store_true", help="one JSON line per model")

    bn = sub.add_parser("bench", help="time the training step (and the in-memory data path); one JSON line",
                        description="Time warm-up + N optimizer steps of the real training loop on synthetic "
                                    "data and print images/s, ms/step and achieved GFLOP/s.")
    bn.add_argument("--model", default="vit_tiny", help="backbone [default: vit_tiny]")
    bn.add_argument("--img", type=int, default=32, help="image size in pixels [default: 32]")
    bn.add_argument("--patch", type=int, default=4, help="patch size [default: 4]")
    bn.add_argument("--batch", type=int, default=128, help="images per step [default: 128]")
    bn.add_argument("--method", default="ssat", choices=["scratch", "ssat"], help="[default: ssat]")
    bn.add_argument("--compare", action="store_true", help="also time the other method; adds the step-time ratio")
    bn.add_argument("--decoder-heads", type=int, default=Config.decoder_heads,
                    help=f"MAE decoder heads of the SSAT step [default: {Config.decoder_heads}, the reference's; "
                         "4 is faster on CPUs]")
    bn.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [default: auto]")
    bn.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="as `ssat train --precision` [default: auto]")
    bn.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up includes compiling)")
    bn.add_argument("--steps", type=int, default=10, help="timed steps [default: 10]")
    bn.add_argument("--warmup", type=int, default=3, help="untimed steps first [default: 3]")
    bn.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    bn.add_argument("--data", action="store_true", help="also time the in-memory data path (default augmentation)")
    bn.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak (about 1 s)")
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[Config, Optional[dict]]:
    """Merge defaults < YAML < flags. With --resume, the run's own config is the base and only RESUMABLE
    options may be given; the loaded checkpoint is returned so it is read once."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    if args.resume:
        from ssat.runs import load_checkpoint
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
            if cfg.method == "sslft" and cfg.pretrain_epochs > 0:
                return cfg, None
        state = load_checkpoint(args.resume)
        return Config.from_dict({**state["config"], **given, "out": str(run_dir)}, source="command line"), state
    base = load_yaml(args.config) if args.config else {}
    Config.from_dict({**base}, source=args.config or "config")  # its own errors name the file
    return Config.from_dict({**base, **given}, source="command line"), None


# command -> (module, function(args) -> exit code); imported only when used, so `ssat --help` stays fast.
RUNNERS = {"sweep": ("ssat.commands.sweep", "main"), "report": ("ssat.commands.report", "main"),
           "gradcam": ("ssat.commands.explain", "main_gradcam"),
           "reconstruct": ("ssat.commands.explain", "main_reconstruct"),
           "models": ("ssat.commands.models", "main"), "data": ("ssat.commands.datainfo", "main"),
           "bench": ("ssat.commands.bench", "main")}


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker arrives wrapped in the worker's traceback; keep its own line."""
    marker = "UserError: "
    if "Original Traceback" in message and marker in message:
        return message.rsplit(marker, 1)[1].strip().splitlines()[0]
    return message


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command in ("train", "pretrain"):
            from ssat.commands.train import train
            cfg, state = config_from_args(args)
            if args.command == "pretrain" and not args.resume:
                from ssat.auxtasks import AUX_TASKS
                if getattr(args, "method", "pretrain") not in AUX_TASKS | {"pretrain": None}:
                    raise UserError(f"`ssat pretrain --method` names the self-supervised task: one of "
                                    f"{', '.join(AUX_TASKS)}, got '{args.method}'")
                cfg.aux = args.method if hasattr(args, "method") and args.method != "pretrain" else cfg.aux
                cfg.method = "pretrain"
            summary = train(cfg, resume=args.resume if state is not None else None, state=state)
            if summary:  # under torchrun only rank 0 returns one
                print(json.dumps({k: summary.get(k) for k in ("method", "model", "dataset", "epochs", "test_acc1",
                                                               "test_acc5", "test_acc1_selected", "selected_epoch",
                                                               "best_acc1", "train_time_s")}
                                 | {"run": cfg.out}))
        elif args.command == "eval":
            from ssat.commands.inference import evaluate_checkpoint
            if args.batch_size < 1 or args.perturb_seed < 0:
                raise UserError(f"--batch-size must be at least 1 and --perturb-seed at least 0, got "
                                f"{args.batch_size} and {args.perturb_seed}")
            print(json.dumps(evaluate_checkpoint(args.checkpoint, args.dataset, args.data_root, args.download,
                                                 args.batch_size, args.device, domain=args.domain,
                                                 perturb=args.perturb, perturb_seed=args.perturb_seed)))
        elif args.command == "predict":
            from ssat.commands.inference import predict, print_json_lines
            if args.topk < 1:
                raise UserError(f"--topk must be at least 1, got {args.topk}")
            print_json_lines(predict(args.checkpoint, args.images, args.topk, args.device))
        elif args.command in RUNNERS:  # commands whose module reads the parsed flags itself
            if args.command == "bench" and (args.steps < 1 or args.warmup < 1 or args.batch < 1):
                raise UserError("--steps, --warmup and --batch must be at least 1")
            if args.command in ("gradcam", "reconstruct") and args.n < 1:
                raise UserError(f"--n must be at least 1 (images to draw), got {args.n}")
            if args.command == "models" and min(args.img_size, args.in_chans, args.classes) < 1:
                raise UserError(f"--img-size, --in-chans and --classes must be at least 1, got {args.img_size}, "
                                f"{args.in_chans} and {args.classes}")
            module, function = RUNNERS[args.command]
            return getattr(importlib.import_module(module), function)(args)
        elif args.command == "table":
            from ssat.commands.table import markdown
            from ssat.runs import collect
            print(markdown(collect(args.runs)))
    except UserError as e:
        print(f"ssat: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`ssat table runs | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # disk full, permission denied, not a directory ... on a path the user gave
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"ssat: error: {e.strerror or first_line(e)}{where}; check the path, its permissions and the free "
              f"disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssat: interrupted; a training run continues from its last epoch with `ssat train --resume DIR`",
              file=sys.stderr)
        return 130
    return 0
