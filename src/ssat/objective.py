"""The SSAT objective: one shared encoder, a primary (classification) stream and an optional auxiliary stream.

    loss = w_p(t) · CE(head(encoder(x)), y) + w_a(t) · L_aux(encoder, x_aux)

with (w_p, w_a) = (λ(t), 1 − λ(t)) by default (the reference: λ = 0.1 throughout), where λ(t) may follow a
schedule over training and may be rebalanced by the losses' own sizes (`LossWeighting`).

`scratch` and `sslft` are the same model with no auxiliary task (the loss is the primary loss; `sslft` starts
from a pre-trained encoder); `pretrain` is the auxiliary loss alone, with no labels (the first stage of SSL+FT).
Inference (`predict`) uses the primary stream only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks import build_aux, resolve_aux
from ssat.auxtasks.registry import TokenMaps
from ssat.errors import UserError
from ssat.hubweights import fetch, is_named
from ssat.hubweights import sha256 as file_sha256
from ssat.methods import METHODS
from ssat.models import build_backbone
from ssat.models.layers import logits_and_features

LAMBDA_SCHEDULES = ("constant", "linear", "cosine")
BALANCES = ("none", "ema", "uncertainty")


def lambda_at(progress: float, start: float, end: float, schedule: str) -> float:
    """λ at `progress` in [0, 1] of training: constant, or from `start` to `end` along a line or a half cosine."""
    t = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown λ schedule {schedule!r}")


class LossWeighting(nn.Module):
    """The two losses' multipliers (w_p, w_a) at each step.

    - `none`: (λ(t), 1 − λ(t)).
    - `ema`: each loss divided by a running mean of itself (momentum `ema_momentum`, started at its first value),
      then renormalised so that w_p + w_a = 1: w_p ∝ λ/m_p, w_a ∝ (1 − λ)/m_a. λ then sets the share of the
      *relative* progress, not of the raw loss values, which differ by an order of magnitude (CE vs pixel MSE).
    - `uncertainty` (Kendall et al. 2018): learned log-variances s, loss = Σ λ_i·e^(−s_i)·L_i + s_i, s clamped to
      ±`clamp` so that neither loss can be switched off; at its optimum λ_i·e^(−s_i) = 1/L_i.
    λ(t) itself follows `schedule` from `lam` to `lam_end` (set by `set_progress` before every step)."""

    def __init__(self, lam: float, lam_end: Optional[float] = None, schedule: str = "constant",
                 balance: str = "none", ema_momentum: float = 0.98, clamp: float = 4.0):
        super().__init__()
        if schedule not in LAMBDA_SCHEDULES or balance not in BALANCES:
            raise ValueError(f"unknown λ schedule {schedule!r} or balance {balance!r}")
        self.lam_start, self.lam_end = lam, lam if lam_end is None else lam_end
        self.schedule, self.balance = schedule, balance
        self.ema_momentum, self.clamp = ema_momentum, clamp
        # λ(t) lives in a buffer: changing it never recompiles a compiled step or syncs the device.
        self.register_buffer("lam", torch.tensor(float(lam)), persistent=False)
        if balance == "ema":
            self.register_buffer("running", torch.zeros(2))   # running means of (L_p, L_a); 0 = not started
        if balance == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(2))      # s_p, s_a

    def set_progress(self, progress: float) -> None:
        self.lam.fill_(lambda_at(progress, self.lam_start, self.lam_end, self.schedule))

    def forward(self, loss_p: torch.Tensor, loss_a: torch.Tensor):
        """-> (primary term, auxiliary term, w_p, w_a): the loss is the sum of the terms; each term's gradient
        on the encoder is its loss's alone (the uncertainty regulariser touches only s)."""
        lam = self.lam
        if self.balance == "none":
            return lam * loss_p, (1 - lam) * loss_a, lam, 1 - lam
        if self.balance == "ema":
            losses = torch.stack([loss_p.detach(), loss_a.detach()]).float()
            if self.training:
                beta = self.ema_momentum
                started = self.running > 0
                self.running.copy_(torch.where(started, beta * self.running + (1 - beta) * losses, losses))
            scale = torch.stack([lam, 1 - lam]) / self.running.clamp_min(1e-12)
            w = scale / scale.sum()
            return w[0] * loss_p, w[1] * loss_a, w[0], w[1]
        s = self.log_vars.clamp(-self.clamp, self.clamp)
        w = torch.stack([lam, 1 - lam]) * torch.exp(-s)
        return w[0] * loss_p + s[0], w[1] * loss_a + s[1], w[0].detach(), w[1].detach()


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: Optional[torch.Tensor]   # None when pre-training (no primary stream)
    parts: dict[str, torch.Tensor]   # detached scalars for logging
    # (primary term, auxiliary term(s)) summing to `loss`, when both streams run: lets the engine measure each
    # term's gradient on the shared encoder by splitting the backward pass (one auxiliary term per task of a group).
    terms: Optional[tuple[torch.Tensor, ...]] = None
    term_names: tuple[str, ...] = ("primary", "aux")


class SSATModel(nn.Module):
    def __init__(self, backbone: nn.Module, aux: Optional[nn.Module] = None, lam: float = 0.1,
                 label_smoothing: float = 0.1, primary: bool = True, weighting: Optional[LossWeighting] = None):
        super().__init__()
        self.backbone = backbone
        self.aux = aux
        self.primary = primary
        # Only a two-stream model has weights to choose; scratch / sslft train on the primary loss, pretrain on the
        # auxiliary loss, each alone and unweighted.
        self.weighting = (weighting or LossWeighting(lam)) if (aux is not None and primary) else None
        self.label_smoothing = label_smoothing

    def set_progress(self, progress: float) -> None:
        """Before each optimizer step: `progress` in [0, 1] of training (for a scheduled λ)."""
        check_progress(progress)
        if self.weighting is not None:
            self.weighting.set_progress(progress)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder's trained parameters that both losses reach (the classifier head gets only the primary
        loss's gradient): what `grad_norm_*` in metrics.jsonl is measured on."""
        head = getattr(self.backbone.encoder, "head", None)
        skip = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        return [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in skip]

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                aux_images: Optional[torch.Tensor] = None) -> StepOutput:
        # The auxiliary stream sees the second view when there is one; contrastive tasks compare it to the first.
        aux_input, other_view = (images, None) if aux_images is None else (aux_images, images)
        # Tasks that read the token maps of the classification pass (drloc, guidance) get them from that pass.
        levels = getattr(self.aux, "map_blocks", ()) if self.aux is not None else ()
        if not self.primary:
            maps = {"maps": TokenMaps(aux_input, self.backbone.forward_maps(aux_input, levels)[2])} if levels else {}
            loss_aux, aux_parts = self.aux.loss(self.backbone, aux_input, other_view, **maps)
            self.aux.take_terms()  # one auxiliary loss alone: nothing to split
            return StepOutput(loss_aux, None, {"loss_aux": loss_aux.detach(), **aux_parts})
        features, maps = None, {}
        if levels:
            logits, features, by_level = self.backbone.forward_maps(images, levels)
            maps["maps"] = TokenMaps(images, by_level)
            features = features if other_view is not None else None
        elif self.aux is not None and self.aux.embeds_other_view and other_view is not None:
            # The task embeds the primary view too: one encoder pass serves both (drop-path draws once).
            logits, features = logits_and_features(self.backbone.encoder, images)
        else:
            logits = self.backbone(images)
        # Mixup / CutMix give soft targets with the smoothing already in them.
        smoothing = self.label_smoothing if targets.dim() == 1 else 0.0
        loss_primary = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        if self.aux is None:
            return StepOutput(loss_primary, logits, {"loss_primary": loss_primary.detach()})
        loss_aux, aux_parts = self.aux.loss(self.backbone, aux_input, other_view, features, **maps)
        term_p, term_a, w_p, w_a = self.weighting(loss_primary, loss_aux)
        parts = {"loss_primary": loss_primary.detach(), "loss_aux": loss_aux.detach(), **aux_parts,
                 "w_primary": w_p.detach(), "w_aux": w_a.detach()}
        terms, names = (term_p, term_a), ("primary", "aux")
        group = self.aux.take_terms()
        if group is not None:  # several tasks: each one's share of the auxiliary term, for the gradient probe
            shares = [w_a.detach() * t for t in group[:-1]]
            terms = (term_p, *shares, term_a - sum(shares))  # the last takes the rest: they add up to term_a
            names = ("primary", *(f"aux_{n}" for n in self.aux.tasks))
        return StepOutput(term_p + term_a, logits, parts, terms, names)

    def after_step(self, progress: float) -> None:
        """After each optimizer step: tasks with state outside the optimiser (DINO's teacher) update it."""
        check_progress(progress)
        if self.aux is not None:
            self.aux.after_step(self.backbone, progress)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits in eval mode (no drop-path, no dropout), whatever mode the model is in; the mode is restored."""
        was = self.backbone.training
        self.backbone.eval()
        try:
            return self.backbone(images)
        finally:
            self.backbone.train(was)

    def no_weight_decay(self) -> set[str]:
        skip = {f"backbone.{n}" for n in self.backbone.no_weight_decay()}
        if self.aux is not None:
            skip |= {f"aux.{n}" for n, _ in self.aux.named_parameters() if n.endswith(("token", "pos_embed"))}
        return skip


def check_progress(progress) -> None:
    """The fraction of training done: a NaN or out-of-range value would make λ (or DINO's momentum) NaN."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0:
        raise UserError(f"progress must be a number in [0, 1] (the fraction of training done), got {progress!r}")


def build_model(cfg, *, num_classes: int, in_chans: int, frames: int = 0) -> SSATModel:
    """Config (already resolved: img_size and patch_size set) -> SSATModel; `frames`: the clip length of video
    data (0: images)."""
    backbone = build_backbone(cfg.model, img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=in_chans,
                              num_classes=num_classes, drop_path=cfg.drop_path, global_pool=cfg.global_pool,
                              pos_embed=cfg.pos_embed, init=cfg.init, frames=frames, cfg=cfg)
    method = METHODS[cfg.method]
    primary, uses_aux = method.primary, method.auxiliary
    if uses_aux and not backbone.capabilities.auxiliary:
        raise UserError(f"--model {cfg.model} is a reference baseline trained with --method scratch only; "
                        f"use a ViT, Swin or CvT backbone for --method {cfg.method}")
    source = None
    if cfg.pretrained is not None:
        source = load_pretrained_encoder(backbone, cfg.pretrained, cfg.pretrained_sha256)
    if cfg.layer_decay < 1.0 and not backbone.capabilities.layer_decay:
        raise UserError(f"--layer-decay {cfg.layer_decay} needs a backbone with blocks grouped by depth, which "
                        f"{cfg.model} has not; use --layer-decay 1 with it")
    aux = build_aux(resolve_aux(cfg.aux, backbone.capabilities), backbone, cfg) if uses_aux else None
    if not primary:
        # Pre-training never uses the classifier: freeze it, so it is not optimised and DDP sees no unused
        # parameter (fine-tuning re-initialises it anyway).
        head = getattr(backbone.encoder, "head", None)
        for p in (head.parameters() if isinstance(head, nn.Module) else []):
            p.requires_grad_(False)
    weighting = LossWeighting(cfg.lam, cfg.lambda_end, cfg.lambda_schedule, cfg.balance)
    model = SSATModel(backbone, aux, lam=cfg.lam, label_smoothing=cfg.label_smoothing, primary=primary,
                      weighting=weighting)
    model.pretrained_source = source  # (what --pretrained resolved to, its file's SHA-256): what the run records
    return model


def load_pretrained_encoder(backbone: nn.Module, path: str, sha256: Optional[str] = None) -> tuple[str, str]:
    """Copy pre-trained encoder weights (timm / Hub weights by name, a ssat run, a timm checkpoint file, or
    local-dir:FOLDER) into `backbone`, every tensor but the classifier head, which keeps its fresh initialisation
    (the class count may differ). timm ViT weights for another image size or patch size are resampled as timm does
    when it loads them. -> (the weights' resolved name, their file's SHA-256), checked against `sha256` if given."""
    from ssat.runs import encoder_weights_file, load_encoder_weights
    given = path
    if is_named(path):
        given, file = fetch(path, getattr(backbone, "timm_name", None))
        path = str(file)
    file = encoder_weights_file(path)
    digest = file_sha256(file) if file is not None else None
    if sha256 is not None and digest is not None and digest != sha256:
        raise UserError(f"--pretrained {given}: its weights file has SHA-256 {digest[:12]}..., but this run records "
                        f"{sha256[:12]}...: the weights changed since; restore them, or start a new run")
    tensors = load_encoder_weights(path)
    if getattr(backbone, "timm_name", None) and backbone.timm_name.startswith("vit_"):
        from timm.models.vision_transformer import checkpoint_filter_fn
        try:
            tensors = checkpoint_filter_fn(tensors, backbone.encoder)
        except Exception as e:  # timm's resampling refuses what it cannot map: say which file
            raise UserError(f"--pretrained {path}: timm cannot map these weights onto {backbone.name} ({e}); use "
                            f"weights of the same architecture") from None
        proj = "patch_embed.proj.weight"
        own_proj = backbone.encoder.state_dict()[proj]
        if proj in tensors and tensors[proj].shape[1] != own_proj.shape[1]:
            from timm.models import adapt_input_conv
            tensors[proj] = adapt_input_conv(own_proj.shape[1], tensors[proj])  # RGB weights, 1-channel data
    own = backbone.encoder.state_dict()
    head = {k for k in own if k.startswith("head.")}
    wanted = {k for k in own if k not in head}
    missing = sorted(wanted - set(tensors))
    shapes = sorted(k for k in wanted & set(tensors) if tensors[k].shape != own[k].shape)
    if missing or shapes:
        what = f"missing {missing[0]}" if missing else f"shape of {shapes[0]} differs"
        raise UserError(f"--pretrained {path} does not fit this model ({what}); pre-train with the same --model, "
                        f"--img-size and --patch-size")
    backbone.encoder.load_state_dict({k: tensors[k] for k in wanted}, strict=False)
    return given, digest
