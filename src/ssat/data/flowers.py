"""Oxford Flowers-102 in its release layout (torchvision's `flowers-102/`): `jpg/image_XXXXX.jpg`,
`imagelabels.mat` (labels 1..102) and `setid.mat` (the official trnid / valid / tstid splits, 1-based).

Train on `train` (1,020 images, 10 per class) or `train+val` (`--train-split train+val`); test on the official
6,149-image test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssat.data.files import FileImageDataset, check_files, file_bundle
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, register_dataset
from ssat.errors import UserError


def _find(root: Path | None) -> Path | None:
    for folder in ([] if root is None else [root, root / "flowers-102"]):
        if (folder / "imagelabels.mat").is_file() and (folder / "setid.mat").is_file() and (folder / "jpg").is_dir():
            return folder
    return None


def _mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat
    try:
        return np.asarray(loadmat(path)[key]).reshape(-1).astype(np.int64)
    except Exception as e:
        raise UserError(f"{path} has no readable '{key}' ({type(e).__name__}); download the release again") from None


@register_dataset("flowers102", "Oxford Flowers-102, release layout (jpg/, imagelabels.mat, setid.mat)")
def load(root, download, options):
    if download and _find(root) is None:
        if root is None:
            raise UserError("--download needs --data-root: the folder to download Flowers-102 into")
        import torchvision.datasets as tvd
        tvd.Flowers102(str(root), split="train", download=True)  # checks MD5s
    folder = _find(root)
    if folder is None:
        raise UserError(f"Flowers-102 not found: expected jpg/, imagelabels.mat and setid.mat in "
                        f"{root or '<data-root>'} or its flowers-102/; set --data-root there, or add --download")
    labels = _mat(folder / "imagelabels.mat", "labels") - 1
    splits = {k: _mat(folder / "setid.mat", k) for k in ("trnid", "valid", "tstid")}
    if options.train_split not in ("train", "train+val"):
        raise UserError(f"--train-split {options.train_split}: flowers102 has 'train' or 'train+val'")
    train_ids = np.concatenate([splits["trnid"]] + ([splits["valid"]] if options.train_split == "train+val" else []))

    def subset(ids, split):
        if ids.min() < 1 or ids.max() > len(labels):
            raise UserError(f"{folder}/setid.mat: {split} names image {int(ids.max())} but imagelabels.mat has "
                            f"{len(labels)}; the two files do not belong together")
        paths = [folder / "jpg" / f"image_{i:05d}.jpg" for i in ids]
        check_files(paths, f"{folder}/setid.mat ({split})")
        return FileImageDataset(paths, labels[ids - 1])

    classes = [str(c) for c in range(1, 103)]
    return file_bundle("flowers102", subset(train_ids, options.train_split), subset(splits["tstid"], "test"),
                       classes, options, IMAGENET_MEAN, IMAGENET_STD)
