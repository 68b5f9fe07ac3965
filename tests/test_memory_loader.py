"""The in-memory data path: same images and labels as the PIL path, batches on the device, DDP slicing."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fixtures import write_cifar, write_imagefolder
from ssat.cli import main
from ssat.config import Config
from ssat.data import load_dataset
from ssat.data.memory import MemoryLoader, array_images, fits_in_memory, resize_uint8, to_tensor
from ssat.data.transforms import Transformed, eval_transform


def test_eval_batches_equal_the_pil_eval_path():
    data = load_dataset("digits")
    cfg = Config(img_size=8, patch_size=2).validate()
    pil = DataLoader(Transformed(data.test, eval_transform(cfg, data.mean, data.std)), batch_size=100)
    mem = MemoryLoader(to_tensor(array_images(data.test), 1), data.test.labels, batch_size=100,
                       device=torch.device("cpu"), mean=data.mean, std=data.std)
    assert len(mem) == len(pil) == 4 and mem.num_samples == 360
    for (a, ya), (b, yb) in zip(mem, pil):
        torch.testing.assert_close(a, b)
        assert torch.equal(ya, yb)


def test_resize_once_is_close_to_pil_bicubic(tmp_path):
    data = load_dataset("cifar10", str(write_cifar(tmp_path, "cifar10", per_class=1)))
    cfg = Config(img_size=48, patch_size=4, crop="rrc").validate()
    ref = torch.stack([eval_transform(cfg, (0.0,) * 3, (1.0,) * 3)(data.test[i][0]) for i in range(10)])
    ours = resize_uint8(to_tensor(array_images(data.test), 3), 48, crop_pct=0.875).float() / 255
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.02  # torch's and PIL's antialiased bicubic differ slightly


def test_train_epochs_are_seeded_permutations_of_full_batches():
    labels = list(range(100))
    images = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    aug = lambda x: x.float()
    loader = MemoryLoader(images, labels, batch_size=32, device=torch.device("cpu"), mean=(0,), std=(1,),
                          augment=aug, seed=3)
    assert len(loader) == 3 and loader.num_samples == 96 and loader.drop_last
    epoch0 = torch.cat([y for _, y in loader])
    again = torch.cat([y for _, y in loader])
    loader.set_epoch(1)
    epoch1 = torch.cat([y for _, y in loader])
    assert torch.equal(epoch0, again) and not torch.equal(epoch0, epoch1)
    assert len(set(epoch0.tolist())) == 96  # no image twice in an epoch


def test_ranks_split_each_global_batch_exactly():
    labels = list(range(70))
    images = torch.zeros(70, 1, 4, 4, dtype=torch.uint8)
    common = dict(device=torch.device("cpu"), mean=(0,), std=(1,), augment=lambda x: x.float(), seed=0)
    single = [y for _, y in MemoryLoader(images, labels, batch_size=32, **common)]
    ranks = [[y for _, y in MemoryLoader(images, labels, batch_size=16, rank=r, world_size=2, **common)]
             for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 2
    for step, batch in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][step], ranks[1][step]]), batch)
    # Evaluation: strided shares that together cover every image once.
    shares = [torch.cat([y for _, y in MemoryLoader(images, labels, batch_size=8, device=torch.device("cpu"),
                                                    mean=(0,), std=(1,), rank=r, world_size=2)]) for r in range(2)]
    assert sorted(torch.cat(shares).tolist()) == labels


def test_grayscale_arrays_replicate_to_rgb_and_folders_are_not_in_memory(tmp_path):
    x = to_tensor(np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4), 3)
    assert x.shape == (2, 3, 4, 4) and torch.equal(x[:, 0], x[:, 2])
    assert fits_in_memory(load_dataset("digits").train)
    folder = load_dataset("imagefolder", str(write_imagefolder(tmp_path)))
    assert not fits_in_memory(folder.train)


def test_loader_choice_is_recorded_and_memory_on_a_folder_is_an_error(tmp_path, tiny_flags, capsys):
    for loader, expected in (("auto", "memory"), ("pil", "pil")):
        out = tmp_path / loader
        assert main(["train", *tiny_flags, "--fraction", "0.1", "--loader", loader, "--out", str(out)]) == 0
        assert json.loads((out / "summary.json").read_text())["data_path"] == expected
    root = write_imagefolder(tmp_path / "folder")
    assert main(["train", *tiny_flags, "--dataset", "imagefolder", "--data-root", str(root), "--loader", "memory",
                 "--out", str(tmp_path / "f")]) == 2
    assert "--loader memory needs a data set held as one in-memory array" in capsys.readouterr().err


@pytest.mark.parametrize("crop", ["pad", "rrc", "none"])
def test_every_crop_mode_trains_in_memory_with_two_views(tmp_path, tiny_flags, crop):
    out = tmp_path / crop
    assert main(["train", *tiny_flags, "--fraction", "0.1", "--crop", crop, "--img-size", "16", "--two-views",
                 "--out", str(out)]) == 0
    assert np.isfinite(json.loads((out / "summary.json").read_text())["test_acc1"])
