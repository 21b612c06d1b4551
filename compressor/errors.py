"""The one exception type for mistakes a user can fix (bad file, bad option, bad data)."""

from __future__ import annotations


class CompressorError(Exception):
    """A user-facing error: the message states the bad value and what is allowed.

    The CLI prints it as one line and exits non-zero; library callers can catch it.
    """


class WriteError(CompressorError):
    """The file system refused a write (disk full, read-only, ...): the message names the
    file, the reason and what to do; a caller that kept earlier work adds what it kept."""
