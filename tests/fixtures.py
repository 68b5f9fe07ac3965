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


def _png(path: Path, rng, size=(12, 10), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(path)


def write_svhn(root: Path, per_class: int = 2) -> Path:
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 stored as 10."""
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", 10 * per_class), ("test_32x32.mat", 10)):
        y = np.array([(i % 10) or 10 for i in range(n)], dtype=np.uint8).reshape(n, 1)
        savemat(root / name, {"X": rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8), "y": y})
    return root


def write_mnist(root: Path, gz: bool = True, torchvision: bool = False, folder: str = "MNIST",
                train: int = 20, test: int = 10) -> Path:
    """The four IDX files (big-endian header, uint8 data), gzipped like the downloads, optionally in <folder>/raw."""
    import gzip
    rng = np.random.default_rng(0)
    where = root / folder / "raw" if torchvision else root
    where.mkdir(parents=True, exist_ok=True)

    def idx(name, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        data = header + array.astype(np.uint8).tobytes()
        (gzip.open if gz else open)(where / (name + (".gz" if gz else "")), "wb").write(data)

    for prefix, n in (("train", train), ("t10k", test)):
        idx(f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        idx(f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return where


def write_flowers(root: Path, classes: int = 3, per_split: int = 2) -> Path:
    """flowers-102/: jpg/image_%05d.jpg, imagelabels.mat (1-based labels), setid.mat (trnid, valid, tstid)."""
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    folder = root / "flowers-102"
    n = classes * per_split * 3
    labels = np.array([i % classes + 1 for i in range(n)])
    for i in range(1, n + 1):
        _png(folder / "jpg" / f"image_{i:05d}.jpg", rng)
    ids = np.arange(1, n + 1)
    savemat(folder / "imagelabels.mat", {"labels": labels.reshape(1, -1)})
    third = n // 3
    savemat(folder / "setid.mat", {"trnid": ids[:third].reshape(1, -1), "valid": ids[third:2 * third].reshape(1, -1),
                                   "tstid": ids[2 * third:].reshape(1, -1)})
    return folder


def write_medmnist(root: Path, name: str = "pneumoniamnist", size: int = 28, classes: int = 2, rgb: bool = False):
    """<name>.npz (28 px) or <name>_<size>.npz with train/val/test images and (N, 1) labels."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", 6 * classes), ("val", 2 * classes), ("test", 3 * classes)):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    path = root / (f"{name}.npz" if size == 28 else f"{name}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


def write_chaoyang(root: Path, per_class: int = 2) -> Path:
    """train/ and test/ image folders plus train.json / test.json lists of {"name", "label"}."""
    import json
    rng = np.random.default_rng(0)
    for split, n in (("train", 4 * per_class), ("test", 4)):
        entries = []
        for i in range(n):
            name = f"{split}/{i:03d}.jpg"
            _png(root / name, rng, size=(16, 16))
            entries.append({"name": name, "label": i % 4})
        (root / f"{split}.json").write_text(json.dumps(entries))
    return root


def write_domainnet(root: Path, domain: str = "sketch", classes=("aircraft_carrier", "zebra", "bee"),
                    per_class: int = 2) -> Path:
    """<domain>/<class>/<file>.jpg and <domain>_train.txt / _test.txt with '<domain>/<class>/<file> <label>'."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        lines = []
        for label, c in enumerate(classes):
            for i in range(n):
                rel = f"{domain}/{c}/{domain}_{split}_{label:03d}_{i:06d}.jpg"
                _png(root / rel, rng)
                lines.append(f"{rel} {label}")
        (root / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_csv_lists(root: Path, classes=("benign", "malignant"), per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        rows = ["path,label"]
        for c in classes:
            for i in range(n):
                rel = f"images/{split}_{c}_{i}.png"
                _png(root / rel, rng)
                rows.append(f"{rel},{c}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def hf_split(labels, classes=("cat", "dog", "fox"), size=(16, 16), mode="RGB", seed=0, image_column="image",
             label_column="label", label_feature="class"):
    """A `datasets.Dataset` of generated PNG images (Image feature) and labels (ClassLabel, or plain int64 /
    string values), as the Hub stores image classification sets. `size`: one (w, h) or a list, one per row."""
    import io

    import datasets
    rng = np.random.default_rng(seed)
    images = []
    for i, y in enumerate(labels):
        w, h = size[i] if isinstance(size, list) else size
        shape = (h, w, 3) if mode in ("RGB", "RGBA") else (h, w)
        if mode == "RGBA":
            shape = (h, w, 4)
        if mode == "I;16":
            pixels = rng.integers(0, 65536, size=shape, dtype=np.uint16)
        else:
            pixels = np.clip(rng.integers(0, 120, size=shape) + 60 * int(y if y is not None else 0), 0, 255)
            pixels = pixels.astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")  # the mode follows from the array: L, RGB, RGBA, I;16
        images.append({"bytes": buf.getvalue(), "path": None})
    label_types = {"class": datasets.ClassLabel(names=list(classes)), "int": datasets.Value("int64"),
                   "string": datasets.Value("string")}
    features = datasets.Features({image_column: datasets.Image(), label_column: label_types[label_feature]})
    values = [classes[y] for y in labels] if label_feature == "string" else list(labels)
    return datasets.Dataset.from_dict({image_column: images, label_column: values}, features=features)


def write_hf(root: Path, layout: str = "disk", per_class: int = 3, test_per_class: int = 2,
             classes=("cat", "dog", "fox"), **split_options) -> Path:
    """A Hugging Face image classification set written by `datasets` itself: a `save_to_disk` folder (layout
    'disk') or parquet files in the Hub's layout `data/<split>-00000-of-00001.parquet` (layout 'parquet')."""
    import datasets
    datasets.disable_progress_bars()  # their stderr would be read as the CLI's
    train = hf_split([c for c in range(len(classes)) for _ in range(per_class)], classes, seed=0, **split_options)
    test = hf_split([c for c in range(len(classes)) for _ in range(test_per_class)], classes, seed=1,
                    **split_options)
    if layout == "disk":
        datasets.DatasetDict(train=train, test=test).save_to_disk(str(root))
    else:
        (root / "data").mkdir(parents=True, exist_ok=True)
        for name, split in (("train", train), ("test", test)):
            split.to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
    return root
