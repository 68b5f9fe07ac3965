"""The in-memory data path: decode once to a uint8 tensor on the training device, augment whole batches there.

No worker processes and no PIL in the loop, so the loader keeps up with a GPU (and costs a CPU step little).
Used for data sets whose images all have one size and fit in memory (all the small sets); large folder
data sets keep the PIL / DataLoader path (`--loader pil`)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ssat.data.batch_augment import BatchAugment

MAX_BYTES = 4 << 30  # above this `--loader auto` keeps the PIL path


def array_images(dataset: Dataset) -> Optional[np.ndarray]:
    """The data set's images as one uint8 array (N, H, W[, C]) when it holds them that way, else None."""
    images = getattr(dataset, "images", None)
    return images if isinstance(images, np.ndarray) and images.dtype == np.uint8 else None


def fits_in_memory(dataset: Dataset) -> bool:
    images = array_images(dataset)
    return images is not None and images.nbytes <= MAX_BYTES


def to_tensor(images: np.ndarray, in_chans: int) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, C, H, W) uint8, or clips (N, T, H, W, C) -> (N, C, T, H, W), channels matched to
    the model's input."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 4, 1, 2, 3) if x.ndim == 5 else x.permute(0, 3, 1, 2)
    if x.shape[1] != in_chans:
        x = x.expand(-1, in_chans, *x.shape[2:]) if x.shape[1] == 1 else x[:, :in_chans]
    return x.contiguous()


def resize_uint8(x: torch.Tensor, size: int, crop_pct: float = 1.0, chunk: int = 4096) -> torch.Tensor:
    """Bicubic (antialiased) resize of the shorter side to size / crop_pct, then a centre crop of `size`,
    as the PIL eval transform -- done once for the whole set, in chunks to bound memory. Clips (N, C, T, H, W):
    every frame alike."""
    if x.dim() == 5:
        return resize_uint8(x.flatten(1, 2), size, crop_pct, chunk).unflatten(1, x.shape[1:3])
    h, w = x.shape[-2:]
    scale_to = math.floor(size / crop_pct)
    if (h, w) == (size, size) and scale_to == size:
        return x
    out = []
    for part in x.split(chunk):
        short = min(h, w)
        new = (round(h * scale_to / short), round(w * scale_to / short))
        y = F.interpolate(part.float(), size=new, mode="bicubic", antialias=True, align_corners=False)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        out.append(y[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class MemoryLoader:
    """Iterates (images, targets[, aux_images]) batches already on `device`.

    Train (`augment` given): a fresh permutation each epoch (`set_epoch`; with `balanced`, as many draws with
    replacement, each class equally likely), full batches only (as the DataLoader path), each image augmented on
    the device; with `two_views` the auxiliary stream gets a second augmentation.
    Under DDP every rank draws the same permutation and takes its own slice of each global batch, so the union
    over ranks of step i is exactly the single-process batch i of size `batch_size * world_size`.
    Eval (`augment` None): the images in order, normalised; with `world_size` > 1 each rank gets a strided share."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], *, batch_size: int, device: torch.device,
                 mean: Sequence[float], std: Sequence[float], augment: Optional[BatchAugment] = None,
                 two_views: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, balanced: bool = False):
        self.images = images.to(device)
        self.targets = torch.as_tensor(list(targets), dtype=torch.long).to(device)
        self.batch_size, self.device, self.augment, self.two_views = batch_size, device, augment, two_views
        shape = (1, -1) + (1,) * (images.dim() - 2)  # (1, C, 1, 1) for images, (1, C, 1, 1, 1) for clips
        self.mean = torch.tensor(mean, device=device).view(shape)
        self.std = torch.tensor(std, device=device).view(shape)
        # class-balanced sampling: each epoch draws as many items, with replacement, every class equally likely
        counts = torch.bincount(self.targets.cpu()).double() if len(self.targets) else torch.zeros(0)
        self.weights = (1 / counts)[self.targets.cpu()] if balanced and augment is not None else None
        self.seed, self.epoch, self.rank, self.world_size = seed, 0, rank, world_size
        self.global_batch = batch_size * world_size
        # Full batches only unless the set is smaller than one (global) batch, as the DataLoader path.
        self.drop_last = augment is not None and len(self.images) >= self.global_batch

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch."""
        n = len(self.images)
        if self.augment is None:
            return len(range(self.rank, n, self.world_size))
        if self.drop_last:
            return (n // self.global_batch) * self.batch_size
        return len(self._slice(torch.arange(n), 0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.augment is None:
            return math.ceil(self.num_samples / self.batch_size)
        n = len(self.images)
        return n // self.global_batch if self.drop_last else math.ceil(n / self.global_batch)

    def _slice(self, order: torch.Tensor, step: int) -> torch.Tensor:
        chunk = order[step * self.global_batch:(step + 1) * self.global_batch]
        share = math.ceil(len(chunk) / self.world_size)
        return chunk[self.rank * share:(self.rank + 1) * share]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self.mean) / self.std

    def __iter__(self):
        if self.augment is None:
            order = torch.arange(self.rank, len(self.images), self.world_size, device=self.device)
            for idx in order.split(self.batch_size):
                yield self._normalise(self.images[idx]), self.targets[idx]
            return
        # Same permutation on every rank: its own generator, seeded from (seed, epoch), not the per-rank RNG.
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = (torch.randperm(len(self.images), generator=gen) if self.weights is None else
                 torch.multinomial(self.weights, len(self.images), replacement=True, generator=gen)).to(self.device)
        for step in range(len(self)):
            idx = self._slice(order, step)
            raw = self.images[idx]
            batch = [self.augment(raw), self.targets[idx]]
            if self.two_views:
                batch.append(self.augment(raw))
            yield tuple(batch)
