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


def tube_masking(batch: int, frames: int, spatial: int, mask_ratio: float, device=None) -> Masking:
    """VideoMAE's tube masking over a (frames x spatial) token grid, tokens in (time, space) order: one random
    spatial mask per sample, the same in every time slice, so a masked position cannot be copied from a neighbouring
    frame. Keeps `num_visible(spatial, r)` positions per slice; the indices address all `frames * spatial` tokens."""
    keep = num_visible(spatial, mask_ratio)
    plane = random_masking(batch, spatial, mask_ratio, device)
    offsets = (torch.arange(frames, device=device) * spatial).view(1, frames, 1)
    ids_keep = (plane.ids_keep.unsqueeze(1) + offsets).reshape(batch, frames * keep)
    ids_masked = (plane.ids_masked.unsqueeze(1) + offsets).reshape(batch, frames * (spatial - keep))
    mask = plane.mask.repeat(1, frames)
    # visible tokens first, then masked ones: ids_restore is the inverse of that order
    ids_restore = torch.argsort(torch.cat([ids_keep, ids_masked], dim=1), dim=1)
    return Masking(ids_keep, mask, ids_restore, ids_masked)


def patchify_tubelets(clips: torch.Tensor, tubelet: int, patch_size: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, L, t*p*p*C): tubelets of `tubelet` frames x p x p pixels in (time, row, column) order
    (the order of the tubelet embedding's tokens), pixels as (t, p, q, c)."""
    b, c, t, h, w = clips.shape
    p, u = patch_size, tubelet
    x = clips.reshape(b, c, t // u, u, h // p, p, w // p, p)
    return torch.einsum("nctuhpwq->nthwupqc", x).reshape(b, (t // u) * (h // p) * (w // p), u * p * p * c)


def unpatchify_tubelets(patches: torch.Tensor, tubelet: int, patch_size: int, grid: tuple[int, int, int],
                        in_chans: int) -> torch.Tensor:
    """Inverse of `patchify_tubelets`; `grid` is the (time, rows, columns) token grid."""
    b = patches.shape[0]
    gt, gh, gw = grid
    p, u = patch_size, tubelet
    x = patches.reshape(b, gt, gh, gw, u, p, p, in_chans)
    return torch.einsum("nthwupqc->nctuhpwq", x).reshape(b, in_chans, gt * u, gh * p, gw * p)
