"""The `ssat` command. `train` flags are generated from `Config`, so every option has exactly one definition.

Precedence: Config defaults < --config YAML < command-line flags. Any UserError -> `ssat: error: ...`, exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from typing import Optional

from ssat.config import RESUMABLE, Config, preset_names
from ssat.data.registry import dataset_option_names
from ssat.errors import UserError, first_line
from ssat.plugins import check_plugins


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, only: Optional[dict] = None) -> None:
    """Config's fields as flags (all of them, or the names in `only`, mapped to the command's own defaults)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        if only is not None and f.name not in only:
            continue
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        default = f.default if only is None or only[f.name] is None else only[f.name]
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
    from ssat.methods import METHODS
    from ssat.models import MODELS
    lines = ["models:"] + [f"  {n:<12} {s.description}" for n, s in MODELS.items()]
    lines += ["data sets:"] + [f"  {n:<12} {s.description}" for n, s in DATASETS.items()]
    lines += [f"methods: {', '.join(METHODS)}    auxiliary tasks: {', '.join(AUX_TASKS)}"]
    lines += [f"presets (--preset): {', '.join(preset_names())}"]
    return "\n".join(lines)


def build_parser() -> Parser:
    parser = Parser(prog="ssat", description="Train Vision Transformers on small data sets with a "
                    "Self-Supervised Auxiliary Task (SSAT: joint classification + MAE reconstruction).")
    from ssat.version import __version__
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
    for p in (train, pt):
        p.add_argument("--keep-freed-memory", action="store_true",
                       help="CPU: let glibc keep freed memory mapped for the whole process, so each step's "
                            "activations are not faulted back in page by page (a few per cent faster steps)")
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
    ev.add_argument("--manipulations", help="FaceForensics++ methods to test on, comma-separated (the "
                                            "cross-manipulation test) [default: the ones it was trained on]")
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
    add_config_flags(di, only=dict.fromkeys(dataset_option_names()))
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

    ex = sub.add_parser("export", help="write a trained model as a timm model folder (config.json + safetensors)",
                        description="Export a run so that timm.create_model('local-dir:DIR', pretrained=True) "
                                    "rebuilds it with timm alone (checked by comparing logits); optionally push it "
                                    "to the Hugging Face Hub.")
    ex.add_argument("run", metavar="RUN", help="run directory (or its model.safetensors)")
    ex.add_argument("--to", required=True, help="new or empty folder to write")
    ex.add_argument("--best", action="store_true", help="export the validation-selected epoch (model-best)")
    ex.add_argument("--push-to-hub", metavar="USER/REPO", help="also upload the folder to this Hub repository")
    ex.add_argument("--private", action="store_true", help="create the Hub repository as private")

    md = sub.add_parser("models", help="list the backbones with parameters and GFLOPs",
                        description="Every registered backbone, built for the given input, with its parameter count, "
                                    "inference GFLOPs per image (PyTorch's FLOP counter) and the methods it allows.")
    md.add_argument("--img-size", type=int, default=32, help="input size, at most 4096 [default: 32]")
    md.add_argument("--patch-size", type=int, default=None,
                    help="patch (stem) size [default: each model's default for --img-size]")
    md.add_argument("--in-chans", type=int, default=3, help="input channels [default: 3]")
    md.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    md.add_argument("--json", action="store_true", help="one JSON line per model")

    bn = sub.add_parser("bench", help="time the training step (and the in-memory data path); one JSON line",
                        description="Time warm-up + N optimizer steps of the real training loop on synthetic "
                                    "data and print images/s, ms/step and achieved GFLOP/s.")
    add_config_flags(bn, only=BENCH_OPTIONS)  # the same names and checks as `ssat train`
    bn.add_argument("--compare", action="store_true", help="also time the other method; adds the step-time ratio")
    bn.add_argument("--keep-freed-memory", action="store_true", help="as `ssat train --keep-freed-memory`")
    bn.add_argument("--steps", type=int, default=10, help="timed steps [default: 10]")
    bn.add_argument("--warmup", type=int, default=3, help="untimed steps first [default: 3]")
    bn.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    bn.add_argument("--data", action="store_true", help="also time the in-memory data path (default augmentation)")
    bn.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak (about 1 s)")
    bn.add_argument("--profile", metavar="DIR", help="also profile each method's step (torch.profiler): kernels, "
                    "device vs host time, host syncs and the costliest ops per step; Chrome traces into DIR")
    bn.add_argument("--profile-steps", type=int, default=5, help="steps profiled with --profile [default: 5]")
    bn.add_argument("--epoch-images", type=int, default=0, metavar="N",
                    help="also time one epoch of N generated in-memory images (e.g. 50000, CIFAR's size) against "
                         "its steps' time [default: 0, off]")
    return parser


# `ssat bench` times a step built from these Config options (None: Config's default; else bench's own).
BENCH_OPTIONS = {"model": None, "img_size": 32, "patch_size": 4, "batch_size": 128, "method": None,
                 "decoder_dim": None, "decoder_depth": None, "decoder_heads": None, "lam": None, "balance": None,
                 "mask_ratio": None, "device": None, "precision": None, "compile": None, "compile_mode": None,
                 "global_pool": None, "norm_pix_loss": None,
                 "frames": None, "tubelet_size": None}  # video models

# command -> "module:function(args) -> exit code"; each module is imported only when used (`ssat --help` stays fast).
COMMANDS = {"train": "ssat.commands.train:main", "pretrain": "ssat.commands.train:main_pretrain",
            "eval": "ssat.commands.inference:main_eval", "predict": "ssat.commands.inference:main_predict",
            "table": "ssat.commands.table:main", "data": "ssat.commands.datainfo:main",
            "sweep": "ssat.commands.sweep:main", "report": "ssat.commands.report:main",
            "gradcam": "ssat.commands.explain:main_gradcam", "reconstruct": "ssat.commands.explain:main_reconstruct",
            "models": "ssat.commands.models:main", "bench": "ssat.commands.bench:main",
            "export": "ssat.commands.export:main"}


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker arrives wrapped in the worker's traceback; keep its own line."""
    marker = "UserError: "
    if "Original Traceback" in message and marker in message:
        return message.rsplit(marker, 1)[1].strip().splitlines()[0]
    return message


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        check_plugins()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        module, function = COMMANDS[args.command].split(":")
        return getattr(importlib.import_module(module), function)(args)
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
