"""Train / eval transforms (timm's augmentation ops) and the dataset wrapper that applies them.

Train, small images ('pad', default from 16 to 63 px; 'none' below): random crop with zero padding of img/8 px,
horizontal flip where label-preserving, RandAugment, normalise, random erasing. Train, large images ('rrc'): timm's
`create_transform` exactly as the reference (random-resized crop, bicubic). Eval: resize + centre crop (crop
fraction 0.875 as the reference for 'rrc'; 1.0 for 'pad' and 'none', where the model trained on the whole image).
The in-memory path (data/memory.py, data/batch_augment.py) does the same on batched tensors."""

from __future__ import annotations

import math

from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torch.utils.data import Dataset
from torchvision import transforms as T


def crop_mode(cfg) -> str:
    """'pad', 'rrc' or 'none' ('auto' resolved by image size: below 16 px a shift of img/8 costs more than it
    teaches; the digits study measured it at 8 px and at 32 px, docs/study.md)."""
    if cfg.crop != "auto":
        return cfg.crop
    return "none" if cfg.img_size < 16 else "pad" if cfg.img_size < 64 else "rrc"


def train_transform(cfg, mean, std, native_size: int, hflip: bool):
    size = cfg.img_size
    policy = None if cfg.rand_augment in ("", "none") else cfg.rand_augment
    if crop_mode(cfg) == "rrc":
        return create_transform(size, is_training=True, auto_augment=policy, re_prob=cfg.reprob, re_mode="pixel",
                                interpolation="bicubic", mean=mean, std=std, hflip=0.5 if hflip else 0.0)
    steps = [] if size == native_size else [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
                                            T.CenterCrop(size)]
    if crop_mode(cfg) == "pad":
        steps.append(T.RandomCrop(size, padding=max(1, size // 8)))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if policy:
        fill = tuple(round(255 * m) for m in mean)
        steps.append(rand_augment_transform(policy, dict(translate_const=int(size * 0.45),
                                                         img_mean=fill[0] if len(fill) == 1 else fill)))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if cfg.reprob > 0:
        steps.append(RandomErasing(cfg.reprob, mode="pixel", device="cpu"))
    return T.Compose(steps)


def eval_preprocessing(cfg) -> dict:
    """How a run's images are prepared for evaluation, in timm's data-config terms: the one definition that
    `eval_transform` applies and `ssat export` writes, so a timm user of an export sees what `ssat predict` sees."""
    return {"crop_pct": 0.875 if crop_mode(cfg) == "rrc" else 1.0, "crop_mode": "center",
            "interpolation": "bicubic"}


def eval_transform(cfg, mean, std):
    prep = eval_preprocessing(cfg)
    return T.Compose([T.Resize(math.floor(cfg.img_size / prep["crop_pct"]),
                               interpolation=T.InterpolationMode(prep["interpolation"])),
                      T.CenterCrop(cfg.img_size), T.ToTensor(), T.Normalize(mean, std)])


class Transformed(Dataset):
    """(image, label) -> (x, label) or, with a second transform, (x, label, x_aux): two independent views."""

    def __init__(self, base: Dataset, transform, aux_transform=None):
        self.base, self.transform, self.aux_transform = base, transform, aux_transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        if self.aux_transform is None:
            return self.transform(image), label
        return self.transform(image), label, self.aux_transform(image)
