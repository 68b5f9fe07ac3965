"""The one exception type a user can cause. The CLI turns it into `ssat: error: ...` and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (flags, data, checkpoint). The message names the problem *and* the fix."""
