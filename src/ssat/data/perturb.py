"""Perturbed test sets: a seeded, reproducible corrupted copy of a test split (the study's CIFAR-100-p / IN-1K-p).

Every image i is perturbed with random numbers drawn from (seed, i) alone, so two models, two runs or two machines
see exactly the same perturbed images. `KIND[:SEVERITY]`:
  perspective:0.5   random perspective, corners moved by up to `severity` x half the size (torchvision's
                    RandomPerspective(distortion_scale=0.5, p=1), the study's setting)
  rotate:30         rotation by a uniform angle in ±severity degrees
  blur:1.0          Gaussian blur of radius `severity` px
  noise:0.1         additive Gaussian noise, std `severity` (pixel range 0..1)
  jpeg:20           JPEG re-compression at quality `severity`"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ssat.errors import UserError

DEFAULTS = {"perspective": 0.5, "rotate": 30.0, "blur": 1.0, "noise": 0.1, "jpeg": 20.0}


def parse(spec: str) -> tuple[str, float]:
    kind, _, value = spec.partition(":")
    if kind not in DEFAULTS:
        raise UserError(f"--perturb {spec}: unknown kind '{kind}'; choose one of {', '.join(DEFAULTS)} "
                        f"(e.g. perspective:0.5)")
    try:
        severity = float(value) if value else DEFAULTS[kind]
    except ValueError:
        raise UserError(f"--perturb {spec}: severity '{value}' is not a number") from None
    # Upper bounds too: an infinite blur radius crashes PIL's C code (a segmentation fault), an infinite angle
    # or noise gives no image at all.
    valid = {"perspective": 0 < severity <= 1, "jpeg": 1 <= severity <= 95, "rotate": 0 < severity <= 360,
             "blur": 0 < severity <= 100, "noise": 0 < severity <= 10}[kind]
    if not valid:
        raise UserError(f"--perturb {spec}: severity out of range (perspective in (0, 1], rotate in (0, 360] "
                        f"degrees, blur in (0, 100] px, noise in (0, 10], jpeg quality 1..95)")
    return kind, severity


def name_of(spec: str) -> str:
    kind, severity = parse(spec)
    return f"{kind}:{severity:g}"


def perturb(image: Image.Image, kind: str, severity: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    if kind == "perspective":
        dx, dy = int(severity * w / 2), int(severity * h / 2)
        r = lambda hi: int(rng.integers(0, hi + 1))
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        end = [[r(dx), r(dy)], [w - 1 - r(dx), r(dy)], [w - 1 - r(dx), h - 1 - r(dy)], [r(dx), h - 1 - r(dy)]]
        return TF.perspective(image, start, end, interpolation=InterpolationMode.BILINEAR, fill=0)
    if kind == "rotate":
        return TF.rotate(image, float(rng.uniform(-severity, severity)), InterpolationMode.BILINEAR, fill=0)
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=severity))
    if kind == "noise":
        pixels = np.asarray(image, dtype=np.float64) / 255 + rng.normal(0.0, severity, size=np.shape(image))
        return Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8), image.mode)
    buffer = io.BytesIO()  # jpeg
    image.save(buffer, format="JPEG", quality=int(severity))
    buffer.seek(0)
    return Image.open(buffer).convert(image.mode)


class Perturbed(Dataset):
    """(image, label) -> (perturbed image, label), the same perturbation of image i on every call."""

    def __init__(self, base: Dataset, spec: str, seed: int = 0):
        self.base, self.seed = base, seed
        self.kind, self.severity = parse(spec)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return perturb(image, self.kind, self.severity, np.random.default_rng([self.seed, i])), label
