"""The run-directory contract:

    DIR/config.yaml           the full resolved config
    DIR/metrics.jsonl         one JSON object per epoch
    DIR/subset.json           the training images used (indices into the training split) and how they were chosen
    DIR/summary.json          final results (written last: its presence means the run finished)
    DIR/checkpoint-last.pt    everything needed to resume, written atomically every epoch
    DIR/model.safetensors     encoder + head only (timm key names), with the config in its metadata
    DIR/model-selected.safetensors  the same, at the epoch the validation split selects (runs with one;
                              model-best.safetensors in runs written before 2026-12-07)

    DIR/.ssat-run             the marker that says the folder is ssat's (written when the run creates it)

Every file is written to a temporary name and renamed, so a killed run never leaves a half-written file. ssat
removes only the files it names above, and only in a folder that holds its marker: `--out` pointing at a folder
with anything else in it is refused."""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ssat.config import Config, save_yaml
from ssat.errors import UserError, first_line
from ssat.weightfile import read_weights

CHECKPOINT = "checkpoint-last.pt"
WEIGHTS = "model.safetensors"
SELECTED = "model-selected.safetensors"
SELECTED_BEFORE = "model-best.safetensors"  # its name until 2026-12-07 (still read, still ours)
FORMAT = "ssat-checkpoint-v1"
MARKER = ".ssat-run"
# Every file a run writes in its directory: the only names `clear()` and the stale-temporary sweep may touch.
RUN_FILES = (CHECKPOINT, WEIGHTS, SELECTED, SELECTED_BEFORE, "config.yaml", "metrics.jsonl", "summary.json",
             "subset.json", "energy.json")


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path` (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def claim(path: Path, marker: str, flag: str, what: str, adopt: bool = False) -> Path:
    """Create `path` (parents too) and write `marker` in it, or accept it when the marker is there. An existing
    folder without the marker must be empty (or `adopt`ed); otherwise one line names what is in the way."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path}: a file is in the way of this {what}; choose another {flag}")
        path.mkdir(parents=True, exist_ok=True)
        if (path / marker).is_file():
            return path
        others = sorted(p.name for p in path.iterdir())
        if others and not adopt:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise UserError(f"{flag} {path} already holds files that ssat did not write there ({shown}); ssat never "
                            f"replaces them: choose a new or empty folder for the {what}")
        (path / marker).write_text(f"written by ssat: this folder is a {what}; ssat may replace the files it wrote "
                                   f"here, nothing else\n")
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag} {path}: a file is in the way of this {what}; choose another {flag}") from None
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot create the {what} ({e.strerror}); choose a writable {flag}") from None
    return path


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.checkpoint, self.weights, self.selected = self.path / CHECKPOINT, self.path / WEIGHTS, self.path / SELECTED
        self.config, self.metrics, self.summary, self.subset = (
            self.path / n for n in ("config.yaml", "metrics.jsonl", "summary.json", "subset.json"))

    def selected_weights(self) -> Path:
        """The validation-selected weights: model-selected.safetensors, or an older run's model-best.safetensors."""
        before = self.path / SELECTED_BEFORE
        return before if not self.selected.exists() and before.exists() else self.selected

    def create(self, adopt: bool = False) -> "RunDir":
        """Make the directory ours: a new or empty folder gets the marker; one with the marker is an earlier run's.
        A folder holding anything else is refused before a file is written, so nothing of the user's is touched.
        `adopt`: the caller has verified an ssat checkpoint here (a run from before the marker), so mark it."""
        claim(self.path, MARKER, "--out", "run directory", adopt=adopt or self._legacy_run())
        return self

    def _legacy_run(self) -> bool:
        """A run directory written before the marker existed: its checkpoint-last.pt carries ssat's format tag."""
        if not self.checkpoint.is_file() or (self.path / MARKER).exists():
            return False
        try:
            return torch.load(self.checkpoint, map_location="cpu", weights_only=True).get("format") == FORMAT
        except Exception:  # unreadable: not evidence that the folder is ours
            return False

    @contextmanager
    def lock(self, adopt: bool = False):
        """Hold DIR/.lock for as long as a run writes here: a second `ssat train` on the same directory is refused
        with the holder's pid. The lock is the kernel's (flock), so a killed holder never leaves a stale one.
        Temporary files a killed run left behind (of the names in RUN_FILES) are removed once the lock is ours."""
        self.create(adopt)
        path = self.path / ".lock"
        try:
            handle = open(path, "a+")
        except OSError as e:
            raise UserError(f"--out {self.path}: cannot write in it ({e.strerror}); choose a writable --out") from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(f"{self.path} is being written by {holder}; wait for it to finish or choose another "
                                f"--out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            for name in RUN_FILES:  # atomic_write's temporaries: .NAME.<random>.tmp
                for stale in self.path.glob(f".{glob_escape(name)}.*.tmp"):
                    stale.unlink(missing_ok=True)
            yield self
        finally:
            handle.close()  # releases the lock

    def clear(self) -> None:
        """Remove the run files of an earlier run in this directory (a fresh start, or --overwrite): only the names
        in RUN_FILES, and only in a folder that carries the marker."""
        if not (self.path / MARKER).is_file():
            raise UserError(f"{self.path} is not marked as an ssat run directory ({MARKER}); nothing was removed, "
                            f"choose a new or empty --out")
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    def write_config(self, cfg: Config) -> None:
        atomic_write(self.config, lambda tmp: save_yaml(cfg, Path(tmp)))

    def read_metrics(self) -> list[dict]:
        """One dict per epoch. A torn last line (the process died while appending it) is left out; damage
        anywhere else is an error naming the file."""
        if not self.metrics.exists():
            return []
        lines = [line for line in self.metrics.read_text(errors="replace").splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                    raise ValueError("not an epoch record")
            except ValueError:
                if i == len(lines) - 1:
                    break
                raise UserError(f"{self.metrics} line {i + 1} is not an epoch record; restore the file or delete "
                                f"the line") from None
            rows.append(row)
        return rows

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def keep_metrics_before(self, epoch: int) -> None:
        """On resume: drop rows of epochs the checkpoint does not contain (the run died after logging them)."""
        rows = [r for r in self.read_metrics() if r["epoch"] < epoch]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")


# --- random state -------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    # numpy's state holds an ndarray; stored as a list so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, g))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoints --------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


@dataclass
class Trainable:
    """What a checkpoint saves and a resume restores besides the run's tally: the one save / restore pair."""
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: Any = None  # --model-ema: the averaged backbone (timm ModelEmaV3)

    def save(self, path: Path, tally: dict, config: dict, data: dict, world_size: int) -> None:
        """Atomically, with every random generator's state, so a resumed epoch draws what the killed one drew."""
        save_checkpoint(path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), **tally,
            **({"ema": self.ema.module.state_dict()} if self.ema is not None else {}),
            "rng": rng_state(), "config": config, "data": data, "world_size": world_size})

    def restore(self, state: dict, source: str) -> None:
        """Everything `save` wrote back into place (the random generators last); a mismatch is one line."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint {source} does not match this model ({first_line(e)}); resume with the "
                            f"config it was written with") from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise UserError(f"checkpoint {source} holds no moving average (--model-ema was off); resume "
                                f"without --model-ema or start a new run")
            self.ema.module.load_state_dict(state["ema"])
        set_rng_state(state["rng"])


# What a checkpoint must hold to resume a run, and to serve its weights.
RESUME_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "epoch": int, "rng": dict,
               "config": dict, "data": dict}
WEIGHTS_KEYS = {"model": dict, "config": dict, "data": dict}


def load_checkpoint(path: str | Path, need: dict = RESUME_KEYS) -> dict:
    """Load a training checkpoint safely (`weights_only=True`: no code in the file can run), checking that it
    holds `need` (key: type); a damaged one is a one-line error."""
    path = resolve_checkpoint(path, prefer=CHECKPOINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a loadable checkpoint ({type(e).__name__}: {first_line(e)}); "
                        f"pass a checkpoint-last.pt written by `ssat train`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an ssat checkpoint (no '{FORMAT}' marker); "
                        f"pass a checkpoint-last.pt or model.safetensors written by `ssat train`")
    broken = [k for k, kind in need.items() if not isinstance(state.get(k), kind)]
    if not broken and "data" in need and not isinstance(state["data"].get("classes"), list):
        broken = ["data.classes"]
    if broken:
        raise UserError(f"{path} is damaged: '{broken[0]}' is missing or malformed; resume from another copy or "
                        f"start the run again")
    return state


def resolve_checkpoint(path: str | Path, prefer: str) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in (prefer, CHECKPOINT, WEIGHTS):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path} holds no {CHECKPOINT} or {WEIGHTS}; pass a run directory written by `ssat train`")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a run directory, {CHECKPOINT} or {WEIGHTS}")
    return path


def save_weights(path: Path, backbone_state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone_state.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_trained(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Encoder + head weights (timm keys) and their metadata (config, classes, normalisation) from a run
    directory, a model.safetensors or a checkpoint-last.pt."""
    path = resolve_checkpoint(path, prefer=WEIGHTS)
    if path.suffix == ".safetensors":
        return read_weights(path)
    state = load_checkpoint(path, need=WEIGHTS_KEYS)
    prefix = "backbone.encoder."
    tensors = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    return tensors, {"config": state["config"], "data": state["data"]}


TIMM_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def encoder_weights_file(path: str) -> Optional[Path]:
    """The file `load_encoder_weights(path)` reads (what a run's pretrained_sha256 hashes); None if there is none."""
    if path.startswith("local-dir:"):
        folder = Path(path[len("local-dir:"):]).expanduser()
        return next((folder / n for n in TIMM_FOLDER_FILES if (folder / n).is_file()), None)
    p = Path(path).expanduser()
    if p.is_dir():
        try:
            return resolve_checkpoint(p, prefer=WEIGHTS)
        except UserError:
            return None
    return p if p.is_file() else None


def load_encoder_weights(path: str) -> dict[str, torch.Tensor]:
    """Encoder weights in timm key names from a ssat run / model.safetensors / checkpoint-last.pt, a timm
    checkpoint file (.safetensors, or .pth / .bin / .pt read with weights_only=True), or `local-dir:FOLDER`."""
    if path.startswith("local-dir:"):
        found = encoder_weights_file(path)
        if found is None:
            raise UserError(f"--pretrained {path}: {path[len('local-dir:'):]} holds no model.safetensors or "
                            f"pytorch_model.bin; point it at a timm model folder")
        path = str(found)
    p = Path(path).expanduser()
    if p.is_dir() or p.name == CHECKPOINT:
        return load_trained(p)[0]
    try:
        if p.suffix == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # not a weights file, or damaged
        raise UserError(f"--pretrained {p} is not a readable weights file ({first_line(e)}); give a .safetensors, "
                        f".pth or .bin state dict or a ssat run directory") from None
    for key in ("state_dict", "model", "module"):  # common wrappers of a state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--pretrained {p} holds no state dict of tensors; give a model's weights")
    prefix = "backbone.encoder."  # a ssat checkpoint's model state
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    check_finite(state, f"--pretrained {path}", "use other weights (a diverged run's are NaN: use an earlier "
                                                "checkpoint of it)")
    return state


def check_finite(tensors: dict[str, torch.Tensor], what: str, fix: str) -> None:
    """NaN / Inf weights are refused where they are read, in one line naming the tensor (they would otherwise
    surface as a 'divergence' of the run that loads them)."""
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"{what} holds non-finite weights ({bad}); {fix}")
