"""VideoMAE as the auxiliary task of a video backbone: tube masking (the same spatial positions hidden in every
time slice), the encoder sees the visible tubelets only, a light decoder reconstructs the masked tubelets."""

from __future__ import annotations

import torch
import torch.nn as nn

from ssat.auxtasks.mae import MAEDecoder
from ssat.auxtasks.masking import (
    masked_mse,
    num_visible,
    patch_mse,
    patchify_tubelets,
    tube_masking,
    unpatchify_tubelets,
)
from ssat.auxtasks.registry import AuxTask, Reconstruction, register_aux
from ssat.errors import UserError
from ssat.models.layers import gather_tokens
from ssat.models.video_vit import build_sincos3d_pos_embed


def normalise_tubelets(target: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, M, t*p*p*C) tubelets -> each tubelet standardised per channel over its own pixels, as VideoMAE's
    normalised target (per-channel input normalisation cancels out, so the normalised input serves as well)."""
    x = target.float().unflatten(-1, (-1, channels))
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(-2)


class VideoMAETask(AuxTask):
    def __init__(self, backbone: nn.Module, mask_ratio: float = 0.9, norm_pix_loss: bool = True,
                 dim: int = 192, depth: int = 4, heads: int = 3):
        super().__init__()
        frames, rows, cols = backbone.grid_size
        if num_visible(rows * cols, mask_ratio) < 1:
            raise UserError(f"--mask-ratio {mask_ratio} leaves no visible position of the {rows}x{cols} grid of "
                            f"each time slice; lower it or use a smaller --patch-size")
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        pixels = backbone.tubelet * backbone.patch_size ** 2 * backbone.in_chans
        self.decoder = MAEDecoder(backbone.embed_dim, (rows, cols), pixels, dim, depth, heads,
                                  positions=build_sincos3d_pos_embed(backbone.grid_size, dim))

    def loss(self, backbone: nn.Module, clips: torch.Tensor, other_view=None, other_features=None):
        frames, rows, cols = backbone.grid_size
        masking = tube_masking(clips.shape[0], frames, rows * cols, self.mask_ratio, clips.device)
        latent = backbone.forward_masked(clips, masking.ids_keep)
        pred = self.decoder(latent, masking.ids_restore, masking.ids_masked)  # masked tubelets only
        target = gather_tokens(patchify_tubelets(clips, backbone.tubelet, backbone.patch_size), masking.ids_masked)
        if self.norm_pix_loss:
            target = normalise_tubelets(target, backbone.in_chans)
        loss = patch_mse(pred, target)
        return loss, {"loss_videomae": loss.detach()}

    reconstructs = True

    @torch.no_grad()
    def reconstruct(self, backbone: nn.Module, clips: torch.Tensor) -> Reconstruction:
        """Tube-masked as in training; the decoder's prediction of every tubelet, the visible ones pasted back."""
        frames, rows, cols = backbone.grid_size
        masking = tube_masking(clips.shape[0], frames, rows * cols, self.mask_ratio, clips.device)
        pred = self.decoder(backbone.forward_masked(clips, masking.ids_keep), masking.ids_restore)
        target = patchify_tubelets(clips, backbone.tubelet, backbone.patch_size)
        if self.norm_pix_loss:  # predictions are per-tubelet, per-channel standardised: map back with the target's
            t = target.unflatten(-1, (-1, backbone.in_chans))
            scale = t.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6
            pred = (pred.unflatten(-1, (-1, backbone.in_chans)) * scale + t.mean(-2, keepdim=True)).flatten(-2)
        m = masking.mask.unsqueeze(-1)
        shape = (backbone.tubelet, backbone.patch_size, backbone.grid_size, backbone.in_chans)
        return Reconstruction(unpatchify_tubelets(target * (1 - m), *shape),
                              unpatchify_tubelets(target * (1 - m) + pred * m, *shape),
                              float(masked_mse(pred, target, masking.mask)))


@register_aux("videomae", needs="drops_patches", video=True)
def build_videomae(backbone: nn.Module, cfg) -> AuxTask:
    """Reads MAE's decoder options (--decoder-dim/-depth/-heads, --norm-pix-loss); VideoMAE's own sizes are in
    configs/video/."""
    return VideoMAETask(backbone, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                        dim=cfg.decoder_dim, depth=cfg.decoder_depth, heads=cfg.decoder_heads)
