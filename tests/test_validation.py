"""The validation split (stratified, seeded, disjoint, saved), best-epoch selection on it, and --eval-every."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_error
from ssat.cli import main
from ssat.data import load_dataset
from ssat.data.subsets import choose, validation_split


def test_validation_split_is_stratified_reproducible_and_disjoint():
    targets = load_dataset("digits").train_targets
    everything = list(range(len(targets)))
    train, val = validation_split(targets, everything, fraction=0.1, seed=127)
    assert set(train).isdisjoint(val) and sorted(train + val) == everything
    per_class = np.bincount(targets)
    assert np.array_equal(np.bincount(np.asarray(targets)[val], minlength=10), np.round(0.1 * per_class))
    assert validation_split(targets, everything, fraction=0.1, seed=127) == (train, val)  # same seed, same split
    assert validation_split(targets, everything, fraction=0.1, seed=128)[1] != val
    _, three = validation_split(targets, everything, n_per_class=3, seed=0)
    assert list(np.bincount(np.asarray(targets)[three])) == [3] * 10


def test_validation_is_carved_from_the_training_subset_and_every_class_keeps_an_image():
    targets = [0] * 5 + [1] * 2 + [2]
    train, val = validation_split(targets, list(range(8)), n_per_class=4, seed=0)
    assert sorted(np.asarray(targets)[train].tolist()) == [0, 1, 2]  # one of each class stays in training
    assert len(val) == 5
    sub, val = choose(load_dataset("digits").train_targets, fraction=0.2, seed=5, val_fraction=0.25)
    full, _ = choose(load_dataset("digits").train_targets, fraction=0.2, seed=5)
    assert sorted(sub + val) == full and set(sub).isdisjoint(val)


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_validation_selects_on_it_and_tests_only_at_the_end(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--epochs", "3", "--val-fraction", "0.2", "--fraction", "0.3",
                 "--out", str(out)]) == 0
    rows = _metrics(out)
    assert all(r["val_acc1"] is not None for r in rows)
    assert [r["test_acc1"] is not None for r in rows] == [False, False, True]  # default: only after the last
    subset = json.loads((out / "subset.json").read_text())
    assert set(subset["indices"]).isdisjoint(subset["val_indices"]) and len(subset["val_indices"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_val"] == len(subset["val_indices"]) and summary["n_train"] == len(subset["indices"])
    best = max(rows, key=lambda r: (r["val_acc1"], -r["val_loss"]))
    assert summary["selected_epoch"] == best["epoch"] and summary["val_acc1_selected"] == best["val_acc1"]
    assert summary["test_acc1"] == rows[-1]["test_acc1"]
    # The selected weights are kept and give the reported test accuracy.
    selected = load_file(str(out / "model-selected.safetensors"))
    assert main(["eval", "--checkpoint", str(out / "model-selected.safetensors")]) == 0
    assert summary["test_acc1_selected"] is not None
    final = load_file(str(out / "model.safetensors"))
    if summary["selected_epoch"] == 3:
        assert all(torch.equal(selected[k], final[k]) for k in final)


def test_eval_on_the_selected_weights_matches_the_summary(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--epochs", "3", "--val-fraction", "0.2", "--fraction", "0.3",
                 "--out", str(out), "--blr", "3e-2"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "model-selected.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc1"] == pytest.approx(json.loads((out / "summary.json").read_text())["test_acc1_selected"])


@pytest.mark.parametrize("flags,tested", [
    ([], [True, True, True, True]),                                   # no validation split: every epoch
    (["--eval-every", "2"], [False, True, False, True]),
    (["--eval-every", "3"], [False, False, True, True]),               # and always after the last
    (["--eval-every", "0"], [False, False, False, True]),
    (["--val-per-class", "2"], [False, False, False, True]),           # with a validation split: at the end
    (["--val-per-class", "2", "--eval-every", "1"], [True, True, True, True]),
])
def test_eval_every_evaluates_the_test_split_exactly_when_asked(tmp_path, tiny_flags, flags, tested, monkeypatch):
    from ssat import engine
    calls = []
    real = engine.evaluate

    def counting(classifier, loader, **kw):
        calls.append(len(loader.images))
        return real(classifier, loader, **kw)
    monkeypatch.setattr(engine, "evaluate", counting)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--epochs", "4", "--per-class", "8", "--out", str(out), *flags]) == 0
    assert [r["test_acc1"] is not None for r in _metrics(out)] == tested
    assert calls.count(360) == sum(tested)  # the 360-image test split, no more often than that


def test_resume_keeps_the_validation_split_and_selection(tmp_path, tiny_flags, monkeypatch):
    from ssat import engine
    flags = [*tiny_flags, "--epochs", "3", "--fraction", "0.3", "--val-fraction", "0.2", "--warmup-epochs", "1"]
    full = tmp_path / "full"
    assert main(["train", *flags, "--out", str(full)]) == 0
    real, calls = engine.train_one_epoch, {"n": 0}

    def killed_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_third_epoch)
    killed = tmp_path / "killed"
    assert main(["train", *flags, "--out", str(killed)]) == 130
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert main(["train", "--resume", str(killed)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, killed))
    for key in ("selected_epoch", "val_acc1_selected", "test_acc1_selected", "test_acc1", "n_val"):
        assert a[key] == b[key], key
    assert json.loads((full / "subset.json").read_text()) == json.loads((killed / "subset.json").read_text())


def test_weights_and_gradient_norms_are_logged_every_epoch(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--epochs", "2", "--fraction", "0.2", "--batch-size", "16",
                 "--lambda", "0.2", "--lambda-schedule", "linear", "--lambda-end", "0.8", "--grad-norm-every", "2",
                 "--out", str(out)]) == 0
    rows = _metrics(out)
    assert 0.2 < rows[0]["w_primary"] < 0.5 < rows[1]["w_primary"] < 0.8  # epoch means of a rising λ
    assert all(r["w_primary"] + r["w_aux"] == pytest.approx(1.0) for r in rows)
    assert all(r["grad_norm_primary"] > 0 and r["grad_norm_aux"] > 0 and -1 <= r["grad_cos"] <= 1 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["lambda_schedule"], summary["lambda_end"], summary["balance"]) == ("linear", 0.8, "none")
    assert summary["final_w_primary"] == rows[-1]["w_primary"]


def test_scratch_logs_no_weights(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--method", "scratch", "--fraction", "0.1", "--out", str(out)]) == 0
    (row,) = _metrics(out)
    assert "w_primary" not in row and "grad_norm_aux" not in row
    assert json.loads((out / "summary.json").read_text())["balance"] is None


@pytest.mark.parametrize("argv,message", [
    (["--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1.0"),
    (["--val-fraction", "-0.1"], "--val-fraction must be in [0, 1)"),
    (["--val-fraction", "nan"], "option 'val_fraction' must be a finite number, got nan"),
    (["--lr", "inf"], "option 'lr' must be a finite number, got inf"),
    (["--val-per-class", "0"], "--val-per-class must be at least 1, got 0"),
    (["--val-per-class", "2", "--val-fraction", "0.1"], "--val-per-class and --val-fraction exclude each other"),
    (["--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
    (["--eval-every", "1.5"], "option 'eval_every' must be a int, got '1.5'"),
    (["--lambda-schedule", "cosine"], "--lambda-schedule cosine moves λ from --lambda to --lambda-end; give "
                                      "--lambda-end"),
    (["--lambda-schedule", "step", "--lambda-end", "0.5"], "unknown lambda-schedule 'step'; choose one of: "
                                                           "constant, cosine, linear"),
    (["--lambda-end", "1.2"], "--lambda-end must be in [0, 1], got 1.2"),
    (["--balance", "gradnorm"], "unknown balance 'gradnorm'; choose one of: ema, none, uncertainty"),
    (["--grad-norm-every", "-5"], "--grad-norm-every must be >= 0, got -5"),
    (["--per-class", "1", "--val-per-class", "1"], "holds out no image of 10 training images"),
])
def test_bad_weighting_and_validation_options_are_one_line_errors(capsys, tmp_path, tiny_flags, argv, message):
    assert message in run_error(capsys, ["train", *tiny_flags, "--out", str(tmp_path / "r"), *argv])


def test_defaults_are_the_studys_choice_and_paper_restores_the_reference():
    from ssat.config import Config
    default = Config()
    assert (default.balance, default.lam, default.val_fraction, default.eval_every) == ("ema", 0.9, 0.1, None)
    paper = Config.from_dict({"preset": "paper"})
    assert (paper.balance, paper.lam, paper.val_fraction, paper.eval_every) == ("none", 0.1, 0.0, 1)
    small = Config.from_dict({"preset": "small"})
    assert (small.model, small.batch_size, small.lr, small.drop_path, small.crop, small.balance, small.lam) == \
        ("vit_mini", 32, 1e-3, 0.1, "auto", "ema", 0.9)  # auto: no pad-crop at 8 px, the pad-crop at 32 px


def test_make_demo_trains_each_method_with_the_recipe_the_study_scored():
    """The README says `make demo` runs each method with the recipe the digits study chose and scored over 5 seeds
    (the 20-epoch cell without the pad-crop): the Makefile's two commands must resolve to that cell's arms."""
    import dataclasses
    import shlex

    from ssat.cli import build_parser
    from ssat.commands.sweep import points, read_sweep
    from ssat.commands.train import config_from_args
    from ssat.config import Config
    from ssat.data import load_dataset
    from ssat.data.transforms import crop_mode
    from ssat.training import resolve_for_data
    digits = load_dataset("digits")
    root = Path(__file__).parents[1]
    cells = dict(points(read_sweep(str(root / "configs/study/digits-final-nocrop-short-8px.yaml"))))
    # what may differ: where the run goes and how it is labelled, and settings that resolve to the cell's values
    # on the demo's CPU (native size and patch, fp32, test set evaluated at the end)
    free = {"out", "tag", "preset", "energy", "precision", "img_size", "patch_size", "eval_every", "crop"}
    commands = [shlex.split(line.split("-m ssat", 1)[1]) for line in (root / "Makefile").read_text().splitlines()
                if "ssat train --config configs/demo.yaml" in line]
    assert len(commands) == 2
    for argv in commands:
        cfg, _ = config_from_args(build_parser().parse_args(argv))
        study = Config.from_dict(cells[f"arm={cfg.method}-epochs=20-img_size=8-seed=0"])
        differ = {f.name for f in dataclasses.fields(Config) if getattr(cfg, f.name) != getattr(study, f.name)}
        assert differ <= free, (cfg.method, sorted(differ - free))
        assert resolve_for_data(cfg, digits).crop == crop_mode(study) == "none"  # as training resolves 'auto'


def test_a_default_run_holds_out_a_tenth_and_reports_both_test_numbers(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "vit_test", "--epochs", "2", "--fraction", "0.3", "--no-energy", "--quiet",
                 "--decoder-dim", "16", "--decoder-heads", "2", "--decoder-depth", "1", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    subset = json.loads((out / "subset.json").read_text())
    held = {c: max(1, round(0.1 * (n + subset["val_class_counts"][c]))) for c, n in subset["class_counts"].items()}
    assert summary["balance"] == "ema" and subset["val_class_counts"] == held
    assert summary["n_val"] == sum(held.values()) == len(subset["val_indices"])
    assert printed["test_acc1_selected"] == summary["test_acc1_selected"] is not None
    assert printed["test_acc1"] == summary["test_acc1"]
