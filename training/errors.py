"""The errors a user can fix. `training.run` reports them as one line (`error: ...`) and no traceback; every
other exception is a bug and keeps its traceback."""

from __future__ import annotations


class TrainingError(Exception):
    """A problem the user can fix (bad arguments, missing files, an unusable model directory)."""


class DatasetError(TrainingError):
    """The data directory is missing or malformed; the message names the problem and the path."""
