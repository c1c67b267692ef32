"""Typed errors raised by the library; the CLI turns them into one-line messages.

The library never prints and never exits: it raises one of these, naming the file and the
problem, and ``afsd_cli.cli`` renders it and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class AFSDError(Exception):
    """Base class of every error the library raises on purpose."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(AFSDError):
    """A config file or override is malformed, has an unknown key, or a wrong type."""


class InputError(AFSDError):
    """An input file (video, array, annotation, JSON/CSV) is missing, unreadable or malformed."""


class CheckpointError(AFSDError):
    """A checkpoint is unreadable or does not match the model architecture."""


class NotImplementedYet(AFSDError):
    """A command whose implementation has not landed yet."""


class TrainingError(AFSDError):
    """Training cannot continue (e.g. a non-finite loss)."""


class OutputError(AFSDError):
    """An output path cannot be written (read-only, full disk, a folder where a file is expected, ...)."""
