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


def test_wandb_logs_steps_and_epochs_offline_without_an_account(tmp_path, tiny_flags, monkeypatch):
    """What ssat sends to W&B (a stand-in records it), then the real package writing an offline run."""
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append((step, sorted(values)))

        def finish(self):
            calls.append("finish")

    class FakeWandb:
        @staticmethod
        def init(project, name, dir, config, mode):
            calls.append(("init", project, name, mode, config["method"]))
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["train", *tiny_flags, "--per-class", "6", "--batch-size", "15", "--log-every", "2", "--log", "wandb",
                 "--out", str(tmp_path / "r")]) == 0
    assert calls[0] == ("init", "ssat", "r", "offline", "ssat")
    assert [c[0] for c in calls[1:-1]] == [2, 4, 4] and calls[-1] == "finish"  # two steps, then epoch 1 at update 4
    assert "train/loss_aux" in calls[1][1] and {"epoch", "test/test_acc1", "epoch/loss"} <= set(calls[3][1])

    monkeypatch.undo()
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "real"
    assert main(["train", *tiny_flags, "--per-class", "2", "--log", "wandb", "--out", str(out)]) == 0
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_wandb_missing_is_one_line(tmp_path, tiny_flags, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["train", *tiny_flags, "--per-class", "2", "--log", "wandb", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == ("ssat: error: --log wandb needs wandb, which is not installed; "
                                               "pip install 'ssat[wandb]'")
