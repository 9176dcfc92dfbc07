"""Failures that stop a whole run.

A bad row is never an exception here: it is an ``invalid`` outcome. These are
for the input file, credentials and the results file; each one becomes a
single clear line on stderr: exit status 2 before anything is sent, 1 once
sending has begun (ResultsWriteError).
"""

from __future__ import annotations


class BulkDetachError(Exception):
    """Root of the tool's own errors; ``str()`` is the line the operator sees."""

    exit_status = 2


class InputError(BulkDetachError):
    """The input cannot be read, is empty, or has no numbers column."""


class CredentialsError(BulkDetachError):
    """Credentials are missing, malformed or already expired."""


class ResultsFileError(BulkDetachError):
    """The results file exists, is locked by another run, or cannot be resumed."""


class ResultsWriteError(Exception):
    """The results file or its journal could not be written while numbers were
    being sent (disk full, ...): sending stops at once, and ``--resume``
    completes the file once there is room. Not a BulkDetachError: that one
    means nothing was sent."""
