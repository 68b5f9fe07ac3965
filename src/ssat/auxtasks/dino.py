"""DINO as the auxiliary task: self-distillation with no labels. The student (the shared encoder + a DINO head)
matches the output distribution of a teacher (an exponential moving average of the student, no gradient) on the
other view; the teacher's outputs are centred (running mean) and sharpened (low temperature), which together
prevent collapse. Two global views; multi-crop is not implemented (its small crops would need their own size)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks.registry import AuxTask, register_aux
from ssat.errors import UserError
from ssat.options import at_least, opt, positive, within


class DINOHead(nn.Module):
    """MLP (3 layers, GELU) -> L2-normalised bottleneck -> weight-normalised linear to `out` prototypes."""

    def __init__(self, dim: int, out: int = 1024, hidden: int = 512, bottleneck: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)  # the norm is fixed at 1, as DINO
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float,
              teacher_temp: float) -> torch.Tensor:
    """Cross-entropy H(teacher, student): teacher centred and sharpened, no gradient through it."""
    targets = F.softmax((teacher.float() - center) / teacher_temp, dim=-1).detach()
    return -(targets * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1).mean()


class DINOTask(AuxTask):
    embeds_other_view = True

    def __init__(self, backbone: nn.Module, out: int = 1024, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 momentum: float = 0.996, center_momentum: float = 0.9):
        super().__init__()
        self.head = DINOHead(backbone.num_features, out)
        # The teacher: a copy of the encoder and head, updated only by EMA (never by the optimiser).
        self.teacher_encoder = copy.deepcopy(backbone.encoder)
        self.teacher_head = copy.deepcopy(self.head)
        for p in list(self.teacher_encoder.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, out))
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.momentum, self.center_momentum = momentum, center_momentum

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher_encoder.eval()  # no drop-path in the teacher
        return self

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None):
        if other_view is None:
            raise UserError("--aux dino needs two views of every image; the data path did not give them")
        views = (images, other_view)
        if other_features is None:
            other_features = backbone.embed(other_view)
        student = [self.head(backbone.embed(images)), self.head(other_features)]
        with torch.no_grad():
            teacher = [self.teacher_head(backbone.embed(v, encoder=self.teacher_encoder)) for v in views]
        # Each student view learns from the teacher's *other* view.
        loss = 0.5 * (dino_loss(student[0], teacher[1], self.center, self.student_temp, self.teacher_temp)
                      + dino_loss(student[1], teacher[0], self.center, self.student_temp, self.teacher_temp))
        self._batch_center = torch.cat(teacher).float().mean(dim=0, keepdim=True)
        return loss, {"loss_dino": loss.detach()}

    @torch.no_grad()
    def after_step(self, backbone: nn.Module, progress: float) -> None:
        # Teacher momentum follows DINO's cosine schedule from `momentum` to 1.
        m = 1 - (1 - self.momentum) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2
        for student, teacher in ((backbone.encoder, self.teacher_encoder), (self.head, self.teacher_head)):
            s_params = [p for p in student.parameters()]
            t_params = [p for p in teacher.parameters()]
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1 - m)
        if getattr(self, "_batch_center", None) is not None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():  # one centre for all ranks
                torch.distributed.all_reduce(self._batch_center)
                self._batch_center /= torch.distributed.get_world_size()
            self.center.mul_(self.center_momentum).add_(self._batch_center, alpha=1 - self.center_momentum)
            self._batch_center = None


@dataclass
class DINOOptions:
    dino_out_dim: int = opt(1024, "DINO head output (prototype) dimension", "method", check=at_least(1))
    teacher_temp: float = opt(0.04, "DINO teacher temperature (sharpening); the student's is 0.1", "method",
                              check=positive())
    ema_momentum: float = opt(0.996, "DINO teacher EMA momentum at the start (cosine to 1)", "method",
                              check=within(0, 1, "[)"))


@register_aux("dino", views=2, options=DINOOptions)
def build_dino(backbone: nn.Module, cfg) -> DINOTask:
    return DINOTask(backbone, out=cfg.dino_out_dim, teacher_temp=cfg.teacher_temp, momentum=cfg.ema_momentum)
