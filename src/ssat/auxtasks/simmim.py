"""Masked image modelling for hierarchical encoders (Swin, CvT), SimMIM-style: the masked stem tokens are replaced
by a learned mask token (patches cannot be dropped: windows and token merging need the full grid), the encoder
runs on every token, and a light decoder -- one linear map per final-stage token to its stride x stride pixels
(a 1x1 conv + pixel shuffle) -- reconstructs the image. The loss is the MSE on masked pixels only.

Masking is in square units of img/8 px (8x8 units; 4 px at 32 px, 28 px at 224 px, near SimMIM's 32), 75 % of
them by default. Cost: a full encoder pass, so SSAT on these backbones costs about 2x a scratch step, not MAE's
~1.33x."""

from __future__ import annotations

import torch
import torch.nn as nn

from ssat.auxtasks.masking import num_visible
from ssat.auxtasks.registry import AuxTask, register_aux
from ssat.errors import UserError


class SimMIMTask(AuxTask):
    def __init__(self, backbone: nn.Module, mask_ratio: float = 0.75):
        super().__init__()
        stem_grid = backbone.img_size // backbone.stem_stride
        if backbone.img_size % backbone.total_stride:  # the last stage's map must tile the image to be decoded
            raise UserError(f"masked image modelling on this backbone decodes its last stage, {backbone.total_stride} "
                            f"px per token at patch {backbone.stem_stride}, which does not tile --img-size "
                            f"{backbone.img_size}; use an image size that is a multiple of {backbone.total_stride} "
                            f"(e.g. --img-size {max(backbone.total_stride, 32)}) or a ViT")
        self.unit = max(backbone.stem_stride, backbone.img_size // 8)
        if backbone.img_size % self.unit or self.unit % backbone.stem_stride:
            raise UserError(f"--img-size {backbone.img_size} cannot be split into 8x8 mask units of whole stem "
                            f"patches ({backbone.stem_stride} px); use an image size divisible by "
                            f"{8 * backbone.stem_stride}")
        self.units = backbone.img_size // self.unit
        self.scale = self.unit // backbone.stem_stride  # stem tokens per mask unit, per side
        assert self.units * self.scale == stem_grid
        if num_visible(self.units ** 2, mask_ratio) == self.units ** 2:
            raise UserError(f"--mask-ratio {mask_ratio} masks no unit of {self.units ** 2}; raise it")
        self.mask_ratio = mask_ratio
        self.mask_token = nn.Parameter(torch.zeros(backbone.stem_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        stride = backbone.total_stride
        self.decoder = nn.Sequential(nn.Conv2d(backbone.num_features, stride ** 2 * backbone.in_chans, 1),
                                     nn.PixelShuffle(stride))

    def random_unit_mask(self, batch: int, device) -> torch.Tensor:
        """(B, units, units) with 1 = masked; exactly round-down (1 - ratio) of the units stay visible."""
        n = self.units ** 2
        keep = num_visible(n, self.mask_ratio)
        order = torch.rand(batch, n, device=device).argsort(dim=1).argsort(dim=1)  # rank of each unit
        return (order >= keep).float().view(batch, self.units, self.units)

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None):
        units = self.random_unit_mask(images.shape[0], images.device)
        stem_mask = units.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)
        features = backbone.forward_with_mask_token(images, stem_mask, self.mask_token)
        pred = self.decoder(features)
        pixel_mask = units.repeat_interleave(self.unit, 1).repeat_interleave(self.unit, 2).unsqueeze(1)
        per_pixel = ((pred.float() - images.float()) ** 2).mean(dim=1, keepdim=True)
        loss = (per_pixel * pixel_mask).sum() / pixel_mask.sum()
        return loss, {"loss_simmim": loss.detach()}


@register_aux("simmim", needs="mask_token", decodes_last_stage=True)
def build_simmim(backbone: nn.Module, cfg) -> AuxTask:
    """Masked image modelling for backbones whose windows and token merging need every position (Swin, CvT)."""
    return SimMIMTask(backbone, mask_ratio=cfg.mask_ratio)
