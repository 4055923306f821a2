"""User-facing errors: an expected failure is reported as one line and a non-zero exit."""

from __future__ import annotations

__all__ = ["OQError"]


class OQError(Exception):
    """A failure the user can act on (bad input, missing package, unwritable output).

    The CLI prints ``str(error)`` on one line and exits with status 2; it never shows a
    traceback for these.
    """
