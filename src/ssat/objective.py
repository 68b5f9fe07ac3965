"""The SSAT objective: one shared encoder, a primary (classification) stream and an optional auxiliary stream.

    loss = λ · CE(head(encoder(x)), y) + (1 − λ) · L_aux(encoder, x_aux)

`scratch` and `sslft` are the same model with no auxiliary task (the loss is the primary loss; `sslft` starts
from a pre-trained encoder); `pretrain` is the auxiliary loss alone, with no labels (the first stage of SSL+FT).
Inference (`predict`) uses the primary stream only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks import build_aux
from ssat.errors import UserError
from ssat.models import build_backbone
from ssat.models.layers import logits_and_features

# method name -> (primary classification stream?, auxiliary stream?)
METHODS = {"scratch": (True, False), "ssat": (True, True), "sslft": (True, False), "pretrain": (False, True)}


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: Optional[torch.Tensor]   # None when pre-training (no primary stream)
    parts: dict[str, torch.Tensor]   # detached scalars for logging


class SSATModel(nn.Module):
    def __init__(self, backbone: nn.Module, aux: Optional[nn.Module] = None, lam: float = 0.1,
                 label_smoothing: float = 0.1, primary: bool = True):
        super().__init__()
        self.backbone = backbone
        self.aux = aux
        self.primary = primary
        self.lam = (lam if aux is not None else 1.0) if primary else 0.0
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                aux_images: Optional[torch.Tensor] = None) -> StepOutput:
        # The auxiliary stream sees the second view when there is one; contrastive tasks compare it to the first.
        aux_input, other_view = (images, None) if aux_images is None else (aux_images, images)
        if not self.primary:
            loss_aux, aux_parts = self.aux.loss(self.backbone, aux_input, other_view)
            return StepOutput(loss_aux, None, {"loss_aux": loss_aux.detach(), **aux_parts})
        features = None
        if self.aux is not None and self.aux.embeds_other_view and other_view is not None:
            # The task embeds the primary view too: one encoder pass serves both (drop-path draws once).
            logits, features = logits_and_features(self.backbone.encoder, images)
        else:
            logits = self.backbone(images)
        loss_primary = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        if self.aux is None:
            return StepOutput(loss_primary, logits, {"loss_primary": loss_primary.detach()})
        loss_aux, aux_parts = self.aux.loss(self.backbone, aux_input, other_view, features)
        loss = self.lam * loss_primary + (1.0 - self.lam) * loss_aux
        parts = {"loss_primary": loss_primary.detach(), "loss_aux": loss_aux.detach(), **aux_parts}
        return StepOutput(loss, logits, parts)

    def after_step(self, progress: float) -> None:
        """After each optimizer step: tasks with state outside the optimiser (DINO's teacher) update it."""
        if self.aux is not None:
            self.aux.after_step(self.backbone, progress)

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
    pretrained = cfg.init not in ("timm", "mae")
    backbone = build_backbone(cfg.model, img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=in_chans,
                              num_classes=num_classes, drop_path=cfg.drop_path, global_pool=cfg.global_pool,
                              pos_embed=cfg.pos_embed, init="timm" if pretrained else cfg.init)
    primary, uses_aux = METHODS[cfg.method]
    if uses_aux and not getattr(backbone, "supports_aux", True):
        raise UserError(f"--model {cfg.model} is a reference baseline trained with --method scratch only; "
                        f"use a ViT, Swin or CvT backbone for --method {cfg.method}")
    if pretrained:
        load_pretrained_encoder(backbone, cfg.init)
    aux = build_aux(cfg.aux, backbone, cfg) if uses_aux else None
    if not primary:
        # Pre-training never uses the classifier: freeze it, so it is not optimised and DDP sees no unused
        # parameter (fine-tuning re-initialises it anyway).
        head = getattr(backbone.encoder, "head", None)
        for p in (head.parameters() if isinstance(head, nn.Module) else []):
            p.requires_grad_(False)
    return SSATModel(backbone, aux, lam=cfg.lam, label_smoothing=cfg.label_smoothing, primary=primary)


def load_pretrained_encoder(backbone: nn.Module, path: str) -> None:
    """Copy a pre-trained encoder (a `ssat pretrain` run or its model.safetensors) into `backbone`, every tensor
    but the classifier head, which keeps its fresh initialisation (the class count may differ)."""
    from ssat.runs import load_trained
    tensors, _ = load_trained(path)
    own = backbone.encoder.state_dict()
    head = {k for k in own if k.startswith("head.")}
    wanted = {k for k in own if k not in head}
    missing = sorted(wanted - set(tensors))
    shapes = sorted(k for k in wanted & set(tensors) if tensors[k].shape != own[k].shape)
    if missing or shapes:
        what = f"missing {missing[0]}" if missing else f"shape of {shapes[0]} differs"
        raise UserError(f"--init {path} does not fit this model ({what}); pre-train with the same --model, "
                        f"--img-size and --patch-size")
    backbone.encoder.load_state_dict({k: tensors[k] for k in wanted}, strict=False)
