"""Auxiliary-task registry. An auxiliary task is an `nn.Module` that owns only its own parameters (decoder,
heads) and computes its loss through the *shared* backbone:

    task = build_aux("mae", backbone, cfg)
    loss, parts = task.loss(backbone, images, other_view, other_features)  # scalar, {"name": scalar tensor}

`images` is the auxiliary stream's input; `other_view` is a second augmentation of the same images (the primary
stream's view), which contrastive / self-distillation tasks (SimCLR, DINO) compare against. Tasks registered with
`views=2` get two independent views from the data path. Tasks that set `embeds_other_view` get `other_features`,
the pooled embedding of `other_view` from the primary stream's own pass, when there is one (SSAT; not when
pre-training), instead of encoding that view a second time. A new task is one new file in this package (every
module in it is imported) with a `@register_aux("name", options=...)` builder; the engine never changes. Tasks
that keep state outside the optimiser (DINO's EMA teacher) update it in
`after_step`, which the engine calls after every optimizer step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn

from ssat.errors import EXTENSION_HINT, UserError
from ssat.methods import METHODS
from ssat.options import declare_options, refuse_duplicate


class AuxTask(nn.Module):
    """Interface of every auxiliary task."""

    embeds_other_view = False  # True: the loss reads backbone.embed(other_view); the primary pass can supply it
    map_blocks: tuple[int, ...] = ()  # token-map levels it reads from the classification pass (loss(..., maps=))

    def loss(self, backbone: nn.Module, images: torch.Tensor, other_view: Optional[torch.Tensor] = None,
             other_features: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, backbone: nn.Module, progress: float) -> None:
        """Called after each optimizer step; `progress` runs from 0 to 1 over training."""

    def take_terms(self) -> Optional[list[torch.Tensor]]:
        """Several tasks in one (AuxGroup): each task's weighted term of the last loss, for the gradient probe."""
        return None

    reconstructs = False  # True: `reconstruct` draws what the task predicts (`ssat reconstruct`)

    def reconstruct(self, backbone: nn.Module, images: torch.Tensor) -> "Reconstruction":
        """The task's view of `images` (normalised input space): what it hid, and its prediction of it."""
        raise NotImplementedError


class TokenMaps(NamedTuple):
    """What a task with `map_blocks` reads from the classification pass: the images that pass saw and the token maps
    (B, C, h, w) of the levels it asked for (blocks of a ViT, stages of a hierarchical model; -1 the last)."""
    images: torch.Tensor
    levels: dict[int, torch.Tensor]


class Reconstruction(NamedTuple):
    masked: torch.Tensor          # the input with what the task hid set to zero (the input's mean)
    reconstruction: torch.Tensor  # the input with the hidden part replaced by the prediction
    masked_mse: float             # the prediction's error on the hidden part, in input units


@dataclass(frozen=True)
class AuxSpec:
    """Everything about one auxiliary task that other modules ask: they read this, never compare its name."""
    name: str
    builder: Callable[..., AuxTask]  # (backbone, cfg) -> AuxTask
    views: int = 1                   # augmented views the data path delivers per image (2: SimCLR, DINO)
    needs: str = "pooled_embedding"  # the backbone capability it requires (models.registry.Capabilities)
    video: bool = False              # reads clips (pairs with video backbones only)
    options: Optional[type] = None   # its dataclass of opt(...) fields
    decodes_last_stage: bool = False  # reconstructs from the last stage's map, which must tile the image (SimMIM)
    min_grid: int = 0                # the last token map must be at least this many tokens a side (drloc: 3)

    @property
    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)] if self.options else []

    def fits(self, capabilities, img_size: int, patch_size: int) -> bool:
        """Declared support: the backbone has what the task needs and, for a task decoding the last stage, that
        stage's map tiles the image. Anything declared here must train (tests/test_contract.py)."""
        if not capabilities.auxiliary or getattr(capabilities, self.needs) is not True or \
                self.video != capabilities.video:
            return False
        last = patch_size * capabilities.stage_downsampling  # pixels per token of the last map
        return (not self.decodes_last_stage or img_size % last == 0) and img_size // last >= self.min_grid

    def check(self, cfg) -> None:
        """What a task comparing views cannot train with: mixed images (each view would be mixed differently), or
        batches of one image (it compares, and normalises over, the images of a batch)."""
        if self.views > 1 and cfg.mixup + cfg.cutmix > 0:
            raise UserError(f"--mixup / --cutmix with two views (--aux {self.name}) is not supported: the views "
                            f"would be mixed differently; drop one of them")
        if self.views > 1 and METHODS[cfg.method].auxiliary and cfg.batch_size < 2:
            raise UserError(f"--aux {self.name} compares the images of a batch (and normalises its projection over "
                            f"the batch): give --batch-size 2 or more, got {cfg.batch_size}")


AUX_TASKS: dict[str, AuxSpec] = {}
GROUP_BUILDER: list[Callable] = []  # (tasks by name, cfg) -> the task combining them: auxtasks/group.py registers it


def register_aux(name: str, views: int = 1, needs: str = "pooled_embedding", options: Optional[type] = None,
                 video: bool = False, decodes_last_stage: bool = False, min_grid: int = 0):
    """`builder(backbone, cfg) -> AuxTask`; `needs` names the backbone capability it requires; `options` is a
    dataclass of `ssat.options.opt` fields, which become Config fields (flags, YAML keys) read as `cfg.<name>`;
    `video`: the task reads clips and pairs with video backbones only (image tasks with image backbones only)."""
    def wrap(builder: Callable[..., AuxTask]) -> Callable[..., AuxTask]:
        refuse_duplicate("auxiliary task", name, AUX_TASKS)
        declare_options(f"auxiliary task '{name}'", options)
        AUX_TASKS[name] = AuxSpec(name, builder, views, needs, video, options, decodes_last_stage, min_grid)
        return builder
    return wrap


class ReadsOf:
    """A Config that notes which options are read: what a task's builder used. A run records them (its mask ratio,
    its decoder's size, ...), and `ssat.SSAT` refuses an option no part of the task reads."""

    def __init__(self, cfg):
        self._cfg, self.read = cfg, {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._cfg, name)
        self.read[name] = value
        return value


def unrecorded(cfg):
    """The config behind a ReadsOf, for what a builder checks but does not read as its own option (the data a
    guidance teacher must share): not recorded among the task's options."""
    return cfg._cfg if isinstance(cfg, ReadsOf) else cfg


def tasks_for(capabilities) -> list[str]:
    """The auxiliary tasks a backbone with these capabilities can train."""
    if not capabilities.auxiliary:
        return []
    return [name for name in sorted(AUX_TASKS)
            if getattr(capabilities, AUX_TASKS[name].needs) and AUX_TASKS[name].video == capabilities.video]


def task_names(aux: str) -> list[str]:
    """`--aux mae+drloc` -> ["mae", "drloc"]; one task -> [it]."""
    return [n.strip() for n in str(aux).split("+")]


def check_aux(aux: str) -> list[AuxSpec]:
    """The specs of `--aux` (one task or several joined by '+'; 'auto' alone), or one line naming what is wrong."""
    names = task_names(aux)
    if names == ["auto"]:
        return []
    known = ", ".join(sorted([*AUX_TASKS, "auto"]))
    for n in names:
        if n == "auto":
            raise UserError(f"--aux {aux}: 'auto' stands alone; name each task of a list (e.g. mae+drloc)")
        if n not in AUX_TASKS:
            where = f" in --aux {aux}" if len(names) > 1 else ""
            raise UserError(f"unknown auxiliary task '{n}'{where}; choose one of: {known} (or several joined by "
                            f"'+'){EXTENSION_HINT}")
    if len(set(names)) < len(names):
        raise UserError(f"--aux {aux} names a task twice; give each task once")
    return [AUX_TASKS[n] for n in names]


def views_of(aux: str) -> int:
    """Augmented views the data path delivers for `--aux`: the most any of its tasks asks (1 for 'auto')."""
    return max([AUX_TASKS[n].views for n in task_names(aux) if n in AUX_TASKS] or [1])


def resolve_aux(name: str, capabilities) -> str:
    """`auto` -> the masked-image task the backbone supports: MAE where it drops patches, SimMIM where it takes a
    mask token (else MAE, which then refuses the backbone in one line); VideoMAE for video backbones."""
    if name != "auto":
        return name
    if capabilities.video:
        return "videomae"
    return "simmim" if capabilities.mask_token and not capabilities.drops_patches else "mae"


def build_aux(name: str, backbone: nn.Module, cfg) -> AuxTask:
    """The task, with `task.options_read`: every option its builder read and its value (what a run records).
    Several tasks (`mae+drloc`) -> one AuxGroup (auxtasks/group.py) holding each."""
    if len(task_names(name)) > 1:
        check_aux(name)
        reads = ReadsOf(cfg)
        tasks = {n: build_aux(n, backbone, cfg) for n in task_names(name)}
        group = GROUP_BUILDER[0](tasks, reads)
        group.options_read = {k: v for t in tasks.values() for k, v in t.options_read.items()} | reads.read
        return group
    if name not in AUX_TASKS:
        raise UserError(f"unknown auxiliary task '{name}'; choose one of: {', '.join(sorted(AUX_TASKS))}")
    spec = AUX_TASKS[name]
    caps = getattr(backbone, "capabilities", None)
    if caps is not None and name not in tasks_for(caps):
        can = tasks_for(caps)
        what = getattr(backbone, "name", type(backbone).__name__)
        need = "reads clips (a video model)" if spec.video else \
            "reads images (not a video model)" if caps.video else NEED_WORDS[spec.needs]
        raise UserError(f"--aux {name} needs a backbone that {need}, which {what} cannot; "
                        + (f"use --aux {' or '.join(can)} with it" if can else "train it with --method scratch"))
    reads = ReadsOf(cfg)
    task = spec.builder(backbone, reads)
    task.options_read = dict(reads.read)
    return task


NEED_WORDS = {"drops_patches": "drops masked patches (a ViT)", "mask_token": "takes a mask token at every position",
              "pooled_embedding": "gives a pooled embedding",
              "token_maps": "returns token maps from its classification pass"}
