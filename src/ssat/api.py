"""SSAT from your own code: wrap any timm VisionTransformer and get a module whose forward(images, targets)
returns the weighted loss, the logits and the parts, for your own training loop.

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
    model = ssat.SSAT(vit, aux="mae", lam=0.9, balance="ema")   # the reference: lam=0.1, balance="none"
    out = model(images, targets); out.loss.backward()            # out.logits, out.parts

Auxiliary-task options (mask_ratio, decoder_dim, temperature, ...) are keyword arguments with `ssat train`'s
names and defaults."""

from __future__ import annotations

import torch.nn as nn

from ssat.auxtasks import build_aux, resolve_aux
from ssat.config import Config
from ssat.errors import UserError
from ssat.models.vit import TimmViT
from ssat.objective import LossWeighting, SSATModel
from ssat.plugins import check_plugins, load_plugins


def SSAT(vit: nn.Module, aux: str = "auto", lam: float | None = None, balance: str | None = None,
         lambda_schedule: str = "constant", lambda_end: float | None = None, label_smoothing: float = 0.0,
         **options) -> SSATModel:
    """A timm ViT (or an ssat backbone) + an auxiliary task -> SSATModel. λ and the balance default to `ssat
    train`'s (0.9 with `ema`); call `model.set_progress(p)` before a step for a λ schedule and
    `model.after_step(p)` after it for tasks with an EMA teacher (DINO), p in [0, 1]."""
    load_plugins()
    backbone = vit if hasattr(vit, "capabilities") else TimmViT(vit)
    if not getattr(backbone, "num_classes", 0):
        raise UserError("the ViT has no classification head (num_classes=0), so the primary loss would be computed "
                        "on its features; create it with num_classes=N (e.g. timm.create_model(..., num_classes=10))")
    defaults = Config()
    cfg = Config.from_dict({"aux": aux, "lam": defaults.lam if lam is None else lam,
                            "balance": balance or defaults.balance, "lambda_schedule": lambda_schedule,
                            "lambda_end": lambda_end, "label_smoothing": label_smoothing, **options},
                           source="ssat.SSAT").validate()
    name = resolve_aux(cfg.aux, backbone.capabilities)
    task = build_aux(name, backbone, cfg)
    unused = sorted(set(options) - set(task.options_read))
    if unused:  # e.g. temperature= with aux="mae", or a training option such as epochs=
        raise UserError(f"ssat.SSAT: {', '.join(unused)} do(es) not apply to the auxiliary task '{name}', which "
                        f"reads {', '.join(sorted(task.options_read)) or 'no option'}; drop it, or pass it to "
                        f"ssat.config() for a whole training run")
    weighting = LossWeighting(cfg.lam, cfg.lambda_end, cfg.lambda_schedule, cfg.balance)
    return SSATModel(backbone, task, lam=cfg.lam, label_smoothing=cfg.label_smoothing, weighting=weighting)


def config(**options) -> Config:
    """A validated Config from keyword options (the names of `ssat train`'s flags, `lam` for --lambda)."""
    load_plugins()
    check_plugins()
    return Config.from_dict(options, source="ssat.config").validate()


__all__ = ["SSAT", "TimmViT", "config"]
