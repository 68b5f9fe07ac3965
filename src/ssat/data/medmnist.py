"""The 2-D MedMNIST v2 sets from their published `.npz` files (`<name>.npz` for 28 px, `<name>_64.npz`,
`_128`, `_224`), keys `train_images`, `train_labels`, `val_*`, `test_*`. No network is needed when the file is
there; `--download` fetches it through the `medmnist` package's URL table (pip install medmnist).

Multi-label ChestMNIST is not a single-label classification task and is not offered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssat.data.registry import ArrayDataset, DataBundle, array_stats, register_dataset
from ssat.errors import UserError
from ssat.options import opt

# name -> (classes, channels); class names from the MedMNIST v2 paper / INFO table.
SETS = {
    "pathmnist": (["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                   "cancer-associated stroma", "colorectal adenocarcinoma epithelium"], 3),
    "dermamnist": (["actinic keratoses", "basal cell carcinoma", "benign keratosis", "dermatofibroma", "melanoma",
                    "melanocytic nevi", "vascular lesions"], 3),
    "octmnist": (["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"], 1),
    "pneumoniamnist": (["normal", "pneumonia"], 1),
    "retinamnist": ([str(i) for i in range(5)], 3),
    "breastmnist": (["malignant", "normal, benign"], 1),
    "bloodmnist": (["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                    "neutrophil", "platelet"], 3),
    "tissuemnist": ([str(i) for i in range(8)], 1),
    "organamnist": ([str(i) for i in range(11)], 1),
    "organcmnist": ([str(i) for i in range(11)], 1),
    "organsmnist": ([str(i) for i in range(11)], 1),
}
SIZES = (28, 64, 128, 224)


def file_name(name: str, size: int) -> str:
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def _download(name: str, size: int, root: Path) -> None:
    try:
        from medmnist import INFO
    except ImportError:
        raise UserError(f"--download of {name} needs the medmnist package (pip install medmnist), or put "
                        f"{file_name(name, size)} from zenodo.org/records/10519652 in --data-root") from None
    info = INFO[name]
    url = info["url"] if size == 28 else info["url"].replace(f"{name}.npz", file_name(name, size))
    md5 = info["MD5"] if size == 28 else info.get(f"MD5_{size}")
    from torchvision.datasets.utils import download_url
    download_url(url, str(root), filename=file_name(name, size), md5=md5)


def _load(name: str, root: Path | None, download: bool, options) -> DataBundle:
    size = options.medmnist_size
    if size not in SIZES:
        raise UserError(f"--medmnist-size {size}: MedMNIST is released at {', '.join(map(str, SIZES))} px")
    if root is None:
        raise UserError(f"--dataset {name} needs --data-root: the folder holding {file_name(name, size)}")
    path = root / file_name(name, size)
    if not path.is_file() and download:
        _download(name, size, root)
    if not path.is_file():
        present = sorted(p.name for p in root.glob(f"{name}*.npz"))
        hint = f" (found {', '.join(present)}: pass the matching --medmnist-size)" if present else ""
        raise UserError(f"{path} not found{hint}; put the released file there or add --download")
    try:
        npz = np.load(path, allow_pickle=False)
        arrays = {k: npz[k] for k in ("train_images", "train_labels", "val_images", "val_labels",
                                      "test_images", "test_labels")}
    except Exception as e:
        raise UserError(f"{path} is not a readable MedMNIST file ({type(e).__name__}: {str(e)[:100]}); "
                        f"download it again") from None
    classes, chans = SETS[name]
    split = {}
    for s in ("train", "val", "test"):
        x, y = arrays[f"{s}_images"], arrays[f"{s}_labels"].reshape(len(arrays[f"{s}_labels"]), -1)
        if y.shape[1] != 1:
            raise UserError(f"{path}: {s} labels have {y.shape[1]} columns; {name} must be single-label")
        if x.shape[1:3] != (size, size) or len(x) != len(y):
            raise UserError(f"{path}: {s} images are {x.shape}, expected (N, {size}, {size}[, 3]) with one label "
                            f"each")
        y = y[:, 0].astype(int)
        if y.min() < 0 or y.max() >= len(classes):
            raise UserError(f"{path}: {s} label {int(y.max())} outside 0..{len(classes) - 1}")
        split[s] = (x.astype(np.uint8), y)
    if options.train_split not in ("train", "train+val"):
        raise UserError(f"--train-split {options.train_split}: MedMNIST has 'train' or 'train+val'")
    xtr, ytr = split["train"]
    if options.train_split == "train+val":
        xtr, ytr = np.concatenate([xtr, split["val"][0]]), np.concatenate([ytr, split["val"][1]])
    mean, std = array_stats(xtr)  # per-set statistics, computed from the training images
    return DataBundle(name=name, train=ArrayDataset(xtr, ytr), test=ArrayDataset(*split["test"]),
                      train_targets=ytr.tolist(), classes=classes, in_chans=chans if xtr.ndim == 4 else 1,
                      native_size=size, mean=mean, std=std, hflip=name in ("pathmnist", "dermamnist", "bloodmnist"))


@dataclass
class MedMNISTOptions:
    medmnist_size: int = opt(28, "MedMNIST release to read: 28, 64, 128 or 224 px", "data")


def _register(name: str) -> None:
    @register_dataset(name, f"MedMNIST {name}: <root>/{name}[_64|_128|_224].npz", options=MedMNISTOptions)
    def load(root, download, options):
        return _load(name, root, download, options)


for _name in SETS:
    _register(_name)
