"""CIFAR-10 / CIFAR-100 from the released python pickle batches (torchvision's layout).

Files on disk are read directly and checked by structure, not checksum (users' copies may be re-packed);
torchvision is used only for `--download`, which does verify the archive's checksum."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ssat.data.registry import ArrayDataset, DataBundle, register_dataset
from ssat.errors import UserError

CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names="label_names", labels="labels",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), title="CIFAR-10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names="fine_label_names", labels="fine_labels",
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), title="CIFAR-100"),
}


class _ArraysOnly(pickle.Unpickler):
    """The batches hold dicts of numpy arrays, lists and strings; refuse anything else a pickle could run."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="latin1").load()
    except Exception as e:  # truncated / not a CIFAR pickle
        raise UserError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}); "
                        f"re-extract the archive or pass --download") from None


def _find(root: Path | None, spec: dict) -> Path | None:
    if root is None:
        return None
    for folder in (root, root / spec["folder"]):
        if all((folder / f).is_file() for f in spec["train"] + spec["test"] + [spec["meta"]]):
            return folder
    return None


def _load(name: str, root: Path | None, download: bool) -> DataBundle:
    spec = CIFAR[name]
    if download and _find(root, spec) is None:
        if root is None:
            raise UserError(f"--download needs --data-root: the folder to download {spec['title']} into")
        import torchvision.datasets as tvd
        (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(str(root), train=True, download=True)
    folder = _find(root, spec)
    if folder is None:
        where = f"{root}/{spec['folder']}" if root else f"<data-root>/{spec['folder']}"
        raise UserError(f"{spec['title']} not found: expected {', '.join(spec['train'] + spec['test'])} and "
                        f"{spec['meta']} in {where} (the extracted python archive); set --data-root to that "
                        f"folder's parent, or add --download")

    def split(files):
        batches = [_read(folder / f) for f in files]
        try:
            data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = np.concatenate([np.asarray(b[spec["labels"]]) for b in batches]).astype(int)
        except (KeyError, ValueError) as e:
            raise UserError(f"{folder} holds batches that are not {spec['title']} ({e}); "
                            f"re-extract the archive or pass --download") from None
        return data, labels

    classes = list(_read(folder / spec["meta"])[spec["names"]])
    (xtr, ytr), (xte, yte) = split(spec["train"]), split(spec["test"])
    for labels in (ytr, yte):
        if labels.min() < 0 or labels.max() >= len(classes):
            raise UserError(f"{folder}: label {int(labels.max())} outside 0..{len(classes) - 1}; "
                            f"the files are damaged, re-extract the archive")
    return DataBundle(name=name, train=ArrayDataset(xtr, ytr), test=ArrayDataset(xte, yte),
                      train_targets=ytr.tolist(), classes=classes, in_chans=3, native_size=32,
                      mean=spec["mean"], std=spec["std"])


@register_dataset("cifar10", "CIFAR-10, torchvision layout (cifar-10-batches-py/)")
def load_cifar10(root, download, options):
    return _load("cifar10", root, download)


@register_dataset("cifar100", "CIFAR-100, torchvision layout (cifar-100-python/)")
def load_cifar100(root, download, options):
    return _load("cifar100", root, download)
