"""The one exception type a user can cause. The CLI turns it into `ssat: error: ...` and exit code 2."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input (flags, data, checkpoint). The message names the problem *and* the fix.
    A ValueError, so that library callers can catch it as the usual bad-value exception."""


def first_line(error: BaseException | str, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, for a one-line error (some exceptions have none)."""
    text = str(error)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if not line and isinstance(error, BaseException):
        line = type(error).__name__
    return line[:limit]
