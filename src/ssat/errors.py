"""The one exception type a user can cause. The CLI turns it into `ssat: error: ...` and exit code 2."""

from __future__ import annotations

# Said with every unknown name or option: a run trained with an extension reads back only with it loaded.
EXTENSION_HINT = " (a run trained with an extension needs it loaded: name its module in SSAT_PLUGINS)"


class UserError(ValueError):
    """A problem with the user's input (flags, data, checkpoint). The message names the problem *and* the fix.
    A ValueError, so that library callers can catch it as the usual bad-value exception."""


def need_extra(module: str, extra: str, what: str):
    """Import an optional dependency, or say in one line which extra installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module.split('.')[0]}, which is not installed; "
                        f"pip install 'ssat[{extra}]'") from None


def have_extra(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def first_line(error: BaseException | str, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, for a one-line error (some exceptions have none)."""
    text = str(error)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if not line and isinstance(error, BaseException):
        line = type(error).__name__
    return line[:limit]
