"""The limited-data protocol: a seeded, stratified fraction of the training set (at least one image per class),
N images per class, or exactly the indices another run saved (its subset.json)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ssat.errors import UserError


def stratified_fraction(targets: list[int], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded subset keeping round(fraction * n_c) images (>= 1) of every class c, sorted."""
    if fraction >= 1.0:
        return list(range(len(targets)))
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    keep = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        n = max(1, int(round(fraction * len(members))))
        keep.append(rng.choice(members, size=n, replace=False))
    return sorted(int(i) for i in np.concatenate(keep))


def class_counts(targets: list[int], indices: list[int]) -> dict[int, int]:
    counts = Counter(targets[i] for i in indices)
    return {c: counts[c] for c in sorted(counts)}


def per_class(targets: list[int], n: int, seed: int) -> list[int]:
    """Indices of a seeded subset keeping n images of every class (all of a class that has fewer), sorted."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    keep = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        keep.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return sorted(int(i) for i in np.concatenate(keep))


def choose(targets: list[int], *, fraction: float = 1.0, n_per_class: int | None = None, seed: int = 127,
           subset_file: str | None = None, dataset: str = "") -> list[int]:
    """The training subset of a run: from a saved subset.json, N per class, or a stratified fraction."""
    if subset_file:
        path = Path(subset_file)
        if path.is_dir():
            path = path / "subset.json"
        try:
            saved = json.loads(path.read_text())
            indices = [int(i) for i in saved["indices"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"--subset-file {subset_file}: not a readable subset.json ({type(e).__name__}); pass "
                            f"a run directory or its subset.json") from None
        if saved.get("n_full") != len(targets) or (dataset and saved.get("dataset") not in (None, dataset)):
            raise UserError(f"--subset-file {path} was drawn from {saved.get('dataset')} with {saved.get('n_full')} "
                            f"training images; this data set has {len(targets)}: use a subset of the same data")
        if indices and (min(indices) < 0 or max(indices) >= len(targets)):
            raise UserError(f"--subset-file {path} holds an index outside 0..{len(targets) - 1}")
        return sorted(indices)
    if n_per_class is not None:
        return per_class(targets, n_per_class, seed)
    return stratified_fraction(targets, fraction, seed)
