"""A run's life: config -> data -> model, a fresh run or a resumed one (SSL+FT: its two stages), the epoch loop
(loop.py), then its summary (summary.py) and costs. What `ssat train` / `ssat pretrain` run, and `ssat.train()`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP

from ssat import cost, distributed, engine
from ssat.auxtasks import resolve_aux, views_of
from ssat.config import Config, default_patch_size
from ssat.data import DataBundle
from ssat.data.loaders import epoch_images, make_loaders, subset_record, training_subset
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
    seed_everything,
)
from ssat.tracking import Tracker
from ssat.training.loop import Tally, Training, run_epochs
from ssat.training.summary import summarize


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
        two_views=cfg.two_views or (METHODS[cfg.method].auxiliary and views_of(aux) == 2),
        # what the loader resolved (a Hub data set's commit), unless the run already names it
        **{k: v for k, v in data.pinned.items() if getattr(cfg, k, None) is None},
    ).validate()


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
    fine = dataclasses.replace(cfg, pretrained=str(pre.path), pretrained_sha256=None, out=str(out))
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
        # A resumed run's weights come from its checkpoint: the --pretrained file it started from is not checked again
        model: SSATModel = build_model(cfg if state is None else dataclasses.replace(cfg, pretrained_sha256=None),
                                       num_classes=data.num_classes, in_chans=data.in_chans,
                                       frames=data.frames).to(device)
        if model.pretrained_source is not None and state is None:  # config.yaml records which weights (timm: tag)
            name, digest = model.pretrained_source
            cfg = dataclasses.replace(cfg, pretrained=name, pretrained_sha256=digest)
        effective_batch = cfg.batch_size * cfg.accum_steps * world.size
        lr = cfg.lr if cfg.lr is not None else cfg.blr * effective_batch / 256
        optimizer = engine.build_optimizer(model, lr, cfg.weight_decay, device, layer_decay=cfg.layer_decay)
        updates_per_epoch = -(-len(train_loader) // cfg.accum_steps)
        scheduler = engine.build_scheduler(optimizer, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                           updates_per_epoch=updates_per_epoch, min_lr=cfg.min_lr)
        scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
        ema = ModelEmaV3(model.backbone, decay=cfg.model_ema) if cfg.model_ema > 0 else None

        tally = Tally()
        trainable = Trainable(model, optimizer, scheduler, scaler, ema)
        if state is not None:
            trainable.restore(state, str(resume))
            before = Config.from_dict(state["config"], source=str(resume))
            was = before.lr if before.lr is not None else before.blr * effective_batch / 256
            if was != lr:  # resumed with another --lr / --blr (e.g. after a divergence): the schedule scales with it
                engine.rescale_lr(optimizer, scheduler, lr / was)
                log(f"learning rate {was:.2e} -> {lr:.2e} from epoch {state['epoch'] + 1} on")
            tally = Tally.from_checkpoint(state)
            if tally.epoch >= cfg.epochs and run.summary.exists():
                log(f"{run.path} already finished all {cfg.epochs} epochs; raise --epochs to train further")
                return json.loads(run.summary.read_text())
            log(f"resuming {run.path} after epoch {tally.epoch} of {cfg.epochs}")
        if world.is_main:  # written only once a resume has been accepted: a refused one leaves the run as it was
            run.write_config(cfg)
            atomic_write_text(run.subset, json.dumps(subset_record(cfg, data, indices, val)))
            run.keep_metrics_before(tally.epoch + 1)

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
            t = Training(cfg, run, data, model, step_model, loaders, trainable, updates_per_epoch, device,
                         amp_dtype, world, log, tracker)
            outcome = run_epochs(t, tally)
        finally:
            tracker.close()
            energy = _add_energy(run, meter.stop()) if meter is not None else None
        if not world.is_main:
            return {}
        summary = summarize(t, outcome)
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
