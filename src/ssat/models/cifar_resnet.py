"""CIFAR ResNet-56 (He et al. 2016, the CIFAR variant): a 3×3 stem of 16 channels, then 3 stages of 9 basic blocks at
16 / 32 / 64 channels (the last two halving the map), global average pooling, a linear head. Here as the CNN teacher
of locality guidance (auxtasks/guidance.py), trained first with `ssat train --model cifar_resnet56 --method scratch`
on the same training images as its student; its stage maps are what the student's token maps are guided towards."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.models.layers import pooled_features
from ssat.models.registry import Capabilities, register_model

WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))  # a projection where shapes change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """timm's classifier interface: forward_features -> the last stage's map, forward_head(pre_logits=) pools."""

    def __init__(self, in_chans: int, num_classes: int, depth: int = 9):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            stages.append(nn.Sequential(*[BasicBlock(cin if b == 0 else width, width, 2 if i and b == 0 else 1)
                                          for b in range(depth)]))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.num_features = WIDTHS[-1]
        self.head = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, maps = self.stem(x), []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_maps(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNetBackbone(nn.Module):
    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, num_classes: int, drop_path: float = 0.0,
                 global_pool: str = "avg", pos_embed: str = "", init: str = "timm", depth: int = 9):
        super().__init__()
        self.encoder = CifarResNet(in_chans, num_classes, depth)
        self.timm_name, self.timm_kwargs, self.name = None, {}, "cifar_resnet56"
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.num_features = self.encoder.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, x: torch.Tensor, encoder: nn.Module = None) -> torch.Tensor:
        return pooled_features(encoder if encoder is not None else self.encoder, x)

    def forward_maps(self, x: torch.Tensor, levels: tuple[int, ...]):
        """-> (logits, pooled, {stage: (B, C, h, w)}): the stage maps of the one classification pass."""
        maps = self.encoder.stage_maps(x)
        pooled = self.encoder.forward_head(maps[-1], pre_logits=True)
        return self.encoder.head(pooled), pooled, {s: maps[s] for s in levels}

    def no_weight_decay(self) -> set[str]:
        return set()


register_model("cifar_resnet56", CifarResNetBackbone, "CIFAR ResNet-56: 3 stages x 9 basic blocks, 16/32/64 "
               "channels; the locality-guidance teacher, --method scratch only",
               Capabilities(auxiliary=False, pooled_embedding=False, token_maps=True))
