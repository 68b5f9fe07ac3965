"""MAE masking maths: random per-sample masking, patchify / unpatchify, the masked reconstruction loss."""

from __future__ import annotations

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample: int((1 - r) * L), exactly as the reference."""
    return int(num_patches * (1 - mask_ratio))


def random_masking(batch: int, num_patches: int, mask_ratio: float, device=None):
    """Per-sample random masking by argsort of uniform noise.

    Returns `ids_keep` (B, K) indices of visible patches, `mask` (B, L) with 1 = masked, and `ids_restore`
    (B, L), the permutation that undoes the shuffle (`gather(shuffled, ids_restore)` = original order)."""
    keep = num_visible(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :keep], mask, ids_restore


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


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False) -> torch.Tensor:
    """Mean squared error over *masked* patches only; visible patches do not count.

    `norm_pix` normalises each target patch by its own mean and variance (MAE's `norm_pix_loss`)."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()
