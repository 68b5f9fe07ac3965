"""Train augmentation as batched tensor ops on the training device (the in-memory data path).

The same recipe as the PIL path (data/transforms.py), one batch at a time, with per-sample random parameters:
  crop   'pad': random crop of a zero-padded image (exact integer shifts, as torchvision's RandomCrop)
         'rrc': random-resized crop, scale (0.08, 1), ratio (3/4, 4/3), bilinear resampling
         'none': the whole image
  flip   horizontal, p = 0.5, where label-preserving
  RandAugment-like policy parsed from the same string (`rand-m9-mstd0.5-inc1`): n ops per image (default 2),
         each applied with p = 0.5, magnitude m + N(0, mstd) clipped to [0, 10]; the 'increasing' op set of timm
         (auto-contrast, equalize, invert, rotate, posterize, solarize, solarize-add, colour, contrast, brightness,
         sharpness, shear x/y, translate x/y) with timm's magnitude ranges. Geometric ops are fused into one
         affine resampling per op slot; photometric ops are blends, so every op is computed for the whole batch
         and selected per sample with `torch.where` (no data-dependent branching, no host synchronisation).
  erase  random erasing with per-pixel normal noise (timm's 'pixel' mode), probability `reprob`, one box.
Differences from the PIL path, by design: bilinear instead of bicubic resampling inside RandAugment and RRC, and one
erasing attempt instead of up to ten. Random numbers come from torch's global generator on the batch's device."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ssat.errors import UserError

PHOTOMETRIC = ("auto_contrast", "equalize", "invert", "posterize", "solarize", "solarize_add", "color", "contrast",
               "brightness", "sharpness")
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OPS = PHOTOMETRIC + GEOMETRIC  # geometric ops last: `op >= len(PHOTOMETRIC)` selects them


@dataclass(frozen=True)
class RandAugmentPolicy:
    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.0
    prob: float = 0.5

    @classmethod
    def parse(cls, spec: str) -> Optional["RandAugmentPolicy"]:
        """timm's policy string: `rand-m9-n2-mstd0.5-inc1` (inc1 is the only op set implemented here)."""
        if spec in ("", "none"):
            return None
        parts = spec.split("-")
        if parts[0] != "rand":
            raise UserError(f"--rand-augment '{spec}' is not a RandAugment policy; use e.g. rand-m9-mstd0.5-inc1 "
                            f"or none")
        values = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)([0-9.]+)", part)
            if not m:
                raise UserError(f"--rand-augment '{spec}': unknown part '{part}' (the in-memory path knows m, n, "
                                f"mstd, p and inc1); use --loader pil for other timm policies")
            values[m.group(1)] = float(m.group(2))
        if values.get("inc", 1) != 1:
            raise UserError(f"--rand-augment '{spec}': only the increasing op set (inc1) runs in memory; "
                            f"use --loader pil for inc0")
        return cls(num_ops=int(values.get("n", 2)), magnitude=values.get("m", 9.0),
                   magnitude_std=values.get("mstd", 0.0), prob=values.get("p", 0.5))


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: b + factor * (a - b), clipped."""
    return (b + _bcast(factor) * (a - b)).clamp(0, 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel histogram equalisation (PIL's ImageOps.equalize) on a [0, 1] batch."""
    b, c, h, w = x.shape
    q = (x * 255).round().long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    last = hist.gather(1, q.max(dim=1, keepdim=True).values)  # count of the highest value present
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) - hist + torch.div(step, 2, rounding_mode="floor"), step.clamp(min=1),
                    rounding_mode="floor").clamp(0, 255)
    out = lut.gather(1, q) / 255
    return torch.where(step.view(-1, 1) > 0, out, q / 255).view(b, c, h, w)  # flat images stay as they are


def _sharpen(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3, centre weight 5, sum 13), border pixels left as they are."""
    # Built on the device by arithmetic: writing a Python number into a CUDA tensor would be a synchronising copy.
    centre = torch.arange(9, device=x.device, dtype=x.dtype).view(3, 3) == 4
    kernel = ((1 + 4 * centre.to(x.dtype)) / 13).expand(x.shape[1], 1, 3, 3)
    smooth = F.conv2d(x, kernel, padding=1, groups=x.shape[1])
    border = torch.ones_like(x[:1, :1], dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    return torch.where(border, x, smooth)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Resample each image with its own 2x3 affine map (output -> input coordinates), filling outside with `fill`."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _signed(level: torch.Tensor) -> torch.Tensor:
    """timm flips the sign of geometric / enhancement magnitudes with p = 0.5."""
    return torch.where(torch.rand_like(level) < 0.5, -level, level)


def _repeat(group: int):
    """Draws made once per group of `group` consecutive images (a clip's frames) -> one value per image."""
    return (lambda v: v) if group == 1 else (lambda v: v.repeat_interleave(group, 0))


def rand_augment(x: torch.Tensor, policy: RandAugmentPolicy, fill: torch.Tensor, group: int = 1) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1]. Applies `policy.num_ops` random ops per image (per group of `group` consecutive
    images: the frames of a clip get the same ops and magnitudes)."""
    b, _, h, w = x.shape
    n, rep = b // group, _repeat(group)
    dev = x.device
    eye = torch.eye(2, 3, device=dev).expand(b, 2, 3)
    for _ in range(policy.num_ops):
        op = torch.randint(len(OPS), (n,), device=dev)
        active = torch.rand(n, device=dev) < policy.prob
        level = (policy.magnitude + policy.magnitude_std * torch.randn(n, device=dev)).clamp(0, 10) / 10

        # Geometric ops: one affine per image (identity unless its op is geometric). Angles/shears as timm:
        # rotate ±30°, shear ±0.3, translate ±0.45 of the size. affine_grid works in [-1, 1] coordinates.
        angle = rep(_signed(level * math.radians(30)))
        shear = rep(_signed(level * 0.3))
        shift = rep(_signed(level * 0.45 * 2))
        factor = rep(1 + _signed(level * 0.9))
        op, active, level = rep(op), rep(active), rep(level)
        chosen = lambda name, active=active, op=op: _bcast(active & (op == OPS.index(name)))
        theta = eye.clone()
        sel = lambda name, active=active, op=op: (active & (op == OPS.index(name))).float()
        cos, sin = torch.cos(angle), torch.sin(angle)
        r = sel("rotate")
        theta[:, 0, 0] += r * (cos - 1)
        theta[:, 0, 1] += r * (-sin) * h / w
        theta[:, 1, 0] += r * sin * w / h
        theta[:, 1, 1] += r * (cos - 1)
        theta[:, 0, 1] += sel("shear_x") * shear * h / w
        theta[:, 1, 0] += sel("shear_y") * shear * w / h
        theta[:, 0, 2] += sel("translate_x") * shift
        theta[:, 1, 2] += sel("translate_y") * shift
        geometric = _bcast(active & (op >= len(PHOTOMETRIC)))
        x = torch.where(geometric, _affine(x, theta, fill), x)

        # Photometric ops, magnitudes as timm's increasing set.
        gray = _grayscale(x)
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        x = torch.where(chosen("auto_contrast"), torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-6), x), x)
        x = torch.where(chosen("equalize"), _equalize(x), x)
        x = torch.where(chosen("invert"), 1 - x, x)
        bits = 4 - (level * 4).floor()  # 4 .. 0 bits kept
        keep = torch.pow(2, 8 - _bcast(bits))
        x = torch.where(chosen("posterize"), torch.floor(x * 255 / keep) * keep / 255, x)
        threshold = _bcast(1 - level)  # 256 - 256 * level, in [0, 1]
        x = torch.where(chosen("solarize"), torch.where(x >= threshold, 1 - x, x), x)
        add = _bcast((level * 110).floor() / 255)
        x = torch.where(chosen("solarize_add"), torch.where(x < 128 / 255, (x + add).clamp(max=1), x), x)
        x = torch.where(chosen("color"), _blend(x, gray.expand_as(x), factor), x)
        x = torch.where(chosen("contrast"), _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), factor), x)
        x = torch.where(chosen("brightness"), _blend(x, torch.zeros_like(x), factor), x)
        x = torch.where(chosen("sharpness"), _blend(x, _sharpen(x), factor), x)
    return x


def pad_crop(x: torch.Tensor, size: int, padding: int, group: int = 1) -> torch.Tensor:
    """Random `size` crop of each image (group) after zero padding by `padding` on every side (exact pixel shifts)."""
    b, rep = x.shape[0], _repeat(group)
    padded = F.pad(x, (padding,) * 4)
    span = padded.shape[-1] - size + 1, padded.shape[-2] - size + 1
    ox = rep(torch.randint(span[0], (b // group, 1), device=x.device)) + torch.arange(size, device=x.device)
    oy = rep(torch.randint(span[1], (b // group, 1), device=x.device)) + torch.arange(size, device=x.device)
    rows = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[rows, oy.unsqueeze(2), ox.unsqueeze(1)].permute(0, 3, 1, 2)


def random_resized_crop_flip(x: torch.Tensor, size: int, flip: torch.Tensor,
                             scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), group: int = 1) -> torch.Tensor:
    """Per-image (group) random-resized crop (area fraction in `scale`, aspect ratio in `ratio`, log-uniform),
    resampled to `size` bilinearly, mirrored where `flip` (one per image); one affine resampling for both."""
    b, dev = x.shape[0] // group, x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    cw = (area * log_ratio.exp()).sqrt().clamp(max=1)   # crop width / image width
    ch = (area / log_ratio.exp()).sqrt().clamp(max=1)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - cw)  # crop centre, [-1, 1] coordinates
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - ch)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = torch.where(flip[::group], -cw, cw)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy
    grid = F.affine_grid(_repeat(group)(theta), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_erase(x: torch.Tensor, prob: float, area=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3),
                 group: int = 1) -> torch.Tensor:
    """One box per image (group) with probability `prob`, filled with N(0, 1) noise per pixel (on normalised
    images)."""
    _, _, h, w = x.shape
    b, rep, dev = x.shape[0] // group, _repeat(group), x.device
    target = torch.empty(b, device=dev).uniform_(*area) * h * w
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    eh = (target * log_ratio.exp()).sqrt().round().clamp(1, h)
    ew = (target / log_ratio.exp()).sqrt().round().clamp(1, w)
    top = (torch.rand(b, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(b, device=dev) * (w - ew + 1)).floor()
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1)) &
           (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1)))
    box = rep(box & (torch.rand(b, 1, 1, device=dev) < prob))
    return torch.where(box.unsqueeze(1), torch.randn_like(x), x)


class BatchAugment:
    """uint8 (B, C, H, W) batch on any device -> augmented, normalised float batch (B, C, size, size); or clips
    (B, C, T, H, W) -> (B, C, T, size, size), every random draw made once per clip for all its frames."""

    def __init__(self, *, size: int, crop: str, hflip: bool, rand_augment: str, reprob: float,
                 mean: Sequence[float], std: Sequence[float]):
        self.size, self.crop, self.hflip, self.reprob = size, crop, hflip, reprob
        self.policy = RandAugmentPolicy.parse(rand_augment)
        self.mean, self.std = tuple(mean), tuple(std)

        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def constants(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mean, std and RandAugment's fill colour on `dev`, copied there once (a copy per batch would make the
        host wait for the device)."""
        if dev not in self._constants:
            as_tensor = lambda v: torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(dev)
            self._constants[dev] = (as_tensor(self.mean), as_tensor(self.std),
                                    as_tensor([round(255 * m) / 255 for m in self.mean]))
        return self._constants[dev]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5:  # clips: frames as consecutive images, one draw per clip
            b, c, t = images.shape[:3]
            x = self._augment(images.transpose(1, 2).flatten(0, 1), group=t)
            return x.unflatten(0, (b, t)).transpose(1, 2)
        return self._augment(images)

    def _augment(self, images: torch.Tensor, group: int = 1) -> torch.Tensor:
        dev = images.device
        mean, std, fill = self.constants(dev)
        x = images.float() / 255
        b = x.shape[0]
        flip = _repeat(group)((torch.rand(b // group, device=dev) < 0.5) if self.hflip
                              else torch.zeros(b // group, dtype=torch.bool, device=dev))
        if self.crop == "rrc":
            x = random_resized_crop_flip(x, self.size, flip, group=group)
        else:
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                raise ValueError(f"images are {tuple(x.shape[-2:])}; resize them to {self.size} once before")
            if self.crop == "pad":
                x = pad_crop(x, self.size, max(1, self.size // 8), group=group)
            x = torch.where(_bcast(flip), x.flip(-1), x)
        if self.policy is not None:
            x = rand_augment(x, self.policy, fill, group=group)
        x = (x - mean) / std
        if self.reprob > 0:
            x = random_erase(x, self.reprob, group=group)
        return x
