"""Any folder of images: root/train/<class>/*.png|jpg..., root/val/<class>/... (class names must match)."""

from __future__ import annotations

from torchvision.datasets import ImageFolder

from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, DataBundle, register_dataset
from ssat.errors import UserError


def _folder(path, split):
    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist; expected <data-root>/{split}/<class>/<image> "
                        f"(set --data-root to the folder holding train/ and val/)")
    try:
        return ImageFolder(str(path), loader=_rgb)
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"{path}: {e}; put at least one image in every class folder") from None


def _rgb(path):
    from PIL import Image
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


@register_dataset("imagefolder", "your own images: <root>/train/<class>/..., <root>/val/<class>/...")
def load(root, download) -> DataBundle:
    if root is None:
        raise UserError("--dataset imagefolder needs --data-root: the folder holding train/ and val/")
    train, val = _folder(root / "train", "train"), _folder(root / "val", "val")
    if train.classes != val.classes:
        raise UserError(f"{root}: train/ and val/ have different class folders "
                        f"({sorted(set(train.classes) ^ set(val.classes))}); give both the same classes")
    return DataBundle(name="imagefolder", train=train, test=val, train_targets=list(train.targets),
                      classes=list(train.classes), in_chans=3, native_size=224, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD)
