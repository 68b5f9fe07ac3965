"""`ssat report RUNS_DIR [--out DIR]`: the study's tables and plots from every finished run below RUNS_DIR.

Writes results.md / results.csv (methods x data sets, mean ± std over seeds, gain over scratch in brackets; in
results.md also each recipe paired seed by seed with scratch, and an SSAT recipe with every tagged scratch recipe),
cost.md / cost.csv (GFLOPs, train time, CO2, accuracy), runs.csv (one row per run), PNG plots (accuracy vs λ,
vs data fraction, vs epochs; training curves per run) and index.html, which shows them together and opens from
disk without a server."""

from __future__ import annotations

import csv
import html
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from ssat.errors import UserError, have_extra
from ssat.methods import METHODS
from ssat.records import (
    baseline,
    baseline_labels,
    collect,
    grouped,
    is_baseline,
    mark_data_variants,
    method_label,
)
from ssat.runs import RunDir, claim

REPORT_MARKER = ".ssat-report"  # marks a folder as a report's: only such a folder's files are replaced


# What a results table can show: summary key -> what it is.
METRICS = {"test_acc1_selected": "test top-1 (%) at the epoch the validation split selects",
           "test_acc1": "test top-1 (%) after the last epoch",
           "val_acc1_selected": "validation top-1 (%) at the selected epoch (what recipes are chosen on)"}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def settle(x: float) -> float:
    """`x` without float noise: runs that got the same images right must tie, neither win nor show -0.00."""
    return round(x, 6) + 0.0


def results_table(runs: list[dict], key: str = "test_acc1") -> list[list[str]]:
    """Rows: model + method; columns: data set (+ amount of data and epochs when they vary); cells: mean ± std of
    `key` over seeds, the gain over scratch's mean in brackets."""
    groups = grouped(runs, key)
    columns = sorted({s[1:] for s, _ in groups}, key=str)
    bases = {s: baseline(groups, s) for s, _ in groups}
    rows_keys = sorted({(s[0], m) for s, m in groups}, key=lambda k: (k[0], k[1] not in bases.values(), k[1]))
    head = ["model", "method"] + [" ".join(map(str, (d, a, f"{e} ep"))) for d, a, e in columns]
    table = [head]
    for model, method in rows_keys:
        cells = [model, method]
        for dataset, amount, epochs in columns:
            group = groups.get(((model, dataset, amount, epochs), method))
            if not group:
                cells.append("")
                continue
            mean, std = mean_std([r[key] for r in group])
            text = f"{mean:.2f}" + (f" ± {std:.2f}" if len(group) > 1 else "")
            s = (model, dataset, amount, epochs)
            base = groups.get((s, bases[s])) if bases.get(s) else None
            if base and method != bases[s]:
                text += f" ({settle(mean - mean_std([r[key] for r in base])[0]):+.2f})"
            cells.append(text + (f" [n={len(group)}]" if len(group) > 1 else ""))
        table.append(cells)
    return table


CROSS = {"video_auc": "video-level AUC (x100)", "auc": "clip-level AUC (x100)", "video_acc1": "video-level top-1 (%)"}


def cross_table(runs: list[dict], key: str = "video_auc") -> list[list[str]]:
    """Runs evaluated on other test sets (`ssat eval`, a sweep's `eval_on`): rows = recipe + what it trained on
    (its data set options that vary, `mark_data_variants`, which must have run), columns = the test sets; mean ±
    std over seeds."""
    cells = defaultdict(list)
    for r in runs:
        row = (r["model"], method_label(r), r["dataset"] + (f":{r['data_variant']}" if r["data_variant"] else ""))
        for target, result in (r.get("evaluations") or {}).items():
            if result.get(key) is not None:
                cells[row, target].append(result[key] * (100 if "auc" in key else 1))
    rows, columns = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    table = [["model", "method", "trained on"] + columns]
    for row in rows:
        values = [cells.get((row, c)) for c in columns]
        table.append(list(row) + ["" if not v else f"{mean_std(v)[0]:.1f}" + (f" ± {mean_std(v)[1]:.1f} [n={len(v)}]"
                                                                             if len(v) > 1 else "") for v in values])
    return table


def paired_gains(runs: list[dict], key: str) -> list[list[str]]:
    """Each recipe against scratch seed by seed (same setting and seed): the mean and std of the per-seed
    differences, and on how many seeds it won. Seeds share the data split, so pairing removes its noise. A recipe
    with an auxiliary task is also paired with every other scratch recipe of its setting (a tagged scratch arm with
    SSAT's regularisation isolates what the auxiliary stream itself adds)."""
    head = ["model", "setting", "method", "against", "gain (mean ± std of paired differences)", "wins", "n"]
    table = [head]
    groups = grouped(runs, key)
    for (s, method), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        label = baseline(groups, s)
        if label is None or method == label:
            continue
        others = [] if all(is_baseline(r) for r in group) else [m for m in baseline_labels(groups, s) if m != label]
        for against in [label, *others]:
            base = {r.get("seed"): r[key] for r in groups[(s, against)]}
            diffs = [settle(r[key] - base[r.get("seed")]) for r in group if r.get("seed") in base]
            if not diffs:
                continue
            mean, std = mean_std(diffs)
            mean = settle(mean)  # a sum of settled differences can still leave -1e-17
            table.append([s[0], " ".join(map(str, (s[1], s[2], f"{s[3]} ep"))), method, against,
                          f"{mean:+.2f} ± {std:.2f}", f"{sum(d > 0 for d in diffs)}/{len(diffs)}", str(len(diffs))])
    return table


def cost_table(runs: list[dict]) -> list[list[str]]:
    head = ["model", "dataset", "data", "epochs", "method", "GFLOPs/img (train step)", "train GFLOPs (total)",
            "train time (s)", "kg CO2-eq", "test acc1 (%)"]
    table = [head]
    for (s, method), group in sorted(grouped(runs).items(), key=lambda kv: (kv[0][0], kv[0][1])):
        def avg(key, group=group):
            return statistics.fmean(r[key] for r in group) if all(r.get(key) is not None for r in group) else None
        total = avg("total_train_gflops") or avg("train_gflops_total")
        emissions = avg("total_emissions_kg") or avg("emissions_kg")
        time_s = avg("total_train_time_s") or avg("train_time_s")
        table.append([s[0], s[1], s[2], str(s[3]), method,
                      f"{avg('gflops_train_step'):.3f}" if avg("gflops_train_step") else "n/a",
                      f"{total:.4g}" if total else "n/a", f"{time_s:.1f}" if time_s else "n/a",
                      f"{emissions:.2e}" if emissions is not None else "not measured",
                      f"{avg('test_acc1'):.2f}"])
    return table


def markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table[1:]])


def write_csv(path: Path, table: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(table)


def runs_rows(runs: list[dict]) -> list[list[str]]:
    keys = ["run", "tag", "method", "aux", "lambda", "lambda_schedule", "lambda_end", "balance", "mask_ratio", "model",
            "dataset", "img_size", "patch_size", "fraction", "per_class", "epochs", "seed", "test_acc1", "test_acc5",
            "test_acc1_max", "val_acc1_selected", "selected_epoch", "test_acc1_selected", "train_time_s",
            "gflops_train_step", "train_gflops_total",
            "energy_kwh", "emissions_kg", "params"]
    perturbed = sorted({p for r in runs for p in r.get("perturbed", {})})
    return [keys + [f"acc1 {p}" for p in perturbed]] + [
        ["" if r.get(k) is None else str(r.get(k)) for k in keys]
        + [str(r.get("perturbed", {}).get(p, {}).get("acc1", "")) for p in perturbed] for r in runs]


# --- plots --------------------------------------------------------------------------------------------------

def _plot_lines(path: Path, title: str, xlabel: str, series: dict[str, list[tuple[float, float, float]]],
                log_x: bool = False, hline: dict[str, float] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, points in sorted(series.items()):
        points = sorted(points)
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, label=label)
    for label, y in (hline or {}).items():
        ax.axhline(y, linestyle="--", color="gray", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel="test top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fixed(r: dict, *names: str) -> tuple:
    """What else defines a run's setting: only runs equal in all of it share a plot line."""
    return tuple(r.get(n) for n in ("model", "dataset", "img_size", "per_class", *names)) + (r.get("data_variant"),)


_UNITS = {"img_size": "{}px", "per_class": "{}perclass", "fraction": "frac{:g}", "epochs": "{}ep", "balance": "{}"}


def _name(fixed: tuple, names: tuple) -> str:
    """A file name for a plot's setting: dataset-model-8px-20ep-..."""
    order = dict(zip(("model", "dataset", "img_size", "per_class"), fixed[:4])) | dict(zip(names[4:], fixed[4:]))
    parts = [order["dataset"], order["model"]]
    parts += [_UNITS[n].format(v) for n, v in order.items() if n in _UNITS and v is not None]
    parts += [str(fixed[-1]).replace(",", "+").replace(":", "-")] if fixed[-1] else []  # the data variant
    return "-".join(str(p) for p in parts)


def plot_sweeps(runs: list[dict], out: Path) -> list[Path]:
    """Accuracy vs λ, vs data fraction and vs epochs, wherever runs that agree in everything else vary them."""
    done = []
    scored = [r for r in runs if r.get("test_acc1") is not None]
    by = defaultdict(list)
    lam_keys = ("fraction", "epochs", "balance", "lambda_schedule")
    for r in scored:
        if r["method"] in METHODS and METHODS[r["method"]].weighted:
            by[_fixed(r, *lam_keys)].append(r)
    for fixed, group in by.items():
        lams = sorted({r["lambda"] for r in group})
        if len(lams) < 2:
            continue
        series = {"ssat": [(lam, *mean_std([r["test_acc1"] for r in group if r["lambda"] == lam])) for lam in lams]}
        base = [r["test_acc1"] for r in scored if is_baseline(r) and _fixed(r, "fraction", "epochs") == fixed[:6]]
        path = out / f"acc_vs_lambda-{_name(fixed, ('dataset', 'model', 'img_size', 'per_class', *lam_keys))}.png"
        _plot_lines(path, f"{fixed[0]} on {fixed[1]}: accuracy vs λ", "λ (weight of the classification loss)", series,
                    hline={"scratch": statistics.fmean(base)} if base else None)
        done.append(path)
    for axis, other, xlabel, log_x in (("fraction", "epochs", "fraction of the training set", True),
                                       ("epochs", "fraction", "epochs", False)):
        groups = defaultdict(lambda: defaultdict(list))
        for r in scored:
            groups[_fixed(r, other)][method_label(r)].append(r)
        for fixed, methods in groups.items():
            xs = {r.get(axis) or 1.0 for rs in methods.values() for r in rs}
            if len(xs) < 2:
                continue
            series = {m: [(x, *mean_std([r["test_acc1"] for r in rs if (r.get(axis) or 1.0) == x]))
                          for x in sorted({r.get(axis) or 1.0 for r in rs})] for m, rs in methods.items()}
            path = out / f"acc_vs_{axis}-{_name(fixed, ('model', 'dataset', 'img_size', 'per_class', other))}.png"
            _plot_lines(path, f"{fixed[0]} on {fixed[1]}: accuracy vs {axis}", xlabel, series, log_x=log_x)
            done.append(path)
    return done


def plot_curves(run: dict, out: Path) -> Path | None:
    """Loss parts and accuracy per epoch of one run, from its metrics.jsonl."""
    rows = RunDir(run["run"]).read_metrics()
    if not rows:
        return None
    keys = ("loss", "loss_primary", "loss_aux", "val_loss", "test_loss", "train_acc1", "val_acc1", "test_acc1")
    if any(r.get(k) is not None and (isinstance(r[k], bool) or not isinstance(r[k], (int, float)))
           for r in rows for k in keys):
        raise UserError(f"{run['run']}/metrics.jsonl holds a malformed value; restore it or delete that run")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    epochs = [r["epoch"] for r in rows]
    for key in ("loss", "loss_primary", "loss_aux", "val_loss", "test_loss"):
        if any(r.get(key) is not None for r in rows):
            left.plot(epochs, [r.get(key) for r in rows], marker="o", label=key)
    for key in ("train_acc1", "val_acc1", "test_acc1"):
        if any(r.get(key) is not None for r in rows):
            right.plot(epochs, [r.get(key) for r in rows], marker="o", label=key)
    left.set(xlabel="epoch", ylabel="loss", title=Path(run["run"]).name)
    right.set(xlabel="epoch", ylabel="top-1 (%)", title=method_label(run))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves" / (Path(run["run"]).as_posix().strip("/").replace("/", "__") + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def html_table(table: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


REPORT_FILES = ("index.html", "results.md", "results.csv", "cost.md", "cost.csv", "runs.csv")


def earlier_report(folder: Path) -> bool:
    """A report folder written before the marker: only names a report writes, and ssat's own index.html."""
    page = folder / "index.html"
    try:
        if not page.is_file() or "<title>ssat report: " not in page.read_text(errors="replace")[:2000]:
            return False
    except OSError:
        return False
    return all(p.name in REPORT_FILES or (p.is_file() and p.suffix == ".png")
               or (p.is_file() and p.name.startswith("cross_") and p.suffix == ".csv")
               or (p.is_dir() and p.name == "curves") for p in folder.iterdir())


def report(runs_dir: str, out: str | None = None) -> dict:
    runs = mark_data_variants(collect([runs_dir]))
    # A new or empty folder, or an earlier report's (its marker): a user's index.html is never replaced.
    where = Path(out).expanduser() if out else Path(runs_dir) / "report"
    out_dir = claim(where, REPORT_MARKER, "--out", "report folder", adopt=earlier_report(where))
    results, costs = results_table(runs), cost_table(runs)
    if len(results) == 1:
        raise UserError(f"{runs_dir} holds only pre-training runs; report needs runs with a test accuracy")
    # With validation splits, the headline is the test accuracy of the validation-selected epoch.
    shown = [k for k in METRICS if len(results_table(runs, k)) > 1]
    sections = []
    for k in shown:
        sections.append(f"## {METRICS[k]}\n\nmean ± std over seeds, [n=seeds]; in brackets the gain over scratch's "
                        f"mean\n\n{markdown(results_table(runs, k))}\n")
        gains = paired_gains(runs, k)
        if len(gains) > 1:
            sections.append(f"Paired by seed ({k}):\n\n{markdown(gains)}\n")
    # video runs evaluated across manipulations / data sets: each table computed once, for md, csv and html
    crosses = {k: table for k in CROSS if len(table := cross_table(runs, k)) > 1}
    for k, cross in crosses.items():
        sections.append(f"## Cross evaluation: {CROSS[k]}\n\nrows: what each run trained on; columns: the test set "
                        f"(data set:manipulations); mean ± std over seeds\n\n{markdown(cross)}\n")
        write_csv(out_dir / f"cross_{k}.csv", cross)
    (out_dir / "results.md").write_text("\n".join(sections))
    (out_dir / "cost.md").write_text(markdown(costs) + "\n")
    write_csv(out_dir / "results.csv", results_table(runs, shown[0]))
    write_csv(out_dir / "cost.csv", costs)
    write_csv(out_dir / "runs.csv", runs_rows(runs))
    if have_extra("matplotlib"):
        sweeps = plot_sweeps(runs, out_dir)
        curves = [p for p in (plot_curves(r, out_dir) for r in runs) if p is not None]
    else:  # the tables are the report; the plots need the extra
        print("ssat: warning: no plots: matplotlib is not installed; pip install 'ssat[report]'", file=sys.stderr)
        sweeps, curves = [], []
    images = "".join(f'<figure><img src="{p.relative_to(out_dir).as_posix()}"><figcaption>{html.escape(p.stem)}'
                     f'</figcaption></figure>' for p in sweeps + curves)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>ssat report: {html.escape(runs_dir)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:1em}"
            "img{max-width:600px}</style></head><body>"
            f"<h1>ssat report: {html.escape(runs_dir)}</h1><p>{len(runs)} runs. Top-1 accuracy (%), "
            "mean ± std over seeds; in brackets the gain over scratch with the same model, data and epochs.</p>"
            + "".join(f"<h2>{html.escape(METRICS[k])}</h2>{html_table(results_table(runs, k))}" for k in shown)
            + "".join(f"<h2>Cross evaluation: {html.escape(CROSS[k])}</h2>{html_table(cross)}"
                      for k, cross in crosses.items())
            + f"<h2>Cost</h2>{html_table(costs)}<h2>Plots</h2>{images}"
            "</body></html>")
    (out_dir / "index.html").write_text(page)
    return {"runs": len(runs), "out": str(out_dir), "plots": len(sweeps), "curves": len(curves)}


def main(args) -> int:
    print(json.dumps(report(args.runs, args.out)))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    rp = sub.add_parser("report", help="tables (md, csv), plots and index.html from a directory of runs",
                        description="Collect every finished run below RUNS_DIR and write the study's tables and "
                                    "plots.")
    rp.add_argument("runs", metavar="RUNS_DIR", help="directory holding runs (e.g. runs/<sweep name>)")
    rp.add_argument("--out", help="output folder [default: RUNS_DIR/report]")
    rp.set_defaults(handler=main)
