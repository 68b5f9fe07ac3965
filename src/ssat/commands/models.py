"""`ssat models`: every registered backbone with its parameter count and inference GFLOPs at a given input."""

from __future__ import annotations

import json
from typing import Optional

import torch

from ssat.auxtasks import tasks_for
from ssat.config import Config, default_patch_size
from ssat.errors import UserError
from ssat.flops import inference_flops_per_image
from ssat.methods import METHODS
from ssat.models import MODELS, build_backbone, input_shape

MAX_SIZE = 4096  # a ViT-B's position table at 100000 px alone would need 30 G numbers


def describe(img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
             patch_size: Optional[int] = None) -> list[dict]:
    """Video models are measured on a clip of the default --frames (GFLOPs per clip). FLOPs are counted on the
    meta device (shapes only, no arithmetic), so a large --img-size takes seconds, not minutes."""
    rows = []
    for name, spec in MODELS.items():
        torch.manual_seed(0)
        spec_caps = spec.capabilities
        patch = patch_size or default_patch_size(img_size, name)
        frames = Config.frames if spec_caps.video else 0
        backbone = build_backbone(name, img_size=img_size, patch_size=patch, in_chans=in_chans,
                                  num_classes=num_classes, frames=frames).to("meta")
        x = torch.empty(1, *input_shape(in_chans, img_size, frames), device="meta")
        rows.append({"model": name, "description": spec.description, "img_size": img_size, "patch_size": patch,
                     "frames": frames or None,
                     "params_m": round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2),
                     "gflops": round(inference_flops_per_image(backbone, x) / 1e9, 3),
                     # sslft needs an encoder pre-trained with an auxiliary task, so it needs one too
                     "methods": ", ".join(m for m, spec in METHODS.items()
                                          if spec_caps.auxiliary or not (spec.auxiliary or spec.pretrained_init)),
                     "aux": ", ".join(tasks_for(spec_caps)) or "none",
                     "capabilities": ", ".join(spec_caps.supported())})
    return rows


def main(args) -> int:
    if min(args.img_size, args.in_chans, args.classes, args.patch_size or 1) < 1:
        raise UserError(f"--img-size, --patch-size, --in-chans and --classes must be at least 1, got {args.img_size}, "
                        f"{args.patch_size}, {args.in_chans} and {args.classes}")
    if args.img_size > MAX_SIZE:
        raise UserError(f"--img-size {args.img_size} is beyond what ssat models describes ({MAX_SIZE} px at most); "
                        f"give a smaller size (FLOPs of a ViT grow with the square of its token count)")
    rows = describe(args.img_size, args.in_chans, args.classes, args.patch_size)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"| model | params (M) | GFLOPs/image at {args.img_size} px | methods | auxiliary tasks | description |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_m']} | {r['gflops']} | {r['methods']} | {r['aux']} | "
              f"{r['description']} |")
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    md = sub.add_parser("models", help="list the backbones with parameters and GFLOPs",
                        description="Every registered backbone, built for the given input, with its parameter count, "
                                    "inference GFLOPs per image (PyTorch's FLOP counter) and the methods it allows.")
    md.add_argument("--img-size", type=int, default=32, help="input size, at most 4096 [default: 32]")
    md.add_argument("--patch-size", type=int, default=None,
                    help="patch (stem) size [default: each model's default for --img-size]")
    md.add_argument("--in-chans", type=int, default=3, help="input channels [default: 3]")
    md.add_argument("--classes", type=int, default=10, help="classifier outputs [default: 10]")
    md.add_argument("--json", action="store_true", help="one JSON line per model")
    md.set_defaults(handler=main)
