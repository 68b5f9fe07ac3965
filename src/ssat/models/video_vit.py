"""Video Vision Transformers (VideoMAE's encoder) as SSAT backbones, built from timm.

timm has no video ViT, but its `VisionTransformer` takes an `embed_layer=` and its blocks work on any token
sequence: a tubelet embedding (a Conv3d, kernel = stride = tubelet x patch x patch) turns a (B, C, T, H, W) clip
into (T/t)*(H/p)*(W/p) tokens in (time, row, column) order, a fixed 3-D sin-cos table gives their positions, and
the rest -- blocks, masked pass, mean pooling with `fc_norm` -- is the image ViT's (`TimmViT`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from timm.layers import to_2tuple
from timm.models.vision_transformer import VisionTransformer

from ssat.errors import UserError
from ssat.models.layers import Attention
from ssat.models.registry import Capabilities, register_model
from ssat.models.vit import TimmViT, init_mae_style
from ssat.options import at_least, opt


def sincos_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim) table [sin(p * w_k) | cos(p * w_k)], w_k = temperature ** (-k / (dim / 2))."""
    omega = temperature ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.double().unsqueeze(1) * omega.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def build_sincos3d_pos_embed(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed 3-D sin-cos positions, (T*H*W, dim) in (time, row, column) order: a 1-D table per axis, each over a
    third of the channels (an even share; time takes what is left), concatenated as [time | row | column]."""
    share = (dim // 3) // 2 * 2
    if share == 0:
        raise UserError(f"an embedding of {dim} channels is too narrow for 3-D sin-cos positions; use at least 6")
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    parts = [sincos_1d(tt.flatten(), dim - 2 * share), sincos_1d(hh.flatten(), share), sincos_1d(ww.flatten(), share)]
    return torch.cat(parts, dim=1)


class TubeletEmbed(nn.Module):
    """(B, C, T, H, W) clip -> (B, L, D) tokens, one per tubelet of `tubelet` frames x p x p pixels; a drop-in
    `embed_layer` for timm's `VisionTransformer` (which passes it img_size, patch_size, in_chans, embed_dim, bias)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, frames: int = 16,
                 tubelet: int = 2, bias: bool = True, **_):
        super().__init__()
        size, patch = to_2tuple(img_size), to_2tuple(patch_size)
        self.img_size, self.patch_size, self.frames, self.tubelet = size, patch, frames, tubelet
        self.grid_size = (frames // tubelet, size[0] // patch[0], size[1] // patch[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.proj = nn.Conv3d(in_chans, embed_dim, (tubelet, *patch), (tubelet, *patch), bias=bias)

    def feat_ratio(self, as_scalar: bool = True):
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[2:]) != (self.frames, *self.img_size):
            raise UserError(f"the video model takes clips of {self.frames} frames of {self.img_size[0]} px, got "
                            f"a batch of shape {tuple(x.shape)}; give it the clips of the data set it was built for")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, T', H', W') -> (B, L, D), time-major


class VideoViTBackbone(TimmViT):
    """A timm ViT over tubelet tokens, as VideoMAE's: no class token, the mean of the tokens -> `fc_norm` -> head
    (`--global-pool token` gives a class token instead), fixed 3-D sin-cos positions."""

    capabilities = Capabilities(drops_patches=True, layer_decay=True, video=True)

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float,
                 global_pool: str, pos_embed: str, init: str = "timm", frames: int, tubelet: int,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0):
        if frames < tubelet or frames % tubelet:
            raise UserError(f"clips of {frames} frames do not split into tubelets of {tubelet}; use --frames a "
                            f"multiple of --tubelet-size")
        class_token = global_pool == "token"
        encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            class_token=class_token, global_pool="token" if class_token else "avg", drop_path_rate=drop_path,
            embed_layer=partial(TubeletEmbed, frames=frames, tubelet=tubelet), attn_layer=Attention)
        self.tubelet = tubelet
        super().__init__(encoder)
        self.grid_size = encoder.patch_embed.grid_size  # (time, rows, columns)
        if init == "mae":
            init_mae_style(encoder)
        if pos_embed == "sincos":
            with torch.no_grad():
                table = build_sincos3d_pos_embed(self.grid_size, embed_dim)
                encoder.pos_embed.zero_()
                encoder.pos_embed[0, encoder.num_prefix_tokens:] = table
            encoder.pos_embed.requires_grad_(False)


@dataclass
class VideoModelOptions:
    tubelet_size: int = opt(2, "frames per tubelet of the video models (VideoMAE: 2)", "model", check=at_least(1))


def build_video_vit(*, frames: int = 0, cfg, **kwargs) -> VideoViTBackbone:
    """Builder for `register_model`: the clip length comes from the data (`frames`), the tubelet from the options,
    the architecture (embed_dim, depth, num_heads) from the registration's kwargs."""
    if frames < 1:
        raise UserError("the video models read clips; train them on a video data set (faceforensics, celebdf, "
                        "videofolder) or use an image model such as vit_tiny")
    return VideoViTBackbone(frames=frames, tubelet=cfg.tubelet_size, **kwargs)


VIDEO = VideoViTBackbone.capabilities
register_model("video_vit_tiny", build_video_vit, "video ViT-Ti (VideoMAE): tubelets, 192-d, 12 blocks, 3 heads",
               VIDEO, options=VideoModelOptions, embed_dim=192, depth=12, num_heads=3)
register_model("video_vit_small", build_video_vit, "video ViT-S (VideoMAE): tubelets, 384-d, 12 blocks, 6 heads",
               VIDEO, options=VideoModelOptions, embed_dim=384, depth=12, num_heads=6)
register_model("video_vit_base", build_video_vit, "video ViT-B (VideoMAE): tubelets, 768-d, 12 blocks, 12 heads",
               VIDEO, options=VideoModelOptions, embed_dim=768, depth=12, num_heads=12)
