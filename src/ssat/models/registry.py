"""Backbone registry: a short name (`vit_tiny`) -> a spec, a builder sized for the data, and the backbone's declared
capabilities.

A backbone is an `nn.Module` holding its classifier as `encoder` (`forward(x) -> logits`, `embed(x)` -> the pooled
features the head reads, `no_weight_decay()`, `in_chans`, `num_features`) plus what its capabilities promise:
`drops_patches` -> `forward_masked(x, ids_keep)`, `patch_size`, `grid_size`, `num_patches`, `embed_dim`;
`mask_token` -> `forward_with_mask_token(x, mask, token)`, `img_size`, `stem_stride`, `stem_dim`, `total_stride`;
`layer_decay` -> `encoder.group_matcher`; `token_grid` -> `encoder.blocks` over a patch grid (Grad-CAM, rollout);
`timm_export` -> `timm_name` / `timm_kwargs` rebuild it in plain timm; `token_maps` ->
`forward_maps(x, levels) -> (logits, pooled, {level: (B, C, h, w)})`, the maps of the classification pass itself
(levels: blocks of a ViT, stages of a hierarchical model; -1 the last; before the final norm);
`video` -> it reads (B, C, T, H, W) clips,
its tokens are tubelets, `grid_size` is (time, rows, columns), `tubelet` is set. Combinations a
backbone does not support are refused with one line when a model is built. A new family is one new file in this
package that calls `register_model` (the package imports every module in it), with its own options if it needs
any."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch.nn as nn

from ssat.errors import EXTENSION_HINT, UserError
from ssat.options import declare_options, refuse_duplicate


@dataclass(frozen=True)
class Capabilities:
    """What a backbone can do; the auxiliary tasks, --layer-decay, gradcam and the timm export ask these."""
    auxiliary: bool = True        # may train an auxiliary stream at all (ResNet-50, the CNN reference: no)
    drops_patches: bool = False   # MAE: encode only the visible patches
    mask_token: bool = False      # masked image modelling with a mask token over every position (SimMIM)
    pooled_embedding: bool = True  # SimCLR / DINO: compare pooled features of two views
    layer_decay: bool = False     # --layer-decay: blocks grouped by depth
    token_grid: bool = False      # gradcam / attention rollout over a ViT's patch tokens
    timm_export: bool = False     # model.safetensors rebuilds in plain timm
    hierarchical: bool = False    # stages that downsample: a smaller stem stride by default
    stage_downsampling: int = 1   # the last stage's map is the stem's grid / this (Swin 8, CvT 4): its total_stride
    video: bool = False           # reads clips (B, C, T, H, W); its builder takes the data's `frames`
    token_maps: bool = False      # forward_maps: logits, pooled features and token maps from one forward pass

    def supported(self) -> list[str]:
        return [f for f in self.__dataclass_fields__ if getattr(self, f) is True]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    kwargs: dict = field(default_factory=dict)
    capabilities: Capabilities = Capabilities()
    options: Optional[type] = None


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str,
                   capabilities: Capabilities = Capabilities(), options: Optional[type] = None,
                   **kwargs) -> None:
    """`builder(img_size=, patch_size=, in_chans=, num_classes=, drop_path=, global_pool=, pos_embed=, init=,
    **kwargs, cfg=)`; `options` is a dataclass of `ssat.options.opt` fields (Config fields the builder reads from
    `cfg`); builders that declare none are not passed `cfg`."""
    refuse_duplicate("model", name, MODELS)
    declare_options(f"model '{name}'", options)
    MODELS[name] = ModelSpec(name, builder, description, kwargs, capabilities, options)


def input_shape(in_chans: int, img_size: int, frames: int = 0) -> tuple[int, ...]:
    """One input of a backbone: (C, H, W) for images, (C, T, H, W) for clips of `frames` frames."""
    return (in_chans, *((frames,) if frames else ()), img_size, img_size)


def build_backbone(name: str, *, img_size: int, patch_size: int, in_chans: int, num_classes: int,
                   drop_path: float = 0.0, global_pool: str = "token", pos_embed: str = "sincos",
                   init: str = "timm", frames: int = 0, cfg=None) -> nn.Module:
    """`frames`: the clip length of a video data set (0: images), which video backbones are built for."""
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(sorted(MODELS))}{EXTENSION_HINT}")
    if img_size % patch_size:
        raise UserError(f"image size {img_size} is not a multiple of patch size {patch_size}; "
                        f"set --patch-size to a divisor of --img-size")
    spec = MODELS[name]
    if frames and not spec.capabilities.video:
        video = sorted(n for n, s in MODELS.items() if s.capabilities.video)
        raise UserError(f"the data are clips of {frames} frames but {name} is an image model; use a video model "
                        f"({', '.join(video)})")
    backbone = spec.builder(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                            drop_path=drop_path, global_pool=global_pool, pos_embed=pos_embed, init=init,
                            **({"frames": frames} if spec.capabilities.video else {}), **spec.kwargs,
                            **({"cfg": cfg or spec.options()} if spec.options else {}))
    backbone.name, backbone.capabilities = name, spec.capabilities
    return backbone
