"""The SSAT objective: one shared encoder, a primary (classification) stream and an optional auxiliary stream.

    loss = λ · CE(head(encoder(x)), y) + (1 − λ) · L_aux(encoder, x_aux)

`scratch` is the same model with no auxiliary task (λ is then irrelevant: the loss is the primary loss).
Inference (`predict`) uses the primary stream only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks import build_aux
from ssat.models import build_backbone

# method name -> does it train an auxiliary task jointly?
METHODS = {"scratch": False, "ssat": True}


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor]  # detached scalars for logging


class SSATModel(nn.Module):
    def __init__(self, backbone: nn.Module, aux: Optional[nn.Module] = None, lam: float = 0.1,
                 label_smoothing: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.aux = aux
        self.lam = lam if aux is not None else 1.0
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                aux_images: Optional[torch.Tensor] = None) -> StepOutput:
        logits = self.backbone(images)
        loss_primary = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        if self.aux is None:
            return StepOutput(loss_primary, logits, {"loss_primary": loss_primary.detach()})
        loss_aux, aux_parts = self.aux.loss(self.backbone, images if aux_images is None else aux_images)
        loss = self.lam * loss_primary + (1.0 - self.lam) * loss_aux
        parts = {"loss_primary": loss_primary.detach(), "loss_aux": loss_aux.detach(), **aux_parts}
        return StepOutput(loss, logits, parts)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def no_weight_decay(self) -> set[str]:
        skip = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        if self.aux is not None:
            skip |= {f"aux.{n}" for n, _ in self.aux.named_parameters() if n.endswith(("token", "pos_embed"))}
        return skip


def build_model(cfg, *, num_classes: int, in_chans: int) -> SSATModel:
    """Config (already resolved: img_size and patch_size set) -> SSATModel."""
    backbone = build_backbone(cfg.model, img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=in_chans,
                              num_classes=num_classes, drop_path=cfg.drop_path, global_pool=cfg.global_pool,
                              pos_embed=cfg.pos_embed, init=cfg.init)
    aux = build_aux(cfg.aux, backbone, cfg) if METHODS[cfg.method] else None
    return SSATModel(backbone, aux, lam=cfg.lam, label_smoothing=cfg.label_smoothing)
