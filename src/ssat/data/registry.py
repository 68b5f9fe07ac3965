"""Data-set registry: name -> loader(root, download) -> DataBundle of *un-augmented* PIL-image data sets.

Transforms (data/transforms.py) and subsets (data/subsets.py) are applied on top, the same way for every set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ssat.errors import UserError


@dataclass
class DataBundle:
    name: str
    train: Dataset                 # items: (PIL.Image, int label)
    test: Dataset
    train_targets: list[int]       # labels of `train`, for stratified subsets without decoding images
    classes: list[str]
    in_chans: int                  # 1 = grayscale, 3 = RGB
    native_size: int               # default input size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True             # is a horizontal flip label-preserving?

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[[Optional[Path], bool], DataBundle]
    description: str


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, description: str):
    def wrap(loader):
        DATASETS[name] = DatasetSpec(name, loader, description)
        return loader
    return wrap


def load_dataset(name: str, root: Optional[str] = None, download: bool = False) -> DataBundle:
    if name not in DATASETS:
        raise UserError(f"unknown data set '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name].loader(Path(root).expanduser() if root else None, download)


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, C), served as PIL images."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i]), self.labels[i]


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
