import numpy as np
import pytest
import torch

from fixtures import write_cifar, write_imagefolder
from ssat.config import Config
from ssat.data import load_dataset
from ssat.data.subsets import class_counts, stratified_fraction
from ssat.data.transforms import crop_mode, eval_transform, train_transform
from ssat.errors import UserError


def test_digits_is_the_fixed_stratified_80_20_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (len(a.train), len(a.test), a.num_classes, a.in_chans, a.native_size) == (1437, 360, 10, 1, 8)
    assert a.train_targets == b.train_targets
    image, label = a.train[0]
    assert image.size == (8, 8) and image.mode == "L" and 0 <= label < 10
    test_counts = np.bincount([a.test[i][1] for i in range(len(a.test))])
    assert test_counts.min() >= 35  # every digit is in the test split in proportion
    assert not a.hflip  # a mirrored digit is not the same digit


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5])
def test_fraction_is_stratified_reproducible_and_keeps_every_class(fraction):
    targets = load_dataset("digits").train_targets
    first = stratified_fraction(targets, fraction, seed=127)
    assert first == stratified_fraction(targets, fraction, seed=127)
    assert first != stratified_fraction(targets, fraction, seed=128)
    counts = class_counts(targets, first)
    assert set(counts) == set(range(10)) and min(counts.values()) >= 1
    full = class_counts(targets, list(range(len(targets))))
    for c, n in counts.items():
        assert n == max(1, round(fraction * full[c]))


def test_fraction_one_keeps_everything():
    assert stratified_fraction([0, 1, 1, 2], 1.0, seed=0) == [0, 1, 2, 3]


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_the_released_pickle_layout(tmp_path, name, classes):
    folder = write_cifar(tmp_path, name, per_class=1)
    for root in (tmp_path, folder):  # the torchvision root or the extracted folder itself
        data = load_dataset(name, str(root))
        train_per_file = classes
        assert len(data.train) == (5 * train_per_file if name == "cifar10" else train_per_file)
        assert len(data.test) == classes and data.num_classes == classes and data.in_chans == 3
        image, label = data.train[3]
        assert image.size == (32, 32) and image.mode == "RGB" and label == 3
        assert data.classes[0] == "class0"


def test_cifar_pixels_are_in_row_major_rgb_order(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", per_class=1)
    import pickle
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)["data"][0]
    image, _ = load_dataset("cifar10", str(tmp_path)).train[0]
    pixels = np.asarray(image)
    assert pixels[0, 1, 0] == raw[1] and pixels[0, 0, 1] == raw[1024] and pixels[0, 0, 2] == raw[2048]


def test_cifar_missing_says_where_and_how(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py.*--download"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("cifar100", None)


def test_cifar_truncated_batch_is_a_clear_error(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", per_class=1)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:100])
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR batch"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_refuses_pickles_that_would_run_code(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", per_class=1)
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(UserError, match="test_batch is not a readable CIFAR batch"):
        load_dataset("cifar10", str(tmp_path))


def test_imagefolder_loads_train_and_val(tmp_path):
    write_imagefolder(tmp_path)
    data = load_dataset("imagefolder", str(tmp_path))
    assert data.classes == ["cat", "dog", "fox"] and len(data.train) == 9 and len(data.test) == 9
    image, label = data.train[4]
    assert image.mode == "RGB" and label == 1


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UserError, match="needs --data-root"):
        load_dataset("imagefolder", None)
    with pytest.raises(UserError, match="train.*does not exist"):
        load_dataset("imagefolder", str(tmp_path))
    write_imagefolder(tmp_path / "a")
    (tmp_path / "a" / "val" / "fox").rename(tmp_path / "a" / "val" / "wolf")
    with pytest.raises(UserError, match="different class folders"):
        load_dataset("imagefolder", str(tmp_path / "a"))


@pytest.mark.parametrize("dataset,size,chans", [("digits", 8, 1), ("digits", 16, 1)])
def test_train_and_eval_transforms_give_normalised_tensors_of_the_input_size(dataset, size, chans):
    data = load_dataset(dataset)
    cfg = Config(img_size=size)
    train_tf = train_transform(cfg, data.mean, data.std, data.native_size, hflip=False)
    eval_tf = eval_transform(cfg, data.mean, data.std)
    image, _ = data.train[0]
    torch.manual_seed(0)
    assert train_tf(image).shape == (chans, size, size)
    assert torch.equal(eval_tf(image), eval_tf(image))  # evaluation is deterministic
    if size == data.native_size:  # eval of a native-size image is the whole image, only normalised
        expected = (torch.from_numpy(np.asarray(image, dtype=np.float32) / 255) - data.mean[0]) / data.std[0]
        assert torch.allclose(eval_tf(image)[0], expected, atol=1e-6)


@pytest.mark.parametrize("size,mode", [(8, "none"), (15, "none"), (16, "pad"), (32, "pad"), (63, "pad"), (64, "rrc")])
def test_auto_crop_is_none_for_tiny_inputs_pad_for_small_rrc_for_large(size, mode):
    """--crop auto follows the digits study: the pad-crop cost ~4 points at 8 px and helped at 32 px."""
    assert crop_mode(Config(img_size=size)) == mode
    assert crop_mode(Config(img_size=size, crop="pad")) == "pad"  # an explicit choice is kept


def test_auto_crop_trains_8px_digits_on_the_whole_image_and_32px_on_shifted_crops():
    data = load_dataset("digits")
    image, _ = data.train[0]
    for size, shifted in ((8, False), (32, True)):
        cfg = Config(img_size=size, rand_augment="none", reprob=0.0)
        train_tf = train_transform(cfg, data.mean, data.std, data.native_size, hflip=False)
        views = []
        for seed in range(8):
            torch.manual_seed(seed)
            views.append(train_tf(image))
        assert any(not torch.equal(v, views[0]) for v in views) == shifted, size
        if not shifted:
            assert torch.equal(views[0], eval_transform(cfg, data.mean, data.std)(image))


def test_the_run_says_which_crop_auto_chose(tmp_path, capsys, tiny_flags):
    from ssat.cli import main
    flags = [f for f in tiny_flags if f != "--quiet"]
    assert main(["train", *flags, "--fraction", "0.1", "--out", str(tmp_path / "r")]) == 0
    assert "8px, patch 2, train crop none, " in capsys.readouterr().err
    # config.yaml records what ran, so reusing it gives the same crop whatever a later 'auto' rule says
    assert "\ncrop: none\n" in (tmp_path / "r" / "config.yaml").read_text()


def test_rrc_transform_for_large_images_is_timms(tmp_path):
    cfg = Config(img_size=64, crop="auto")
    tf = train_transform(cfg, (0.5,) * 3, (0.5,) * 3, 224, hflip=True)
    assert "RandomResizedCrop" in repr(tf) and "RandAugment" in repr(tf) and "RandomErasing" in repr(tf)
    small = train_transform(Config(img_size=32), (0.5,) * 3, (0.5,) * 3, 32, hflip=True)
    assert "RandomCrop(size=(32, 32), padding=4)" in repr(small) and "HorizontalFlip" in repr(small)


def test_cifar_download_goes_through_torchvision_then_reads_the_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    calls = []

    class FakeDownloader:  # stands in for the network: writes what the real archive extracts to
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_cifar(tmp_path, "cifar10", per_class=1)
    monkeypatch.setattr(tvd, "CIFAR10", FakeDownloader)
    data = load_dataset("cifar10", str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True)] and len(data.test) == 10
    load_dataset("cifar10", str(tmp_path), download=True)
    assert len(calls) == 1  # files already there: no second download


def test_an_image_folder_linking_outside_its_root_needs_allow_outside_root(tmp_path):
    from fixtures import write_imagefolder
    from ssat.data import DataOptions, load_dataset
    from ssat.errors import UserError
    root = write_imagefolder(tmp_path / "data", per_class=2, size=8)
    other = write_imagefolder(tmp_path / "private", per_class=1, size=8)
    (root / "train" / "cat" / "linked.png").symlink_to(other / "train" / "dog" / "0.png")
    with pytest.raises(UserError, match="outside --data-root .*--allow-outside-root"):
        load_dataset("imagefolder", str(root))
    data = load_dataset("imagefolder", str(root), options=DataOptions(allow_outside_root=True))
    assert len(data.train) == 3 * 2 + 1


def test_a_16_bit_image_decodes_in_little_memory_and_to_the_same_pixels(tmp_path):
    """Rescaling 16-bit pixels went through float64 (8 bytes a pixel, several copies): a band at a time in integers
    gives the same bytes with memory near the 8-bit result."""
    import tracemalloc

    from PIL import Image

    from ssat.data.files import decode
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (1500, 2000), dtype=np.uint16)
    pixels[0, :4] = [0, 128, 32767, 65535]
    Image.fromarray(pixels).save(tmp_path / "deep.png")  # PIL writes mode I;16
    tracemalloc.start()
    image = decode(tmp_path / "deep.png", "L")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    expected = np.clip(pixels.astype(np.float64) / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image), expected)
    assert peak < 6 * pixels.size, f"{peak / pixels.size:.1f} bytes a pixel"  # float64 took 24
