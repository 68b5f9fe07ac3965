"""One definition of which runs are comparable: `ssat table` pairs each run with the scratch run `ssat report`
pairs it with (same setting and seed), whatever order the runs are given in."""

import itertools
import json

import pytest

from ssat.cli import main
from ssat.records import collect, grouped, mark_data_variants, paired_baseline, setting


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Two scratch runs that differ only in --per-class, and an SSAT run at one of them."""
    import tiny_model  # noqa: F401 (imported to register vit_test)
    from conftest import TINY, as_flags
    root = tmp_path_factory.mktemp("records")
    runs = {"scratch-4": ("scratch", 4), "scratch-8": ("scratch", 8), "ssat-4": ("ssat", 4)}
    for name, (method, per_class) in runs.items():
        assert main(["train", *as_flags(TINY), "--method", method, "--per-class", str(per_class), "--seed", "1",
                     "--out", str(root / name)]) == 0
    return {name: root / name for name in runs}


def _vs_scratch(table: str, run: str) -> str:
    row = next(line for line in table.splitlines() if line.startswith(f"| {run} |"))
    return row.split("|")[7].strip()


def test_table_pairs_each_run_with_the_scratch_run_of_its_own_per_class_in_any_order(three_runs, capsys):
    summaries = {n: json.loads((p / "summary.json").read_text()) for n, p in three_runs.items()}
    assert summaries["scratch-4"]["test_acc1"] != summaries["scratch-8"]["test_acc1"]  # else the test proves nothing
    expected = f"{summaries['ssat-4']['test_acc1'] - summaries['scratch-4']['test_acc1']:+.2f}"
    for order in itertools.permutations(three_runs):
        capsys.readouterr()
        assert main(["table", *(str(three_runs[n]) for n in order)]) == 0
        table = capsys.readouterr().out
        assert _vs_scratch(table, str(three_runs["ssat-4"])) == expected, order
        assert _vs_scratch(table, str(three_runs["scratch-8"])) == ""


def test_table_and_report_share_one_setting_key(three_runs):
    runs = mark_data_variants(collect([str(p) for p in three_runs.values()]))
    groups = grouped(runs)
    by_name = {r["run"].rsplit("/", 1)[-1]: r for r in runs}
    assert setting(by_name["scratch-4"]) != setting(by_name["scratch-8"])
    assert paired_baseline(by_name["ssat-4"], groups) is by_name["scratch-4"]
    assert paired_baseline(by_name["scratch-4"], groups) is None


def test_runs_written_before_the_best_rename_read_back_under_the_new_names(tmp_path):
    """best_acc1 was the test maximum while model-best / --best meant the validation-selected epoch: the maximum is
    now test_acc1_max, the file model-selected.safetensors; older runs' names still read."""
    from ssat.records import read_summary
    from ssat.runs import RunDir
    from ssat.training.loop import Tally
    old = {"method": "ssat", "model": "vit_tiny", "dataset": "digits", "epochs": 2, "test_acc1": 90.0,
           "test_acc5": 99.0, "train_time_s": 1.0, "params": 5, "best_acc1": 91.0, "best_epoch": 1}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = read_summary(tmp_path / "summary.json")
    assert summary["test_acc1_max"] == 91.0 and summary["test_max_epoch"] == 1 and "best_acc1" not in summary
    tally = Tally.from_checkpoint({"epoch": 2, "best_acc1": 91.0, "best_epoch": 1, "optimizer": {}})
    assert (tally.epoch, tally.test_acc1_max, tally.test_max_epoch) == (2, 91.0, 1)
    run = RunDir(tmp_path)
    assert run.selected_weights().name == "model-selected.safetensors"
    (tmp_path / "model-best.safetensors").write_bytes(b"x")
    assert run.selected_weights().name == "model-best.safetensors"  # an older run's selected weights
    (tmp_path / "model-selected.safetensors").write_bytes(b"y")
    assert run.selected_weights().name == "model-selected.safetensors"
