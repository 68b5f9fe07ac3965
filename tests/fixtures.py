"""Tiny data sets written by the tests in exactly the released layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar(root: Path, name: str = "cifar10", per_class: int = 2, classes: int | None = None) -> Path:
    """CIFAR python pickle batches as in cifar-10-python.tar.gz / cifar-100-python.tar.gz."""
    rng = np.random.default_rng(0)
    ten = name == "cifar10"
    n_classes = classes or (10 if ten else 100)
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = "labels" if ten else "fine_labels"

    def batch(n):
        labels = [i % n_classes for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        return {"batch_label": "x", label_key: labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}

    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    for f in train_files:
        with open(folder / f, "wb") as fh:
            pickle.dump(batch(n_classes * per_class), fh)
    with open(folder / ("test_batch" if ten else "test"), "wb") as fh:
        pickle.dump(batch(n_classes), fh)
    meta_key = "label_names" if ten else "fine_label_names"
    with open(folder / ("batches.meta" if ten else "meta"), "wb") as fh:
        pickle.dump({meta_key: [f"class{i}" for i in range(n_classes)]}, fh)
    return folder


def write_imagefolder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 3, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root
