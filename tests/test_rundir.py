"""Ownership of a run directory: one writer at a time, finished runs kept, killed runs' debris cleaned, torn
metrics tolerated."""

import json

from conftest import run_error
from ssat.cli import main
from ssat.runs import RunDir


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


# --- nothing of the user's is touched (issue 27, case 1) ----------------------------------------------------

def _user_files(folder):
    """A folder as a user keeps it: names that collide with a run's files, a hidden temporary, a note."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": "# my commented config\nepochs: 3\n", "metrics.jsonl": "my metrics\n",
             "model-best.safetensors": "not ssat's", "energy.json": "{}", "subset.json": "[]",
             ".data.tmp": "keep me", ".config.yaml.x.tmp": "mine too", "notes.txt": "my notes"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def _unchanged(folder, files):
    assert sorted(p.name for p in folder.iterdir()) == sorted(files), "a file was added or removed"
    for name, text in files.items():
        assert (folder / name).read_text() == text, name


def test_out_into_a_folder_of_the_users_is_refused_and_nothing_in_it_is_touched(tmp_path, tiny_flags, capsys):
    folder = tmp_path / "project"
    files = _user_files(folder)
    for extra in ([], ["--overwrite"]):
        line = run_error(capsys, ["train", *tiny_flags, "--fraction", "0.05", "--out", str(folder), *extra])
        assert "already holds files that ssat did not write there" in line and "choose a new or empty folder" in line
        _unchanged(folder, files)


def test_out_dot_in_a_project_folder_keeps_the_users_config(tmp_path, tiny_flags, capsys, monkeypatch):
    files = _user_files(tmp_path / "proj")
    monkeypatch.chdir(tmp_path / "proj")
    line = run_error(capsys, ["train", "--config", "config.yaml", *tiny_flags, "--fraction", "0.05", "--out", "."])
    assert "--out . already holds files" in line
    _unchanged(tmp_path / "proj", files)


def test_an_empty_folder_becomes_a_run_and_only_its_own_files_are_ever_removed(tmp_path, tiny_flags):
    out = tmp_path / "run"
    out.mkdir()
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    assert (out / ".ssat-run").is_file()
    (out / "my-notes.txt").write_text("kept")  # the user adds files to a run directory later
    (out / ".plot.png.tmp").write_text("kept too")
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--method", "scratch", "--overwrite",
                 "--out", str(out)]) == 0
    assert (out / "my-notes.txt").read_text() == "kept" and (out / ".plot.png.tmp").read_text() == "kept too"


def test_out_with_a_tilde_goes_to_the_home_folder_not_a_literal_tilde(tmp_path, tiny_flags, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", "~/runs/x"]) == 0
    assert (tmp_path / "home" / "runs" / "x" / "summary.json").is_file() and not (tmp_path / "~").exists()


def test_a_run_written_before_the_marker_still_resumes(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--epochs", "1", "--out", str(out)]) == 0
    (out / "summary.json").unlink()
    (out / ".ssat-run").unlink()  # as an older ssat left it
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert (out / ".ssat-run").is_file() and len(RunDir(out).read_metrics()) == 2


def test_a_refused_resume_leaves_config_yaml_as_it_was(tmp_path, tiny_flags, capsys):
    import torch
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--epochs", "1", "--out", str(out)]) == 0
    (out / "summary.json").unlink()
    state = torch.load(out / "checkpoint-last.pt", weights_only=True)
    state["model"].pop(next(iter(state["model"])))  # damaged: a tensor is missing
    torch.save(state, out / "checkpoint-last.pt")
    before = (out / "config.yaml").read_text()
    line = run_error(capsys, ["train", "--resume", str(out), "--epochs", "3"])
    assert "does not match this model" in line
    assert (out / "config.yaml").read_text() == before
