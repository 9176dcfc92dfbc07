"""Failures that stop a whole run before anything is sent.

A bad row is never an exception here: it is an ``invalid`` outcome. These are
for the input file, credentials and the results file; each one becomes a
single clear line on stderr and exit status 2.
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
