"""`ssat table RUN...`: a side-by-side table of finished runs, read from their summary.json files."""

from __future__ import annotations

import json
from pathlib import Path

from ssat.errors import UserError


def collect(paths: list[str]) -> list[dict]:
    """summary.json of each run directory given, or of every run below a directory given."""
    runs = []
    for p in map(Path, paths):
        found = [p / "summary.json"] if (p / "summary.json").is_file() else sorted(p.glob("**/summary.json"))
        if not found:
            raise UserError(f"{p} holds no finished run (no summary.json); pass run directories of `ssat train`")
        runs += [{"run": str(f.parent), **json.loads(f.read_text())} for f in found]
    return runs


def markdown(runs: list[dict]) -> str:
    """One row per run; 'vs scratch' is the top-1 difference to the scratch run of the same model, data set,
    fraction, epochs and seed, when there is one."""
    def key(r):
        return (r["model"], r["dataset"], r.get("fraction"), r["epochs"], r.get("seed"))
    scratch = {key(r): r for r in runs if r["method"] == "scratch"}
    head = ["run", "method", "model", "dataset", "epochs", "test acc1 (%)", "vs scratch", "test acc5 (%)",
            "best acc1 (%)", "train time (s)", "params (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        if r.get("test_acc1") is None:  # a pre-training run has no classifier to score
            continue
        base = scratch.get(key(r))
        gain = f"{r['test_acc1'] - base['test_acc1']:+.2f}" if base is not None and base is not r else ""
        method = r["method"] + (f" ({r['aux']}, λ={r['lambda']})" if r.get("aux") else "")
        cells = [r["run"], method, r["model"], r["dataset"], r["epochs"], f"{r['test_acc1']:.2f}", gain,
                 f"{r['test_acc5']:.2f}", f"{r['best_acc1']:.2f}", f"{r['train_time_s']:.1f}",
                 f"{r['params'] / 1e6:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
