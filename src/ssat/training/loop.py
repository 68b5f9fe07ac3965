"""The epoch loop: train, evaluate, select on the validation split, checkpoint; what a checkpoint records about
how far the run got (`Tally`). The run's setting-up and resuming is lifecycle.py; its summary, summary.py."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import DistributedSampler

from ssat import distributed, engine
from ssat.config import Config
from ssat.data import DataBundle
from ssat.data.loaders import Loaders
from ssat.data.mix import build_mix
from ssat.distributed import World
from ssat.errors import UserError
from ssat.objective import SSATModel
from ssat.records import RENAMED
from ssat.runs import RunDir, Trainable, load_trained, save_weights, seed_everything
from ssat.tracking import Tracker


def data_meta(data: DataBundle) -> dict:
    return {"classes": data.classes, "in_chans": data.in_chans, "mean": list(data.mean), "std": list(data.std),
            **({"frames": data.frames} if data.frames else {})}


@dataclass
class Tally:
    """How far a run got: what its checkpoint records beside the weights and optimiser state."""
    epoch: int = 0              # epochs finished
    # the highest test top-1 over the epochs the test split was evaluated: a look at the test set, reported as such
    # (test_acc1_max), never used to choose anything; the validation split selects (selected_*)
    test_acc1_max: Optional[float] = None
    test_max_epoch: int = 0
    train_time_s: float = 0.0   # training steps only, over all sessions of a resumed run
    wall_time_s: float = 0.0    # training + evaluation
    selected_epoch: int = 0     # the epoch the validation split selects (0: none yet / no validation split)
    selected_val_acc1: Optional[float] = None
    selected_val_loss: Optional[float] = None

    @classmethod
    def from_checkpoint(cls, state: dict) -> "Tally":
        state = {RENAMED.get(k, k): v for k, v in state.items()}  # checkpoints written before the rename
        fields = cls.__dataclass_fields__
        return cls(**{k: state[k] for k in fields if k in state})

    def selects(self, val: dict) -> bool:
        """Is this epoch's validation result the best so far? Higher top-1, ties broken by lower loss."""
        if self.selected_val_acc1 is None:
            return True
        return (val["acc1"], -val["loss"]) > (self.selected_val_acc1, -self.selected_val_loss)


@dataclass
class Training:
    """Everything the epoch loop works with, built once by `_train`."""
    cfg: Config
    run: RunDir
    data: DataBundle
    model: SSATModel                # state is read from here ...
    step_model: torch.nn.Module     # ... while this runs the step (the model, wrapped for DDP and/or compiled)
    loaders: Loaders
    trainable: Trainable            # the model, optimiser, schedule, scaler and --model-ema: what a checkpoint holds
    updates_per_epoch: int
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    world: World
    log: Callable[[str], None]
    tracker: Tracker

    @property
    def train_loader(self):
        return self.loaders.train

    @property
    def classifier(self) -> torch.nn.Module:
        """What is evaluated, selected and saved: the backbone, or its moving average with --model-ema."""
        ema = self.trainable.ema
        return ema.module if ema is not None else self.model.backbone


def test_epochs(cfg: Config, has_val: bool) -> int:
    """--eval-every resolved: every epoch without a validation split, only after the last with one (0)."""
    return cfg.eval_every if cfg.eval_every is not None else (0 if has_val else 1)


def run_epochs(t: Training, tally: Tally) -> Optional[Outcome]:
    """Train from `tally` to the last epoch, evaluating and checkpointing after each, then test the
    validation-selected weights; -> what the summary reports (None on ranks other than 0)."""
    cfg, model, world = t.cfg, t.model, t.world
    start = Tally(**asdict(tally))
    total_updates = cfg.epochs * t.updates_per_epoch
    every = test_epochs(cfg, t.loaders.val is not None)
    selected = _load_selected(t, tally)  # encoder weights of the validation-selected epoch (None: none yet)
    # video sets: the test clips' videos, for AUC and video-level scores (one process; DDP reports top-k only)
    groups = getattr(t.data.test, "video_ids", None) if world.size == 1 else None
    evaluate = lambda loader, groups=None: engine.evaluate(t.classifier, loader, device=t.device,
                                                           amp_dtype=t.amp_dtype, world=world, groups=groups)
    mix = build_mix(cfg, t.data.num_classes) if model.primary else None  # Mixup / CutMix, if asked for
    parts = t.trainable
    updates = engine.Updates(parts.optimizer, parts.scheduler, parts.scaler, cfg.accum_steps, cfg.clip_grad,
                             total_updates, parts.ema)
    place = engine.Placement(t.device, t.amp_dtype, world)
    for epoch in range(tally.epoch, cfg.epochs):
        # Re-seed every epoch from (seed, epoch, rank): a resumed epoch draws exactly the same augmentations,
        # shuffles, masks and drop-path as in an uninterrupted run.
        seed_everything(distributed.epoch_seed(cfg.seed, epoch, world.rank))
        if hasattr(t.train_loader, "set_epoch"):
            t.train_loader.set_epoch(epoch)
        elif isinstance(getattr(t.train_loader, "sampler", None), DistributedSampler):
            t.train_loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        try:
            watch = engine.Watch(engine.GradientProbe(model.shared_parameters(), cfg.grad_norm_every),
                                 t.tracker if t.tracker.logs_steps else None,
                                 bar=not cfg.quiet and world.is_main and sys.stderr.isatty())
            tr = engine.train_one_epoch(t.step_model, t.train_loader, updates, epoch, place=place, mix=mix,
                                        watch=watch)
        except engine.Diverged as e:
            raise _diverged(t, epoch, str(e)) from None
        t1 = time.perf_counter()
        # Nothing non-finite is ever checkpointed: the last checkpoint stays the last finite state.
        if not engine.all_finite(model):
            raise _diverged(t, epoch, "the weights are no longer finite")
        # Pre-training has no classifier to evaluate (the head is untrained); its product is the encoder.
        last = epoch + 1 == cfg.epochs
        va = evaluate(t.loaders.val) if model.primary and t.loaders.val is not None else None
        tested = model.primary and (last or (every and (epoch + 1) % every == 0))
        te = evaluate(t.loaders.test, groups) if tested else None
        for name, result in (("validation", va), ("test", te)):
            if result is not None and not math.isfinite(result["loss"]):
                raise _diverged(t, epoch, f"the {name} loss is {result['loss']}")
        epoch_time = time.perf_counter() - t0
        tally.epoch = epoch + 1
        tally.train_time_s += t1 - t0
        tally.wall_time_s += epoch_time
        if te is not None and (tally.test_acc1_max is None or te["acc1"] > tally.test_acc1_max):
            tally.test_acc1_max, tally.test_max_epoch = te["acc1"], epoch + 1
        if va is not None and tally.selects(va):
            tally.selected_epoch, tally.selected_val_acc1, tally.selected_val_loss = \
                epoch + 1, va["acc1"], va["loss"]
            selected = {k: v.detach().to("cpu", copy=True) for k, v in t.classifier.encoder.state_dict().items()}
            if world.is_main:
                save_weights(t.run.selected, selected, _weights_meta(t) | {"epoch": epoch + 1})
        row = {"epoch": epoch + 1, "lr": tr["lr"], "loss": tr["loss"], "loss_primary": tr.get("loss_primary"),
               "loss_aux": tr.get("loss_aux"), "train_acc1": tr.get("acc1"), "train_acc5": tr.get("acc5"),
               **{k: tr[k] for k in WEIGHT_KEYS if k in tr},
               **{k: v for k, v in tr.items() if k.startswith(GROUP_KEYS)},  # each task of --aux a+b
               **{f"val_{k}": (va or {}).get(k) for k in ("acc1", "acc5", "loss")},
               **{f"test_{k}": (te or {}).get(k) for k in ("acc1", "acc5", "loss")},
               **({f"test_{k}": (te or {}).get(k) for k in VIDEO_KEYS} if groups is not None else {}),
               "epoch_time_s": round(epoch_time, 3)}
        distributed.assert_in_sync(world, model)
        if world.is_main:
            t.run.append_metrics(row)
            t.tracker.epoch(epoch + 1, row, (epoch + 1) * t.updates_per_epoch)
            t.trainable.save(t.run.checkpoint, asdict(tally), cfg.to_dict(), data_meta(t.data), world.size)
        world.barrier()  # no rank runs ahead of the checkpoint it would resume from
        t.log(f"epoch {epoch + 1}/{cfg.epochs}  {_epoch_line(tr, va, te)}  {epoch_time:.1f}s")

    if not world.is_main and t.loaders.val is None:
        return None
    last_row = t.run.read_metrics()[-1] if world.is_main else {}
    final = {k: last_row.get(f"test_{k}") for k in ("acc1", "acc5", "loss", *VIDEO_KEYS)}
    if world.is_main:
        save_weights(t.run.weights, t.classifier.encoder.state_dict(), _weights_meta(t))
    at_selected = None
    if selected is not None:  # test accuracy of the validation-selected weights (every rank takes its share)
        if tally.selected_epoch == tally.epoch and world.is_main:
            at_selected = final
        elif tally.selected_epoch != tally.epoch:
            t.classifier.encoder.load_state_dict(selected)
            at_selected = evaluate(t.loaders.test, groups)
    if not world.is_main:
        return None
    return Outcome(start, tally, final, at_selected)


def _diverged(t: Training, epoch: int, what: str) -> UserError:
    """The one-line error of a run that went non-finite, naming what it kept and how to go on."""
    # the peak (layer decay scales the groups down)
    lr = max(g.get("initial_lr", g["lr"]) for g in t.trainable.optimizer.param_groups)
    lower = f"--lr {lr / 4:.2e}"
    if epoch == 0:
        return UserError(f"training diverged in epoch 1 ({what}); start again with {lower} or --clip-grad 1.0")
    return UserError(f"training diverged in epoch {epoch + 1} ({what}); the checkpoint of epoch {epoch} is kept: "
                     f"continue with `ssat train --resume {t.run.path} {lower}` or `--clip-grad 1.0`")


# What a video set's test adds (engine.evaluate with the clips' videos): clip AUC, video-level top-1 and AUC.
VIDEO_KEYS = ("auc", "video_acc1", "video_auc")


# Per-epoch means the step reports besides the losses: the loss weights and the gradient-norm probes.
WEIGHT_KEYS = ("w_primary", "w_aux", "grad_norm_primary", "grad_norm_aux", "grad_cos")
GROUP_KEYS = ("loss_aux_", "grad_norm_aux_")  # prefixes of each task's loss and gradient norm (--aux a+b)


def _epoch_line(tr: dict, va: Optional[dict], te: Optional[dict]) -> str:
    text = f"loss {tr['loss']:.4f}"
    if "loss_aux" in tr and "loss_primary" in tr:
        text += f" (primary {tr['loss_primary']:.4f}, aux {tr['loss_aux']:.4f}, w {tr['w_primary']:.3f})"
    if "acc1" in tr:
        text += f"  train acc {tr['acc1']:.1f}"
    if va is not None:
        text += f"  val acc1 {va['acc1']:.2f}"
    if te is not None:
        text += f"  test acc1 {te['acc1']:.2f} acc5 {te['acc5']:.2f}"
    return text


def _weights_meta(t: Training) -> dict:
    return {"config": t.cfg.to_dict(), "data": data_meta(t.data),
            "timm": {"name": t.model.backbone.timm_name, **t.model.backbone.timm_kwargs}
            if t.model.backbone.capabilities.timm_export else None}


def _load_selected(t: Training, tally: Tally) -> Optional[dict]:
    """A resumed run's validation-selected weights, read back from its selected-weights file."""
    if not tally.selected_epoch:
        return None
    if not t.run.selected_weights().is_file():
        raise UserError(f"{t.run.path} records epoch {tally.selected_epoch} as the validation-selected one but "
                        f"{t.run.selected.name} is missing; restore it or start the run afresh with another --out")
    tensors, _ = load_trained(t.run.selected_weights())
    return tensors


class Outcome(NamedTuple):
    """What the loop hands the summary: where this session started and ended, the last epoch's test results and
    the test results of the validation-selected weights (None without a validation split)."""
    start: Tally
    end: Tally
    final: dict
    at_selected: Optional[dict]
