"""`ssat sweep` (grid, skip finished runs, resume) and `ssat report` (tables, gains, plots, index.html)."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import run_error
from ssat.cli import main
from ssat.commands import sweep as sweep_mod
from ssat.commands.sweep import points, read_sweep
from ssat.config import Config

BASE = {"model": "vit_test", "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "batch_size": 64,
        "epochs": 1, "warmup_epochs": 0, "deterministic": True, "device": "cpu", "energy": False,
        "fraction": 0.2, "balance": "none", "val_fraction": 0.0}  # the reference weighting, no validation split


def write_sweep(tmp_path, grid, name="s", **base):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "out": str(tmp_path / "runs"), "base": {**BASE, **base},
                                    "grid": grid}, sort_keys=False))
    return path


def test_grid_drops_options_that_do_not_apply_to_scratch(tmp_path):
    spec = read_sweep(write_sweep(tmp_path, {"method": ["scratch", "ssat"], "lambda": [0.1, 0.5], "seed": [0, 1]}))
    names = [n for n, _ in points(spec)]
    assert len(names) == 6  # scratch x 2 seeds + ssat x 2 λ x 2 seeds
    assert "method=scratch-seed=0" in names and "method=ssat-lambda=0.5-seed=1" in names


def test_killed_sweep_resumes_without_repeating_finished_runs(tmp_path, monkeypatch, capsys):
    path = write_sweep(tmp_path, {"method": ["scratch", "ssat"], "lambda": [0.1, 0.9]})
    real = sweep_mod._run_here
    calls = []

    def killed_after_two(folder, options):
        calls.append(folder.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(folder, options)
    monkeypatch.setattr(sweep_mod, "_run_here", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.sweep(str(path), quiet=True)
    finished = sorted(p.parent.name for p in (tmp_path / "runs" / "s").glob("*/summary.json"))
    assert len(finished) == 2
    monkeypatch.setattr(sweep_mod, "_run_here", real)
    trained = []
    monkeypatch.setattr("ssat.training.train", lambda cfg, **kw: trained.append(cfg.out))
    results = sweep_mod.sweep(str(path), quiet=True)
    assert [r["status"] for r in results].count("done before") == 2
    assert len(trained) == 1 and all(name not in trained[0] for name in finished)


def test_report_on_real_runs_has_every_run_the_gains_and_plots(tmp_path, capsys):
    path = write_sweep(tmp_path, {"method": ["scratch", "ssat"], "lambda": [0.1, 0.9], "seed": [0, 1]})
    assert main(["sweep", str(path)]) == 0
    runs = tmp_path / "runs" / "s"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/summary.json")}
    assert len(summaries) == 6
    capsys.readouterr()
    assert main(["report", str(runs)]) == 0
    out = runs / "report"
    rows = list(csv.reader(open(out / "runs.csv")))
    assert len(rows) == 1 + 6
    table = (out / "results.md").read_text()
    scratch = [s["test_acc1"] for n, s in summaries.items() if n.startswith("method=scratch")]
    ssat01 = [s["test_acc1"] for n, s in summaries.items() if "lambda=0.1" in n]
    gain = sum(ssat01) / 2 - sum(scratch) / 2
    assert f"({gain:+.2f})" in table and "ssat (mae, λ=0.1)" in table and "[n=2]" in table
    pngs = sorted(out.glob("*.png")) + sorted((out / "curves").glob("*.png"))
    assert any(p.name.startswith("acc_vs_lambda") for p in pngs) and len(list((out / "curves").glob("*.png"))) == 6
    sizes = {Image.open(p).size for p in pngs}
    assert (600, 400) in sizes and (900, 350) in sizes
    curve_a, curve_b = sorted((out / "curves").glob("*.png"))[:2]
    assert curve_a.read_bytes() != curve_b.read_bytes()
    page = (out / "index.html").read_text()
    assert "<table>" in page and "acc_vs_lambda" in page and "curves/" in page
    assert (out / "cost.md").read_text().count("|") > 10
    # again into its own folder: replaced; into a folder of the user's: refused, the user's page untouched
    assert main(["report", str(runs)]) == 0 and (out / ".ssat-report").is_file()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my page</p>")
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(site)]) == 2
    assert "already holds files that ssat did not write there (index.html)" in capsys.readouterr().err
    assert (site / "index.html").read_text() == "<p>my page</p>" and sorted(site.iterdir()) == [site / "index.html"]
    # a report written before the marker existed (ssat's own page, only report files) is still replaced
    (out / ".ssat-report").unlink()
    assert main(["report", str(runs)]) == 0 and (out / ".ssat-report").is_file()
    (out / ".ssat-report").unlink()
    (out / "notes.txt").write_text("mine")  # ... unless something of the user's is in it
    assert main(["report", str(runs)]) == 2 and (out / "notes.txt").read_text() == "mine"


def test_sweep_errors(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = write_sweep(tmp_path, {"methd": ["scratch"]}, name="bad")
    assert main(["sweep", str(bad)]) == 2
    assert "unknown option(s) methd" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_sweep_runs_points_in_their_own_processes(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "out": str(tmp_path / "runs"), "grid": {"method": ["scratch", "ssat"]},
                                    "base": {"model": "vit_tiny", "fraction": 0.05, "epochs": 1, "warmup_epochs": 0,
                                             "energy": False, "device": "cpu"}}))
    assert main(["sweep", str(path), "--parallel", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"runs": 2, "trained": 2}
    assert len(list((tmp_path / "runs" / "p").glob("*/summary.json"))) == 2
    assert main(["sweep", str(path), "--parallel", "2"]) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out) == {"runs": 2, "trained": 0}


def test_arms_cross_the_grid_and_the_report_pairs_them_by_seed(tmp_path, capsys):
    path = tmp_path / "arms.yaml"
    path.write_text(yaml.safe_dump({
        "name": "arms", "out": str(tmp_path / "runs"),
        "base": {**BASE, "fraction": 0.3, "val_per_class": 3},
        "grid": {"seed": [0, 1]},
        "arms": {"tuned-scratch": {"method": "scratch", "blr": 2e-3},
                 "ssat-sched": {"method": "ssat", "lambda": 0.2, "lambda_schedule": "linear", "lambda_end": 0.8}}},
        sort_keys=False))
    names = [n for n, _ in points(read_sweep(str(path)))]
    assert names == ["arm=tuned-scratch-seed=0", "arm=tuned-scratch-seed=1", "arm=ssat-sched-seed=0",
                     "arm=ssat-sched-seed=1"]
    assert main(["sweep", str(path)]) == 0
    runs = tmp_path / "runs" / "arms"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/summary.json")}
    assert {s["tag"] for s in summaries.values()} == {"tuned-scratch", "ssat-sched"}
    assert main(["report", str(runs)]) == 0
    md = (runs / "report" / "results.md").read_text()
    # Three tables: test at the selected epoch (headline), test after the last epoch, validation.
    assert md.index("validation split selects") < md.index("after the last epoch") < md.index("recipes are chosen on")
    key = "test_acc1_selected"
    diffs = [summaries[f"arm=ssat-sched-seed={s}"][key] - summaries[f"arm=tuned-scratch-seed={s}"][key]
             for s in (0, 1)]
    mean = sum(diffs) / 2
    assert f"({mean:+.2f})" in md  # the gain is measured against the tagged scratch recipe
    wins = sum(d > 0 for d in diffs)
    assert f"| ssat-sched | tuned-scratch | {mean:+.2f} ± " in md and f"| {wins}/2 | 2 |" in md


def test_a_tie_computed_two_ways_is_no_win_and_no_negative_zero():
    from ssat.commands.report import paired_gains
    tie = 100 * 344 / 360  # ties between runs that got the same images right, apart from float noise
    runs = [dict(model="m", dataset="d", epochs=1, method=method, tag=tag, seed=seed, test_acc1=acc)
            for seed, (a, b) in enumerate([(tie, tie + 1e-12), (90.0, 90.0 - 1e-12), (90.0, 95.0)])
            for method, tag, acc in (("scratch", "scratch", a), ("ssat", "ssat", b))]
    [_, row] = paired_gains(runs, "test_acc1")
    assert row[4].startswith("+1.67 ± ") and row[5] == "1/3"
    [_, row] = paired_gains(runs[:4], "test_acc1")
    assert row[4] == "+0.00 ± 0.00" and row[5] == "0/2"
    [_, row] = paired_gains(runs[2:4], "test_acc1")
    assert row[4] == "+0.00 ± 0.00"
    # differences of +4, -2, -3, 0 and +1 test images of 360 sum to zero, their floats to -5.6e-17
    runs = [dict(model="m", dataset="d", epochs=1, method=method, tag=method, seed=seed, test_acc1=100 * n / 360)
            for seed, (a, b) in enumerate([(340, 344), (345, 343), (346, 343), (350, 350), (341, 342)])
            for method, n in (("scratch", a), ("ssat", b))]
    [_, row] = paired_gains(runs, "test_acc1")
    assert row[4].startswith("+0.00 ± ") and row[5] == "2/5"


def test_auxiliary_recipes_are_paired_with_every_scratch_recipe_of_their_setting():
    """`scratch-dp` = scratch with SSAT's regularisation: SSAT against it is what the auxiliary stream adds."""
    from ssat.commands.report import paired_gains
    acc = {"scratch": [90.0, 92.0], "scratch-dp": [91.0, 91.0], "ssat": [93.0, 90.0]}
    runs = [dict(model="m", dataset="d", epochs=1, method=tag.split("-")[0], tag=tag, seed=seed, test_acc1=a)
            for tag, values in acc.items() for seed, a in enumerate(values)]
    rows = {(r[2], r[3]): (r[4], r[5]) for r in paired_gains(runs, "test_acc1")[1:]}
    assert rows == {("scratch-dp", "scratch"): ("+0.00 ± 1.41", "1/2"),  # (+1, -1)
                    ("ssat", "scratch"): ("+0.50 ± 3.54", "1/2"),  # (+3, -2)
                    ("ssat", "scratch-dp"): ("+0.50 ± 2.12", "1/2")}  # (+2, -1)


def test_grid_and_arm_setting_the_same_option_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "base": BASE, "grid": {"lambda": [0.1, 0.2]},
                                    "arms": {"a": {"method": "ssat", "lambda": 0.5}}}))
    assert main(["sweep", str(path)]) == 2
    assert "lam is set both by the grid and by an arm" in capsys.readouterr().err


def test_parallel_sweep_divides_the_cpu_threads_among_its_processes(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep_mod.Children, "run",
                        lambda self, cmd, env: (seen.append(env["OMP_NUM_THREADS"]), (0, ""))[1])
    monkeypatch.setattr(sweep_mod.os, "cpu_count", lambda: 8)
    path = write_sweep(tmp_path, {"seed": [0, 1, 2]})
    sweep_mod.sweep(str(path), parallel=2, quiet=True)
    assert seen == ["4", "4", "4"]


def test_a_crashing_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    calls = []

    def train(cfg, **kw):
        calls.append(cfg.seed)
        if cfg.seed == 0:
            raise RuntimeError("boom")
    monkeypatch.setattr("ssat.training.train", train)
    path = write_sweep(tmp_path, {"seed": [0, 1, 2]})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert calls == [0, 1, 2]
    assert "failed: crashed (RuntimeError: boom)" in err and "1 of 3 sweep runs failed" in err.splitlines()[-1]


@pytest.mark.parametrize("grid,message", [
    ({"seed": []}, "grid option seed has no values"),
    ({"seed": [1, "1"]}, "two grid points map to the folder seed=1"),
    ({"seed": [[1, 2]]}, "grid option seed must list plain values"),
])
def test_empty_colliding_or_nested_grids_are_refused(tmp_path, capsys, grid, message):
    assert main(["sweep", str(write_sweep(tmp_path, grid))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@pytest.mark.slow
def test_sigterm_to_a_parallel_sweep_stops_its_children(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / "long.yaml"  # subprocesses know only the registered models: vit_mini, small and quick
    path.write_text(yaml.safe_dump({"name": "s", "out": str(tmp_path / "runs"), "grid": {"seed": [0, 1]},
                                    "base": {"model": "vit_mini", "per_class": 2, "epochs": 500, "warmup_epochs": 0,
                                             "energy": False, "device": "cpu", "method": "scratch"}}))
    sweep = subprocess.Popen([sys.executable, "-m", "ssat", "sweep", str(path), "--parallel", "2"],
                             stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs" / "s"
    deadline = time.time() + 120
    while time.time() < deadline and len([p for p in runs.glob("*/metrics.jsonl")]) < 2:
        time.sleep(0.2)
    pids = [int(p.read_text().split()[1]) for p in runs.glob("*/.lock")]
    assert len(pids) == 2
    sweep.send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=60) == 130
    for pid in pids:  # the children are gone, not training on unattended
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive
    assert "interrupted" in sweep.stderr.read()


def test_sweep_plots_never_pool_runs_of_other_settings(tmp_path):
    """An epochs plot holds image size and data amount fixed; a λ plot also the balance (one plot per setting)."""
    from ssat.commands.report import plot_sweeps
    runs = [{"run": f"r{i}", "model": "m", "dataset": "d", "method": method, "img_size": size, "per_class": None,
             "fraction": 1.0, "epochs": epochs, "lambda": lam, "balance": balance, "lambda_schedule": "constant",
             "test_acc1": 50.0 + i, "seed": 0}
            for i, (method, size, epochs, lam, balance) in enumerate(
                [(m, s, e, lam, b)
                 for m, lam, b in (("scratch", None, None), ("ssat", 0.1, "none"), ("ssat", 0.9, "ema"))
                 for s in (8, 32) for e in (20, 100)])]
    names = sorted(p.name for p in plot_sweeps(runs, tmp_path))
    assert names == ["acc_vs_epochs-d-m-32px-frac1.png", "acc_vs_epochs-d-m-8px-frac1.png"]


COMMITTED_SWEEPS = sorted(str(p) for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml")
                          if {"grid", "arms"} & set(yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("path", COMMITTED_SWEEPS, ids=lambda p: Path(p).name)
def test_every_committed_sweep_file_expands_to_valid_runs(path):
    """The study and example sweep files are what the README and docs/study.md tell people to run: an option
    misspelt or out of range there must fail here, not an hour into a sweep."""
    runs = points(read_sweep(path))
    assert runs
    for _, options in runs:
        Config.from_dict(options).validate()


def test_the_prepared_gpu_study_runs_and_reports_on_cpu_at_one_epoch(tmp_path):
    """benchmarks/gpu_study.sh has never had a GPU: its sweep file and report step run here at one epoch on a
    fifth of the data, so the GPU session only has to wait for the numbers."""
    root = Path(__file__).parents[1]
    script = (root / "benchmarks" / "gpu_study.sh").read_text()
    spec = read_sweep(str(root / "configs" / "study" / "digits-gpu.yaml"))
    assert "ssat sweep configs/study/digits-gpu.yaml" in script and f"ssat report runs/{spec['name']}" in script
    spec["base"].update(epochs=1, warmup_epochs=0, device="cpu", fraction=0.2)
    spec["grid"]["seed"] = [0]
    spec["out"] = str(tmp_path / "runs")
    path = tmp_path / "gpu-smoke.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path)]) == 0
    runs = tmp_path / "runs" / spec["name"]
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert sorted((s["tag"], s["img_size"]) for s in summaries) == sorted(
        (arm, size) for arm in spec["arms"] for size in spec["grid"]["img_size"])
    assert main(["report", str(runs)]) == 0
    md = (runs / "report" / "results.md").read_text()
    assert all(f"| {arm} |" in md for arm in spec["arms"] if arm != "scratch")


def _eval_sweep(tmp_path, eval_on, name="ev", **extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "out": str(tmp_path / "runs"), "base": {**BASE, **extra},
                                    "grid": {"method": ["scratch"]}, "eval_on": eval_on}, sort_keys=False))
    return path


def test_eval_on_of_image_runs_is_recorded_and_keyed_on_its_data_root(tmp_path, capsys, monkeypatch):
    from fixtures import write_imagefolder
    from ssat import inference
    train_root = write_imagefolder(tmp_path / "a", per_class=4, size=8)
    other = write_imagefolder(tmp_path / "b", per_class=4, size=8)
    wrong = write_imagefolder(tmp_path / "wrong", per_class=1, size=8)
    base = dict(dataset="imagefolder", data_root=str(train_root), img_size=8, patch_size=2, fraction=1.0)
    assert main(["sweep", str(_eval_sweep(tmp_path, [{"data_root": str(wrong)}], **base))]) == 0
    summary_path = tmp_path / "runs" / "ev" / "method=scratch" / "summary.json"
    first = json.loads(summary_path.read_text())["evaluations"]["imagefolder"]
    assert first["n"] == 3 and first["data_root"] == str(wrong.resolve())  # recorded, not thrown away
    calls = []
    real = inference.evaluate_checkpoint
    monkeypatch.setattr(inference, "evaluate_checkpoint", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(["sweep", str(_eval_sweep(tmp_path, [{"data_root": str(wrong)}], **base))]) == 0
    assert calls == []  # the same evaluation: done before
    assert main(["sweep", str(_eval_sweep(tmp_path, [{"data_root": str(other)}], **base))]) == 0
    fixed = json.loads(summary_path.read_text())["evaluations"]["imagefolder"]
    assert len(calls) == 1 and fixed["data_root"] == str(other.resolve()) and fixed["n"] == 12


@pytest.mark.parametrize("entry,message", [
    ({"dataset": "digitz"}, "unknown data set 'digitz'"),
    ({"manipulation": "Face2Face"}, "eval_on entry {'manipulation': 'Face2Face'} must map some of"),
    ("celebdf", "eval_on entry 'celebdf' must map some of"),
])
def test_a_malformed_eval_on_entry_is_refused_before_any_run_and_by_dry_run(tmp_path, capsys, monkeypatch, entry,
                                                                            message):
    trained = []
    monkeypatch.setattr("ssat.training.train", lambda cfg, **kw: trained.append(cfg.out))
    for dry in (["--dry-run"], []):
        line = run_error(capsys, ["sweep", str(_eval_sweep(tmp_path, [entry])), *dry])
        assert message in line
    assert trained == [] and not (tmp_path / "runs").exists()


def test_a_malformed_eval_perturb_is_refused_before_any_run(tmp_path, capsys):
    path = write_sweep(tmp_path, {"method": ["scratch"]})
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "eval_perturb": ["perspectiv:0.5"]}))
    assert "perspectiv" in run_error(capsys, ["sweep", str(path), "--dry-run"])
    assert not (tmp_path / "runs").exists()
