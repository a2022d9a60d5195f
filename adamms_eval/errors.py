"""User-facing errors: one line that names the problem and the fix."""


class AdammsError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits non-zero."""
