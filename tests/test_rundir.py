"""Ownership of a run directory: one writer at a time, finished runs kept, killed runs' debris cleaned, torn
metrics tolerated."""

import json

from ssat.cli import main
from ssat.runs import RunDir

from test_cli import run_error


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    with RunDir(out).lock():
        line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)])
    assert f"{out} is being written by pid " in line and "choose another --out" in line
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0  # released: free again


def test_a_finished_run_is_never_overwritten_without_overwrite(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    (out / "checkpoint-last.pt").unlink()  # the case that used to be overwritten silently
    before = (out / "summary.json").read_text()
    line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.05", "--method", "scratch", "--out", str(out)])
    assert "holds a finished run; choose another --out, or pass --overwrite" in line
    assert (out / "summary.json").read_text() == before
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--method", "scratch", "--overwrite",
                 "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["method"] == "scratch"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's rows are gone


def test_stale_temporary_files_are_removed_and_a_torn_metrics_line_is_dropped_on_resume(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--epochs", "1", "--out", str(out)]) == 0
    (out / "summary.json").unlink()  # as if killed after epoch 1 of 2
    (out / ".checkpoint-last.pt.abc123.tmp").write_bytes(b"x" * 1000)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "lr": 0.00')  # torn mid-append
    assert RunDir(out).read_metrics()[-1]["epoch"] == 1
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert not list(out.glob(".*.tmp"))
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2]


def test_damage_before_the_last_metrics_line_is_a_one_line_error(tmp_path, tiny_flags, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--epochs", "2", "--out", str(out)]) == 0
    (out / "summary.json").unlink()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("garbage\n" + lines[1] + "\n")
    line = run_error(capsys, ["train", "--resume", str(out), "--epochs", "3"])
    assert "metrics.jsonl line 1 is not an epoch record" in line


def test_out_that_is_a_file_or_unwritable_is_a_one_line_error(tmp_path, tiny_flags, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)])
        assert "a file is in the way of this run directory" in line


def test_a_full_disk_keeps_the_last_checkpoint_and_ends_in_one_line(tmp_path, tiny_flags, capsys, monkeypatch):
    import errno

    import torch
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--epochs", "1", "--out", str(out)]) == 0
    (out / "summary.json").unlink()
    before = (out / "checkpoint-last.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # half written ...
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    monkeypatch.setattr(torch, "save", full_disk)
    line = run_error(capsys, ["train", "--resume", str(out), "--epochs", "2"])
    assert line.startswith("ssat: error: No space left on device") and "free disk space" in line
    assert (out / "checkpoint-last.pt").read_bytes() == before and not list(out.glob(".*.tmp"))
