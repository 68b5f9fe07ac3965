"""A finished run's summary.json: what it ran, on what, how well and at what cost (ssat.records reads it)."""

from __future__ import annotations

import timm
import torch

from ssat import distributed
from ssat.data import DATASETS
from ssat.data.loaders import epoch_images, loader_images
from ssat.methods import METHODS
from ssat.training.loop import VIDEO_KEYS, Outcome, Training, test_epochs
from ssat.version import __version__


def summarize(t: Training, outcome: Outcome) -> dict:
    """The run's summary.json (before costs are added); `outcome.start` is where this session began (a resumed
    run)."""
    start, end, final, at_selected = outcome
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
        "data_source": t.data.source,  # which data, where the data set's name does not say (hf)
        "eval_every": test_epochs(cfg, t.loaders.val is not None),
        # the test maximum over the evaluated epochs (optimistic: it looks at the test set); selected_* is the pick
        "test_acc1_max": end.test_acc1_max if primary else None,
        "test_max_epoch": end.test_max_epoch if primary else None,
        "train_time_s": round(end.train_time_s, 2), "wall_time_s": round(end.wall_time_s, 2),
        "train_images_per_s": round(epoch_images(loader) * world.size * (end.epoch - start.epoch)
                                    / max(1e-9, end.train_time_s - start.train_time_s), 1),
        "n_train": loader_images(loader),
        "n_test": len(t.data.test), "images_seen": epoch_images(loader) * world.size * cfg.epochs,
        "device": str(t.device), "world_size": world.size, "distributed_backend": distributed.backend(world),
        "precision": str(t.amp_dtype).replace("torch.", "") if t.amp_dtype else "fp32", "compiled": cfg.compile,
        "versions": {"ssat": __version__, "torch": torch.__version__, "timm": timm.__version__},
    }
