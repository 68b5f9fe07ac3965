"""SSAT from your own code: wrap any timm VisionTransformer and get a module whose forward(images, targets)
returns the weighted loss, the logits and the parts, for your own training loop.

    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
    model = ssat.SSAT(vit, aux="mae", lam=0.9, balance="ema")   # the reference: lam=0.1, balance="none"
    out = model(images, targets); out.loss.backward()            # out.logits, out.parts

Auxiliary-task options (mask_ratio, decoder_dim, temperature, ...) are keyword arguments with `ssat train`'s
names and defaults."""

from __future__ import annotations


import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ssat.auxtasks import build_aux, resolve_aux
from ssat.config import Config
from ssat.errors import UserError
from ssat.models import Capabilities
from ssat.models.layers import gather_tokens, pooled_features
from ssat.objective import LossWeighting, SSATModel


class TimmViT(nn.Module):
    """Any timm `VisionTransformer` instance as an ssat backbone: with a class token or without, with register
    tokens, with a dynamic image size (trained at its `img_size`). MAE's masked pass drops patches after timm's own
    position embedding, so every position scheme timm has is respected."""

    capabilities = Capabilities(drops_patches=True, layer_decay=True)

    def __init__(self, vit: nn.Module):
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise UserError(f"ssat.SSAT wraps a timm VisionTransformer, got {type(vit).__name__}; for Swin, CvT or "
                            f"a CNN use `ssat train --model ...`, whose backbones declare what they support")
        patch = vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise UserError(f"patches of {patch[0]}x{patch[1]} pixels: MAE's targets need square patches")
        self.encoder, self.name = vit, type(vit).__name__
        self.in_chans = vit.patch_embed.proj.in_channels
        self.patch_size, self.grid_size = patch[0], tuple(vit.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim, self.num_features, self.num_classes = vit.embed_dim, vit.num_features, vit.num_classes
        self.prefix = vit.num_prefix_tokens
        self.timm_name, self.timm_kwargs = None, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, x: torch.Tensor, encoder: nn.Module = None) -> torch.Tensor:
        return pooled_features(encoder if encoder is not None else self.encoder, x)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """-> (B, 1 + K, D): a leading summary token (the class token, or the mean of the visible tokens for a
        ViT without one; register tokens are used by the blocks and then left out) and the K visible patches."""
        enc = self.encoder
        tokens = enc._pos_embed(enc.patch_embed(x))  # prefix tokens + every patch, positions added
        prefix, patches = tokens[:, :self.prefix], tokens[:, self.prefix:]
        tokens = torch.cat([prefix, gather_tokens(patches, ids_keep)], dim=1)
        tokens = enc.norm(enc.blocks(enc.norm_pre(tokens)))
        visible = tokens[:, self.prefix:]
        lead = tokens[:, :1] if self.prefix else visible.mean(dim=1, keepdim=True)
        return torch.cat([lead, visible], dim=1)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}


def SSAT(vit: nn.Module, aux: str = "auto", lam: float | None = None, balance: str | None = None,
         lambda_schedule: str = "constant", lambda_end: float | None = None, label_smoothing: float = 0.0,
         **options) -> SSATModel:
    """A timm ViT (or an ssat backbone) + an auxiliary task -> SSATModel. λ and the balance default to `ssat
    train`'s (0.9 with `ema`); call `model.set_progress(p)` before a step for a λ schedule and
    `model.after_step(p)` after it for tasks with an EMA teacher (DINO), p in [0, 1]."""
    backbone = vit if hasattr(vit, "capabilities") else TimmViT(vit)
    defaults = Config()
    cfg = Config.from_dict({"aux": aux, "lam": defaults.lam if lam is None else lam,
                            "balance": balance or defaults.balance, "lambda_schedule": lambda_schedule,
                            "lambda_end": lambda_end, "label_smoothing": label_smoothing, **options},
                           source="ssat.SSAT").validate()
    task = build_aux(resolve_aux(cfg.aux, backbone.capabilities), backbone, cfg)
    weighting = LossWeighting(cfg.lam, cfg.lambda_end, cfg.lambda_schedule, cfg.balance)
    return SSATModel(backbone, task, lam=cfg.lam, label_smoothing=cfg.label_smoothing, weighting=weighting)


def config(**options) -> Config:
    """A validated Config from keyword options (the names of `ssat train`'s flags, `lam` for --lambda)."""
    return Config.from_dict(options, source="ssat.config").validate()


__all__ = ["SSAT", "TimmViT", "config"]
