"""From a Config to the data a run uses: load the set with its options, then the channel and statistics choices."""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Optional

import numpy as np

from ssat.data.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArrayDataset,
    CommonDataOptions,
    DataBundle,
    DataOptions,
    array_stats,
    dataset_option_names,
    load_dataset,
)
from ssat.errors import UserError

STATS_SAMPLE = 500  # images decoded to estimate file-based sets' statistics


def options_of(cfg, log: Optional[Callable[[str], None]] = None, splits=("train", "test")) -> DataOptions:
    common = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CommonDataOptions)}
    return DataOptions(**common, log=log, splits=tuple(splits),
                       extra={name: getattr(cfg, name) for name in dataset_option_names()})


def to_rgb(data: DataBundle) -> DataBundle:
    """Grayscale sets replicated to 3 identical channels (the statistics too)."""
    if data.in_chans != 1:
        return data

    def rgb(ds):
        if isinstance(getattr(ds, "images", None), np.ndarray):
            return ArrayDataset(np.repeat(ds.images[..., None], 3, axis=-1), ds.labels)
        ds = copy.copy(ds)  # decoded per item (hf sets of several sizes): decode to RGB
        ds.mode = "RGB"
        return ds

    return dataclasses.replace(data, train=rgb(data.train), test=rgb(data.test), in_chans=3,
                               mean=tuple(data.mean) * 3, std=tuple(data.std) * 3)


def estimate_stats(data: DataBundle, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the training images: exact for in-memory sets, from a seeded sample otherwise."""
    images = getattr(data.train, "images", None)
    if isinstance(images, np.ndarray):
        return array_stats(images)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data.train), size=min(STATS_SAMPLE, len(data.train)), replace=False)
    pixels = [np.asarray(data.train[int(i)][0], dtype=np.uint8).reshape(-1, data.in_chans) for i in picks]
    return array_stats(np.concatenate(pixels)[None, :, None, :].reshape(1, -1, 1, data.in_chans))


def load_for(cfg, log: Optional[Callable[[str], None]] = None, *, name: Optional[str] = None,
             root: Optional[str] = None, splits=("train", "test")) -> DataBundle:
    """`splits`: those the caller reads (evaluation: test); video sets decode only those."""
    data = load_dataset(name or cfg.dataset, root if root is not None else cfg.data_root, cfg.download,
                        options_of(cfg, log, splits))
    for split, key, images in (("training", "train", data.train), ("test", "test", data.test)):
        if len(images) == 0 and key in splits:  # found now, not after a training epoch
            what = "clip (every video was skipped or none is listed)" if data.frames else "image"
            raise UserError(f"{data.name}: the {split} split holds no {what}; check --data-root and its split "
                            f"files" + (" (the skipped videos are listed above)" if data.frames else ""))
    if cfg.gray_to_rgb:
        data = to_rgb(data)
    if cfg.stats == "imagenet" and data.in_chans == 3:
        data = dataclasses.replace(data, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    elif cfg.stats == "compute":
        mean, std = estimate_stats(data)
        data = dataclasses.replace(data, mean=mean, std=std)
    return data
