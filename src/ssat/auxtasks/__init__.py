"""Auxiliary (self-supervised) tasks. Named `auxtasks`, not `aux`: `aux` is a reserved file name on Windows."""

from ssat.auxtasks.registry import AUX_TASKS, AUX_VIEWS, AuxTask, build_aux, register_aux
from ssat.auxtasks import mae as _mae, simclr as _simclr, dino as _dino  # noqa: F401  (register)

__all__ = ["AUX_TASKS", "AUX_VIEWS", "AuxTask", "build_aux", "register_aux"]
