"""Limited-data subsets saved with the run, perturbed test sets, and bad data: one clear line, exit 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import (
    write_chaoyang,
    write_csv_lists,
    write_domainnet,
    write_flowers,
    write_imagefolder,
    write_medmnist,
    write_mnist,
    write_svhn,
)
from ssat.cli import main
from ssat.data import load_dataset
from ssat.data.perturb import Perturbed
from ssat.data.subsets import class_counts, per_class


def test_per_class_is_seeded_stratified_and_capped():
    targets = [0] * 10 + [1] * 3 + [2] * 7
    a = per_class(targets, 5, seed=127)
    assert a == per_class(targets, 5, seed=127) and a != per_class(targets, 5, seed=1)
    assert class_counts(targets, a) == {0: 5, 1: 3, 2: 5}  # class 1 has only 3


def test_subset_is_saved_and_reused_by_another_run(tmp_path, tiny_flags):
    first = tmp_path / "a"
    assert main(["train", *tiny_flags, "--per-class", "7", "--subset-seed", "5", "--out", str(first)]) == 0
    saved = json.loads((first / "subset.json").read_text())
    assert len(saved["indices"]) == 70 and set(saved["class_counts"].values()) == {7}
    assert saved["per_class"] == 7 and saved["subset_seed"] == 5
    second = tmp_path / "b"
    assert main(["train", *tiny_flags, "--method", "scratch", "--subset-file", str(first), "--out", str(second)]) == 0
    assert json.loads((second / "subset.json").read_text())["indices"] == saved["indices"]
    assert json.loads((second / "summary.json").read_text())["n_train"] == 70


@pytest.mark.parametrize("argv, message", [
    (["--per-class", "3", "--fraction", "0.5"], "--per-class and --fraction exclude each other"),
    (["--per-class", "0"], "--per-class must be at least 1"),
    (["--subset-file", "/nonexistent/subset.json"], "not a readable subset.json"),
])
def test_subset_errors(tmp_path, tiny_flags, capsys, argv, message):
    assert main(["train", *tiny_flags, *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["perspective:0.5", "rotate:30", "blur:1", "noise:0.1", "jpeg:20"])
def test_perturbed_test_set_is_deterministic_and_differs_from_clean(spec):
    test = load_dataset("digits").test
    a, b = Perturbed(test, spec, seed=0), Perturbed(test, spec, seed=0)
    for i in (0, 7):
        pa, pb = np.asarray(a[i][0]), np.asarray(b[i][0])
        assert np.array_equal(pa, pb) and a[i][1] == test[i][1]
    assert any(not np.array_equal(np.asarray(a[i][0]), np.asarray(test[i][0])) for i in range(10))
    other = Perturbed(test, spec, seed=1)
    if spec.split(":")[0] not in ("blur", "jpeg"):  # those two are not random
        assert any(not np.array_equal(np.asarray(a[i][0]), np.asarray(other[i][0])) for i in range(10))


def test_eval_perturb_records_in_the_summary(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--perturb", "perspective"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", str(out), "--perturb", "perspective:0.5"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert first["perturb"] == "perspective:0.5" and first["acc1"] == again["acc1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["perturbed"]["perspective:0.5"]["acc1"] == first["acc1"]
    assert main(["eval", "--checkpoint", str(out), "--perturb", "zoom"]) == 2
    assert "unknown kind 'zoom'" in capsys.readouterr().err


def _corrupt(path):
    path.write_bytes(path.read_bytes()[:40])  # truncated


def _bad_cases(tmp_path):
    """(name, data root, extra flags, expected message) for each kind of bad data."""
    cases = []
    folder = write_imagefolder(tmp_path / "corrupt")
    _corrupt(folder / "train" / "cat" / "1.png")
    cases.append(("imagefolder", folder, [], "cannot read image", "cat/1.png"))
    empty = write_imagefolder(tmp_path / "empty")
    for f in (empty / "train" / "dog").iterdir():
        f.unlink()
    cases.append(("imagefolder", empty, [], "holds no image", "train/dog"))
    wrong = tmp_path / "wrong"
    (wrong / "stuff").mkdir(parents=True)
    cases.append(("imagefolder", wrong, [], "does not exist; expected <data-root>/train/<class>/<image>", ""))
    chaoyang = write_chaoyang(tmp_path / "chaoyang")
    entries = json.loads((chaoyang / "train.json").read_text())
    entries[0]["label"] = 7
    (chaoyang / "train.json").write_text(json.dumps(entries))
    cases.append(("chaoyang", chaoyang, [], "label 7 is outside 0..3", ""))
    dn = write_domainnet(tmp_path / "dn")
    next((dn / "sketch" / "zebra").iterdir()).unlink()
    cases.append(("domainnet", dn, ["--domain", "sketch"], "which does not exist", "sketch_train.txt"))
    cases.append(("flowers102", tmp_path / "nothing-here", [], "does not exist", ""))
    fl = write_flowers(tmp_path / "fl")
    (fl / "jpg" / "image_00002.jpg").unlink()
    cases.append(("flowers102", tmp_path / "fl", [], "image_00002.jpg, which does not exist", ""))
    mn = write_mnist(tmp_path / "mn", gz=False)
    raw = (mn / "train-images-idx3-ubyte").read_bytes()
    (mn / "train-images-idx3-ubyte").write_bytes(raw[:1000])
    cases.append(("mnist", mn, [], "is truncated", ""))
    med = tmp_path / "med"
    write_medmnist(med)
    cases.append(("pneumoniamnist", med, ["--medmnist-size", "64"], "found pneumoniamnist.npz", ""))
    sv = write_svhn(tmp_path / "sv")
    (sv / "test_32x32.mat").write_bytes(b"not a mat file")
    cases.append(("svhn", sv, [], "is not a readable SVHN file", ""))
    csv = write_csv_lists(tmp_path / "csv")
    (csv / "test.csv").write_text("path,label\nimages/test_benign_0.png,cancer\n")
    cases.append(("csv", csv, [], "label 'cancer' does not occur in train.csv", ""))
    return cases


def test_each_bad_data_case_is_one_clear_line(tmp_path, tiny_flags, capsys):
    for name, root, flags, message, names_file in _bad_cases(tmp_path):
        code = main(["train", *tiny_flags, "--dataset", name, "--data-root", str(root), *flags, "--img-size", "16",
                     "--patch-size", "4", "--batch-size", "4", "--out", str(tmp_path / "runs" / name)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and err.startswith("ssat: error: "), err
        assert message in err and names_file in err, (name, err)


def test_bad_images_can_be_skipped_and_are_listed(tmp_path, tiny_flags, capsys):
    folder = write_imagefolder(tmp_path / "data")
    _corrupt(folder / "train" / "cat" / "1.png")
    (folder / "train" / "dog" / "0.png").write_bytes(b"")  # empty file
    out = tmp_path / "run"
    flags = [f for f in tiny_flags if f != "--quiet"]
    assert main(["train", *flags, "--dataset", "imagefolder", "--data-root", str(folder), "--on-bad-image", "skip",
                 "--img-size", "16", "--patch-size", "4", "--batch-size", "4", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "left out 2 unreadable train image(s)" in err and "cat/1.png" in err and "dog/0.png" in err
    assert json.loads((out / "summary.json").read_text())["n_train"] == 7


def test_mixed_modes_in_one_folder_load_as_rgb(tmp_path):
    folder = write_imagefolder(tmp_path / "data")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8), "L").save(folder / "train" / "cat" / "gray.png")
    Image.new("RGBA", (16, 16), (0, 0, 255, 128)).save(folder / "train" / "cat" / "alpha.png")
    Image.fromarray(np.full((16, 16), 4000, dtype=np.uint16)).save(folder / "train" / "cat" / "deep.png")
    data = load_dataset("imagefolder", str(folder))
    modes = {data.train[i][0].mode for i in range(len(data.train))}
    assert modes == {"RGB"} and len(data.train) == 12
    tensors = [torch.as_tensor(np.array(data.train[i][0])) for i in range(len(data.train))]
    assert all(t.shape == (16, 16, 3) for t in tensors)
