"""Mixup / CutMix on a training batch (timm's Mixup): images blended or patched with another image of the batch,
targets the matching mixture of the two labels (with --label-smoothing folded in)."""

from __future__ import annotations

from typing import Optional

from timm.data import Mixup


def build_mix(cfg, num_classes: int) -> Optional[Mixup]:
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob, switch_prob=0.5, mode="batch",
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes)
