"""L_drloc (Liu et al., NeurIPS 2021, "Efficient Training of Visual Transformers with Small Datasets"): from the
final token map of the classification pass, predict how far apart two randomly drawn positions are. It reads the map
the primary stream already computed (`forward_maps`), so it costs no encoder pass of its own: an MLP on m pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks.registry import AuxTask, register_aux
from ssat.errors import UserError
from ssat.options import at_least, opt

MIN_GRID = 3  # a 2x2 map has only distances 0 and 1 on each axis: nothing to localise


def sample_pairs(maps: torch.Tensor, pos_u: torch.Tensor, pos_v: torch.Tensor, signed: bool = False):
    """maps (B, C, H, W); pos_u, pos_v (B, m) flat positions (row * W + col) -> (embeddings [e_u; e_v] (B, m, 2C),
    targets (B, m, 2): Δrow, Δcol in grid units (|Δ| unless `signed`)). Rows and columns use the map's own H and W,
    so non-square maps are right (the official gather is right for square maps only)."""
    b, c, h, w = maps.shape
    flat = maps.flatten(2).transpose(1, 2)  # (B, H*W, C)
    take = lambda pos: torch.gather(flat, 1, pos.unsqueeze(-1).expand(-1, -1, c))
    delta = torch.stack([pos_u // w - pos_v // w, pos_u % w - pos_v % w], dim=-1).float()
    return torch.cat([take(pos_u), take(pos_v)], dim=-1), (delta if signed else delta.abs())


def final_map(backbone: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """The grid drloc samples: the last map, pooled 3/2 (padding 1, padding not counted) on backbones whose last map
    is dense (CvT) once it is 8 or more tokens a side, as the official code does."""
    if getattr(backbone, "dense_last_map", False) and min(maps.shape[-2:]) >= 8:
        return F.avg_pool2d(maps, 3, 2, 1, count_include_pad=False)
    return maps


class DRLocTask(AuxTask):
    map_blocks = (-1,)  # the last block's (stage's) map of the classification pass

    def __init__(self, dim: int, pairs: int = 64, signed: bool = False, hidden: int = 512):
        super().__init__()
        self.pairs, self.signed = pairs, signed
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 2))

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None, maps=None):
        grid = final_map(backbone, maps.levels[-1])
        b, _, h, w = grid.shape
        pos_u, pos_v = (torch.randint(0, h * w, (b, self.pairs), device=grid.device) for _ in range(2))
        pairs, target = sample_pairs(grid, pos_u, pos_v, self.signed)
        with torch.autocast(grid.device.type, enabled=False):  # the regression in fp32, as the official code
            loss = F.l1_loss(self.mlp(pairs.float()), target)
        return loss, {"loss_drloc": loss.detach()}


@dataclass
class DRLocOptions:
    drloc_pairs: int = opt(64, "drloc: position pairs drawn per image (with replacement; the official m = 64)",
                           "method", check=at_least(1))
    drloc_target: str = opt("abs", "drloc: regress |Δ| per axis ('abs', the published setting) or the signed Δ",
                            "method", choices="abs,signed")


def map_side(backbone: nn.Module) -> int:
    """The smaller side of the last map the backbone's classification pass gives (before drloc's pooling)."""
    if hasattr(backbone, "total_stride"):  # hierarchical: the stem's grid, downsampled by the stages
        return backbone.img_size // backbone.total_stride
    return min(backbone.grid_size[-2:])


@register_aux("drloc", needs="token_maps", options=DRLocOptions, min_grid=MIN_GRID)
def build_drloc(backbone: nn.Module, cfg) -> AuxTask:
    side = map_side(backbone)
    if side < MIN_GRID:
        raise UserError(f"--aux drloc needs a final token map of at least {MIN_GRID}x{MIN_GRID}; "
                        f"{getattr(backbone, 'name', 'this model')} ends at {side}x{side} here: use a larger "
                        f"--img-size or a smaller --patch-size")
    # the last map's channels are what the pooled features have (ViT: the width; Swin, CvT: the last stage's)
    return DRLocTask(backbone.num_features, pairs=cfg.drloc_pairs, signed=cfg.drloc_target == "signed")
