"""Every file ssat reads, damaged in seeded random ways (truncated, bytes flipped, garbage, wrong JSON types):
each command either succeeds or exits 2 with one `ssat: error:` line, never a traceback."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fixtures import write_chaoyang, write_csv_lists
from ssat.cli import main

CASES = 6  # corruptions per file kind (seeded): enough to hit truncation, flips, garbage and wrong types


def corruptions(data: bytes, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [b"", data[: len(data) // 2], data[: max(1, len(data) - 7)], rng.bytes(64)]
    for _ in range(CASES - len(out)):
        flipped = bytearray(data)
        for i in rng.integers(0, max(1, len(data)), size=8):
            flipped[int(i)] = int(rng.integers(0, 256))
        out.append(bytes(flipped))
    try:  # JSON files: the same keys with values of the wrong type
        text = data.decode()
        obj = json.loads(text) if not text.lstrip().startswith("{\"epoch\"") else json.loads(text.splitlines()[0])
        if isinstance(obj, dict):
            out.append(json.dumps({k: [1, "x"] for k in obj}).encode())
            out.append(json.dumps([obj]).encode())
        elif isinstance(obj, list):
            out.append(json.dumps([{"name": 3, "label": "x"}] + obj).encode())
            out.append(json.dumps({"x": obj}).encode())
    except (UnicodeDecodeError, ValueError):
        pass
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import tiny_model  # noqa: F401 (imported to register vit_test)
    from conftest import TINY, as_flags
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(["train", *as_flags(TINY), "--fraction", "0.05", "--val-per-class", "1", "--out", str(out)]) == 0
    return out


def check(capsys, argv):
    code = main(argv)  # an exception other than UserError escapes main() and fails the test: a traceback
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ssat: error: "), (argv, err)


def _variants(src: Path, seed: int):
    for i, data in enumerate(corruptions(src.read_bytes(), seed)):
        yield i, data


@pytest.mark.parametrize("name", ["checkpoint-last.pt", "model.safetensors", "model-selected.safetensors"])
def test_damaged_weights(tmp_path, capsys, finished_run, name):
    for i, data in _variants(finished_run / name, seed=len(name)):
        bad = tmp_path / f"{i}-{name}"
        bad.write_bytes(data)
        check(capsys, ["eval", "--checkpoint", str(bad)])
        check(capsys, ["predict", "--checkpoint", str(bad), str(tmp_path / "missing.png")])
        check(capsys, ["export", str(bad), "--to", str(tmp_path / f"export-{i}")])
        if name == "checkpoint-last.pt":
            run = tmp_path / f"resume-{i}"
            shutil.copytree(finished_run, run)
            (run / name).write_bytes(data)
            (run / "summary.json").unlink()
            check(capsys, ["train", "--resume", str(run)])


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl"])
def test_damaged_run_records(tmp_path, capsys, finished_run, name):
    for i, data in _variants(finished_run / name, seed=len(name)):
        run = tmp_path / f"runs-{i}" / "run"
        shutil.copytree(finished_run, run)
        (run / name).write_bytes(data)
        check(capsys, ["table", str(run.parent)])
        check(capsys, ["report", str(run.parent)])


def test_damaged_subset_and_config_files(tmp_path, capsys, finished_run, tiny_flags):
    for i, data in _variants(finished_run / "subset.json", seed=1):
        (tmp_path / f"s{i}.json").write_bytes(data)
        check(capsys, ["train", *tiny_flags, "--subset-file", str(tmp_path / f"s{i}.json"),
                       "--out", str(tmp_path / f"r{i}")])
    for i, data in _variants(finished_run / "config.yaml", seed=2):
        (tmp_path / f"c{i}.yaml").write_bytes(data)
        check(capsys, ["train", "--config", str(tmp_path / f"c{i}.yaml"), "--epochs", "1", "--fraction", "0.05",
                       "--model", "vit_test", "--no-energy", "--quiet", "--out", str(tmp_path / f"rc{i}")])
        sweep = tmp_path / f"sweep{i}.yaml"
        sweep.write_bytes(b"name: x\nbase:\n" + b"".join(b"  " + line + b"\n" for line in data.splitlines()))
        check(capsys, ["sweep", str(sweep), "--dry-run"])
        sweep.write_bytes(data)
        check(capsys, ["sweep", str(sweep), "--dry-run"])


@pytest.mark.parametrize("kind", ["csv", "chaoyang"])
def test_damaged_split_files(tmp_path, capsys, tiny_flags, kind):
    root = tmp_path / "data"
    write_csv_lists(root) if kind == "csv" else write_chaoyang(root)
    split = root / ("train.csv" if kind == "csv" else "train.json")
    original = split.read_bytes()
    for i, data in _variants(split, seed=3):
        split.write_bytes(data)
        check(capsys, ["train", *tiny_flags, "--dataset", kind, "--data-root", str(root), "--img-size", "8",
                       "--out", str(tmp_path / f"r{i}")])
    split.write_bytes(original)


def test_damaged_images_in_predict(tmp_path, capsys, finished_run):
    from PIL import Image
    png = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(png)
    for i, data in _variants(png, seed=4):
        bad = tmp_path / f"{i}.png"
        bad.write_bytes(data)
        check(capsys, ["predict", "--checkpoint", str(finished_run), str(bad)])


@pytest.mark.parametrize("key", ["rng", "epoch", "config", "optimizer"])
def test_a_checkpoint_missing_a_key_cannot_resume(tmp_path, capsys, finished_run, key):
    import torch
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    state = torch.load(run / "checkpoint-last.pt", weights_only=True)
    del state[key]
    torch.save(state, run / "checkpoint-last.pt")
    check(capsys, ["train", "--resume", str(run)])
    assert main(["train", "--resume", str(run)]) == 2
    assert f"is damaged: '{key}' is missing or malformed" in capsys.readouterr().err


@pytest.mark.parametrize("meta", [{"config": "[1, 2]"}, {"data": json.dumps({"in_chans": 1})},
                                  {"data": json.dumps({"classes": "0123", "in_chans": 1, "mean": [0], "std": [1]})}])
def test_safetensors_with_malformed_metadata_is_one_line(tmp_path, capsys, finished_run, meta):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(finished_run / "model.safetensors"), "pt") as f:
        metadata = {**f.metadata(), **meta}
    save_file(load_file(str(finished_run / "model.safetensors")), str(tmp_path / "m.safetensors"), metadata=metadata)
    assert main(["eval", "--checkpoint", str(tmp_path / "m.safetensors")]) == 2
    assert "its ssat metadata is malformed" in capsys.readouterr().err


def test_export_metadata_edited_at_random_is_refused_or_exported_faithfully(tmp_path, capsys, finished_run,
                                                                           monkeypatch):
    """Seeded edits of the timm / config / data metadata: export either refuses in one line or writes a folder
    that timm reloads to ssat's logits; timm.create_model never sees an argument ssat did not write."""
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(finished_run / "model.safetensors"), "pt") as f:
        original = {k: json.loads(v) for k, v in f.metadata().items()}
    tensors = load_file(str(finished_run / "model.safetensors"))
    seen = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: seen.append(set(k)) or real(*a, **k))
    rng = np.random.default_rng(5)
    values = [None, -1, 0, 3, 2.5, "x", "../../etc/passwd", [1, 2], {"a": 1}, True, 1e9]
    for i in range(24):
        meta = json.loads(json.dumps(original))
        section = ["timm", "config", "data"][i % 3]
        keys = sorted(meta[section]) + ["checkpoint_path", "pretrained_cfg_overlay", "drop_rate"]
        meta[section][keys[int(rng.integers(len(keys)))]] = values[int(rng.integers(len(values)))]
        path = tmp_path / f"m{i}.safetensors"
        save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
        check(capsys, ["export", str(path), "--to", str(tmp_path / f"x{i}")])
    injected = {"checkpoint_path", "pretrained_cfg_overlay", "drop_rate"}
    assert seen and not any(k & injected for k in seen), seen
