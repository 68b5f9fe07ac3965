"""Image files on disk: decoding any PIL-readable file to the data set's mode, with a clear message for a bad one.

Used by every file-based data set (image folders, Flowers-102, Chaoyang, DomainNet, CSV lists). Grayscale, RGB,
RGBA, palette and 16-bit images are all accepted and converted to the data set's mode ('RGB' or 'L'); 16-bit
images are rescaled from their full range, not clipped. A file that cannot be decoded is an error naming it
(`--on-bad-image error`, the default) or, with `--on-bad-image skip`, is dropped by a scan at load time that
reports how many and which -- nothing is dropped silently."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ssat.errors import UserError, first_line

BAD_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode(path: Union[Path, BinaryIO], mode: str = "RGB") -> Image.Image:
    """Open and fully decode `path` (a file, or its bytes: Hugging Face sets) so truncation is caught here,
    converted to `mode`; an image already in `mode` is returned as decoded, not copied (a large photo would
    otherwise be held twice)."""
    im = Image.open(path)
    try:
        im.load()  # reads the pixels and, for a single-frame file opened by name, closes it
        if getattr(im, "fp", None) is not None:  # multi-frame formats keep the file open: keep the pixels, close it
            loaded = im.copy()
            im.close()
            im = loaded
    except BaseException:
        im.close()
        raise
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit: rescale, don't clip at 255
        im = Image.fromarray(to_uint8(np.asarray(im), exact_16bit=im.mode.startswith("I;16")), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))  # transparent -> white, not black
        im = Image.alpha_composite(background, im)
    return im if im.mode == mode else im.convert(mode)


def to_uint8(arr: np.ndarray, exact_16bit: bool, band: int = 1 << 16) -> np.ndarray:
    """Rescale a 16- or 32-bit image to 0..255 (16-bit: round(v * 255 / 65535) exactly, in integers; others: by
    their maximum), a band of rows at a time: memory stays near the 8-bit result, not 8 bytes a pixel."""
    out = np.empty(arr.shape, dtype=np.uint8)
    top = 65535 if exact_16bit else max(float(arr.max()), 1.0)
    rows = max(1, band // max(1, arr.shape[1] if arr.ndim > 1 else 1))  # about `band` pixels at a time
    for r in range(0, arr.shape[0], rows):
        band = arr[r:r + rows]
        if exact_16bit:
            out[r:r + rows] = (band.astype(np.uint32) * 255 + 32767) // 65535
        else:
            out[r:r + rows] = np.clip(band.astype(np.float64) / top * 255.0 + 0.5, 0, 255)
    return out


def bad_image_error(path: Path, e: Exception) -> UserError:
    return UserError(f"cannot read image {path} ({type(e).__name__}: {first_line(e, 120)}); "
                     f"replace or delete the file, or pass --on-bad-image skip to leave it out")


class FileImageDataset(Dataset):
    """(path, label) pairs served as (PIL image in `mode`, label)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], mode: str = "RGB"):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.mode = [Path(p) for p in paths], [int(y) for y in labels], mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return decode(self.paths[i], self.mode), self.labels[i]
        except BAD_IMAGE_ERRORS as e:
            raise bad_image_error(self.paths[i], e) from None


def check_files(paths: Sequence[Path], where: str) -> None:
    """Every listed file must exist (split files naming missing images are a common corruption)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{where} names {missing[0]}{more}, which does not exist; restore the missing files or "
                        f"use the split files that match this copy of the data set")


def drop_bad_images(ds: FileImageDataset, on_bad_image: str, log: Optional[Callable[[str], None]],
                    split: str) -> FileImageDataset:
    """`skip`: decode every image once and keep the readable ones, reporting the others. `error`: unchanged (a bad
    file fails when it is read)."""
    if on_bad_image != "skip":
        return ds
    bad = []
    for p in ds.paths:
        try:
            decode(p, ds.mode)
        except BAD_IMAGE_ERRORS:
            bad.append(p)
    if bad:
        (log or print)(f"--on-bad-image skip: left out {len(bad)} unreadable {split} image(s): "
                       + ", ".join(str(p) for p in bad[:20]) + (" ..." if len(bad) > 20 else ""))
        keep = [i for i, p in enumerate(ds.paths) if p not in set(bad)]
        ds = FileImageDataset([ds.paths[i] for i in keep], [ds.labels[i] for i in keep], ds.mode)
    if len(ds) == 0:
        raise UserError(f"no readable {split} image is left; check the data files")
    return ds


def check_labels(labels: Sequence[int], num_classes: int, where: str) -> None:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise UserError(f"{where}: label {bad} is outside 0..{num_classes - 1}; fix the labels or the class list")


def check_split_paths(name: str, train: FileImageDataset, test: FileImageDataset, root: Optional[Path],
                      options) -> None:
    """Images a test split shares with the training split are refused (the test score would be inflated);
    entries outside --data-root are refused unless --allow-outside-root; a split listing an image twice is odd
    but usable, and said in one line."""
    resolved = {split: [p.resolve() for p in ds.paths] for split, ds in (("train", train), ("test", test))}
    shared = sorted(set(resolved["train"]) & set(resolved["test"]))
    if shared:
        raise UserError(f"{name}: the train and test splits both list {shared[0]}"
                        + (f" and {len(shared) - 1} more" if len(shared) > 1 else "")
                        + "; a test image must not be trained on: fix the split files")
    refuse_outside(name, [p for ps in resolved.values() for p in ps], root, options, "a split file names")
    for split, paths in resolved.items():
        twice = len(paths) - len(set(paths))
        if twice:
            (options.log or print)(f"warning: the {name} {split} split lists {twice} image(s) more than once; they "
                                   f"count (and train) that many times")


def refuse_outside(name: str, paths: Sequence[Path], root: Optional[Path], options, how: str) -> None:
    """The one rule for every data set: a file that resolves (symlinks followed) outside --data-root is refused
    unless --allow-outside-root, so a split file or a link cannot pull other data into a run."""
    if root is None or options.allow_outside_root:
        return
    top = Path(root).resolve()
    outside = next((p for p in (Path(q).resolve() for q in paths) if not p.is_relative_to(top)), None)
    if outside is not None:
        raise UserError(f"{name}: {how} {outside}, outside --data-root {top}; move the files under it, or pass "
                        f"--allow-outside-root if that is intended")


def file_bundle(name: str, train: FileImageDataset, test: FileImageDataset, classes: list[str], options,
                mean, std, native_size: int = 224, hflip: bool = True, in_chans: int = 3,
                root: Optional[Path] = None):
    from ssat.data.registry import DataBundle
    check_labels(train.labels, len(classes), f"{name} train split")
    check_labels(test.labels, len(classes), f"{name} test split")
    check_split_paths(name, train, test, root, options)
    train = drop_bad_images(train, options.on_bad_image, options.log, "train")
    test = drop_bad_images(test, options.on_bad_image, options.log, "test")
    return DataBundle(name=name, train=train, test=test, train_targets=list(train.labels), classes=classes,
                      in_chans=in_chans, native_size=native_size, mean=mean, std=std, hflip=hflip)
