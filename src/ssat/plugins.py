"""Loading the registered parts: ssat's own packages (each imports every module in it) and extensions outside
ssat, named in the SSAT_PLUGINS environment variable (comma-separated module names) or installed with an
`ssat.plugins` entry point. An extension module calls `register_aux` / `register_model` / `register_dataset` at
import, exactly as ssat's own files do."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from ssat.errors import UserError

_LOADED = False
ERRORS: list[str] = []  # extensions that failed to load; the CLI reports the first as its one-line error


def load_plugins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for package in ("ssat.models", "ssat.auxtasks", "ssat.data"):
        importlib.import_module(package)
    names = [n.strip() for n in os.environ.get("SSAT_PLUGINS", "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            ERRORS.append(f"SSAT_PLUGINS names '{name}', which cannot be imported ({e}); install it or put its "
                          f"folder on PYTHONPATH")
        except UserError as e:
            ERRORS.append(f"extension '{name}': {e}")
    for ep in entry_points(group="ssat.plugins"):
        try:
            ep.load()
        except (ImportError, UserError) as e:
            ERRORS.append(f"the installed extension '{ep.name}' ({ep.value}) failed to load: {e}; "
                          f"reinstall or uninstall it")


def check_plugins() -> None:
    """Raise the first extension-loading failure (at import they are only recorded, so the CLI can report it)."""
    if ERRORS:
        raise UserError(ERRORS[0])
