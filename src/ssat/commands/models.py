"""`ssat models`: every registered backbone with its parameter count and inference GFLOPs at a given input."""

from __future__ import annotations

import json

import torch

from ssat.auxtasks import tasks_for
from ssat.config import Config, default_patch_size
from ssat.errors import UserError
from ssat.flops import inference_flops_per_image
from ssat.methods import METHODS
from ssat.models import MODELS, build_backbone, input_shape


def describe(img_size: int = 32, in_chans: int = 3, num_classes: int = 10) -> list[dict]:
    """Video models are measured on a clip of the default --frames (GFLOPs per clip)."""
    rows = []
    for name, spec in MODELS.items():
        torch.manual_seed(0)
        spec_caps = spec.capabilities
        patch = default_patch_size(img_size, name)
        frames = Config.frames if spec_caps.video else 0
        backbone = build_backbone(name, img_size=img_size, patch_size=patch, in_chans=in_chans,
                                  num_classes=num_classes, frames=frames)
        x = torch.randn(1, *input_shape(in_chans, img_size, frames))
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
    if min(args.img_size, args.in_chans, args.classes) < 1:
        raise UserError(f"--img-size, --in-chans and --classes must be at least 1, got {args.img_size}, "
                        f"{args.in_chans} and {args.classes}")
    rows = describe(args.img_size, args.in_chans, args.classes)
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
