"""Auxiliary-task registry. An auxiliary task is an `nn.Module` that owns only its own parameters (decoder,
heads) and computes its loss through the *shared* backbone:

    task = build_aux("mae", backbone, cfg)
    loss, parts = task.loss(backbone, images)      # scalar, {"name": scalar tensor, ...}

Adding SimCLR or DINO is one new file with a `@register_aux("name")` builder; the engine never changes."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ssat.errors import UserError


class AuxTask(nn.Module):
    """Interface of every auxiliary task."""

    def loss(self, backbone: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


AUX_TASKS: dict[str, Callable[..., AuxTask]] = {}


def register_aux(name: str):
    def wrap(builder: Callable[..., AuxTask]) -> Callable[..., AuxTask]:
        AUX_TASKS[name] = builder
        return builder
    return wrap


def build_aux(name: str, backbone: nn.Module, cfg) -> AuxTask:
    if name not in AUX_TASKS:
        raise UserError(f"unknown auxiliary task '{name}'; choose one of: {', '.join(sorted(AUX_TASKS))}")
    return AUX_TASKS[name](backbone, cfg)
