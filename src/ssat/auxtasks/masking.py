"""MAE masking maths: random per-sample masking, patchify / unpatchify, the masked reconstruction loss."""

from __future__ import annotations

from typing import NamedTuple

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample: int((1 - r) * L), exactly as the reference."""
    return int(num_patches * (1 - mask_ratio))


class Masking(NamedTuple):
    ids_keep: torch.Tensor     # (B, K) visible patches, in the order they enter the encoder
    mask: torch.Tensor         # (B, L) 1 = masked, 0 = visible
    ids_restore: torch.Tensor  # (B, L) `gather(shuffled, ids_restore)` puts the shuffled patches back in order
    ids_masked: torch.Tensor   # (B, L - K) the masked patches: the only ones the reconstruction loss reads


def random_masking(batch: int, num_patches: int, mask_ratio: float, device=None) -> Masking:
    """Per-sample random masking by argsort of uniform noise (the reference's): the first K of each sample's
    shuffle stay visible, the rest are masked."""
    keep = num_visible(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :keep], mask, ids_restore, ids_shuffle[:, keep:])


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches in row-major order, pixels as (p, q, c) like MAE."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_size: tuple[int, int], in_chans: int) -> torch.Tensor:
    """Inverse of `patchify`."""
    b = patches.shape[0]
    gh, gw = grid_size
    p = patch_size
    x = patches.reshape(b, gh, gw, p, p, in_chans)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, in_chans, gh * p, gw * p)


def _patch_errors(pred: torch.Tensor, target: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """(B, M, P) predictions and targets -> (B, M) squared error per patch (fp32).

    `norm_pix` normalises each target patch by its own mean and variance (MAE's `norm_pix_loss`)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return ((pred.float() - target.float()) ** 2).mean(dim=-1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False) -> torch.Tensor:
    """Mean squared error over *masked* patches only (`mask` 1 = masked); visible patches do not count."""
    per_patch = _patch_errors(pred, target, norm_pix)
    return (per_patch * mask).sum() / mask.sum()


def patch_mse(pred: torch.Tensor, target: torch.Tensor, norm_pix: bool = False) -> torch.Tensor:
    """Mean squared error over every patch given: `masked_mse` when only the masked patches were gathered (every
    sample masks the same number, so the plain mean is the masked mean)."""
    return _patch_errors(pred, target, norm_pix).mean()
