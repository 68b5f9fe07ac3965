"""The batched, on-device train augmentation of the in-memory data path."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

from ssat.data.batch_augment import (
    BatchAugment,
    RandAugmentPolicy,
    _equalize,
    pad_crop,
    rand_augment,
    random_erase,
    random_resized_crop_flip,
)
from ssat.errors import UserError


def images(n=16, c=3, size=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("spec, expected", [
    ("rand-m9-mstd0.5-inc1", RandAugmentPolicy(2, 9.0, 0.5, 0.5)),
    ("rand-m7-n3", RandAugmentPolicy(3, 7.0, 0.0, 0.5)),
    ("rand-n1-m10-p1", RandAugmentPolicy(1, 10.0, 0.0, 1.0)),
])
def test_policy_parse(spec, expected):
    assert RandAugmentPolicy.parse(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("augmix-m5", "is not a RandAugment policy"),
    ("rand-m9-w0", "unknown part 'w0'"),
    ("rand-m9-inc0", "only the increasing op set"),
])
def test_policy_parse_errors(spec, message):
    with pytest.raises(UserError, match=message):
        RandAugmentPolicy.parse(spec)
    assert RandAugmentPolicy.parse("none") is None


def test_pad_crop_is_a_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    x = images(8).float()
    out = pad_crop(x, 16, 2)
    padded = torch.nn.functional.pad(x, (2,) * 4)
    shifts = set()
    for i in range(8):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 16, dx:dx + 16])]
        assert found, f"image {i} is not a crop of its padded input"
        shifts.add(found[0])
    assert len(shifts) > 1  # offsets are drawn per image


def test_flip_only_mirrors_about_half_the_batch():
    torch.manual_seed(0)
    x = images(64)
    aug = BatchAugment(size=16, crop="none", hflip=True, rand_augment="none", reprob=0, mean=(0,) * 3, std=(1,) * 3)
    out = aug(x)
    ref = x.float() / 255
    same = [torch.allclose(out[i], ref[i]) for i in range(64)]
    mirrored = [torch.allclose(out[i], ref[i].flip(-1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_no_augmentation_is_exactly_totensor_normalize():
    x = images(4, c=1)
    aug = BatchAugment(size=16, crop="none", hflip=False, rand_augment="none", reprob=0, mean=(0.3,), std=(0.2,))
    torch.testing.assert_close(aug(x), (x.float() / 255 - 0.3) / 0.2)


def test_augmentation_is_seeded_and_changes_images():
    aug = BatchAugment(size=16, crop="pad", hflip=True, rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25,
                       mean=(0.5,) * 3, std=(0.25,) * 3)
    x = images(32)
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    b = aug(x)
    torch.manual_seed(2)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (32, 3, 16, 16) and a.dtype == torch.float32 and torch.isfinite(a).all()


def test_rand_augment_keeps_range_and_prob_zero_is_identity():
    torch.manual_seed(0)
    x = images(64).float() / 255
    fill = torch.full((1, 3, 1, 1), 0.5)
    out = rand_augment(x, RandAugmentPolicy(num_ops=2, magnitude=9, magnitude_std=0.5, prob=1.0), fill)
    assert out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert changed.float().mean() > 0.7  # a few ops (e.g. a rotation by ~0) may leave an image as it was
    torch.testing.assert_close(rand_augment(x, RandAugmentPolicy(prob=0.0), fill), x)


def test_equalize_matches_pil():
    x = images(6, c=3, size=12, seed=3)
    x[0] = x[0] // 4  # a low-contrast image
    x[1] = 77  # a flat image stays as it is
    ours = (_equalize(x.float() / 255) * 255).round().to(torch.uint8)
    for i in range(6):
        pil = np.asarray(ImageOps.equalize(Image.fromarray(x[i].permute(1, 2, 0).numpy())))
        assert np.abs(ours[i].permute(1, 2, 0).numpy().astype(int) - pil.astype(int)).max() <= 1


def test_random_resized_crop_full_scale_is_identity_and_flip_mirrors():
    x = images(4).float()
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    no_flip = torch.zeros(4, dtype=torch.bool)
    torch.testing.assert_close(random_resized_crop_flip(x, 16, no_flip, **full), x, atol=1e-3, rtol=0)
    torch.testing.assert_close(random_resized_crop_flip(x, 16, ~no_flip, **full), x.flip(-1), atol=1e-3, rtol=0)
    torch.manual_seed(0)
    assert random_resized_crop_flip(x, 8, no_flip).shape == (4, 3, 8, 8)


def test_random_erase_probability():
    torch.manual_seed(0)
    x = torch.zeros(32, 3, 16, 16)
    erased = random_erase(x, 1.0)
    boxes = (erased != 0).any(1)  # (B, H, W)
    assert boxes.flatten(1).any(1).all()
    area = boxes.flatten(1).float().mean(1)
    assert (area <= 1 / 3 + 0.05).all() and (area >= 0.01).all()
    assert torch.equal(random_erase(x, 0.0), x)


def test_sharpness_blend_matches_pil():
    from PIL import ImageEnhance

    from ssat.data.batch_augment import _blend, _sharpen
    x = images(3, c=3, size=12, seed=5)
    ours = (_blend(x.float() / 255, _sharpen(x.float() / 255), torch.tensor([1.8, 0.2, 1.0])) * 255).round()
    for i, factor in enumerate((1.8, 0.2, 1.0)):
        pil = ImageEnhance.Sharpness(Image.fromarray(x[i].permute(1, 2, 0).numpy())).enhance(factor)
        diff = np.abs(ours[i].permute(1, 2, 0).numpy() - np.asarray(pil).astype(float))
        assert diff.max() <= 1, (factor, diff.max())


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("crop", ["pad", "rrc"])
def test_a_batch_costs_the_same_number_of_ops_at_any_batch_size(crop):
    # No per-image loop and no branch on the drawn values: the kernels launched per batch are bounded (a GPU step
    # is launch-bound at small images), whatever the batch size or the draws.
    augment = BatchAugment(size=16, crop=crop, hflip=True, rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25,
                           mean=(0.5,) * 3, std=(0.25,) * 3)
    augment(images(2))  # the first call copies the constants to the device, once
    counts = set()
    for n, seed in ((2, 0), (64, 1), (512, 2)):
        torch.manual_seed(seed)
        with _CountOps() as ops:
            augment(images(n, seed=seed))
        counts.add(ops.calls)
    assert len(counts) == 1 and counts.pop() < 1000
