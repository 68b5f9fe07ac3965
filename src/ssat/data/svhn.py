"""SVHN (cropped digits) from the released `train_32x32.mat` / `test_32x32.mat` (torchvision's layout).

The .mat files store X as (32, 32, 3, N) and the digit 0 as label 10; here it is label 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssat.data.registry import ArrayDataset, DataBundle, register_dataset
from ssat.errors import UserError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _find(root: Path | None) -> Path | None:
    for folder in ([] if root is None else [root, root / "svhn", root / "SVHN"]):
        if all((folder / f).is_file() for f in FILES.values()):
            return folder
    return None


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat
    try:
        mat = loadmat(path)
        x = np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2), dtype=np.uint8)
        y = mat["y"].astype(np.int64).reshape(-1)
    except Exception as e:  # truncated file, not a .mat, wrong keys
        raise UserError(f"{path} is not a readable SVHN file ({type(e).__name__}: {str(e)[:100]}); "
                        f"download it again (--download) or re-copy it") from None
    if x.shape[1:] != (32, 32, 3) or len(x) != len(y):
        raise UserError(f"{path}: expected X of 32x32x3 images and one label each, got X {x.shape}, y {y.shape}")
    y[y == 10] = 0
    if y.min() < 0 or y.max() > 9:
        raise UserError(f"{path}: label {int(y.max())} outside 0..9 (10 means 0); the file is damaged")
    return x, y


@register_dataset("svhn", "SVHN cropped digits, torchvision layout (train_32x32.mat, test_32x32.mat)")
def load(root, download, options) -> DataBundle:
    if download and _find(root) is None:
        if root is None:
            raise UserError("--download needs --data-root: the folder to download SVHN into")
        import torchvision.datasets as tvd
        for split in FILES:  # torchvision verifies each file's MD5
            tvd.SVHN(str(root), split=split, download=True)
    folder = _find(root)
    if folder is None:
        raise UserError(f"SVHN not found: expected {' and '.join(FILES.values())} in "
                        f"{root or '<data-root>'}; set --data-root to their folder, or add --download")
    (xtr, ytr), (xte, yte) = _read(folder / FILES["train"]), _read(folder / FILES["test"])
    return DataBundle(name="svhn", train=ArrayDataset(xtr, ytr), test=ArrayDataset(xte, yte),
                      train_targets=ytr.tolist(), classes=[str(d) for d in range(10)], in_chans=3, native_size=32,
                      mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), hflip=False)
