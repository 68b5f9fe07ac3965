"""SL-ViT (Lee et al., WACV 2023, "Vision Transformer for Small-Size Datasets"): a ViT with Shifted Patch
Tokenization (each token also sees half a patch of its four diagonal neighbours) and Locality Self-Attention (a
learned per-head temperature, and no token attends to itself). Both are on by default; --no-spt / --no-lsa ablate.

The encoder is a timm `VisionTransformer` with SPT as its `embed_layer` and LSA as its `attn_layer`, so MAE's masked
pass, the token maps and timm's own forward all apply. With MAE, the masked patches' pixels are zeroed before the
shift: otherwise a visible token would carry half of each masked neighbour into the encoder."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

from ssat.models.layers import Attention
from ssat.models.registry import Capabilities, register_model
from ssat.models.vit import TimmViT, init_mae_style
from ssat.options import opt


def shift_copies(x: torch.Tensor, s: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, 5C, H, W): [x, lu, ru, lb, rb], the image moved by s pixels along each diagonal with zero
    borders: lu[i, j] = x[i−s, j−s], ru = x[i−s, j+s], lb = x[i+s, j−s], rb = x[i+s, j+s] (the official SPT)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (s, s, s, s))
    lu, ru = xp[..., :h, :w], xp[..., :h, 2 * s:2 * s + w]
    lb, rb = xp[..., 2 * s:2 * s + h, :w], xp[..., 2 * s:2 * s + h, 2 * s:2 * s + w]
    return torch.cat([x, lu, ru, lb, rb], dim=1)


class ShiftedPatchTokenization(nn.Module):
    """timm's `embed_layer` interface (img_size, patch_size, in_chans, embed_dim, bias): the shifted copies joined on
    channels, cut into p×p patches, LayerNorm(5Cp²), Linear -> D. With `shift=False`, a plain patch embedding (the
    same linear map of each patch's pixels as timm's convolution)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 bias: bool = True, shift: bool = True, **_):
        super().__init__()
        p = patch_size
        self.img_size, self.patch_size = (img_size, img_size), (p, p)
        self.grid_size = (img_size // p, img_size // p)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad, self.flatten, self.shift = False, True, shift
        self.in_chans = in_chans
        dim = in_chans * (5 if shift else 1) * p * p
        self.norm = nn.LayerNorm(dim) if shift else nn.Identity()
        self.proj = nn.Linear(dim, embed_dim, bias=bias)

    def feat_ratio(self, as_scalar: bool = True):
        return self.patch_size[0]

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, 5Cp²) (or Cp² without the shift): what the LayerNorm and the projection read."""
        p = self.patch_size[0]
        if self.shift:
            x = shift_copies(x, p // 2)
        return F.unfold(x, p, stride=p).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(self.patches(x)))


class LocalitySelfAttention(Attention):
    """Attention with LSA: QKᵀ times a learned per-head temperature (initialised to d_head^−½, the usual scale) and
    the diagonal masked out, for whatever number of tokens comes in (all of them, or MAE's 1 + K visible)."""

    def __init__(self, dim: int, num_heads: int = 8, **kwargs):
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.temperature = nn.Parameter(torch.full((num_heads,), self.head_dim ** -0.5))

    def _attend(self, q, k, v, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        # scaled_dot_product_attention divides by √d: pre-multiply the queries so the scale is the temperature
        q = q * (self.temperature * self.head_dim ** 0.5).view(1, -1, 1, 1).to(q.dtype)
        others = ~torch.eye(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device)  # True: may attend
        return super()._attend(q, k, v, others if attn_mask is None else attn_mask & others)


SLVIT = Capabilities(drops_patches=True, layer_decay=True, token_maps=True)


class SLViTBackbone(TimmViT):
    capabilities = SLVIT

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float,
                 global_pool: str, pos_embed: str, init: str = "timm", cfg=None, embed_dim: int = 192,
                 depth: int = 9, num_heads: int = 12, mlp_ratio: float = 2.0):
        spt, lsa = (cfg.spt, cfg.lsa) if cfg is not None else (True, True)
        encoder = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                    num_classes=num_classes, global_pool=global_pool, embed_dim=embed_dim,
                                    depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path,
                                    embed_layer=partial(ShiftedPatchTokenization, shift=spt),
                                    attn_layer=LocalitySelfAttention if lsa else Attention)  # timm wants classes
        nn.Module.__init__(self)
        self.encoder, self.name = encoder, "slvit_tiny"
        self.in_chans, self.patch_size = in_chans, patch_size
        self.grid_size, self.num_patches = encoder.patch_embed.grid_size, encoder.patch_embed.num_patches
        self.embed_dim, self.num_features, self.num_classes = embed_dim, encoder.num_features, num_classes
        self.prefix = encoder.num_prefix_tokens
        self.timm_name, self.timm_kwargs, self.spt = None, {}, spt
        if init == "mae":
            init_mae_style(encoder)
        if pos_embed == "sincos":
            with torch.no_grad():
                encoder.pos_embed.zero_()
                encoder.pos_embed[0, 1:] = build_sincos2d_pos_embed(list(self.grid_size), embed_dim)
            encoder.pos_embed.requires_grad_(False)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """MAE's pass with the masked patches' pixels zeroed first, so no shifted copy carries them in."""
        if self.spt:
            b, p = x.shape[0], self.patch_size
            keep = torch.zeros(b, self.num_patches, device=x.device, dtype=x.dtype).scatter_(1, ids_keep, 1.0)
            keep = keep.view(b, 1, *self.grid_size).repeat_interleave(p, 2).repeat_interleave(p, 3)
            x = x * keep
        return super().forward_masked(x, ids_keep)


@dataclass
class SLViTOptions:
    spt: bool = opt(True, "SL-ViT: Shifted Patch Tokenization (--no-spt: a plain patch embedding, for ablations)",
                    "model")
    lsa: bool = opt(True, "SL-ViT: Locality Self-Attention (--no-lsa: plain attention, for ablations)", "model")


register_model("slvit_tiny", SLViTBackbone, "SL-ViT: 192-d, 9 blocks, 12 heads, MLP ratio 2, SPT + LSA", SLVIT,
               options=SLViTOptions)
