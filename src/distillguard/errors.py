"""Errors a user can cause.

Each is turned into one clear line and exit code 2 by the CLI; anything else is a bug and
keeps its traceback, so that a user sees what to fix and a developer sees where it broke.
"""


class UserError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class IngestError(UserError):
    """A whole input file cannot be ingested: missing, unreadable, or not an exchange log."""
