"""Auxiliary (self-supervised) tasks. Named `auxtasks`, not `aux`: `aux` is a reserved file name on Windows."""

from ssat.auxtasks.registry import AUX_TASKS, AuxTask, build_aux, register_aux
from ssat.auxtasks import mae as _mae  # noqa: F401  (registers "mae")

__all__ = ["AUX_TASKS", "AuxTask", "build_aux", "register_aux"]
