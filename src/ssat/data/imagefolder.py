"""Folders of images by class: `root/train/<class>/*`, `root/val/<class>/*` (ImageNet's layout, any class count)."""

from __future__ import annotations

from pathlib import Path

from ssat.data.files import FileImageDataset, file_bundle
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, register_dataset
from ssat.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_classes(folder: Path, split: str, keep=is_image,
                 what: str = "image") -> tuple[list[str], list[Path], list[int]]:
    """-> (class names sorted, file paths, labels). Every class folder must hold at least one file `keep` accepts
    (an image; videofolder passes its own test)."""
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} does not exist; expected <data-root>/{split}/<class>/<{what}> "
                        f"(set --data-root to the folder holding train/ and val/)")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{folder} has no class folders; expected {folder}/<class>/<{what}>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if keep(p))
        if not files:
            raise UserError(f"class folder {folder / name} holds no {what}; put {what}s in it or remove it")
        paths += files
        labels += [label] * len(files)
    return classes, paths, labels


def load_folders(name: str, root, options, val_names=("val",)):
    if root is None:
        raise UserError(f"--dataset {name} needs --data-root: the folder holding train/ and val/")
    val_dir = next((root / v for v in val_names if (root / v).is_dir()), root / val_names[0])
    train_classes, train_paths, train_labels = scan_classes(root / "train", "train")
    val_classes, val_paths, val_labels = scan_classes(val_dir, val_dir.name)
    if train_classes != val_classes:
        raise UserError(f"{root}: train/ and {val_dir.name}/ have different class folders "
                        f"({sorted(set(train_classes) ^ set(val_classes))[:5]}); give both the same classes")
    return file_bundle(name, FileImageDataset(train_paths, train_labels), FileImageDataset(val_paths, val_labels),
                       train_classes, options, IMAGENET_MEAN, IMAGENET_STD, root=root)


@register_dataset("imagefolder", "your own images: <root>/train/<class>/..., <root>/val/<class>/...")
def load(root, download, options):
    return load_folders("imagefolder", root, options, val_names=("val", "test"))


@register_dataset("imagenet", "ImageNet-1k (or any subset) as class folders: <root>/train/<wnid>/, <root>/val/<wnid>/")
def load_imagenet(root, download, options):
    if download:
        raise UserError("ImageNet cannot be downloaded automatically (its licence needs a login); get it from "
                        "image-net.org and sort val/ into class folders")
    return load_folders("imagenet", root, options)
