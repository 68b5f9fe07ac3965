"""Auxiliary (self-supervised) tasks. Named `auxtasks`, not `aux`: `aux` is a reserved file name on Windows.
Every module in this package is imported, so a new task is one new file that calls `register_aux`."""

import importlib
import pkgutil

from ssat.auxtasks.registry import (
    AUX_TASKS,
    AuxSpec,
    AuxTask,
    ReadsOf,
    Reconstruction,
    build_aux,
    check_aux,
    register_aux,
    resolve_aux,
    task_names,
    tasks_for,
    views_of,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["AUX_TASKS", "AuxSpec", "AuxTask", "Reconstruction", "ReadsOf", "build_aux", "check_aux", "register_aux",
           "resolve_aux", "task_names", "tasks_for", "views_of"]
