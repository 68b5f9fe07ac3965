"""`ssat table RUN...`: a side-by-side table of finished runs, read from their summary.json files."""

from __future__ import annotations

from ssat.records import collect, grouped, mark_data_variants, method_label, paired_baseline


def main(args) -> int:
    print(markdown(collect(args.runs)))
    return 0


def markdown(runs: list[dict]) -> str:
    """One row per run; 'vs scratch' is the top-1 difference to the scratch run of the same setting (records.setting:
    model, data set, amount of data, input size, data set options, epochs) and seed, when there is one: the pairing
    `ssat report` uses, whatever order the runs are given in."""
    runs = mark_data_variants(runs)
    groups = grouped(runs)
    head = ["run", "method", "model", "dataset", "epochs", "test acc1 (%)", "vs scratch", "test acc1 at val-selected "
            "epoch (%)", "vs scratch", "test acc5 (%)", "train time (s)", "params (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        if r.get("test_acc1") is None:  # a pre-training run has no classifier to score
            continue
        base = paired_baseline(r, groups)

        def gain(k, r=r, base=base):
            ok = base is not None and r.get(k) is not None and base.get(k) is not None
            return f"{r[k] - base[k]:+.2f}" if ok else ""
        selected = r.get("test_acc1_selected")
        cells = [r["run"], method_label(r), r["model"], r["dataset"], r["epochs"], f"{r['test_acc1']:.2f}",
                 gain("test_acc1"), "" if selected is None else f"{selected:.2f} (epoch {r['selected_epoch']})",
                 gain("test_acc1_selected"), f"{r['test_acc5']:.2f}", f"{r['train_time_s']:.1f}",
                 f"{r['params'] / 1e6:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    tb = sub.add_parser("table", help="side-by-side table of finished runs (from their summary.json)",
                        description="Print a Markdown table of runs; a directory is searched for runs below it.")
    tb.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or directories holding runs")
    tb.set_defaults(handler=main)
