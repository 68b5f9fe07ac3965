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


def _read_saved(subset_file: str, targets: list[int], dataset: str) -> tuple[list[int], list[int] | None]:
    """(training indices, validation indices or None) of a saved subset.json, checked against the data set."""
    path = Path(subset_file)
    if path.is_dir():
        path = path / "subset.json"
    try:
        saved = json.loads(path.read_text())
        indices = [int(i) for i in saved["indices"]]
        val = None if saved.get("val_indices") is None else [int(i) for i in saved["val_indices"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"--subset-file {subset_file}: not a readable subset.json ({type(e).__name__}); pass "
                        f"a run directory or its subset.json") from None
    if saved.get("n_full") != len(targets) or (dataset and saved.get("dataset") not in (None, dataset)):
        raise UserError(f"--subset-file {path} was drawn from {saved.get('dataset')} with {saved.get('n_full')} "
                        f"training images; this data set has {len(targets)}: use a subset of the same data")
    every = indices + (val or [])
    if every and (min(every) < 0 or max(every) >= len(targets)):
        raise UserError(f"--subset-file {path} holds an index outside 0..{len(targets) - 1}")
    if val and set(val) & set(indices):
        raise UserError(f"--subset-file {path}: its validation images overlap its training images; "
                        f"pass a subset.json written by `ssat train`")
    return sorted(indices), None if val is None else sorted(val)


def choose(targets: list[int], *, fraction: float = 1.0, n_per_class: int | None = None, seed: int = 127,
           subset_file: str | None = None, dataset: str = "", val_fraction: float = 0.0,
           val_per_class: int | None = None, groups: list[str] | None = None,
           official_val: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(training, validation) indices of a run: from a saved subset.json, N per class, or a stratified fraction;
    then, if asked, a validation split carved out of them (a saved one is reused as it is). `groups` (the video of
    each clip) makes every choice by whole groups, so no video has clips on both sides of the split.
    `official_val`: the data set's own validation items (FaceForensics++'s val.json): never trained on, and the
    validation split when one is asked for (instead of carving one)."""
    if official_val is not None and not subset_file:
        held = set(official_val)
        rest = [i for i in range(len(targets)) if i not in held]
        picked, _ = choose([targets[i] for i in rest], fraction=fraction, n_per_class=n_per_class, seed=seed,
                           groups=None if groups is None else [groups[i] for i in rest])
        asked = bool(val_fraction) or val_per_class is not None
        return [rest[i] for i in picked], sorted(held) if asked else []
    if groups is not None and not subset_file and len(set(groups)) < len(groups):
        first: dict[str, int] = {}
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            first.setdefault(g, i)
            members.setdefault(g, []).append(i)
        units = list(first)  # one representative item per group, in order of appearance
        train_units, val_units = choose([targets[first[g]] for g in units], fraction=fraction,
                                        n_per_class=n_per_class, seed=seed, val_fraction=val_fraction,
                                        val_per_class=val_per_class)
        expand = lambda picked: sorted(i for u in picked for i in members[units[u]])
        return expand(train_units), expand(val_units)
    saved_val = None
    if subset_file:
        indices, saved_val = _read_saved(subset_file, targets, dataset)
    elif n_per_class is not None:
        indices = per_class(targets, n_per_class, seed)
    else:
        indices = stratified_fraction(targets, fraction, seed)
    if not val_fraction and val_per_class is None:
        return indices, []
    if saved_val is not None:
        return indices, saved_val
    return validation_split(targets, indices, fraction=val_fraction, n_per_class=val_per_class, seed=seed)


def validation_split(targets: list[int], indices: list[int], *, fraction: float = 0.0,
                     n_per_class: int | None = None, seed: int = 127) -> tuple[list[int], list[int]]:
    """Split the training `indices` into (train, validation), stratified and seeded: round(fraction * n_c)
    (at least 1) or `n_per_class` images of every class c go to validation, but every class keeps at least one
    training image (a class with a single image stays in training). Both lists are sorted and disjoint."""
    if not fraction and n_per_class is None:
        return sorted(indices), []
    rng = np.random.default_rng([seed, 1])  # a stream of its own: independent of the --fraction draw
    indices = np.asarray(sorted(indices), dtype=np.int64)
    labels = np.asarray(targets)[indices] if len(indices) else np.asarray([], dtype=np.int64)
    held = []
    for c in np.unique(labels):
        members = indices[labels == c]
        n = n_per_class if n_per_class is not None else max(1, int(round(fraction * len(members))))
        n = min(n, len(members) - 1)
        if n > 0:
            held.append(rng.choice(members, size=n, replace=False))
    val = sorted(int(i) for i in np.concatenate(held)) if held else []
    taken = set(val)
    return [int(i) for i in indices if int(i) not in taken], val
