"""Every data set of the study, from a tiny fixture in its released layout, through the code path users use."""

import json

import numpy as np
import pytest
from PIL import Image

from fixtures import (
    write_chaoyang,
    write_cifar,
    write_csv_lists,
    write_domainnet,
    write_flowers,
    write_hf,
    write_imagefolder,
    write_medmnist,
    write_mnist,
    write_svhn,
)
from ssat.cli import main
from ssat.config import Config
from ssat.data import DataOptions, load_dataset
from ssat.data.prepare import load_for


def _cifar(tmp):
    write_cifar(tmp, "cifar10", per_class=1)
    return tmp


# name -> (writer returning --data-root, extra flags, (train, test, classes, channels), first train label)
CASES = {
    "cifar10": (_cifar, [], (50, 10, 10, 3)),
    "svhn": (lambda t: write_svhn(t), [], (20, 10, 10, 3)),
    "mnist": (lambda t: write_mnist(t, gz=True), [], (20, 10, 10, 1)),
    "mnist-torchvision-raw": (lambda t: (write_mnist(t, gz=False, torchvision=True), t)[1], [], (20, 10, 10, 1)),
    "fashion_mnist": (lambda t: (write_mnist(t, torchvision=True, folder="FashionMNIST"), t)[1], [],
                      (20, 10, 10, 1)),
    "flowers102": (lambda t: (write_flowers(t), t)[1], [], (6, 6, 102, 3)),
    "flowers102-train+val": (lambda t: (write_flowers(t), t)[1], ["--train-split", "train+val"], (12, 6, 102, 3)),
    "pneumoniamnist": (lambda t: (write_medmnist(t), t)[1], [], (12, 6, 2, 1)),
    "pneumoniamnist-64": (lambda t: (write_medmnist(t, size=64), t)[1], ["--medmnist-size", "64"], (12, 6, 2, 1)),
    "bloodmnist": (lambda t: (write_medmnist(t, "bloodmnist", classes=8, rgb=True), t)[1], [], (48, 24, 8, 3)),
    "chaoyang": (lambda t: write_chaoyang(t), [], (8, 4, 4, 3)),
    "domainnet": (lambda t: write_domainnet(t), ["--domain", "sketch"], (6, 3, 3, 3)),
    "imagenet": (lambda t: write_imagefolder(t), [], (9, 9, 3, 3)),
    "imagefolder": (lambda t: write_imagefolder(t), [], (9, 9, 3, 3)),
    "csv": (lambda t: write_csv_lists(t), [], (6, 2, 2, 3)),
    "hf": (lambda t: write_hf(t / "hf"), [], (9, 6, 3, 3)),
    "hf-parquet": (lambda t: write_hf(t / "hf", "parquet"), [], (9, 6, 3, 3)),
}


def _name(case: str) -> str:
    return {"mnist-torchvision-raw": "mnist", "flowers102-train+val": "flowers102",
            "pneumoniamnist-64": "pneumoniamnist", "hf-parquet": "hf"}.get(case, case)


def _cfg(name, root, flags) -> Config:
    values = {"dataset": name, "data_root": str(root)}
    for flag, value in zip(flags[::2], flags[1::2]):
        values[flag[2:].replace("-", "_")] = value
    return Config.from_dict(values)


@pytest.mark.parametrize("case", list(CASES))
def test_every_format_loads_with_the_right_shape(tmp_path, case):
    writer, flags, (n_train, n_test, n_classes, chans) = CASES[case]
    root = writer(tmp_path)
    data = load_for(_cfg(_name(case), root, flags))
    assert (len(data.train), len(data.test), data.num_classes, data.in_chans) == (n_train, n_test, n_classes, chans)
    image, label = data.train[1]
    assert image.mode == ("L" if chans == 1 else "RGB") and 0 <= label < n_classes
    assert data.train_targets[1] == label
    test_image, test_label = data.test[0]
    assert 0 <= test_label < n_classes and test_image.mode == image.mode
    assert len(data.mean) == len(data.std) == chans


def test_labels_are_the_released_ones(tmp_path):
    svhn = load_dataset("svhn", str(write_svhn(tmp_path / "svhn")))
    assert svhn.train_targets[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # the file's 10 is the digit 0
    flowers = load_dataset("flowers102", str(write_flowers(tmp_path / "fl")))
    assert flowers.train_targets == [0, 1, 2, 0, 1, 2]  # imagelabels.mat is 1-based
    dn = load_dataset("domainnet", str(write_domainnet(tmp_path / "dn")),
                      options=DataOptions(extra={"domain": "sketch"}))
    assert dn.classes == ["aircraft_carrier", "zebra", "bee"]
    csv = load_dataset("csv", str(write_csv_lists(tmp_path / "csv")))
    assert csv.classes == ["benign", "malignant"] and csv.train_targets == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("case", ["svhn", "mnist", "flowers102", "pneumoniamnist", "chaoyang", "domainnet", "csv",
                                  "imagenet"])
def test_train_and_eval_run_on_every_format(tmp_path, tiny_flags, capsys, case):
    writer, flags, _ = CASES[case]
    root = writer(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--dataset", _name(case), "--data-root", str(root), *flags,
                 "--img-size", "16", "--patch-size", "4", "--batch-size", "4", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == _name(case) and 0 <= summary["test_acc1"] <= 100
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["acc1"] == pytest.approx(summary["test_acc1"])


@pytest.mark.parametrize("case", list(CASES))
def test_data_info_describes_every_format(tmp_path, capsys, case):
    writer, flags, (n_train, n_test, n_classes, chans) = CASES[case]
    root = writer(tmp_path)
    assert main(["data", "info", "--dataset", _name(case), "--data-root", str(root), *flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"] == {"train": n_train, "test": n_test}
    assert report["classes"] == n_classes and report["channels"] == chans
    assert sum(c["train"] for c in report["class_counts"].values()) == n_train


def test_grayscale_can_be_replicated_to_rgb(tmp_path):
    root = write_mnist(tmp_path)
    gray, rgb = load_for(_cfg("mnist", root, [])), load_for(_cfg("mnist", root, ["--gray-to-rgb", True]))
    assert gray.in_chans == 1 and rgb.in_chans == 3 and rgb.mean == gray.mean * 3
    a, b = np.asarray(gray.train[0][0]), np.asarray(rgb.train[0][0])
    assert b.shape == a.shape + (3,) and all(np.array_equal(b[..., c], a) for c in range(3))


def test_stats_compute_estimates_from_the_training_images(tmp_path):
    root = write_mnist(tmp_path)
    data = load_for(_cfg("mnist", root, ["--stats", "compute"]))
    pixels = np.stack([np.asarray(data.train[i][0]) for i in range(len(data.train))]) / 255
    assert data.mean[0] == pytest.approx(pixels.mean(), abs=1e-6)
    assert data.std[0] == pytest.approx(pixels.std(), abs=1e-6)
    folder = load_for(_cfg("imagefolder", write_imagefolder(tmp_path / "f"), ["--stats", "compute"]))
    assert 0.3 < folder.mean[0] < 0.7 and folder.mean != (0.485, 0.456, 0.406)  # random pixels, not ImageNet's


def test_sixteen_bit_rgba_and_palette_images_are_converted(tmp_path):
    from ssat.data.files import decode
    sixteen = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(sixteen)
    assert np.asarray(decode(sixteen, "L")).max() == 255  # rescaled from 16 bits (not clipped from 65535)
    half = tmp_path / "half.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(half)
    assert abs(int(np.asarray(decode(half, "L"))[0, 0]) - 128) <= 1
    rgba = tmp_path / "b.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(rgba)  # fully transparent
    assert np.asarray(decode(rgba, "RGB"))[0, 0].tolist() == [255, 255, 255]
    pal = tmp_path / "c.gif"
    Image.new("P", (4, 4), 3).save(pal)
    assert decode(pal, "RGB").mode == "RGB"


def test_csv_with_a_byte_order_mark_reads_its_first_row(tmp_path):
    root = write_csv_lists(tmp_path / "csv")
    for name in ("train.csv", "test.csv"):
        text = (root / name).read_text()
        (root / name).write_bytes("\ufeff".encode() + text.replace("path,label\n", "").encode())
    data = load_dataset("csv", str(root))
    assert data.train_targets == [0, 0, 0, 1, 1, 1]  # the first image is not lost to a '\ufeffimages/...' path


def test_csv_test_image_in_the_training_list_is_refused(tmp_path, capsys):
    root = write_csv_lists(tmp_path / "csv")
    test_row = (root / "test.csv").read_text().splitlines()[1]
    with open(root / "train.csv", "a") as f:
        f.write(test_row + "\n")
    from conftest import run_error
    line = run_error(capsys, ["data", "info", "--dataset", "csv", "--data-root", str(root)])
    assert "csv: the train and test splits both list" in line and "must not be trained on" in line


def test_split_entries_outside_the_data_root_need_a_flag_and_duplicates_are_a_warning(tmp_path, capsys):
    root = write_csv_lists(tmp_path / "csv")
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(outside)
    with open(root / "train.csv", "a") as f:
        f.write("../elsewhere.png,benign\nimages/train_benign_0.png,benign\n")
    from conftest import run_error
    line = run_error(capsys, ["data", "info", "--dataset", "csv", "--data-root", str(root)])
    assert f"names {outside}, outside --data-root" in line and "--allow-outside-root" in line
    assert main(["data", "info", "--dataset", "csv", "--data-root", str(root), "--json",
                 "--allow-outside-root"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["splits"]["train"] == 8
    assert "warning: the csv train split lists 1 image(s) more than once" in captured.err


@pytest.mark.parametrize("label", [0.7, "1", True])
def test_chaoyang_labels_must_be_integers(tmp_path, capsys, label):
    root = write_chaoyang(tmp_path / "cy")
    entries = json.loads((root / "train.json").read_text())
    entries[0]["label"] = label
    (root / "train.json").write_text(json.dumps(entries))
    from conftest import run_error
    line = run_error(capsys, ["data", "info", "--dataset", "chaoyang", "--data-root", str(root)])
    assert f"label {label!r} is not an integer class index" in line


def test_domainnet_label_outside_its_345_classes_is_refused(tmp_path, capsys):
    root = write_domainnet(tmp_path / "dn")
    split = root / "sketch_train.txt"
    lines = split.read_text().splitlines()
    lines[0] = lines[0].rsplit(maxsplit=1)[0] + " 99999"
    split.write_text("\n".join(lines) + "\n")
    from conftest import run_error
    line = run_error(capsys, ["data", "info", "--dataset", "domainnet", "--data-root", str(root), "--domain",
                              "sketch"])
    assert "label 99999 is outside DomainNet's 0..344" in line
