"""User-facing errors.

Every problem caused by the user's input (a bad file, a bad argument, a checkpoint of the
wrong kind) is raised as :class:`DiffsciError` with a message that names the file or
argument and the problem. The command line prints it as one ``error: ...`` line and exits
with status 2; library callers can catch it.
"""

from __future__ import annotations

__all__ = ["DiffsciError", "CheckpointError"]


class DiffsciError(ValueError):
    """A clear, user-facing error (bad input, bad argument, bad file)."""


class CheckpointError(DiffsciError):
    """A checkpoint that is missing, corrupt, or belongs to another model."""
