"""Loading the registered parts: ssat's own packages (each imports every module in it) and extensions outside
ssat, named in the SSAT_PLUGINS environment variable (comma-separated module names) or installed with an
`ssat.plugins` entry point. An extension module calls `register_aux` / `register_model` / `register_dataset` at
import, exactly as ssat's own files do."""

from __future__ import annotations

import importlib
import os
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from ssat.errors import UserError, first_line

_LOADED = False
ERRORS: list[str] = []  # extensions that failed to load; the CLI reports the first as its one-line error


def load_builtin() -> None:
    """ssat's own parts (what `ssat.config.Config` is made of; importing ssat.config does this, nothing more)."""
    for package in ("ssat.models", "ssat.auxtasks", "ssat.data"):
        importlib.import_module(package)


def load_plugins() -> None:
    """ssat's own parts and the extensions the environment names. Called explicitly by the entry points (the CLI,
    `ssat.config()`, `ssat.SSAT()`, `ssat.train()`), never as a side effect of an import."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    load_builtin()
    names = [n.strip() for n in os.environ.get("SSAT_PLUGINS", "").split(",") if n.strip()]
    ERRORS.extend(e for e in map(load_plugin, names) if e)
    for ep in entry_points(group="ssat.plugins"):
        try:
            ep.load()
        except Exception as e:
            ERRORS.append(f"the installed extension '{ep.name}' ({ep.value}) failed to load: {where(e)}; "
                          f"reinstall or uninstall it")


def load_plugin(name: str) -> str | None:
    """Import one SSAT_PLUGINS module; -> None, or the one-line error that says why it failed."""
    if name.startswith("."):
        return (f"SSAT_PLUGINS names '{name}', a relative module name; name the module in full "
                f"(e.g. mypackage.ssat_parts)")
    try:
        importlib.import_module(name)
    except ImportError as e:
        if getattr(e, "name", None) == name:  # the module itself is not there (not an import inside it)
            return (f"SSAT_PLUGINS names '{name}', which cannot be imported ({first_line(e, 120)}); install it or "
                    f"put its folder on PYTHONPATH")
        return f"extension '{name}' (SSAT_PLUGINS) failed to load: {where(e)}; install what it imports"
    except Exception as e:  # its own bug (raises, syntax error, wrong register_* call): one line, not a traceback
        return f"extension '{name}' (SSAT_PLUGINS) failed to load: {where(e)}; fix it or remove it from SSAT_PLUGINS"
    return None


def where(e: Exception) -> str:
    """An extension's exception as one line, with the file and line it came from."""
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({Path(e.filename or '?').name}, line {e.lineno})"
    ours = Path(__file__).parent  # the line to point at is the extension's own, not ssat's or importlib's
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not Path(f.filename).is_relative_to(ours) and not f.filename.startswith("<frozen")]
    at = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return (f"{first_line(e, 160)}" if isinstance(e, UserError) else f"{type(e).__name__}: {first_line(e, 160)}") + at


def check_plugins() -> None:
    """Raise the first extension-loading failure (at import they are only recorded, so the CLI can report it)."""
    if ERRORS:
        raise UserError(ERRORS[0])

