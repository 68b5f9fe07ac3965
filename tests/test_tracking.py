"""Following a run: --log-every lines where stderr is not a terminal, TensorBoard scalars with --log tensorboard."""

import sys

import pytest

from ssat.cli import main


def test_log_every_prints_step_lines_when_stderr_is_not_a_terminal(tmp_path, tiny_flags, capsys):
    # 60 training images, batch 15: 4 updates; a line every 2
    assert main(["train", *tiny_flags, "--no-quiet", "--per-class", "6", "--batch-size", "15", "--log-every", "2",
                 "--out", str(tmp_path / "r")]) == 0
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("step ")]
    assert [s.split()[1] for s in lines] == ["2/4", "4/4"]
    assert all(" loss_primary " in s and " loss_aux " in s and " lr " in s for s in lines)


def test_quiet_or_log_every_0_prints_no_step_line(tmp_path, tiny_flags, capsys):
    assert main(["train", *tiny_flags, "--per-class", "6", "--batch-size", "16", "--log-every", "1",
                 "--out", str(tmp_path / "a")]) == 0  # tiny_flags are --quiet
    assert main(["train", *tiny_flags, "--no-quiet", "--per-class", "6", "--batch-size", "16", "--log-every", "0",
                 "--out", str(tmp_path / "b")]) == 0
    assert not any(s.startswith("step ") for s in capsys.readouterr().err.splitlines())


def test_tensorboard_event_files_hold_the_step_and_epoch_scalars(tmp_path, tiny_flags):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "r"
    assert main(["train", *tiny_flags, "--per-class", "6", "--batch-size", "10", "--epochs", "2", "--log-every", "1",
                 "--log", "tensorboard", "--val-per-class", "1", "--out", str(out)]) == 0
    events = event_accumulator.EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_primary", "train/loss_aux", "train/w_primary", "train/lr",
            "val/val_acc1", "test/test_acc1", "epoch/loss"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))  # 50 images, batch 10: 5 per epoch
    assert [e.step for e in events.Scalars("val/val_acc1")] == [1, 2]


def test_tensorboard_missing_is_one_line(tmp_path, tiny_flags, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["train", *tiny_flags, "--per-class", "2", "--log", "tensorboard", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("ssat: error: --log tensorboard needs tensorboard, which is not "
                                               "installed; pip install 'ssat[tensorboard]'")
