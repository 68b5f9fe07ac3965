"""`ssat sweep FILE.yaml`: a grid of runs, each its own run directory, resumable and shareable.

    name: lambda                 # runs go to <out>/<name>/<one folder per grid point>
    eval_perturb: [perspective:0.5]   # optional: also evaluate each run on these perturbed test sets
    eval_on:                     # optional: and on these test sets (`ssat eval` options; video: the cross tables)
      - {manipulations: Face2Face}
      - {dataset: celebdf, data_root: data/Celeb-DF-v2}
    out: runs                    # default: runs
    base: {dataset: digits, epochs: 10, model: vit_tiny}     # options every run shares
    grid: {method: [scratch, ssat], lambda: [0.1, 0.5], seed: [0, 1]}   # every combination
    arms:                        # optional: named recipes, each crossed with the grid (its name is the run's tag)
      scratch: {method: scratch}
      ssat-ref: {method: ssat, lambda: 0.1}

A point whose summary.json exists is skipped, one with a checkpoint is resumed, so a killed sweep continues where it
stopped. Options that do not apply to a method are dropped from its identity (scratch has no λ, mask ratio or
auxiliary task), so scratch runs once per remaining combination, not once per λ. Every run draws its training
subset from the same `subset_seed`, so all methods of a sweep see the same images. `--parallel N` runs N
points at a time, each in its own process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import yaml

from ssat.auxtasks import AUX_TASKS
from ssat.config import Config, config_type, load_yaml, option_name, read_yaml
from ssat.data.registry import eval_options
from ssat.errors import UserError, first_line
from ssat.methods import METHODS

# Grid keys that only mean something when the method trains an auxiliary task: the weighting, and every option
# an auxiliary task declared.
AUX_ONLY = {"lam", "lambda_schedule", "lambda_end", "balance", "aux", "mask_ratio",
            *(name for spec in AUX_TASKS.values() for name in spec.option_names)}
SHORT = {"lam": "lambda"}


def read_sweep(path: str) -> dict:
    p = Path(path)
    spec = read_yaml(p, "sweep file", "pass a YAML file with name, base and grid") or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("grid", {}), dict) or \
            not isinstance(spec.get("base", {}), dict) or not isinstance(spec.get("arms", {}), dict):
        raise UserError(f"sweep file {p}: expected a mapping with 'name', 'base' (options), 'grid' (option: list) "
                        f"and optionally 'arms' (name: options)")
    spec.setdefault("name", p.stem)
    return spec


def points(spec: dict) -> list[tuple[str, dict]]:
    """(folder name, options) for every distinct grid point (× every arm, when the sweep names arms)."""
    base = {option_name(k): v for k, v in (spec.get("base") or {}).items()}
    grid = {option_name(k): (v if isinstance(v, list) else [v]) for k, v in (spec.get("grid") or {}).items()}
    arms = spec.get("arms") or {"": {}}
    if not isinstance(arms, dict) or not all(isinstance(a, dict) for a in arms.values()):
        raise UserError("sweep: 'arms' must map each arm's name to its options, e.g. {scratch: {method: scratch}}")
    arms = {str(name): {option_name(k): v for k, v in a.items()} for name, a in arms.items()}
    known = set(config_type().__dataclass_fields__)
    unknown = sorted((set(base) | set(grid) | {k for a in arms.values() for k in a}) - known)
    if unknown:
        raise UserError(f"sweep: unknown option(s) {', '.join(unknown)}; see `ssat train --help`")
    for k, values in grid.items():
        if not values:
            raise UserError(f"sweep: grid option {k} has no values; give at least one or remove it")
        if any(isinstance(v, (list, dict)) for v in values):
            raise UserError(f"sweep: grid option {k} must list plain values, got {values!r}")
    both = sorted(set(grid) & {k for a in arms.values() for k in a})
    if both:
        raise UserError(f"sweep: {', '.join(both)} is set both by the grid and by an arm; set it in one place")
    seen, out = set(), []
    for arm, arm_options in arms.items():
        for values in itertools.product(*grid.values()):
            options = {**base, **dict(zip(grid, values)), **arm_options}
            if arm:
                options.setdefault("tag", arm)
            method = options.get("method", Config.method)
            spec = METHODS.get(method, METHODS[Config.method])  # an unknown name is refused by validate() later
            identity = {k: v for k, v in zip(grid, values)
                        if not (k in AUX_ONLY and not spec.auxiliary and k != "aux") and
                        not (k == "aux" and spec.baseline)}
            key = (arm, tuple(sorted(identity.items())))
            if key in seen:
                continue
            seen.add(key)
            name = "-".join(([f"arm={arm}"] if arm else []) + [f"{SHORT.get(k, k)}={v}" for k, v in identity.items()])
            if any(name == other for other, _ in out):
                raise UserError(f"sweep: two grid points map to the folder {name} (values that differ only in type, "
                                f"e.g. 1 and '1'); list each value once")
            out.append((name or "run", options))
    return out


def eval_on_keys() -> set[str]:
    """What an `eval_on` entry may set: the test set, its root, and the options data sets declare for evaluation."""
    return {"dataset", "data_root", *eval_options()}


def check_evaluations(spec: dict, plan: list[tuple[str, dict]], source: str) -> None:
    """`eval_perturb` and `eval_on` checked against every point before the first run trains, so a typo is not
    found an hour in (and `--dry-run` finds it too)."""
    from ssat.data.perturb import parse
    perturbs, targets = spec.get("eval_perturb") or [], spec.get("eval_on") or []
    if not isinstance(perturbs, list) or not all(isinstance(p, str) for p in perturbs):
        raise UserError(f"sweep {source}: eval_perturb must be a list of perturbations such as perspective:0.5")
    for p in perturbs:
        parse(p)
    if not isinstance(targets, list):
        raise UserError(f"sweep {source}: eval_on must be a list of mappings of {', '.join(sorted(eval_on_keys()))}")
    for target in targets:
        if not isinstance(target, dict) or not target or set(target) - eval_on_keys() or \
                not all(isinstance(v, str) for v in target.values()):
            raise UserError(f"sweep {source}: eval_on entry {target!r} must map some of "
                            f"{', '.join(sorted(eval_on_keys()))} to text")
        for _, options in plan:
            overrides = {k: v for k, v in target.items() if k != "data_root"}
            Config.from_dict({**options, **overrides}, source=f"{source} eval_on {target!r}").validate()


def _evaluate(folder: Path, spec: dict) -> None:
    """Evaluate a finished run on the perturbed (`eval_perturb`) and other (`eval_on`) test sets; each result lands
    in its summary.json. One already recorded of the same data (data root included) is not evaluated again, so a
    resumed sweep only adds what is missing and a corrected data root is evaluated anew."""
    from ssat.inference import evaluate_checkpoint, evaluation_key, perturbed_key, recorded, test_source
    summary = json.loads((folder / "summary.json").read_text())
    cfg = Config.from_dict(load_yaml(folder / "config.yaml"), source=str(folder / "config.yaml"))
    for p in spec.get("eval_perturb") or []:
        if not recorded(summary, "perturbed", perturbed_key(p), test_source(cfg)[1]):
            evaluate_checkpoint(str(folder), perturb=p)
    for target in spec.get("eval_on") or []:
        overrides = {k: target[k] for k in eval_options() if target.get(k) is not None}
        name, root = test_source(cfg, target.get("dataset"), target.get("data_root"))
        if not recorded(summary, "evaluations", evaluation_key(name, overrides), root):
            evaluate_checkpoint(str(folder), target.get("dataset"), target.get("data_root"), **overrides)


def _run_here(folder: Path, options: dict) -> tuple[str, str]:
    """One point in this process (sequential sweeps)."""
    from ssat.runs import load_checkpoint
    from ssat.training import train
    if (folder / "summary.json").is_file():
        return str(folder), "done before"
    try:
        if (folder / "checkpoint-last.pt").is_file():
            state = load_checkpoint(folder)
            cfg = Config.from_dict({**state["config"], "out": str(folder), "quiet": True})
            train(cfg, resume=str(folder), state=state)
        else:
            train(Config.from_dict({**options, "out": str(folder), "quiet": True}))
    except UserError as e:
        return str(folder), f"failed: {e}"
    except Exception as e:  # a crash in one point is recorded; the sweep goes on with the others
        return str(folder), f"failed: crashed ({type(e).__name__}: {first_line(e)})"
    return str(folder), "trained"


class Children:
    """The training processes of a parallel sweep: a SIGTERM / SIGINT to the sweep is passed on to each of them,
    and the sweep waits for them before it exits, so no run goes on writing unattended."""

    def __init__(self):
        self.live: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self, cmd: list[str], env: Optional[dict]) -> tuple[int, str]:
        with self.lock:
            if self.stopping:
                return 130, "interrupted"
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            self.live.add(child)
        try:
            _, err = child.communicate()
        finally:
            with self.lock:
                self.live.discard(child)
        return child.returncode, err

    def stop(self, signum, frame) -> None:
        with self.lock:
            self.stopping = True
            for child in self.live:
                child.send_signal(signum)


def _run_process(folder: Path, options: dict, threads: int = 0, children: Optional[Children] = None):
    """One point in its own process (parallel sweeps), with `threads` CPU threads (0: torch's default)."""


    if (folder / "summary.json").is_file():
        return str(folder), "done before"
    folder.parent.mkdir(parents=True, exist_ok=True)
    if (folder / "checkpoint-last.pt").is_file():
        cmd = [sys.executable, "-m", "ssat", "train", "--resume", str(folder)]
    else:
        cfg_file = folder.parent / f".{folder.name}.yaml"
        cfg_file.write_text(yaml.safe_dump({**options, "out": str(folder), "quiet": True}))
        cmd = [sys.executable, "-m", "ssat", "train", "--config", str(cfg_file)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    code, err = (children or Children()).run(cmd, env)
    if code != 0:
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        return str(folder), f"failed: {last}"
    return str(folder), "trained"


def sweep(path: str, parallel: int = 1, dry_run: bool = False, quiet: bool = False) -> list[dict]:
    spec = read_sweep(path)
    root = Path(spec.get("out", "runs")) / spec["name"]
    plan = points(spec)
    for _, options in plan:  # every point must be a valid config before anything runs
        Config.from_dict({k: v for k, v in options.items()}, source=path).validate()
    check_evaluations(spec, plan, path)
    if dry_run:
        return [{"run": str(root / name), "options": options} for name, options in plan]
    log = (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    log(f"sweep {spec['name']}: {len(plan)} runs into {root}, {parallel} at a time")
    results = []
    if parallel <= 1:
        for name, options in plan:
            run, status = _run_here(root / name, options)
            log(f"  {run}: {status}")
            results.append({"run": run, "status": status})
    else:
        children = Children()
        handlers = {sig: signal.signal(sig, children.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with ThreadPoolExecutor(max_workers=parallel) as pool:
                # N processes share the CPU cores rather than each starting one thread per core.
                threads = max(1, (os.cpu_count() or 1) // parallel)
                futures = [pool.submit(_run_process, root / name, options, threads, children)
                           for name, options in plan]
                for f in futures:
                    run, status = f.result()
                    log(f"  {run}: {status}")
                    results.append({"run": run, "status": status})
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if children.stopping:
            raise KeyboardInterrupt  # every child has stopped; the CLI says how to continue
    for r in results:
        if (spec.get("eval_perturb") or spec.get("eval_on")) and not r["status"].startswith("failed"):
            try:
                _evaluate(Path(r["run"]), spec)
            except UserError as e:  # e.g. a data root that is not there: recorded like a failed run, the rest go on
                r["status"] = f"failed: evaluation: {e}"
    failed = [r for r in results if r["status"].startswith("failed")]
    if failed:
        for r in failed:
            log(f"  failed: {r['run']}: {r['status'][len('failed: '):]}")
        raise UserError(f"{len(failed)} of {len(results)} sweep runs failed, first {failed[0]['run']}: "
                        f"{failed[0]['status']}; fix it and run the sweep again (finished runs are kept)")
    return results


def main(args) -> int:
    results = sweep(args.file, args.parallel, args.dry_run)
    print(json.dumps({"runs": len(results), "trained": sum(r.get("status") == "trained" for r in results)}
                     if not args.dry_run else results))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    sw = sub.add_parser("sweep", help="run a grid of runs from a YAML file (resumable)",
                        description="Run every point of a sweep file's grid as its own run directory; finished "
                                    "points are skipped, killed ones resumed. See configs/sweep-*.yaml.")
    sw.add_argument("file", help="sweep YAML: name, out, base (options), grid (option: [values])")
    sw.add_argument("--parallel", type=int, default=1, help="runs at a time, each in its own process [default: 1]")
    sw.add_argument("--dry-run", action="store_true", help="list the runs without training")
    sw.set_defaults(handler=main)
