"""CvT-13 (Wu et al., 2021): convolutional token embedding at each of three stages and convolutional projections
in attention (depthwise 3x3 conv + BN before the q/k/v linears; keys and values at stride 2). No position
embedding; a class token joins in the last stage. timm has no CvT, so it is written here from the paper's
configuration, reusing timm's Mlp / DropPath and the shared SDPA attention core.

CvT-13: stage dims 64 / 192 / 384, depths 1 / 2 / 10, heads 1 / 3 / 6, embeddings 7x7 stride 4, 3x3 stride 2,
3x3 stride 2. The first stride is --patch-size (4 for 32-224 px, 2 for 8 px digits)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, trunc_normal_

from ssat.models.layers import attention, pooled_features
from ssat.models.registry import Capabilities, register_model

STAGES = [dict(dim=64, depth=1, heads=1, kernel=7), dict(dim=192, depth=2, heads=3, kernel=3),
          dict(dim=384, depth=10, heads=6, kernel=3)]


class ConvEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int):
        super().__init__()
        kernel = max(kernel, stride)  # a stem stride above 7 (e.g. --patch-size 16) still covers every pixel
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding=(kernel - stride + 1) // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D, H', W'), layer-normed over channels."""
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv_projection(dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False), nn.BatchNorm2d(dim))


class ConvAttention(nn.Module):
    def __init__(self, dim: int, heads: int, with_cls: bool, stride_kv: int = 2):
        super().__init__()
        self.heads, self.with_cls = heads, with_cls
        self.conv_q, self.conv_k, self.conv_v = (_conv_projection(dim, s) for s in (1, stride_kv, stride_kv))
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, d = x.shape
        cls, tokens = (x[:, :1], x[:, 1:]) if self.with_cls else (None, x)
        grid = tokens.transpose(1, 2).reshape(b, d, h, w)

        def project(conv, linear):
            t = conv(grid).flatten(2).transpose(1, 2)
            t = torch.cat([cls, t], dim=1) if cls is not None else t
            return linear(t).reshape(b, -1, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = project(self.conv_q, self.q), project(self.conv_k, self.k), project(self.conv_v, self.v)
        return self.proj(attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class CvTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, with_cls: bool, drop_path: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ConvAttention(dim, heads, with_cls)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    def __init__(self, in_chans: int, dim: int, depth: int, heads: int, kernel: int, stride: int, with_cls: bool,
                 drop_paths: list[float]):
        super().__init__()
        self.embed = ConvEmbed(in_chans, dim, kernel, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls else None
        self.blocks = nn.ModuleList(CvTBlock(dim, heads, with_cls, dp) for dp in drop_paths[:depth])

    def forward(self, x: torch.Tensor, embedded: bool = False):
        """x: image/feature map (B, C, H, W), or with `embedded` the already embedded map. -> (map, cls or None)"""
        x = x if embedded else self.embed(x)
        b, d, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        cls = tokens[:, :1] if self.cls_token is not None else None
        patches = tokens[:, 1:] if self.cls_token is not None else tokens
        return patches.transpose(1, 2).reshape(b, d, h, w), cls


class CvT(nn.Module):
    def __init__(self, *, in_chans: int, num_classes: int, first_stride: int = 4, drop_path: float = 0.1):
        super().__init__()
        depths = [s["depth"] for s in STAGES]
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        chans, start = in_chans, 0
        for i, s in enumerate(STAGES):
            self.stages.append(CvTStage(chans, s["dim"], s["depth"], s["heads"], s["kernel"],
                                        first_stride if i == 0 else 2, with_cls=i == len(STAGES) - 1,
                                        drop_paths=rates[start:start + s["depth"]]))
            chans, start = s["dim"], start + s["depth"]
        self.num_features = STAGES[-1]["dim"]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(self._init)
        trunc_normal_(self.stages[-1].cls_token, std=0.02)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor, first_embedded: bool = False, maps: Optional[list] = None):
        """-> (B, 1 + h*w, D): normed class token and final-stage tokens; `maps` collects each stage's map."""
        cls = None
        for i, stage in enumerate(self.stages):
            x, cls = stage(x, embedded=first_embedded and i == 0)
            if maps is not None:
                maps.append(x)
        tokens = torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1)
        return self.norm(tokens)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = tokens[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        return {"stages.2.cls_token"}


class CvTBackbone(nn.Module):
    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float,
                 global_pool: str = "token", pos_embed: str = "", init: str = "timm", **arch):
        super().__init__()
        self.timm_name, self.timm_kwargs = None, {}
        self.encoder = CvT(in_chans=in_chans, num_classes=num_classes, first_stride=patch_size, drop_path=drop_path)
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.num_features = self.encoder.num_features
        self.stem_stride, self.stem_dim = patch_size, STAGES[0]["dim"]
        self.total_stride = patch_size * 2 ** (len(STAGES) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, x: torch.Tensor, encoder: nn.Module = None) -> torch.Tensor:
        return pooled_features(encoder if encoder is not None else self.encoder, x)

    def forward_with_mask_token(self, x: torch.Tensor, mask: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """mask (B, h, w) over the first stage's token grid -> final feature map (B, C, H', W')."""
        enc = self.encoder
        stem = enc.stages[0].embed(x)  # (B, D, h, w)
        m = mask.unsqueeze(1).to(stem.dtype)
        stem = stem * (1 - m) + mask_token.to(stem.dtype).view(1, -1, 1, 1) * m
        tokens = enc.forward_features(stem, first_embedded=True)
        b, n, d = tokens.shape
        side = int(round((n - 1) ** 0.5))
        return tokens[:, 1:].transpose(1, 2).reshape(b, d, side, -1)

    def forward_maps(self, x: torch.Tensor, levels: tuple[int, ...]):
        """One classification pass -> (logits, pooled, {stage: (B, C, h, w) patch tokens before the final norm})."""
        maps: list = []
        tokens = self.encoder.forward_features(x, maps=maps)
        return (self.encoder.forward_head(tokens), self.encoder.forward_head(tokens, pre_logits=True),
                {s: maps[s] for s in levels})

    # drloc's official code pools CvT's last map (stride 16 at 224 px) 3/2 before sampling positions
    dense_last_map = True

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}


register_model("cvt_13", CvTBackbone, "CvT-13: conv token embedding + conv projections, dims 64/192/384",
               # ssat's own module: no timm export
               Capabilities(mask_token=True, hierarchical=True, stage_downsampling=2 ** (len(STAGES) - 1),
                            token_maps=True))
