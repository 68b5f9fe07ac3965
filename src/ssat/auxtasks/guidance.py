"""Locality guidance (Li et al., ECCV 2022, "Locality Guidance for Improving Vision Transformers on Tiny Datasets"):
a small CNN trained first on the same images (`cifar_resnet56`) guides the student's token maps of a few blocks
towards its stage maps. The student's maps come from its own classification pass (`forward_maps`); the teacher is
frozen in eval mode (no gradient, BatchNorm statistics fixed), and its forward is part of the run's cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssat.auxtasks.registry import AuxTask, register_aux, unrecorded
from ssat.data import DATASETS
from ssat.errors import UserError
from ssat.methods import METHODS
from ssat.models import build_backbone
from ssat.options import opt
from ssat.weightfile import read_weights

# What decides which training images a run saw: a teacher must agree on all of them with its student, or what it
# learnt from images the student never trains on (its validation or test images among them) would leak in.
SUBSET_KEYS = ("dataset", "fraction", "per_class", "subset_file", "subset_seed", "val_fraction", "val_per_class",
               "train_split", "stats", "gray_to_rgb")


class GuidanceTask(AuxTask):
    def __init__(self, teacher: nn.Module, teacher_size: int, blocks: tuple[int, ...], student_dims: list[int],
                 teacher_dims: list[int]):
        super().__init__()
        self.teacher, self.teacher_size = teacher.requires_grad_(False).eval(), teacher_size
        self.blocks = blocks
        self.map_blocks = tuple(sorted(set(blocks)))
        self.adapters = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student_dims, teacher_dims))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: its BatchNorm keeps the statistics it was trained with
        return self

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view=None, other_features=None, maps=None):
        with torch.no_grad():
            seen = maps.images  # the batch the student's maps come from, augmented as the student saw it
            if seen.shape[-1] != self.teacher_size:
                seen = F.interpolate(seen, size=(self.teacher_size, self.teacher_size), mode="bilinear",
                                     align_corners=False)
            taught = self.teacher.forward_maps(seen, tuple(range(len(self.blocks))))[2]
        total = 0.0
        for i, (block, adapter) in enumerate(zip(self.blocks, self.adapters)):
            student, target = adapter(maps.levels[block]).float(), taught[i].float()
            size = tuple(max(a, b) for a, b in zip(student.shape[-2:], target.shape[-2:]))  # the larger map
            total = total + F.mse_loss(resized(student, size), resized(target, size))
        return total, {"loss_guidance": total.detach()}


def resized(m: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return m if tuple(m.shape[-2:]) == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)


@dataclass
class GuidanceOptions:
    guidance_teacher: Optional[str] = opt(None, "locality guidance: the teacher run (directory or its "
                                                "model.safetensors), a cifar_resnet56 trained with --method scratch "
                                                "on the same training images", "method")
    guidance_blocks: str = opt("0,6,11", "locality guidance: the student blocks (stages of a hierarchical model; -1 "
                                         "the last) whose token maps are guided, one per teacher stage, in order",
                               "method")

    @staticmethod
    def check(cfg) -> None:
        from ssat.auxtasks.registry import task_names
        if "guidance" in task_names(cfg.aux) and cfg.guidance_teacher is None:
            raise UserError("--aux guidance needs --guidance-teacher RUN: a cifar_resnet56 trained first with "
                            "`ssat train --model cifar_resnet56 --method scratch` on the same training images")


def load_teacher(path: str, student_cfg, num_classes: int, in_chans: int) -> tuple[nn.Module, int]:
    """The teacher run's network, frozen, checked against the student's data: -> (teacher, its image size)."""
    where = Path(path).expanduser()
    weights = where / "model.safetensors" if where.is_dir() else where
    if not weights.is_file():
        raise UserError(f"--guidance-teacher {path}: no such run (its model.safetensors is missing); train the "
                        f"teacher first: ssat train --model cifar_resnet56 --method scratch with this run's data")
    tensors, meta = read_weights(weights)
    cfg, data = meta["config"], meta["data"]
    if cfg.get("method") not in METHODS or not METHODS[cfg["method"]].primary:
        raise UserError(f"--guidance-teacher {path} is a {cfg.get('method')} run; the teacher is a classifier "
                        f"trained with --method scratch")
    keys = [*SUBSET_KEYS, *DATASETS[student_cfg.dataset].defaults()] if student_cfg.dataset in DATASETS \
        else list(SUBSET_KEYS)
    differ = [k for k in keys if cfg.get(k) != getattr(student_cfg, k, None)]
    if differ or len(data["classes"]) != num_classes or data["in_chans"] != in_chans:
        what = ", ".join(f"{k} {cfg.get(k)} vs {getattr(student_cfg, k, None)}" for k in differ[:3]) or \
            f"{len(data['classes'])} classes of {data['in_chans']} channel(s) vs {num_classes} of {in_chans}"
        raise UserError(f"--guidance-teacher {path} was trained on other data than this run ({what}): what it "
                        f"learnt from images this run holds out would leak in; train the teacher with the same "
                        f"data options")
    teacher = build_backbone(cfg["model"], img_size=cfg["img_size"], patch_size=cfg["patch_size"],
                             in_chans=data["in_chans"], num_classes=len(data["classes"]))
    if not hasattr(teacher, "forward_maps"):
        raise UserError(f"--guidance-teacher {path}: its model {cfg['model']} gives no stage maps; use a "
                        f"cifar_resnet56 run")
    try:
        teacher.encoder.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"--guidance-teacher {path}: its weights do not fit {cfg['model']} ({str(e)[:120]}); "
                        f"re-train the teacher") from None
    return teacher, int(cfg["img_size"])


def map_levels(backbone: nn.Module) -> int:
    """How many levels forward_maps can return: blocks of a ViT, stages of a hierarchical model."""
    enc = backbone.encoder
    for name in ("blocks", "stages", "layers"):
        if isinstance(getattr(enc, name, None), (nn.Sequential, nn.ModuleList)):
            return len(getattr(enc, name))
    return 1


@register_aux("guidance", needs="token_maps", options=GuidanceOptions)
def build_guidance(backbone: nn.Module, cfg) -> AuxTask:
    if cfg.guidance_teacher is None:
        raise UserError("--aux guidance needs --guidance-teacher RUN: a cifar_resnet56 trained first with "
                        "`ssat train --model cifar_resnet56 --method scratch` on the same training images")
    try:
        blocks = tuple(int(b) for b in str(cfg.guidance_blocks).split(","))
    except ValueError:
        raise UserError(f"--guidance-blocks {cfg.guidance_blocks}: give comma-separated block numbers, e.g. "
                        f"0,6,11") from None
    levels = map_levels(backbone)
    if any(not -levels <= b < levels for b in blocks):
        raise UserError(f"--guidance-blocks {cfg.guidance_blocks} names a block outside {backbone.name}'s "
                        f"{levels} (0 to {levels - 1}, or -1 for the last)")
    teacher, size = load_teacher(cfg.guidance_teacher, unrecorded(cfg), backbone.num_classes, backbone.in_chans)
    stages = map_levels(teacher)
    if len(blocks) != stages:
        raise UserError(f"--guidance-blocks {cfg.guidance_blocks} names {len(blocks)} block(s) for the teacher's "
                        f"{stages} stages; name one block per stage")
    with torch.no_grad():
        taught = teacher.forward_maps(torch.zeros(1, backbone.in_chans, size, size), tuple(range(stages)))[2]
    was = backbone.training
    backbone.eval()  # the student's channels per level, from one pass on a blank image (no random draws)
    with torch.no_grad():
        img = backbone.img_size if hasattr(backbone, "img_size") else backbone.patch_size * backbone.grid_size[0]
        found = backbone.forward_maps(torch.zeros(1, backbone.in_chans, img, img), blocks)[2]
    backbone.train(was)
    return GuidanceTask(teacher, size, blocks, [found[b].shape[1] for b in blocks],
                        [m.shape[1] for m in taught.values()])
