"""MNIST and Fashion-MNIST from the four standard IDX files, gzipped or not, in the folder itself or in
torchvision's `<root>/MNIST/raw/` / `<root>/FashionMNIST/raw/` layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ssat.data.registry import ArrayDataset, DataBundle, register_dataset
from ssat.errors import UserError

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
SETS = {
    "mnist": dict(title="MNIST", folder="MNIST", classes=[str(d) for d in range(10)], mean=(0.1307,), std=(0.3081,),
                  tv="MNIST"),
    "fashion_mnist": dict(title="Fashion-MNIST", folder="FashionMNIST", tv="FashionMNIST",
                          classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                   "Sneaker", "Bag", "Ankle boot"], mean=(0.2860,), std=(0.3530,)),
}


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _find(root: Path | None, spec: dict) -> Path | None:
    for folder in ([] if root is None else [root, root / "raw", root / spec["folder"] / "raw"]):
        if all(_file(folder, f) for f in FILES.values()):
            return folder
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (magic 0x0000 08 ndim, big-endian sizes, uint8 data)."""
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path} cannot be read ({e}); re-extract or download it again") from None
    if len(raw) < 4 + 4 * ndim or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise UserError(f"{path} is not an IDX file of {ndim}-d uint8 data; is it the right file?")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, file holds {data.size} values; "
                        f"download it again")
    return data.reshape(shape).copy()  # writable, independent of the file buffer


def _load(name: str, root: Path | None, download: bool) -> DataBundle:
    spec = SETS[name]
    if download and _find(root, spec) is None:
        if root is None:
            raise UserError(f"--download needs --data-root: the folder to download {spec['title']} into")
        import torchvision.datasets as tvd
        getattr(tvd, spec["tv"])(str(root), train=True, download=True)  # checks MD5s
    folder = _find(root, spec)
    if folder is None:
        raise UserError(f"{spec['title']} not found: expected {', '.join(FILES.values())} (optionally .gz) in "
                        f"{root or '<data-root>'} or {root or '<data-root>'}/{spec['folder']}/raw; set --data-root "
                        f"there, or add --download")
    x = {k: read_idx(_file(folder, f), 3 if k.endswith("images") else 1) for k, f in FILES.items()}
    for split in ("train", "test"):
        if len(x[f"{split}_images"]) != len(x[f"{split}_labels"]):
            raise UserError(f"{folder}: {split} has {len(x[f'{split}_images'])} images but "
                            f"{len(x[f'{split}_labels'])} labels; the files do not belong together")
        if x[f"{split}_labels"].max() >= 10:
            raise UserError(f"{folder}: {split} label {int(x[f'{split}_labels'].max())} outside 0..9")
    ytr, yte = x["train_labels"].astype(int), x["test_labels"].astype(int)
    return DataBundle(name=name, train=ArrayDataset(x["train_images"], ytr), test=ArrayDataset(x["test_images"], yte),
                      train_targets=ytr.tolist(), classes=spec["classes"], in_chans=1, native_size=28,
                      mean=spec["mean"], std=spec["std"], hflip=name == "fashion_mnist")


@register_dataset("mnist", "MNIST, the four IDX files (.gz or not), or torchvision's MNIST/raw/")
def load_mnist(root, download, options):
    return _load("mnist", root, download)


@register_dataset("fashion_mnist", "Fashion-MNIST, the four IDX files (.gz or not), or FashionMNIST/raw/")
def load_fashion(root, download, options):
    return _load("fashion_mnist", root, download)
