"""Data sets. Every module in this package is imported, so a new data set is one new file that calls
`register_dataset`."""

import importlib
import pkgutil

from ssat.data.registry import DATASETS, DataBundle, DataOptions, load_dataset, register_dataset

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DATASETS", "DataBundle", "DataOptions", "load_dataset", "register_dataset"]
