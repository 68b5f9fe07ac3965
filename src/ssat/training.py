"""Training a run: config -> data -> model -> engine, epoch by epoch, into a run directory (resumable). What
`ssat train` / `ssat pretrain` run, and the library's `train(config)`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import timm
import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from ssat import cost, distributed, engine
from ssat.auxtasks import AUX_TASKS, resolve_aux
from ssat.config import Config, default_patch_size
from ssat.data import DATASETS, DataBundle
from ssat.data.loaders import Loaders, epoch_images, loader_images, make_loaders, subset_record, training_subset
from ssat.data.mix import build_mix
from ssat.data.prepare import load_for
from ssat.data.transforms import crop_mode
from ssat.distributed import World
from ssat.errors import UserError
from ssat.methods import METHODS
from ssat.models import MODELS, input_shape
from ssat.objective import SSATModel, build_model
from ssat.plugins import load_plugins
from ssat.runs import (
    RunDir,
    Trainable,
    atomic_write_text,
    load_checkpoint,
    load_trained,
    save_weights,
    seed_everything,
)
from ssat.tracking import Tracker
from ssat.version import __version__


def resolve_for_data(cfg: Config, data: DataBundle) -> Config:
    """A copy of `cfg` with the options whose default depends on the data set filled in, so that config.yaml
    records what actually ran."""
    img_size = cfg.img_size or data.native_size
    aux = resolve_aux(cfg.aux, MODELS[cfg.model].capabilities) if cfg.model in MODELS else cfg.aux
    return dataclasses.replace(
        cfg, img_size=img_size, patch_size=cfg.patch_size or default_patch_size(img_size, cfg.model),
        crop=crop_mode(dataclasses.replace(cfg, img_size=img_size)),  # 'auto' depends on the input size
        hflip=data.hflip if cfg.hflip is None else cfg.hflip, out=cfg.out or cfg.default_out(), aux=aux,
        # contrastive / self-distillation tasks compare two augmentations
        two_views=cfg.two_views or (METHODS[cfg.method].auxiliary and aux in AUX_TASKS
                                    and AUX_TASKS[aux].views == 2),
    ).validate()


def data_meta(data: DataBundle) -> dict:
    return {"classes": data.classes, "in_chans": data.in_chans, "mean": list(data.mean), "std": list(data.std),
            **({"frames": data.frames} if data.frames else {})}



def train(cfg: Config, resume: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
          state: Optional[dict] = None) -> dict:
    """Train (or resume) one run and return its summary. `resume` is a run directory or checkpoint path;
    its config is the one used (the CLI has already merged the few options allowed to change). `state` is
    that checkpoint if the caller has already loaded it. Under torchrun every rank calls this; rank 0 alone
    logs and writes the run directory."""
    if isinstance(cfg, dict):  # ssat.train({...}) from Python: the same options as ssat.config(**...)
        load_plugins()
        cfg = Config.from_dict(cfg, source="ssat.train")
    if not isinstance(cfg, Config):
        raise UserError(f"ssat.train takes a Config (ssat.config(epochs=..., ...)) or a dict of options, got "
                        f"{type(cfg).__name__}")
    world = distributed.from_env()
    if log is None:
        log = (lambda msg: None) if cfg.quiet or not world.is_main else \
            (lambda msg: print(msg, file=sys.stderr, flush=True))
    if state is None and resume:
        state = load_checkpoint(resume)
    cfg.validate()
    device = distributed.init(world, cfg.device) if world.distributed else engine.resolve_device(cfg.device)
    try:
        if METHODS[cfg.method].pretrained_init and cfg.pretrain_epochs > 0 and cfg.pretrained is None:
            return _pretrain_then_finetune(cfg, resume, log, state, world, device)
        return _train(cfg, resume, log, state, world, device)
    finally:
        distributed.shutdown(world)


def _pretrain_then_finetune(cfg: Config, resume, log, state, world: World, device: torch.device) -> dict:
    """SSL+FT in one command: `--pretrain-epochs E` of the auxiliary task alone into OUT/pretrain, then fine-tune
    from it for `--epochs`. Each stage is its own resumable run; the summary adds both stages' cost."""
    out = Path(cfg.out or cfg.default_out())
    stage = dataclasses.replace(cfg, method="pretrain", epochs=cfg.pretrain_epochs, pretrain_epochs=0,
                                out=str(out / "pretrain"), layer_decay=1.0)
    pre = RunDir(stage.out)
    fine_run = RunDir(out)
    if world.is_main and not any(f.exists() for f in (fine_run.checkpoint, fine_run.summary, fine_run.weights)):
        # so that `--resume OUT` finds the whole recipe during stage 1
        fine_run.create(adopt=bool(resume)).write_config(cfg)
    if pre.summary.exists():
        log(f"pre-training already done in {pre.path}")
        pre_summary = json.loads(pre.summary.read_text())
    else:
        log(f"stage 1/2: {cfg.pretrain_epochs} epochs of {cfg.aux} pre-training")
        pre_state = load_checkpoint(pre.path) if pre.checkpoint.exists() else None
        pre_summary = _train(stage, str(pre.path) if pre_state else None, log, pre_state, world, device)
        world.barrier()
        if not world.is_main:
            pre_summary = {}
    log("stage 2/2: fine-tuning")
    fine = dataclasses.replace(cfg, pretrained=str(pre.path), out=str(out))
    summary = _train(fine, resume, log, state, world, device)
    if summary and pre_summary:
        summary.update(pretrain_epochs=cfg.pretrain_epochs, pretrain_time_s=pre_summary["train_time_s"],
                       total_train_time_s=round(pre_summary["train_time_s"] + summary["train_time_s"], 2),
                       total_train_gflops=round(pre_summary["train_gflops_total"] + summary["train_gflops_total"], 1),
                       total_emissions_kg=None if None in (pre_summary["emissions_kg"], summary["emissions_kg"])
                       else pre_summary["emissions_kg"] + summary["emissions_kg"],
                       pretrain_run=str(pre.path))
        RunDir(out).write_summary(summary)
    return summary


@dataclass
class Progress:
    """How far a run got: what its checkpoint records beside the weights and optimiser state."""
    epoch: int = 0              # epochs finished
    best_acc1: Optional[float] = None  # best test top-1 over the epochs the test split was evaluated (optimistic)
    best_epoch: int = 0
    train_time_s: float = 0.0   # training steps only, over all sessions of a resumed run
    wall_time_s: float = 0.0    # training + evaluation
    selected_epoch: int = 0     # the epoch the validation split selects (0: none yet / no validation split)
    selected_val_acc1: Optional[float] = None
    selected_val_loss: Optional[float] = None

    @classmethod
    def from_checkpoint(cls, state: dict) -> "Progress":
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


def _train(cfg: Config, resume, log, state, world: World, device: torch.device) -> dict:
    with ExitStack() as hold:  # the run directory's lock, held to the end
        amp_dtype, needs_scaler = engine.resolve_precision(cfg.precision, device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)

        if cfg.energy and world.is_main:
            cost.check_country(cfg.country)
        data = load_for(cfg, log)
        cfg = resolve_for_data(cfg, data)
        run = RunDir(cfg.out)
        if world.is_main:
            # a folder that is not ours is refused; a second writer too; stale temporary files are removed
            hold.enter_context(run.lock(adopt=state is not None))
        finished = run.summary.exists() or run.weights.exists()
        if state is None and finished and not cfg.overwrite:
            raise UserError(f"{run.path} holds a finished run; choose another --out, or pass --overwrite to "
                            f"replace it")
        if state is None and run.checkpoint.exists() and not finished:
            raise UserError(f"{run.path} already holds an unfinished run; continue it with --resume {run.path} "
                            f"or choose another --out")
        if state is None and world.is_main:
            run.clear()  # a fresh run owns the directory: no earlier run's files may mix with its own
        if state is not None and state["data"]["classes"] != data.classes:
            raise UserError(f"checkpoint {resume} was trained on other classes than {cfg.dataset} at "
                            f"{cfg.data_root}; resume with the same data")
        indices, val = training_subset(cfg, data, log, saved=run.subset if state is not None else None)
        loaders = make_loaders(cfg, data, device, log, rank=world.rank, world_size=world.size, indices=indices,
                           val=val)
        train_loader = loaders.train

        seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model: SSATModel = build_model(cfg, num_classes=data.num_classes, in_chans=data.in_chans,
                                       frames=data.frames).to(device)
        effective_batch = cfg.batch_size * cfg.accum_steps * world.size
        lr = cfg.lr if cfg.lr is not None else cfg.blr * effective_batch / 256
        optimizer = engine.build_optimizer(model, lr, cfg.weight_decay, device, layer_decay=cfg.layer_decay)
        updates_per_epoch = -(-len(train_loader) // cfg.accum_steps)
        scheduler = engine.build_scheduler(optimizer, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                           updates_per_epoch=updates_per_epoch, min_lr=cfg.min_lr)
        scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
        ema = ModelEmaV3(model.backbone, decay=cfg.model_ema) if cfg.model_ema > 0 else None

        progress = Progress()
        trainable = Trainable(model, optimizer, scheduler, scaler, ema)
        if state is not None:
            trainable.restore(state, str(resume))
            before = Config.from_dict(state["config"], source=str(resume))
            was = before.lr if before.lr is not None else before.blr * effective_batch / 256
            if was != lr:  # resumed with another --lr / --blr (e.g. after a divergence): the schedule scales with it
                engine.rescale_lr(optimizer, scheduler, lr / was)
                log(f"learning rate {was:.2e} -> {lr:.2e} from epoch {state['epoch'] + 1} on")
            progress = Progress.from_checkpoint(state)
            if progress.epoch >= cfg.epochs and run.summary.exists():
                log(f"{run.path} already finished all {cfg.epochs} epochs; raise --epochs to train further")
                return json.loads(run.summary.read_text())
            log(f"resuming {run.path} after epoch {progress.epoch} of {cfg.epochs}")
        if world.is_main:  # written only once a resume has been accepted: a refused one leaves the run as it was
            run.write_config(cfg)
            atomic_write_text(run.subset, json.dumps(subset_record(cfg, data, indices, val)))
            run.keep_metrics_before(progress.epoch + 1)

        # What runs the step: the model itself, wrapped for DDP and/or compiled. State is always read from `model`.
        step_model: torch.nn.Module = model
        if world.distributed:
            step_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:
            step_model = engine.compile_model(step_model, cfg.compile_mode, cfg.deterministic)

        n_params = sum(p.numel() for p in model.backbone.parameters())
        n_params_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"{cfg.method} {cfg.model} on {cfg.dataset}: {epoch_images(train_loader) * world.size} train / "
            + (f"{len(val)} validation / " if val else "")
            + f"{len(data.test)} test images, {cfg.img_size}px, patch {cfg.patch_size}, "
            f"train crop {cfg.crop}, "
            f"{n_params / 1e6:.2f}M params ({n_params_train / 1e6:.2f}M trained), "
            f"lr {lr:.2e} (batch {effective_batch}), "
            f"{device}" + (f" {amp_dtype}" if amp_dtype else "") + f", {loaders.path} data path"
            + (f", {world.size} processes" if world.distributed else ""))

        costs = {}
        if world.is_main:  # FLOPs of synthetic images of the run's shape, counted on a copy of the model
            probe = torch.randn(2, *input_shape(data.in_chans, cfg.img_size, data.frames), device=device)
            costs = cost.model_costs(model, probe, torch.zeros(2, dtype=torch.long, device=device),
                                     probe.flip(-1) if cfg.two_views else None)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        meter = cost.EnergyMeter(cfg.country, cfg.energy) if world.is_main else None
        tracker = Tracker(cfg, run.path, world.is_main, updates_per_epoch)
        try:
            summary = _epochs(Training(cfg, run, data, model, step_model, loaders, trainable, updates_per_epoch,
                                       device, amp_dtype, world, log, tracker), progress)
        finally:
            tracker.close()
            energy = _add_energy(run, meter.stop()) if meter is not None else None
        if not world.is_main:
            return {}
        summary.update(params=n_params, params_train=n_params_train, lr=lr, batch_size=effective_batch,
                       data_path=loaders.path, **costs, **energy, **cost.peak_memory_gb(device),
                       hardware=cost.hardware(device))
        summary["train_gflops_total"] = round(costs["gflops_train_step"] * summary["images_seen"], 1)
        run.write_summary(summary)
        return summary


def _add_energy(run: RunDir, session: dict) -> dict:
    """Energy of this process session added to earlier sessions' (a resumed run), kept in energy.json."""
    path = run.path / "energy.json"
    total = json.loads(path.read_text()) if path.exists() else {"energy_kwh": 0.0, "emissions_kg": 0.0}
    for key in ("energy_kwh", "emissions_kg"):
        total[key] = None if session[key] is None or total.get(key) is None else total[key] + session[key]
    total["energy_note"] = session["energy_note"]
    if run.path.exists():
        atomic_write_text(path, json.dumps(total))
    return total


def _epochs(t: Training, progress: Progress) -> dict:
    """Train from `progress` to the last epoch, evaluating and checkpointing after each; -> the run's summary
    (an empty dict on ranks other than 0)."""
    cfg, model, world = t.cfg, t.model, t.world
    start = Progress(**asdict(progress))
    total_updates = cfg.epochs * t.updates_per_epoch
    every = test_epochs(cfg, t.loaders.val is not None)
    selected = _load_selected(t, progress)  # encoder weights of the validation-selected epoch (None: none yet)
    # video sets: the test clips' videos, for AUC and video-level scores (one process; DDP reports top-k only)
    groups = getattr(t.data.test, "video_ids", None) if world.size == 1 else None
    evaluate = lambda loader, groups=None: engine.evaluate(t.classifier, loader, device=t.device,
                                                           amp_dtype=t.amp_dtype, world=world, groups=groups)
    mix = build_mix(cfg, t.data.num_classes) if model.primary else None  # Mixup / CutMix, if asked for
    parts = t.trainable
    updates = engine.Updates(parts.optimizer, parts.scheduler, parts.scaler, cfg.accum_steps, cfg.clip_grad,
                             total_updates, parts.ema)
    place = engine.Placement(t.device, t.amp_dtype, world)
    for epoch in range(progress.epoch, cfg.epochs):
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
        progress.epoch = epoch + 1
        progress.train_time_s += t1 - t0
        progress.wall_time_s += epoch_time
        if te is not None and (progress.best_acc1 is None or te["acc1"] > progress.best_acc1):
            progress.best_acc1, progress.best_epoch = te["acc1"], epoch + 1
        if va is not None and progress.selects(va):
            progress.selected_epoch, progress.selected_val_acc1, progress.selected_val_loss = \
                epoch + 1, va["acc1"], va["loss"]
            selected = {k: v.detach().to("cpu", copy=True) for k, v in t.classifier.encoder.state_dict().items()}
            if world.is_main:
                save_weights(t.run.selected, selected, _weights_meta(t) | {"epoch": epoch + 1})
        row = {"epoch": epoch + 1, "lr": tr["lr"], "loss": tr["loss"], "loss_primary": tr.get("loss_primary"),
               "loss_aux": tr.get("loss_aux"), "train_acc1": tr.get("acc1"), "train_acc5": tr.get("acc5"),
               **{k: tr[k] for k in WEIGHT_KEYS if k in tr},
               **{f"val_{k}": (va or {}).get(k) for k in ("acc1", "acc5", "loss")},
               **{f"test_{k}": (te or {}).get(k) for k in ("acc1", "acc5", "loss")},
               **({f"test_{k}": (te or {}).get(k) for k in VIDEO_KEYS} if groups is not None else {}),
               "epoch_time_s": round(epoch_time, 3)}
        distributed.assert_in_sync(world, model)
        if world.is_main:
            t.run.append_metrics(row)
            t.tracker.epoch(epoch + 1, row, (epoch + 1) * t.updates_per_epoch)
            t.trainable.save(t.run.checkpoint, asdict(progress), cfg.to_dict(), data_meta(t.data), world.size)
        world.barrier()  # no rank runs ahead of the checkpoint it would resume from
        t.log(f"epoch {epoch + 1}/{cfg.epochs}  {_epoch_line(tr, va, te)}  {epoch_time:.1f}s")

    if not world.is_main and t.loaders.val is None:
        return {}
    last_row = t.run.read_metrics()[-1] if world.is_main else {}
    final = {k: last_row.get(f"test_{k}") for k in ("acc1", "acc5", "loss", *VIDEO_KEYS)}
    if world.is_main:
        save_weights(t.run.weights, t.classifier.encoder.state_dict(), _weights_meta(t))
    at_selected = None
    if selected is not None:  # test accuracy of the validation-selected weights (every rank takes its share)
        if progress.selected_epoch == progress.epoch and world.is_main:
            at_selected = final
        elif progress.selected_epoch != progress.epoch:
            t.classifier.encoder.load_state_dict(selected)
            at_selected = evaluate(t.loaders.test, groups)
    if not world.is_main:
        return {}
    return _summary(t, start, progress, final, at_selected)


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


def _load_selected(t: Training, progress: Progress) -> Optional[dict]:
    """A resumed run's validation-selected weights, read back from model-best.safetensors."""
    if not progress.selected_epoch:
        return None
    if not t.run.selected.is_file():
        raise UserError(f"{t.run.path} records epoch {progress.selected_epoch} as the validation-selected one but "
                        f"{t.run.selected.name} is missing; restore it or start the run afresh with another --out")
    tensors, _ = load_trained(t.run.selected)
    return tensors


def _summary(t: Training, start: Progress, end: Progress, final: dict, at_selected: Optional[dict]) -> dict:
    """The run's summary.json (before costs are added); `start` is where this session began (a resumed run)."""
    cfg, world, loader = t.cfg, t.world, t.train_loader
    primary = t.model.primary
    two_streams = t.model.weighting is not None
    aux_read = dict(getattr(t.model.aux, "options_read", {}))
    last = t.run.read_metrics()[-1]
    return {
        "method": cfg.method, "aux": cfg.aux if METHODS[cfg.method].auxiliary else None, "model": cfg.model,
        "tag": cfg.tag, "dataset": cfg.dataset, "fraction": cfg.fraction, "per_class": cfg.per_class,
        "epochs": cfg.epochs, "seed": cfg.seed,
        "lambda": cfg.lam if METHODS[cfg.method].weighted else None,
        "lambda_schedule": cfg.lambda_schedule if two_streams else None,
        "lambda_end": (cfg.lam if cfg.lambda_end is None else cfg.lambda_end) if two_streams else None,
        "balance": cfg.balance if two_streams else None,
        "final_w_primary": last.get("w_primary"), "final_w_aux": last.get("w_aux"),
        # what its auxiliary task read (its mask ratio, its decoder's size, ...): the task says, not a list of names
        "mask_ratio": aux_read.get("mask_ratio"), "aux_options": aux_read or None,
        "init": cfg.init, "pretrained": cfg.pretrained, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
        "test_acc1": final["acc1"], "test_acc5": final["acc5"], "test_loss": final["loss"],
        "val_fraction": cfg.val_fraction, "val_per_class": cfg.val_per_class,
        "n_val": loader_images(t.loaders.val),
        "selected_epoch": end.selected_epoch or None, "val_acc1_selected": end.selected_val_acc1,
        "test_acc1_selected": at_selected["acc1"] if at_selected else None,
        "test_acc5_selected": at_selected["acc5"] if at_selected else None,
        **({f"test_{k}{suffix}": (result or {}).get(k) for k in VIDEO_KEYS
            for suffix, result in (("", final), ("_selected", at_selected))} if t.data.frames else {}),
        "frames": t.data.frames or None,
        "data_options": {k: getattr(cfg, k) for k in DATASETS[cfg.dataset].defaults()},
        "eval_every": test_epochs(cfg, t.loaders.val is not None),
        "best_acc1": end.best_acc1 if primary else None, "best_epoch": end.best_epoch if primary else None,
        "train_time_s": round(end.train_time_s, 2), "wall_time_s": round(end.wall_time_s, 2),
        "train_images_per_s": round(epoch_images(loader) * world.size * (end.epoch - start.epoch)
                                    / max(1e-9, end.train_time_s - start.train_time_s), 1),
        "n_train": loader_images(loader),
        "n_test": len(t.data.test), "images_seen": epoch_images(loader) * world.size * cfg.epochs,
        "device": str(t.device), "world_size": world.size, "distributed_backend": distributed.backend(world),
        "precision": str(t.amp_dtype).replace("torch.", "") if t.amp_dtype else "fp32", "compiled": cfg.compile,
        "versions": {"ssat": __version__, "torch": torch.__version__, "timm": timm.__version__},
    }
