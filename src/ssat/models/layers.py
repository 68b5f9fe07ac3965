"""Layers shared by the model families."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from timm.models.vision_transformer import Block


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
              attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, computed in fp32 on the CPU.

    PyTorch's CPU SDPA kernels are several times slower in bf16 than in fp32 while bf16 matmuls are faster, so
    under CPU autocast the core is upcast and the projections around it stay bf16 (docs/benchmarks.md). On CUDA the
    flash kernels want bf16: nothing changes there."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):  # CPU autocast would cast SDPA's inputs back to bf16
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                                 dropout_p=dropout_p)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens, (B, M) indices -> (B, M, D): each sample's tokens at its own indices."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(TimmAttention):
    """timm's `Attention` (same parameters and names, so weights load into plain timm models), with the attention
    core always on `scaled_dot_product_attention` through `attention` above."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False):
        if is_causal or self.gate is not None:
            return super().forward(x, attn_mask, is_causal)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self._attend(q, k, v, attn_mask)

    def _attend(self, q, k, v, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, heads, M, head_dim) queries over (B, heads, N, head_dim) keys/values -> (B, M, dim) output."""
        x = attention(self.q_norm(q), self.k_norm(k), v, self.attn_drop.p if self.training else 0.0, attn_mask)
        x = x.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.attn_dim)
        return self.proj_drop(self.proj(self.norm(x)))

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`forward(x)` at the tokens `rows` (B, M) only: every token is still a key and a value, but queries are
        projected and attended for those rows alone. Same parameters, same numbers (dropout draws aside)."""
        if self.gate is not None:
            return gather_tokens(self.forward(x), rows)
        b, n, _ = x.shape
        w, bias = self.qkv.weight, self.qkv.bias
        split = self.attn_dim  # qkv's outputs are [q | k | v]
        q = F.linear(gather_tokens(x, rows), w[:split], None if bias is None else bias[:split])
        kv = F.linear(x, w[split:], None if bias is None else bias[split:])
        q = q.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = kv.reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self._attend(q, k, v)


def block_rows(block: Block, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A timm `Block` (with this module's `Attention`) evaluated at the tokens `rows` (B, M) only, = `block(x)`
    gathered at `rows`: all tokens serve as keys and values, but queries, the residual, the MLP run on `rows`.

    For a last block whose other outputs nobody reads (the MAE decoder's: the loss scores masked patches only)."""
    attn = block.attn.forward_rows(block.norm1(x), rows)
    x = gather_tokens(x, rows) + block.drop_path1(block.ls1(attn))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


class Float32Conv2d(nn.Conv2d):
    """A Conv2d that always runs in fp32, also under autocast (same parameters and names as nn.Conv2d).

    Used for the ViT patch embedding: in bf16 it cost accuracy on the digits demo, in fp32 it costs no time (the
    layer is tiny; docs/benchmarks.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.amp.is_autocast_available(x.device.type):  # the meta device (FLOP counts without compute)
            return super().forward(x.float())
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def as_float32_conv(conv: nn.Conv2d) -> Float32Conv2d:
    new = Float32Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    new.load_state_dict(conv.state_dict())
    return new.to(conv.weight.device)


def logits_and_features(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder pass -> (logits, pooled features): the classifier's output and what it read. For auxiliary
    tasks that embed the primary view too (SimCLR, DINO), so that view goes through the encoder once."""
    tokens = encoder.forward_features(x)
    return encoder.forward_head(tokens), encoder.forward_head(tokens, pre_logits=True)


def intermediate_maps(encoder: nn.Module, x: torch.Tensor, levels: tuple[int, ...], count: int):
    """`forward_maps` of a timm encoder with `forward_intermediates` (ViT: blocks, Swin: stages; `count` of them):
    one classification pass -> (logits, pooled features, {level: (B, C, h, w) before the final norm}); -1 the last."""
    wanted = sorted({level % count for level in levels})
    final, maps = encoder.forward_intermediates(x, indices=wanted, norm=False, output_fmt="NCHW")
    by_index = dict(zip(wanted, maps))
    return (encoder.forward_head(final), encoder.forward_head(final, pre_logits=True),
            {level: by_index[level % count] for level in levels})


def pooled_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the classifier head reads (class token or pooled map), for any encoder with timm's
    forward_features / forward_head(pre_logits=True) interface."""
    return encoder.forward_head(encoder.forward_features(x), pre_logits=True)
