"""Training a run, by concern: lifecycle.py (create / resume / the SSL+FT stages), loop.py (the epochs, selection,
checkpoints), summary.py (summary.json)."""

from ssat.training.lifecycle import resolve_for_data, train
from ssat.training.loop import data_meta, test_epochs

__all__ = ["data_meta", "resolve_for_data", "test_epochs", "train"]
