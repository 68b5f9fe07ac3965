"""The run record: what a finished run reports in its summary.json, read back (checked) for `ssat table`, `ssat
report` and sweeps, and the one definition of which runs are comparable (`setting`) and which of them is the
scratch baseline a recipe is measured against (`baseline`). `ssat table` and `ssat report` both pair through here,
so they cannot disagree about what a gain is measured against."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ssat.errors import UserError, first_line
from ssat.methods import METHODS


def collect(paths: list[str]) -> list[dict]:
    """summary.json of each run directory given, or of every run below a directory given."""
    runs = []
    for p in map(Path, paths):
        found = [p / "summary.json"] if (p / "summary.json").is_file() else sorted(p.glob("**/summary.json"))
        if not found:
            raise UserError(f"{p} holds no finished run (no summary.json); pass run directories of `ssat train`")
        runs += [{"run": str(f.parent), **read_summary(f)} for f in found]
    return runs


# Keys renamed since runs were first written (old -> new): read back under the new name. "best" was the test
# maximum in best_acc1 but the validation-selected epoch in model-best / --best; the maximum is now named as such.
RENAMED = {"best_acc1": "test_acc1_max", "best_epoch": "test_max_epoch"}

# What table / report read from a summary.json, and the types they need.
SUMMARY_FIELDS = {"method": (str,), "model": (str,), "dataset": (str,), "epochs": (int,),
                  "test_acc1": (int, float, type(None)), "test_acc5": (int, float, type(None)),
                  "train_time_s": (int, float), "params": (int,)}
OPTIONAL_NUMBERS = ("test_acc1_selected", "val_acc1_selected", "test_acc1_max", "fraction", "lambda", "seed",
                    "selected_epoch", "per_class", "img_size")


def read_summary(path: Path) -> dict:
    """A finished run's summary.json, checked: a damaged one is a one-line error naming it."""
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
        summary = {RENAMED.get(k, k) if RENAMED.get(k) not in summary else k: v for k, v in summary.items()}
        for key, kinds in SUMMARY_FIELDS.items():
            if not isinstance(summary.get(key), kinds) or isinstance(summary.get(key), bool):
                raise ValueError(f"'{key}' is missing or malformed")
        for key in OPTIONAL_NUMBERS:
            value = summary.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"'{key}' is malformed")
        if summary.get("tag") is not None and not isinstance(summary["tag"], str):
            raise ValueError("'tag' is malformed")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is damaged ({first_line(e)}); delete it and re-run (or resume) that run") from None
    return summary


def method_label(r: dict) -> str:
    """The run's recipe: its --tag, else the method with the options that set it apart."""
    if r.get("tag"):
        return r["tag"]
    method = METHODS.get(r["method"])
    if method is not None and method.weighted:
        extra = ""
        if r.get("lambda_schedule") not in (None, "constant"):
            extra += f"→{r.get('lambda_end')} {r['lambda_schedule']}"
        if r.get("balance") not in (None, "none"):
            extra += f", {r['balance']}"
        if r.get("mask_ratio") not in (None, 0.75):
            extra += f", mask {r['mask_ratio']}"
        return f"ssat ({r.get('aux') or 'mae'}, λ={r.get('lambda')}{extra})"
    if method is not None and method.pretrained_init:
        return f"{r['method']} ({r.get('aux') or 'mae'})"
    return r["method"]


# --- which runs are comparable -------------------------------------------------------------------------

def setting(r: dict) -> tuple:
    """What must match for runs to be compared: model, data, amount of data, length (and input size, when the
    run records it, and the data set options that differ between the runs: `mark_data_variants`)."""
    amount = f"{r['per_class']}/class" if r.get("per_class") else f"{100 * (r.get('fraction') or 1):g}%"
    if r.get("img_size"):
        amount += f" {r['img_size']}px"
    if r.get("data_variant"):
        amount += f" {r['data_variant']}"
    return r["model"], r["dataset"], amount, r["epochs"]


def mark_data_variants(runs: list[dict]) -> list[dict]:
    """Set each run's `data_variant`: the values of its data set options (summary.json's `data_options`) that
    differ between runs on the same data set, e.g. the FaceForensics++ manipulations a run trained on, or the Hub
    data set an `hf` run read; runs that differ there are different settings, never pooled."""
    # a run's data source (hf: Hub id and commit, or folder) counts as one of its options
    options = lambda r: {**(r.get("data_options") or {}),
                         **({"source": r["data_source"]} if r.get("data_source") else {})}
    values = defaultdict(lambda: defaultdict(set))  # data set -> option -> the values its runs had
    for r in runs:
        for k in options(r):
            values[r["dataset"]][k].add(str(options(r)[k]))
    for r in runs:
        varying = sorted(k for k, seen in values[r["dataset"]].items() if len(seen) > 1 and k in options(r))
        r["data_variant"] = ":".join(str(options(r)[k]) for k in varying) or None
    return runs


def grouped(runs: list[dict], key: str = "test_acc1") -> dict[tuple, list[dict]]:
    """(setting, method label) -> the runs (one per seed) that have `key`."""
    groups = defaultdict(list)
    for r in runs:
        if r.get(key) is not None:  # pre-training runs have no accuracy
            groups[(setting(r), method_label(r))].append(r)
    return groups


def baseline_labels(groups: dict, s: tuple) -> list[str]:
    """The labels of setting `s`'s recipes that train scratch (plain or tagged), sorted."""
    return sorted(m for (g, m), rs in groups.items() if g == s and all(is_baseline(r) for r in rs))


def baseline(groups: dict, s: tuple) -> str | None:
    """The label of the scratch recipe of setting `s`: 'scratch', or the one tagged recipe that trains scratch."""
    labels = baseline_labels(groups, s)
    plain = [m for m in labels if m in METHODS]
    return plain[0] if plain else next(iter(labels)) if len(labels) == 1 else None


def is_baseline(r: dict) -> bool:
    return r["method"] in METHODS and METHODS[r["method"]].baseline


def paired_baseline(r: dict, groups: dict) -> dict | None:
    """The scratch run `r` is measured against: the baseline recipe of its setting, same seed (None for a
    baseline run itself, or when there is none)."""
    s = setting(r)
    label = baseline(groups, s)
    if label is None or method_label(r) == label:
        return None
    return next((b for b in groups[(s, label)] if b.get("seed") == r.get("seed")), None)
