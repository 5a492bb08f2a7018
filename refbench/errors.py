"""Errors meant for the user: one line, no traceback (the CLI prints ``error: <message>``)."""

from __future__ import annotations


class RefbenchError(Exception):
    """Base class for every error the CLI reports as one line."""


class ConfigError(RefbenchError, ValueError):
    """A bad configuration value, an unknown preset or method, or a malformed config file."""


class StoreError(RefbenchError):
    """The DuckDB store cannot be opened or queried (locked, not a database, bad SQL)."""


class CheckpointError(RefbenchError):
    """A checkpoint file that is missing, truncated, not refbench's, or holds objects a weights-only load refuses."""


class RunInterrupted(RefbenchError):
    """A stop the user asked for (Ctrl-C, SIGTERM): a plain message, exit code 130, not an error."""
