"""Auxiliary-task registry. An auxiliary task is an `nn.Module` that owns only its own parameters (decoder,
heads) and computes its loss through the *shared* backbone:

    task = build_aux("mae", backbone, cfg)
    loss, parts = task.loss(backbone, images, other_view, other_features)  # scalar, {"name": scalar tensor}

`images` is the auxiliary stream's input; `other_view` is a second augmentation of the same images (the primary
stream's view), which contrastive / self-distillation tasks (SimCLR, DINO) compare against. Tasks registered with
`views=2` get two independent views from the data path. Tasks that set `embeds_other_view` get `other_features`,
the pooled embedding of `other_view` from the primary stream's own pass, when there is one (SSAT; not when
pre-training), instead of encoding that view a second time. A new task is one new file in this package (every
module in it is imported) with a `@register_aux("name", options=...)` builder; the engine never changes. Tasks that keep state outside the optimiser (DINO's EMA teacher) update it in
`after_step`, which the engine calls after every optimizer step."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn as nn

from ssat.errors import UserError
from ssat.options import declare_options, refuse_duplicate


class AuxTask(nn.Module):
    """Interface of every auxiliary task."""

    embeds_other_view = False  # True: the loss reads backbone.embed(other_view); the primary pass can supply it

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view: Optional[torch.Tensor] = None,
             other_features: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, backbone: nn.Module, progress: float) -> None:
        """Called after each optimizer step; `progress` runs from 0 to 1 over training."""


AUX_TASKS: dict[str, Callable[..., AuxTask]] = {}
AUX_VIEWS: dict[str, int] = {}  # views each task needs from the data path
AUX_NEEDS: dict[str, str] = {}  # the backbone capability each task needs (models.registry.Capabilities)
AUX_OPTIONS: dict[str, list[str]] = {}  # the Config options each task declared
AUX_VIDEO: dict[str, bool] = {}  # does the task read clips (True) or images (False)?


def register_aux(name: str, views: int = 1, needs: str = "pooled_embedding", options: Optional[type] = None,
                 video: bool = False):
    """`builder(backbone, cfg) -> AuxTask`; `needs` names the backbone capability it requires; `options` is a
    dataclass of `ssat.options.opt` fields, which become Config fields (flags, YAML keys) read as `cfg.<name>`;
    `video`: the task reads clips and pairs with video backbones only (image tasks with image backbones only)."""
    def wrap(builder: Callable[..., AuxTask]) -> Callable[..., AuxTask]:
        refuse_duplicate("auxiliary task", name, AUX_TASKS)
        declare_options(f"auxiliary task '{name}'", options)
        AUX_TASKS[name], AUX_VIEWS[name], AUX_NEEDS[name], AUX_VIDEO[name] = builder, views, needs, video
        AUX_OPTIONS[name] = [f.name for f in dataclasses.fields(options)] if options else []
        return builder
    return wrap


def tasks_for(capabilities) -> list[str]:
    """The auxiliary tasks a backbone with these capabilities can train."""
    if not capabilities.auxiliary:
        return []
    return [name for name in sorted(AUX_TASKS)
            if getattr(capabilities, AUX_NEEDS[name]) and AUX_VIDEO[name] == capabilities.video]


def resolve_aux(name: str, capabilities) -> str:
    """`auto` -> the masked-image task the backbone supports: MAE where it drops patches, SimMIM where it takes a
    mask token (else MAE, which then refuses the backbone in one line); VideoMAE for video backbones."""
    if name != "auto":
        return name
    if capabilities.video:
        return "videomae"
    return "simmim" if capabilities.mask_token and not capabilities.drops_patches else "mae"


def build_aux(name: str, backbone: nn.Module, cfg) -> AuxTask:
    if name not in AUX_TASKS:
        raise UserError(f"unknown auxiliary task '{name}'; choose one of: {', '.join(sorted(AUX_TASKS))}")
    caps = getattr(backbone, "capabilities", None)
    if caps is not None and name not in tasks_for(caps):
        can = tasks_for(caps)
        what = getattr(backbone, "name", type(backbone).__name__)
        need = "reads clips (a video model)" if AUX_VIDEO[name] else \
            "reads images (not a video model)" if caps.video else NEED_WORDS[AUX_NEEDS[name]]
        raise UserError(f"--aux {name} needs a backbone that {need}, which {what} cannot; "
                        + (f"use --aux {' or '.join(can)} with it" if can else "train it with --method scratch"))
    return AUX_TASKS[name](backbone, cfg)


NEED_WORDS = {"drops_patches": "drops masked patches (a ViT)", "mask_token": "takes a mask token at every position",
              "pooled_embedding": "gives a pooled embedding"}
