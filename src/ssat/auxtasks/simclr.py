"""SimCLR as the auxiliary task: two views of each image through the shared encoder, their pooled (class-token)
embeddings through a projection head, NT-Xent (normalised temperature-scaled cross-entropy) between them.

Written here rather than taken from lightly: the loss is a few lines, and lightly would pull in pytorch-lightning
and hydra for it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks.registry import AuxTask, register_aux
from ssat.errors import UserError
from ssat.options import opt, positive


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's loss for a batch of positive pairs (z1[i], z2[i]); every other sample in both views is a
    negative. Cosine similarities / temperature, cross-entropy towards the positive, averaged over 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a sample is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class ProjectionHead(nn.Sequential):
    """SimCLR's MLP: Linear-BN-ReLU-Linear (2 layers)."""

    def __init__(self, dim: int, hidden: int = 512, out: int = 128):
        super().__init__(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


class SimCLRTask(AuxTask):
    embeds_other_view = True

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, hidden: int = 512, out: int = 128):
        super().__init__()
        self.temperature = temperature
        self.head = ProjectionHead(backbone.num_features, hidden, out)

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None):
        if other_view is None:
            raise UserError("--aux simclr needs two views of every image; the data path did not give them")
        if other_features is None:
            other_features = backbone.embed(other_view)
        z1, z2 = self.head(backbone.embed(images)), self.head(other_features)
        loss = nt_xent(z1, z2, self.temperature)
        return loss, {"loss_simclr": loss.detach()}


@dataclass
class SimCLROptions:
    temperature: float = opt(0.5, "SimCLR NT-Xent temperature", "method", check=positive())


@register_aux("simclr", views=2, options=SimCLROptions)
def build_simclr(backbone: nn.Module, cfg) -> SimCLRTask:
    return SimCLRTask(backbone, temperature=cfg.temperature)
