"""The one exception type for mistakes a user can fix (bad file, bad option, bad data)."""

from __future__ import annotations


class CompressorError(Exception):
    """A user-facing error: the message states the bad value and what is allowed.

    The CLI prints it as one line and exits non-zero; library callers can catch it.
    """
