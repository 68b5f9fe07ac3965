"""Auxiliary (self-supervised) tasks. Named `auxtasks`, not `aux`: `aux` is a reserved file name on Windows."""

from ssat.auxtasks.registry import AUX_NEEDS, AUX_TASKS, AUX_VIEWS, AuxTask, build_aux, register_aux, resolve_aux, \
    tasks_for
from ssat.auxtasks import mae as _mae, simmim as _simmim, simclr as _simclr, dino as _dino  # noqa: F401  (register)

__all__ = ["AUX_NEEDS", "AUX_TASKS", "AUX_VIEWS", "AuxTask", "build_aux", "register_aux", "resolve_aux", "tasks_for"]
