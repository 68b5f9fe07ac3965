"""Backbone registry: a short name (`vit_tiny`) -> a spec and a builder sized for the data.

A backbone is an `nn.Module` with `forward(x) -> logits`, `forward_features`, `forward_head`, and, for
auxiliary tasks that drop patches, `forward_masked(x, ids_keep)` plus `patch_size`, `grid_size`, `in_chans`.
A new family is one new file that calls `register_model`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from ssat.errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    kwargs: dict = field(default_factory=dict)
    hierarchical: bool = False  # stages that downsample (Swin, CvT): stem stride defaults differ, no patch dropping


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str, hierarchical: bool = False,
                   **kwargs) -> None:
    MODELS[name] = ModelSpec(name, builder, description, kwargs, hierarchical)


def build_backbone(name: str, *, img_size: int, patch_size: int, in_chans: int, num_classes: int,
                   drop_path: float = 0.0, global_pool: str = "token", pos_embed: str = "sincos",
                   init: str = "timm") -> nn.Module:
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}")
    if img_size % patch_size:
        raise UserError(f"image size {img_size} is not a multiple of patch size {patch_size}; "
                        f"set --patch-size to a divisor of --img-size")
    spec = MODELS[name]
    return spec.builder(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                        drop_path=drop_path, global_pool=global_pool, pos_embed=pos_embed, init=init,
                        **spec.kwargs)
