"""MAE as the auxiliary task: encode 25% of the patches, reconstruct the pixels of the other 75%."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

import torch
import torch.nn as nn
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block

from ssat.auxtasks.masking import masked_mse, num_visible, patch_mse, patchify, random_masking, unpatchify
from ssat.auxtasks.registry import AuxTask, Reconstruction, register_aux
from ssat.errors import UserError
from ssat.models.layers import Attention, block_rows, gather_tokens
from ssat.models.vit import init_mae_style
from ssat.options import at_least, opt


class MAEDecoder(nn.Module):
    """Light decoder: linear embed -> mask tokens put back in place -> fixed 2-D sin-cos positions ->
    transformer blocks (timm's, fused SDPA attention) -> norm -> linear to p*p*C pixels per patch. `positions`
    (L, dim) replaces the 2-D table over `grid_size` (VideoMAE's decoder: 3-D, over tubelets)."""

    def __init__(self, encoder_dim: int, grid_size: tuple[int, int], patch_pixels: int,
                 dim: int = 128, depth: int = 2, heads: int = 16, positions: Optional[torch.Tensor] = None):
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        if positions is None:
            positions = build_sincos2d_pos_embed(list(grid_size), dim)
        pos = torch.zeros(1, 1 + len(positions), dim)
        pos[0, 1:] = positions
        self.register_buffer("pos_embed", pos, persistent=False)  # derived from the shape, never trained
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, attn_layer=Attention,
                                            norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_pixels)
        init_mae_style(self)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                ids_predict: Optional[torch.Tensor] = None) -> torch.Tensor:
        """latent: (B, 1 + K, D_enc) from the masked encoder pass -> (B, L, p*p*C) pixel predictions, or with
        `ids_predict` (B, M) only those patches' (B, M, p*p*C).

        With `ids_predict` the last block computes queries, MLP, norm and head for those rows alone (`block_rows`):
        the same numbers, and a quarter less work in that block when they are the 75 % masked patches."""
        x = self.embed(latent)
        b, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(b, length - (x.shape[1] - 1), -1)
        patches = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), ids_restore)  # back in image order
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        if ids_predict is None:
            return self.pred(self.norm(self.blocks(x))[:, 1:])
        rows = ids_predict + 1  # the class token is token 0
        if len(self.blocks) == 0:
            return self.pred(self.norm(gather_tokens(x, rows)))
        for block in self.blocks[:-1]:
            x = block(x)
        return self.pred(self.norm(block_rows(self.blocks[-1], x, rows)))


class MAETask(AuxTask):
    def __init__(self, backbone: nn.Module, mask_ratio: float = 0.75, norm_pix_loss: bool = False,
                 dim: int = 128, depth: int = 2, heads: int = 16):
        super().__init__()
        if num_visible(backbone.num_patches, mask_ratio) < 1:
            raise UserError(f"--mask-ratio {mask_ratio} leaves no visible patch out of {backbone.num_patches}; "
                            f"lower it or use a smaller --patch-size")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder = MAEDecoder(backbone.embed_dim, backbone.grid_size,
                                  backbone.patch_size ** 2 * backbone.in_chans, dim, depth, heads)

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None):
        masking = random_masking(images.shape[0], backbone.num_patches, self.mask_ratio, images.device)
        latent = backbone.forward_masked(images, masking.ids_keep)
        # Only masked patches are scored, so only they are predicted (the same loss as predicting all and masking).
        pred = self.decoder(latent, masking.ids_restore, masking.ids_masked)
        # Target: the (normalised) input image the encoder saw, as the reference.
        target = gather_tokens(patchify(images, backbone.patch_size), masking.ids_masked)
        loss = patch_mse(pred, target, self.norm_pix_loss)
        return loss, {"loss_mae": loss.detach()}

    reconstructs = True

    @torch.no_grad()
    def reconstruct(self, backbone: nn.Module, images: torch.Tensor) -> Reconstruction:
        """Masked as in training; the decoder's prediction of every patch, the visible ones pasted back."""
        p = backbone.patch_size
        masking = random_masking(images.shape[0], backbone.num_patches, self.mask_ratio, images.device)
        pred = self.decoder(backbone.forward_masked(images, masking.ids_keep), masking.ids_restore)
        target = patchify(images, p)
        if self.norm_pix_loss:  # predictions are in per-patch normalised units: map back with the target's statistics
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = masking.mask.unsqueeze(-1)
        grid, chans = backbone.grid_size, backbone.in_chans
        return Reconstruction(unpatchify(target * (1 - m), p, grid, chans),
                              unpatchify(target * (1 - m) + pred * m, p, grid, chans),
                              float(masked_mse(pred, target, masking.mask)))


@dataclass
class MAEOptions:
    decoder_dim: int = opt(128, "MAE decoder width", "method", check=at_least(1))
    decoder_depth: int = opt(2, "MAE decoder blocks", "method", check=at_least(1))
    decoder_heads: int = opt(16, "MAE decoder attention heads", "method", check=at_least(1))
    norm_pix_loss: bool = opt(False, "reconstruct per-patch normalised pixels (MAE option; reference: off)", "method")

    @staticmethod
    def check(cfg) -> None:
        if cfg.decoder_dim % cfg.decoder_heads:
            raise UserError(f"--decoder-dim ({cfg.decoder_dim}) must be divisible by --decoder-heads "
                            f"({cfg.decoder_heads})")
        if cfg.decoder_dim % 4:
            raise UserError(f"--decoder-dim must be divisible by 4 (2-D sin-cos), got {cfg.decoder_dim}")


@register_aux("mae", needs="drops_patches", options=MAEOptions)
def build_mae(backbone: nn.Module, cfg) -> AuxTask:
    """MAE on backbones that drop patches (ViTs); hierarchical ones take --aux simmim (auxtasks/simmim.py)."""
    return MAETask(backbone, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                   dim=cfg.decoder_dim, depth=cfg.decoder_depth, heads=cfg.decoder_heads)
