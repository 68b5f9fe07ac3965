"""timm Vision Transformers as SSAT backbones.

The encoder *is* a timm `VisionTransformer` (so `model.safetensors` loads straight into
`timm.create_model(...)`); this module only adds the masked forward the MAE auxiliary stream needs and the
reference's fixed 2-D sin-cos position embedding and MAE-style initialisation."""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer

from ssat.errors import UserError
from ssat.models.layers import Attention, as_float32_conv, gather_tokens, intermediate_maps, pooled_features
from ssat.models.registry import Capabilities, register_model


class TimmViT(nn.Module):
    """Any timm `VisionTransformer` instance as an ssat backbone: with a class token or without, with register
    tokens, with a dynamic image size (trained at its `img_size`). MAE's masked pass drops patches after timm's own
    position embedding, so every position scheme timm has is respected. `ssat.SSAT` wraps a user's ViT in it."""

    capabilities = Capabilities(drops_patches=True, layer_decay=True, token_maps=True)

    def __init__(self, vit: nn.Module):
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise UserError(f"ssat.SSAT wraps a timm VisionTransformer, got {type(vit).__name__}; for Swin, CvT or "
                            f"a CNN use `ssat train --model ...`, whose backbones declare what they support")
        patch = vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise UserError(f"patches of {patch[0]}x{patch[1]} pixels: MAE's targets need square patches")
        size = getattr(vit.patch_embed, "img_size", None)
        if size is not None and not getattr(vit.patch_embed, "dynamic_img_pad", False) and \
                (size[0] % patch[0] or size[1] % patch[1]):
            raise UserError(f"img_size {size[0]}x{size[1]} is not a multiple of patch_size {patch[0]}: the last "
                            f"{size[0] % patch[0]} pixels would fit no patch; create the ViT with an img_size that "
                            f"patch_size divides (e.g. {size[0] - size[0] % patch[0]} or "
                            f"{size[0] - size[0] % patch[0] + patch[0]})")
        self.encoder, self.name = vit, type(vit).__name__
        self.in_chans = vit.patch_embed.proj.in_channels
        self.patch_size, self.grid_size = patch[0], tuple(vit.patch_embed.grid_size)
        self.num_patches = vit.patch_embed.num_patches
        self.embed_dim, self.num_features, self.num_classes = vit.embed_dim, vit.num_features, vit.num_classes
        self.prefix = vit.num_prefix_tokens
        self.timm_name, self.timm_kwargs = None, {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_head(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def embed(self, x: torch.Tensor, encoder: nn.Module = None) -> torch.Tensor:
        """The pooled representation the classifier reads (class token, or mean with --global-pool avg), of this
        encoder or of a copy of it (DINO's teacher)."""
        return pooled_features(encoder if encoder is not None else self.encoder, x)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches in `ids_keep` (B, K) -> (B, 1 + K, D): a leading summary token (the class token,
        or the mean of the visible tokens for a ViT without one; register tokens are used by the blocks and then
        left out) and the K visible patches. Positions are added *before* gathering, so each kept patch keeps its
        true position; masked patches never enter the blocks (that is where MAE's saving comes from)."""
        enc = self.encoder
        tokens = enc._pos_embed(enc.patch_embed(x))  # prefix tokens + every patch, positions added
        prefix, patches = tokens[:, :self.prefix], tokens[:, self.prefix:]
        tokens = torch.cat([prefix, gather_tokens(patches, ids_keep)], dim=1)
        tokens = enc.norm(enc.blocks(enc.norm_pre(tokens)))
        visible = tokens[:, self.prefix:]
        lead = tokens[:, :1] if self.prefix else visible.mean(dim=1, keepdim=True)
        return torch.cat([lead, visible], dim=1)

    def forward_maps(self, x: torch.Tensor, levels: tuple[int, ...]):
        """One classification pass -> (logits, pooled features, {block: (B, D, h, w) patch tokens after that block,
        before the final norm, no prefix tokens}) (timm's forward_intermediates: the same computation as forward)."""
        return intermediate_maps(self.encoder, x, levels, len(self.encoder.blocks))

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}


class ViTBackbone(TimmViT):
    """A timm ViT built for the data, with the reference's choices: fixed sin-cos positions, optional MAE-style
    initialisation, SDPA attention, an fp32 patch projection."""

    def __init__(self, timm_name: str, *, img_size: int, patch_size: int, in_chans: int, num_classes: int,
                 drop_path: float, global_pool: str, pos_embed: str, init: str = "timm", **arch):
        # The timm create_model kwargs are kept so model.safetensors can be rebuilt with timm alone.
        kwargs = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                      global_pool=global_pool, **arch)
        encoder = timm.create_model(timm_name, pretrained=False, drop_path_rate=drop_path, attn_layer=Attention,
                                    **kwargs)
        if encoder.num_prefix_tokens != 1 or encoder.no_embed_class:
            raise ValueError(f"{timm_name}: SSAT expects exactly one class token with its own position")
        super().__init__(encoder)
        self.timm_name, self.timm_kwargs = timm_name, kwargs
        # The patch projection stays fp32 under autocast (see layers.Float32Conv2d: bf16 here cost accuracy).
        encoder.patch_embed.proj = as_float32_conv(encoder.patch_embed.proj)
        if init == "mae":
            init_mae_style(encoder)
        if pos_embed == "sincos":
            # Fixed, not learned (as MAE and the reference); the class token's position stays zero.
            with torch.no_grad():
                encoder.pos_embed.zero_()
                encoder.pos_embed[0, 1:] = build_sincos2d_pos_embed(list(self.grid_size), self.embed_dim)
            encoder.pos_embed.requires_grad_(False)


def init_mae_style(module: nn.Module) -> None:
    """The reference (MAE) initialisation: xavier-uniform linears and patch projection, zero biases,
    N(0, 0.02) tokens -- so that a from-scratch run starts where the reference's does."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    patch_embed = getattr(module, "patch_embed", None)
    if patch_embed is not None:
        w = patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    for name in ("cls_token", "mask_token"):
        token = getattr(module, name, None)
        if isinstance(token, nn.Parameter):
            nn.init.normal_(token, std=0.02)


def vit_builder(timm_name: str):
    """Builder for `register_model`; architecture overrides (embed_dim=, depth=, ...) go in its kwargs."""
    def build(**kwargs) -> ViTBackbone:
        return ViTBackbone(timm_name, **kwargs)
    return build


VIT = Capabilities(drops_patches=True, mask_token=False, layer_decay=True, token_grid=True, timm_export=True,
                   token_maps=True)

register_model("vit_tiny", vit_builder("vit_tiny_patch16_224"), "ViT-Ti: 192-d, 12 blocks, 3 heads", VIT)
# The small-image shape of the from-scratch recipes (ViT-Lite, SL-ViT: 6-9 blocks, MLP ratio 2) at ViT-Ti's width
# over 1.5: a sixth of ViT-Ti's compute, as accurate on the bundled digits (docs/study.md).
register_model("vit_mini", vit_builder("vit_tiny_patch16_224"), "ViT-mini: 128-d, 6 blocks, 4 heads, MLP ratio 2",
               VIT, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0)
register_model("vit_small", vit_builder("vit_small_patch16_224"), "ViT-S: 384-d, 12 blocks, 6 heads", VIT)
register_model("vit_base", vit_builder("vit_base_patch16_224"), "ViT-B: 768-d, 12 blocks, 12 heads", VIT)
