"""Several auxiliary tasks at once (`--aux mae+drloc --aux-weights 1,0.1`): one AuxTask whose loss is the weighted
sum of its tasks' losses, which the primary / auxiliary weighting then treats as the one auxiliary loss. With
`--balance ema` each task's loss is first divided by its own running mean, so a task's weight sets its share of the
relative progress, whatever the size of its raw loss (pixel MSE vs L1 in grid units)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from ssat.auxtasks.registry import GROUP_BUILDER, AuxTask, Reconstruction
from ssat.errors import UserError
from ssat.options import declare_options, opt


class AuxGroup(AuxTask):
    def __init__(self, tasks: dict[str, AuxTask], weights: list[float], balance: str = "none",
                 ema_momentum: float = 0.98):
        super().__init__()
        self.tasks = nn.ModuleDict(tasks)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.balance, self.ema_momentum = balance, ema_momentum
        if balance == "ema":
            self.register_buffer("running", torch.zeros(len(tasks)))  # each task's running mean; 0 = not started
        self.embeds_other_view = any(t.embeds_other_view for t in tasks.values())
        self.map_blocks = tuple(sorted({b for t in tasks.values() for b in t.map_blocks}))
        self.reconstructs = any(t.reconstructs for t in tasks.values())
        self.terms: Optional[list[torch.Tensor]] = None  # each task's weighted term of the last loss, undetached

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None, maps=None):
        losses, parts = [], {}
        for name, task in self.tasks.items():
            kwargs = {"maps": maps} if task.map_blocks else {}
            features = other_features if task.embeds_other_view else None
            loss, task_parts = task.loss(backbone, images, other_view, features, **kwargs)
            losses.append(loss.float())
            parts.update(task_parts)
            parts[f"loss_aux_{name}"] = loss.detach()
        stacked = torch.stack(losses)
        scale = self.weights
        if self.balance == "ema":
            if self.training:
                beta, seen = self.ema_momentum, self.running > 0
                self.running.copy_(torch.where(seen, beta * self.running + (1 - beta) * stacked.detach(),
                                               stacked.detach()))
            scale = scale / self.running.clamp_min(1e-12)
        self.terms = list(scale * stacked)
        return sum(self.terms), parts

    def take_terms(self) -> Optional[list[torch.Tensor]]:
        """Each task's weighted term of the last loss (for the gradient probe), handed over once: the module keeps
        no reference into the graph (it could not be copied, and would hold the graph's memory)."""
        terms, self.terms = self.terms, None
        return terms

    @torch.no_grad()
    def after_step(self, backbone: nn.Module, progress: float) -> None:
        for task in self.tasks.values():  # every task's own state (DINO's teacher)
            task.after_step(backbone, progress)

    def reconstruct(self, backbone: nn.Module, images: torch.Tensor) -> Reconstruction:
        """The first of its tasks that draws a reconstruction (`ssat reconstruct`)."""
        return next(t for t in self.tasks.values() if t.reconstructs).reconstruct(backbone, images)


@dataclass
class GroupOptions:
    aux_weights: Optional[str] = opt(None, "weights of the tasks of --aux a+b, comma-separated in the same order "
                                           "(default: 1 each); their weighted sum is the auxiliary loss", "method")

    @staticmethod
    def check(cfg) -> None:
        from ssat.auxtasks.registry import task_names
        if cfg.aux_weights is not None:
            if len(task_names(cfg.aux)) == 1:
                raise UserError(f"--aux-weights weighs the tasks of a list (--aux a+b); --aux {cfg.aux} is one task, "
                                f"whose weight is set by --lambda: drop --aux-weights")
            parse_weights(cfg.aux_weights, len(task_names(cfg.aux)))


def parse_weights(text: Optional[str], count: int) -> list[float]:
    if text is None:
        return [1.0] * count
    try:
        weights = [float(w) for w in str(text).split(",")]
    except ValueError:
        raise UserError(f"--aux-weights {text}: give {count} comma-separated numbers, e.g. "
                        f"{','.join(['1'] * count)}") from None
    if len(weights) != count:
        raise UserError(f"--aux-weights {text} gives {len(weights)} weight(s) for {count} auxiliary task(s); give "
                        f"one per task of --aux, in its order")
    if not all(w >= 0 and w == w and w != float("inf") for w in weights) or not any(weights):
        raise UserError(f"--aux-weights {text}: weights must be finite, >= 0 and not all 0")
    return weights


def build_group(tasks: dict[str, AuxTask], cfg) -> AuxGroup:
    return AuxGroup(tasks, parse_weights(cfg.aux_weights, len(tasks)), balance=cfg.balance)


declare_options("auxiliary task groups (--aux a+b)", GroupOptions)
GROUP_BUILDER.append(build_group)
