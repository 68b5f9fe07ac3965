"""Data-set registry: name -> loader(root, download) -> DataBundle of *un-augmented* PIL-image data sets.

Transforms (data/transforms.py) and subsets (data/subsets.py) are applied on top, the same way for every set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ssat.errors import EXTENSION_HINT, UserError
from ssat.options import declare_options, opt, refuse_duplicate


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
    frames: int = 0                # frames per clip of a video set (its items are clips); 0: images
    balanced: bool = False         # sample training items class-balanced (FaceForensics++: 1 real per 4 fakes)
    val_indices: Optional[list[int]] = None  # items of `train` the data set itself holds out for validation
    source: Optional[str] = None   # which data, where the name does not say (hf: the Hub id and commit, or folder)
    pinned: dict = field(default_factory=dict)  # options the loader resolved (hf_revision): config.yaml records them

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class CommonDataOptions:
    """Options every data set takes (Config fields and flags like any other; declared once, here)."""
    train_split: str = opt("train", "training split of flowers102 / MedMNIST: 'train' or 'train+val'", "data",
                           choices="train,train+val")
    on_bad_image: str = opt("error", "an unreadable image file: 'error' (stop, naming it) or 'skip' (scan once at "
                                     "load, leave bad files out and list them)", "data", choices="error,skip")
    allow_outside_root: bool = opt(False, "let split files (CSV lists, Chaoyang / DomainNet lists) name images "
                                          "outside --data-root (absolute paths, ../); refused by default", "data")


declare_options("every data set", CommonDataOptions)


@dataclass(frozen=True)
class DataOptions(CommonDataOptions):
    """What a loader is given: the common options, the options data sets declared themselves (`extra`), where to
    report skipped files and which splits the caller reads."""
    log: Optional[Callable[[str], None]] = None
    splits: tuple = ("train", "test")  # the splits the caller reads (evaluation: test only; video sets skip the rest)
    extra: dict = field(default_factory=dict)  # the options data sets declare themselves (--domain, ...)

    def __getattr__(self, name: str):  # only reached for names that are not fields
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., DataBundle]  # (root: Path | None, download: bool, options: DataOptions) -> DataBundle
    description: str
    options: Optional[type] = None     # the dataclass of options it declared
    root_may_be_id: bool = False       # --data-root may name data elsewhere (a Hub id) rather than a folder

    def defaults(self) -> dict:
        return {f.name: f.default for f in dataclasses.fields(self.options)} if self.options else {}


DATASETS: dict[str, DatasetSpec] = {}


def dataset_option_names() -> list[str]:
    """Every option a data set declared (Config fields; `ssat data info` offers them as flags)."""
    return list(dict.fromkeys(name for spec in DATASETS.values() for name in spec.defaults()))


def eval_options() -> dict[str, str]:
    """The data set options that may change at evaluation (declared with `opt(..., at_eval=HELP)`) -> their help:
    the flags of `ssat eval` and the keys of a sweep's `eval_on`, from the data sets themselves."""
    return {f.name: f.metadata["at_eval"] for spec in DATASETS.values() if spec.options
            for f in dataclasses.fields(spec.options) if f.metadata.get("at_eval")}


def register_dataset(name: str, description: str, options: Optional[type] = None, root_may_be_id: bool = False):
    """`loader(root, download, options: DataOptions) -> DataBundle`; `options` is a dataclass of
    `ssat.options.opt` fields (Config fields, flags of `ssat train` and `ssat data info`), read as `options.<name>`
    by the loader."""
    def wrap(loader):
        refuse_duplicate("data set", name, DATASETS)
        declare_options(f"data set '{name}'", options)
        DATASETS[name] = DatasetSpec(name, loader, description, options, root_may_be_id)
        return loader
    return wrap


def load_dataset(name: str, root: Optional[str] = None, download: bool = False,
                 options: Optional[DataOptions] = None) -> DataBundle:
    if name not in DATASETS:
        raise UserError(f"unknown data set '{name}'; choose one of: {', '.join(sorted(DATASETS))}{EXTENSION_HINT}")
    path, spec = Path(root).expanduser() if root else None, DATASETS[name]
    if path is not None and not path.exists() and not download and name != "digits" and not spec.root_may_be_id:
        raise UserError(f"--data-root {path} does not exist; point it at the folder holding the {name} files "
                        f"(or add --download where the data set can be downloaded)")
    options = options or DataOptions()
    # the options it declared, at their defaults where the caller gave none
    options = dataclasses.replace(options, extra={**spec.defaults(), **options.extra})
    return spec.loader(path, download, options)


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


def array_stats(images: np.ndarray, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 images (N, H, W[, C]) or clips, in chunks (bounded memory)."""
    chans = images.shape[-1] if images.ndim >= 4 else 1  # (N, H, W, C) images or (N, T, H, W, C) clips
    total, total_sq, count = np.zeros(chans), np.zeros(chans), 0
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].reshape(-1, chans).astype(np.float64) / 255
        total += part.sum(0)
        total_sq += (part ** 2).sum(0)
        count += len(part)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
