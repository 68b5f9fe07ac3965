"""A run that goes non-finite stops with one line, keeps its last finite checkpoint and can go on at a lower lr."""

import json

import pytest
import torch

from conftest import run_error
from ssat import engine
from ssat.cli import main
from ssat.runs import save_weights


def _poison_after(monkeypatch, epoch_index):
    """Make the weights NaN at the end of the given (0-based) epoch, as a blown-up step would."""
    real = engine.train_one_epoch

    def epoch(model, loader, updates, epoch, **kwargs):
        stats = real(model, loader, updates, epoch, **kwargs)
        if epoch == epoch_index:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return stats
    monkeypatch.setattr(engine, "train_one_epoch", epoch)
    return real


def test_divergence_stops_before_the_checkpoint_and_resumes_at_a_lower_lr(tmp_path, tiny_flags, capsys, monkeypatch):
    out = tmp_path / "run"
    real = _poison_after(monkeypatch, 1)
    line = run_error(capsys, ["train", *tiny_flags, "--epochs", "3", "--fraction", "0.1", "--out", str(out)])
    assert "training diverged in epoch 2 (the weights are no longer finite); the checkpoint of epoch 1 is kept" in line
    assert f"ssat train --resume {out} --lr " in line
    state = torch.load(out / "checkpoint-last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert main(["train", "--resume", str(out), "--lr", "1e-4", "--clip-grad", "1.0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["lr"] == 1e-4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_divergence_in_the_first_epoch_says_to_start_again(tmp_path, tiny_flags, capsys, monkeypatch):
    _poison_after(monkeypatch, 0)
    line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.1", "--out", str(tmp_path / "r")])
    assert "training diverged in epoch 1" in line and "start again with --lr" in line


def test_resumed_lr_rescales_the_schedule():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = engine.build_scheduler(opt, epochs=10, warmup_epochs=2, updates_per_epoch=10, min_lr=1e-6)
    engine.rescale_lr(opt, sched, 0.5)
    for t, expected in ((10, 0.5 * 1e-3 * 10 / 20), (20, 0.5e-3)):
        sched.step_update(t)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


def test_eval_and_predict_refuse_non_finite_weights(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.1", "--out", str(out)]) == 0
    from safetensors import safe_open
    from safetensors.torch import load_file
    tensors = load_file(str(out / "model.safetensors"))
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    tensors["head.weight"][0, 0] = float("nan")
    save_weights(tmp_path / "nan.safetensors", tensors, meta)
    for argv in (["eval", "--checkpoint", str(tmp_path / "nan.safetensors")],
                 ["predict", "--checkpoint", str(tmp_path / "nan.safetensors"), str(tmp_path / "x.png")]):
        assert "holds non-finite weights (head.weight)" in run_error(capsys, argv)


def test_non_finite_pretrained_weights_are_named_not_reported_as_a_divergence(tmp_path, tiny_flags, capsys):
    from safetensors.torch import load_file, save_file
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--method", "scratch", "--out", str(out)]) == 0
    tensors = load_file(str(out / "model.safetensors"))
    tensors["blocks.0.norm1.weight"][0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.05", "--method", "scratch", "--pretrained",
                              str(tmp_path / "nan.safetensors"), "--out", str(tmp_path / "ft")])
    assert "holds non-finite weights (blocks.0.norm1.weight); use other weights" in line
    assert "--lr" not in line and not (tmp_path / "ft" / "metrics.jsonl").exists()
