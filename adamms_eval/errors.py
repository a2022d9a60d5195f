"""User-facing errors: one line that names the problem and the fix."""
from __future__ import annotations

import difflib
from typing import Iterable


class AdammsError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits non-zero."""


def closest(name: str, vocabulary: Iterable[str]) -> str | None:
    """The known name a mistyped `name` most likely meant (None when nothing is close)."""
    close = difflib.get_close_matches(str(name), sorted(set(vocabulary)), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(name: str, vocabulary: Iterable[str]) -> str:
    """"; did you mean X?" for an error message, or "" when nothing is close (the one did-you-mean helper)."""
    close = closest(name, vocabulary)
    return f"; did you mean {close}?" if close else ""
