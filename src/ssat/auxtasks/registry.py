"""Auxiliary-task registry. An auxiliary task is an `nn.Module` that owns only its own parameters (decoder,
heads) and computes its loss through the *shared* backbone:

    task = build_aux("mae", backbone, cfg)
    loss, parts = task.loss(backbone, images, other_view, other_features)  # scalar, {"name": scalar tensor}

`images` is the auxiliary stream's input; `other_view` is a second augmentation of the same images (the primary
stream's view), which contrastive / self-distillation tasks (SimCLR, DINO) compare against. Tasks registered with
`views=2` get two independent views from the data path. Tasks that set `embeds_other_view` get `other_features`,
the pooled embedding of `other_view` from the primary stream's own pass, when there is one (SSAT; not when
pre-training), instead of encoding that view a second time. A new task is one file with a `@register_aux("name")`
builder; the engine never changes. Tasks that keep state outside the optimiser (DINO's EMA teacher) update it in
`after_step`, which the engine calls after every optimizer step."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from ssat.errors import UserError


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


def register_aux(name: str, views: int = 1):
    def wrap(builder: Callable[..., AuxTask]) -> Callable[..., AuxTask]:
        AUX_TASKS[name] = builder
        AUX_VIEWS[name] = views
        return builder
    return wrap


def build_aux(name: str, backbone: nn.Module, cfg) -> AuxTask:
    if name not in AUX_TASKS:
        raise UserError(f"unknown auxiliary task '{name}'; choose one of: {', '.join(sorted(AUX_TASKS))}")
    return AUX_TASKS[name](backbone, cfg)
