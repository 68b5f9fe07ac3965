"""The loaders a run reads, built from its config and data set: the training subset and validation split, then
either the in-memory path (uint8 tensor on the device, batched augmentation) or a DataLoader over PIL transforms.
`cfg` is an ssat Config (read, never changed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ssat.data.batch_augment import BatchAugment
from ssat.data.memory import MemoryLoader, array_images, fits_in_memory, resize_uint8, to_tensor
from ssat.data.registry import DataBundle
from ssat.data.subsets import choose, class_counts
from ssat.data.transforms import Transformed, crop_mode, eval_preprocessing, eval_transform, train_transform
from ssat.errors import UserError


def use_memory_loader(cfg, data: DataBundle) -> bool:
    if cfg.loader == "pil":
        if data.frames:
            raise UserError(f"{cfg.dataset} holds video clips, which take the in-memory path only; use --loader auto")
        return False
    fits = fits_in_memory(data.train) and fits_in_memory(data.test)
    if data.frames and not fits:
        raise UserError(f"the {cfg.dataset} clips take more than 4 GB of memory; lower --frame-size, --frames or "
                        f"--clips-per-video")
    if cfg.loader == "memory" and not fits:
        raise UserError(f"--loader memory needs a data set held as one in-memory array of one image size; "
                        f"{cfg.dataset} is not; use --loader pil")
    return fits


def training_subset(cfg, data: DataBundle, log: Callable[[str], None],
                    saved: Optional[Path] = None) -> tuple[list[int], list[int]]:
    """The run's (training, validation) indices: a resumed run's own subset.json, else --subset-file /
    --per-class / --fraction, with --val-fraction / --val-per-class held out of them."""
    source = str(saved) if saved is not None and saved.is_file() else cfg.subset_file
    indices, val = choose(data.train_targets, fraction=cfg.fraction, n_per_class=cfg.per_class, seed=cfg.subset_seed,
                          subset_file=source, dataset=cfg.dataset, val_fraction=cfg.val_fraction,
                          val_per_class=cfg.val_per_class, groups=getattr(data.train, "video_ids", None),
                          official_val=data.val_indices)
    if len(indices) + len(val) < len(data.train_targets):
        counts = class_counts(data.train_targets, indices)
        how = (f"subset {source}" if source else f"{cfg.per_class} per class" if cfg.per_class
               else f"fraction {cfg.fraction}")
        log(f"{how}: {len(indices) + len(val)} of {len(data.train_targets)} training images; per class "
            + ", ".join(f"{data.classes[c]}={n}" for c, n in list(counts.items())[:20])
            + (" ..." if len(counts) > 20 else ""))
    if val and data.val_indices is not None and not source:
        log(f"validation split: the data set's own, {len(val)} items; {len(indices)} to train on")
    elif val:
        log(f"validation split: {len(val)} training images held out (stratified, seed {cfg.subset_seed}), "
            f"{len(indices)} left to train on")
    elif cfg.val_fraction or cfg.val_per_class:
        raise UserError(f"--val-fraction {cfg.val_fraction} / --val-per-class {cfg.val_per_class} holds out no "
                        f"image of {len(indices)} training images (every class keeps one); raise it or use more data")
    return indices, val


def subset_record(cfg, data: DataBundle, indices: list[int], val: list[int]) -> dict:
    counts = class_counts(data.train_targets, indices)
    return {"dataset": cfg.dataset, "n_full": len(data.train_targets), "fraction": cfg.fraction,
            "per_class": cfg.per_class, "subset_seed": cfg.subset_seed, "subset_file": cfg.subset_file,
            "class_counts": {data.classes[c]: n for c, n in counts.items()}, "indices": indices,
            "val_fraction": cfg.val_fraction, "val_per_class": cfg.val_per_class,
            "val_class_counts": {data.classes[c]: n for c, n in class_counts(data.train_targets, val).items()},
            "val_indices": val}


@dataclass
class Loaders:
    """What a run reads: the training batches, the test split and (with a validation split) the held-out
    training images, the last two un-augmented."""
    train: object
    test: object
    val: Optional[object]
    path: str  # 'memory' or 'pil'


def make_loaders(cfg, data: DataBundle, device: torch.device, log: Callable[[str], None], *, rank: int = 0,
                 world_size: int = 1, indices: Optional[list[int]] = None,
                 val: Optional[list[int]] = None) -> Loaders:
    """Every loader yields (images, targets[, aux_images]) batches."""
    if indices is None:
        indices, val = training_subset(cfg, data, log)
    val = val or []
    mode = crop_mode(cfg)
    eval_batch = max(cfg.batch_size, 256)
    if use_memory_loader(cfg, data):
        all_train = to_tensor(array_images(data.train), data.in_chans)
        train_images = all_train[indices]
        if mode != "rrc":  # crops of the padded image happen per batch; resizing once is enough
            train_images = resize_uint8(train_images, cfg.img_size)
        crop_pct = eval_preprocessing(cfg)["crop_pct"]  # what eval_transform and ssat export use
        as_eval = lambda x: resize_uint8(x, cfg.img_size, crop_pct=crop_pct)
        augment = BatchAugment(size=cfg.img_size, crop=mode, hflip=cfg.hflip, rand_augment=cfg.rand_augment,
                               reprob=cfg.reprob, mean=data.mean, std=data.std)
        common = dict(device=device, mean=data.mean, std=data.std, rank=rank, world_size=world_size)
        train_loader = MemoryLoader(train_images, [data.train_targets[i] for i in indices], augment=augment,
                                    batch_size=cfg.batch_size, two_views=cfg.two_views, seed=cfg.seed,
                                    balanced=data.balanced, **common)
        test_loader = MemoryLoader(as_eval(to_tensor(array_images(data.test), data.in_chans)), data.test.labels,
                                   batch_size=eval_batch, **common)
        val_loader = MemoryLoader(as_eval(all_train[val]), [data.train_targets[i] for i in val],
                                  batch_size=eval_batch, **common) if val else None
        return Loaders(train_loader, test_loader, val_loader, "memory")

    train_tf = train_transform(cfg, data.mean, data.std, data.native_size, cfg.hflip)
    eval_tf = eval_transform(cfg, data.mean, data.std)
    train_set = Subset(Transformed(data.train, train_tf, train_tf if cfg.two_views else None), indices)
    test_set = Transformed(data.test, eval_tf)
    val_set = Subset(Transformed(data.train, eval_tf), val) if val else None
    if world_size > 1:  # each rank evaluates a strided share; the sums are all-reduced
        test_set = Subset(test_set, range(rank, len(test_set), world_size))
        val_set = Subset(val_set, range(rank, len(val_set), world_size)) if val_set is not None else None
    workers = cfg.workers if cfg.workers is not None else (0 if device.type == "cpu" else min(8, os.cpu_count()))
    # Full batches only (as the reference), unless the subset is smaller than one batch.
    drop_last = len(train_set) >= cfg.batch_size * world_size
    sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=cfg.seed,
                                 drop_last=drop_last) if world_size > 1 else None
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=drop_last, **common)
    test_loader = DataLoader(test_set, batch_size=eval_batch, shuffle=False, **common)
    val_loader = DataLoader(val_set, batch_size=eval_batch, shuffle=False, **common) if val_set is not None else None
    return Loaders(train_loader, test_loader, val_loader, "pil")


def epoch_images(loader) -> int:
    """Training images one rank sees per epoch."""
    if isinstance(loader, MemoryLoader):
        return loader.num_samples
    return len(loader) * loader.batch_size if loader.drop_last else len(loader.sampler)


def loader_images(loader) -> int:
    """Images in a loader's set (0 for none): what the run trained, validated or tested on."""
    if loader is None:
        return 0
    return len(loader.images) if isinstance(loader, MemoryLoader) else len(loader.dataset)
