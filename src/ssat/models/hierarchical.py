"""Backbones that are not plain ViTs: timm's Swin-T and ResNet-50, and the shared interface of hierarchical
encoders for masked-image auxiliary tasks.

Hierarchical encoders (Swin, CvT) merge tokens between stages, so masked patches cannot simply be dropped as in
MAE: their masked auxiliary stream replaces masked stem tokens by a learned mask token (SimMIM-style) and runs
every token, which costs a full encoder pass instead of MAE's quarter (auxtasks/simmim.py)."""

from __future__ import annotations

import timm
import torch
import torch.nn as nn

from ssat.models.layers import intermediate_maps, pooled_features
from ssat.models.registry import Capabilities, register_model


class TimmBackbone(nn.Module):
    """A timm classifier as a backbone: forward -> logits, embed -> pooled features (what the head reads)."""

    def __init__(self, timm_name: str, *, in_chans: int, num_classes: int, drop_path: float, **timm_kwargs):
        super().__init__()
        self.timm_name = timm_name
        self.timm_kwargs = dict(in_chans=in_chans, num_classes=num_classes, **timm_kwargs)
        self.encoder = timm.create_model(timm_name, pretrained=False, drop_path_rate=drop_path, **self.timm_kwargs)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.num_features = self.encoder.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, x: torch.Tensor, encoder: nn.Module = None) -> torch.Tensor:
        return pooled_features(encoder if encoder is not None else self.encoder, x)

    def no_weight_decay(self) -> set[str]:
        names = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") else set()
        return {f"encoder.{n}" for n in names}


class SwinBackbone(TimmBackbone):
    """timm Swin-T sized for the input: patch size from --patch-size (4 at 224 px, 2 at 32 px), window 7 at 224 px
    and 4 for small inputs (timm shrinks it further where a stage's map is smaller)."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float,
                 global_pool: str = "avg", pos_embed: str = "", init: str = "timm", **arch):
        window = 7 if img_size // patch_size >= 56 else 4
        super().__init__("swin_tiny_patch4_window7_224", in_chans=in_chans, num_classes=num_classes,
                         drop_path=drop_path, img_size=img_size, patch_size=patch_size, window_size=window, **arch)
        enc = self.encoder
        self.stem_stride, self.stem_dim = patch_size, enc.patch_embed.proj.out_channels
        self.total_stride = patch_size * 2 ** (len(enc.layers) - 1)
        self.img_size = img_size

    def forward_with_mask_token(self, x: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """mask (B, h, w) over the stem grid, 1 = masked -> final feature map (B, C, H/stride, W/stride)."""
        enc = self.encoder
        tokens = enc.patch_embed(x)  # (B, h, w, C), channels last
        m = mask.unsqueeze(-1).to(tokens.dtype)
        tokens = tokens * (1 - m) + mask_token.to(tokens.dtype) * m
        return enc.norm(enc.layers(tokens)).permute(0, 3, 1, 2)

    def forward_maps(self, x: torch.Tensor, levels: tuple[int, ...]):
        """One classification pass -> (logits, pooled, {stage: (B, C, h, w) before the final norm})."""
        return intermediate_maps(self.encoder, x, levels, len(self.encoder.layers))


class ResNetBackbone(TimmBackbone):
    """timm ResNet-50: the CNN reference row, trained from scratch only (no patches to mask)."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float,
                 global_pool: str = "avg", pos_embed: str = "", init: str = "timm", **arch):
        super().__init__("resnet50", in_chans=in_chans, num_classes=num_classes, drop_path=drop_path, **arch)


register_model("swin_tiny", SwinBackbone, "Swin-T (timm): 96-d, depths 2-2-6-2, shifted windows",
               Capabilities(mask_token=True, layer_decay=True, timm_export=True, hierarchical=True,
                            stage_downsampling=8, token_maps=True))  # 4 stages, each after the first halving the map
register_model("resnet50", ResNetBackbone, "ResNet-50 (timm): CNN reference, --method scratch only",
               Capabilities(auxiliary=False, pooled_embedding=False, timm_export=True))
