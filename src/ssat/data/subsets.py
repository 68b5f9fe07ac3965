"""The limited-data protocol: a seeded, stratified fraction of the training set (at least one image per class)."""

from __future__ import annotations

from collections import Counter

import numpy as np


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
