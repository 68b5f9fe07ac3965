"""`--dataset hf`: Hugging Face data sets built with `datasets` itself (a save_to_disk folder, parquet files in the
Hub's layout, a Hub id in a cache laid out as huggingface_hub lays it out), trained, evaluated and predicted on; and
every refusal in one line. No network."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_error
from fixtures import hf_split, write_hf
from ssat.cli import main
from ssat.data import DataOptions, load_dataset
from ssat.data.files import decode
from ssat.data.registry import ArrayDataset

datasets = pytest.importorskip("datasets")
HF = ["--dataset", "hf", "--img-size", "16", "--patch-size", "4", "--batch-size", "4"]


def _load(root, splits=("train", "test"), on_bad_image="error", **options):
    return load_dataset("hf", str(root), options=DataOptions(extra=options, splits=splits, on_bad_image=on_bad_image,
                                                             log=lambda m: None))


def _save(root, **splits):
    datasets.disable_progress_bars()
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


@pytest.mark.parametrize("layout", ["disk", "parquet"])
def test_train_evaluate_and_predict_on_a_hf_set(tmp_path, tiny_flags, capsys, layout):
    root = write_hf(tmp_path / "data", layout)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, *HF, "--data-root", str(root), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 9 and summary["n_test"] == 6
    assert summary["data_source"] == str(root.resolve())
    config = (out / "config.yaml").read_text()  # what was read is recorded, so that a rerun reads the same
    assert "hf_image_column: image" in config and "hf_label_column: label" in config
    assert "hf_test_split: test" in config
    assert main(["export", str(out), "--to", str(tmp_path / "export")]) == 0
    assert "data_root: null" in (tmp_path / "export" / "ssat-config.yaml").read_text()  # not this machine's path
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["acc1"] == pytest.approx(summary["test_acc1"])
    # predict on the test images written out as files: the same decoder, the class names of the ClassLabel
    test = datasets.load_from_disk(str(root))["test"] if layout == "disk" else None
    data = _load(root)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        data.test[i][0].save(paths[-1])
    if test is not None:
        assert np.array_equal(np.asarray(test[0]["image"].convert("RGB")), np.asarray(data.test[0][0]))
    assert main(["predict", "--checkpoint", str(out), "--topk", "1", *map(str, paths)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(r["top"][0]["label"] in ("cat", "dog", "fox") for r in rows)


def test_columns_classes_and_in_memory_path_come_from_the_features(tmp_path):
    root = _save(tmp_path / "d", train=hf_split([2, 0, 1, 2], ("x", "y", "z"), image_column="img",
                                                label_column="fine"),
                 test=hf_split([0, 1], ("x", "y", "z"), image_column="img", label_column="fine"))
    data = _load(root)
    assert data.classes == ["x", "y", "z"] and data.train_targets == [2, 0, 1, 2]
    assert isinstance(data.train, ArrayDataset) and data.train.images.shape == (4, 16, 16, 3)
    assert data.native_size == 16 and data.in_chans == 3
    assert data.mean == pytest.approx(tuple(data.train.images.reshape(-1, 3).mean(0) / 255))


def test_images_go_through_the_files_decoder(tmp_path):
    """16-bit grayscale rescaled (not clipped), alpha composited on white: as image files are."""
    for mode, chans in (("I;16", 1), ("RGBA", 3)):
        split = hf_split([0, 1, 0], ("a", "b"), mode=mode, seed=3)
        root = _save(tmp_path / mode.replace(";", ""), train=split, test=split)
        data = _load(root)
        assert data.in_chans == chans
        raw = split.cast_column("image", datasets.Image(decode=False))[1]["image"]["bytes"]
        (tmp_path / "one.png").write_bytes(raw)
        expected = np.asarray(decode(tmp_path / "one.png", "L" if chans == 1 else "RGB"))
        assert np.array_equal(np.asarray(data.train[1][0]), expected)
        if mode == "I;16":
            assert expected.max() > 200  # rescaled from 16 bits, not clipped at 255


def test_several_image_sizes_are_decoded_per_item(tmp_path):
    sizes = [(16, 16), (20, 12), (9, 30)]
    root = _save(tmp_path / "d", train=hf_split([0, 1, 1], ("a", "b"), size=sizes),
                 test=hf_split([0, 1], ("a", "b"), size=sizes[:2]))
    data = _load(root)
    assert not isinstance(data.train, ArrayDataset) and data.native_size == 224
    assert [data.train[i][0].size for i in range(3)] == sizes and data.train[2][1] == 1


def test_a_set_of_several_sizes_trains_on_the_pil_path_and_its_items_survive_worker_pickling(tmp_path, tiny_flags):
    import pickle
    sizes = [(16, 16), (20, 12), (9, 30), (24, 24), (12, 12), (30, 18)]
    root = _save(tmp_path / "d", train=hf_split([0, 1, 2, 0, 1, 2], size=sizes),
                 test=hf_split([0, 1, 2], size=sizes[:3], seed=1))
    data = _load(root)
    copy = pickle.loads(pickle.dumps(data.train))  # what a DataLoader worker receives
    assert np.array_equal(np.asarray(copy[4][0]), np.asarray(data.train[4][0])) and copy[4][1] == 1
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, *HF, "--data-root", str(root), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_path"] == "pil" and summary["n_test"] == 3


def test_integer_labels_splits_and_subsets(tmp_path, tiny_flags):
    """Plain integer labels: the classes are the training values, sorted; the test split defaults to
    'validation' when there is none called 'test'; 'train+validation' joins splits; --per-class picks from them."""
    train = hf_split([5, 7, 5, 7, 5, 7], label_feature="int")
    val = hf_split([7, 5], label_feature="int", seed=2)
    root = _save(tmp_path / "d", train=train, validation=val)
    data = _load(root)
    assert data.classes == ["5", "7"] and data.train_targets == [0, 1, 0, 1, 0, 1] and data.test.labels == [1, 0]
    joined = _load(root, hf_train_split="train+validation", hf_test_split="validation")
    assert len(joined.train) == 8
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, *HF, "--data-root", str(root), "--per-class", "2", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["n_train"] == 4


def _hub_cache(tmp_path, monkeypatch, commit="0123456789abcdef0123456789abcdef01234567"):
    cache = tmp_path / "hub"
    repo = cache / "datasets--someone--tiny-set"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_hf(repo / "snapshots" / commit, "parquet")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return commit


def test_a_hub_id_reads_the_cache_and_the_run_pins_its_commit(tmp_path, tiny_flags, monkeypatch, capsys):
    commit = _hub_cache(tmp_path, monkeypatch)
    data = _load("someone/tiny-set")
    assert data.source == f"hf-hub:someone/tiny-set@{commit}" and data.pinned["hf_revision"] == commit
    assert len(data.train) == 9
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, *HF, "--data-root", "someone/tiny-set", "--out", str(out)]) == 0
    assert f"hf_revision: {commit}" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["data_source"].endswith(commit)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0  # the recorded revision is in the cache
    assert json.loads(capsys.readouterr().out)["data_root"] == "someone/tiny-set"  # a Hub id is not a path
    # the export's card names the Hub data set (and its commit); its config keeps the id, a local folder is dropped
    from huggingface_hub import ModelCard

    from ssat.config import load_yaml
    assert main(["export", str(out), "--to", str(tmp_path / "export")]) == 0
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert card.data.datasets == ["someone/tiny-set"] and f"revision {commit[:12]}" in card.text
    assert load_yaml(tmp_path / "export" / "ssat-config.yaml")["data_root"] == "someone/tiny-set"
    line = run_error(capsys, ["train", *tiny_flags, *HF, "--data-root", "someone/tiny-set", "--hf-revision",
                              "f" * 40, "--out", str(tmp_path / "r2")])
    assert "not in the Hugging Face cache" in line and "--download" in line


def test_a_hub_id_not_in_the_cache_is_one_line(tmp_path, tiny_flags, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = run_error(capsys, ["train", *tiny_flags, *HF, "--data-root", "someone/absent", "--download",
                              "--out", str(tmp_path / "r")])
    assert "someone/absent" in line and "huggingface-cli download --repo-type dataset someone/absent" in line


@pytest.mark.parametrize("case, expected", [
    ("missing image column", "--hf-image-column pic: no such column (columns: image, label)"),
    ("no label column", "no column has a ClassLabel feature and none is named 'label' (columns: image, y); pass "
                        "--hf-label-column"),
    ("string labels", "label column 'label' holds string values, not integer or ClassLabel labels"),
    ("empty split", "split 'test' of the data set has no rows"),
    ("empty parquet split", "split 'test' of the data set has no rows"),
    ("unlabelled test split", "split 'test' row 1: label -1 is not one of the 2 classes"),
    ("no such split", "--hf-test-split valid: the data set has no split 'valid' (it has train, test)"),
    ("bad image", "split 'train' row 1: column 'image' is not a readable image"),
])
def test_bad_input_is_one_line_naming_the_column_or_row(tmp_path, tiny_flags, capsys, case, expected):
    train, test, flags = hf_split([0, 1, 0], ("a", "b")), hf_split([0, 1], ("a", "b"), seed=1), []
    if case == "missing image column":
        flags = ["--hf-image-column", "pic"]
    elif case == "no label column":
        train, test = (hf_split(y, ("a", "b"), label_column="y", label_feature="int") for y in ([0, 1, 0], [0, 1]))
    elif case == "string labels":
        train, test = (hf_split(y, ("a", "b"), label_feature="string") for y in ([0, 1, 0], [0, 1]))
    elif case == "empty split":
        test = test.select([])
    elif case == "unlabelled test split":
        test = hf_split([0, -1], ("a", "b"), seed=1)
    elif case == "no such split":
        flags = ["--hf-test-split", "valid"]
    elif case == "bad image":
        rows = train.cast_column("image", datasets.Image(decode=False)).to_list()
        rows[1]["image"] = {"bytes": b"not an image", "path": None}
        train = datasets.Dataset.from_list(rows, features=datasets.Features(
            {"image": datasets.Image(decode=False), "label": train.features["label"]})).cast_column(
            "image", datasets.Image())
    elif case == "empty parquet split":
        (tmp_path / "d" / "data").mkdir(parents=True)
        train.to_parquet(str(tmp_path / "d" / "data" / "train-00000-of-00001.parquet"))
        test.select([]).to_parquet(str(tmp_path / "d" / "data" / "test-00000-of-00001.parquet"))
    root = tmp_path / "d" if case == "empty parquet split" else _save(tmp_path / "d", train=train, test=test)
    line = run_error(capsys, ["train", *tiny_flags, *HF, "--data-root", str(root), *flags,
                              "--out", str(tmp_path / "r")])
    assert expected in line
    if case == "bad image":  # --on-bad-image skip leaves the row out, and says so
        data = _load(root, on_bad_image="skip")
        assert len(data.train) == 2 and data.train_targets == [0, 0]


def test_without_the_hf_extra_it_is_one_line(tmp_path, tiny_flags, capsys, monkeypatch):
    root = write_hf(tmp_path / "d")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails as when it is not installed
    line = run_error(capsys, ["train", *tiny_flags, *HF, "--data-root", str(root), "--out", str(tmp_path / "r")])
    assert line == "ssat: error: --dataset hf needs the datasets package: pip install 'ssat[hf]'"


def test_runs_on_different_hf_sets_are_not_pooled():
    from ssat.records import mark_data_variants, setting
    runs = [dict(model="vit_tiny", dataset="hf", epochs=1, data_options={"hf_train_split": "train"},
                 data_source=source) for source in ("hf-hub:a/x@1", "hf-hub:b/y@2", "hf-hub:a/x@1")]
    mark_data_variants(runs)
    assert setting(runs[0]) == setting(runs[2]) != setting(runs[1])


def test_grayscale_sets_of_several_sizes_can_be_made_rgb(tmp_path):
    from ssat.config import Config
    from ssat.data.prepare import load_for
    split = hf_split([0, 1], ("a", "b"), mode="L", size=[(16, 16), (12, 20)])
    root = _save(tmp_path / "d", train=split, test=split)
    data = load_for(Config.from_dict({"dataset": "hf", "data_root": str(root), "gray_to_rgb": True}))
    assert data.in_chans == 3 and data.train[1][0].mode == "RGB" and data.train[1][0].size == (12, 20)
    assert Image.open  # PIL is what the items are


def test_a_validation_split_is_held_out_of_an_hf_training_split(tmp_path, tiny_flags):
    root = write_hf(tmp_path / "d", per_class=4)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, *HF, "--data-root", str(root), "--val-per-class", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (9, 3, 6)
    assert summary["selected_epoch"] == 1 and summary["test_acc1_selected"] is not None
