"""The core install stays lean: plots, energy and Grad-CAM are extras. Without them training, evaluation, sweeps
and table reports work, and what needs one says in one line which `pip install 'ssat[...]'` adds it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ssat.cli import main
from ssat.cost import EnergyMeter

EXTRAS = ("codecarbon", "matplotlib", "pytorch_grad_cam")


def test_energy_without_codecarbon_is_not_measured_and_says_how(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # what a missing package looks like to `import`
    assert EnergyMeter("USA").stop() == {"energy_kwh": None, "emissions_kg": None, "energy_note":
                                         "not measured: codecarbon is not installed (pip install 'ssat[energy]')"}


@pytest.mark.parametrize("argv, missing, message", [
    (["gradcam", "--checkpoint", "RUN"], "pytorch_grad_cam",
     "ssat: error: ssat gradcam needs pytorch_grad_cam, which is not installed; pip install 'ssat[explain]'"),
    (["reconstruct", "--checkpoint", "RUN"], "matplotlib",
     "ssat: error: ssat reconstruct needs matplotlib, which is not installed; pip install 'ssat[report]'"),
])
def test_a_command_that_needs_a_missing_extra_names_it(monkeypatch, capsys, argv, missing, message):
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.slow
def test_train_eval_and_report_work_without_any_extra(tmp_path):
    """A fresh process in which the extras cannot be imported trains on digits, evaluates and reports tables."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f'''
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {EXTRAS!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
        sys.meta_path.insert(0, Missing())
    '''))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def ssat(*args):
        return subprocess.run([sys.executable, "-m", "ssat", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    out = tmp_path / "runs" / "a"
    done = ssat("train", "--model", "vit_mini", "--epochs", "1", "--per-class", "5", "--batch-size", "16",
                "--device", "cpu", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["energy_kwh"] is None and "ssat[energy]" in summary["energy_note"]
    evaluated = ssat("eval", "--checkpoint", str(out))
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["n"] == 360
    reported = ssat("report", str(tmp_path / "runs"))
    assert reported.returncode == 0, reported.stderr
    assert reported.stderr.strip() == "ssat: warning: no plots: matplotlib is not installed; pip install 'ssat[report]'"
    assert (tmp_path / "runs" / "report" / "results.md").exists()
