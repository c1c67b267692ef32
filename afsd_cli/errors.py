"""Typed errors raised by the library; the CLI turns them into one-line messages.

The library never prints and never exits: it raises one of these, naming the file and the
problem, and ``afsd_cli.cli`` renders it and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Longest message (and longest path) an error shows: a hostile input must not print megabytes.
MAX_MESSAGE_CHARS = 500
MAX_PATH_CHARS = 300
#: Nesting shown by ``short_repr`` before ``...``.
_MAX_REPR_DEPTH = 8


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` of at most ``limit`` characters, computed without building the full repr.

    A value read from YAML can share sub-lists by reference (a few hundred bytes standing for
    billions of items) or be an integer of millions of digits; ``repr`` of either costs
    gigabytes or raises, so the walk stops as soon as ``limit`` characters are written.
    """
    return clip_text(_bounded_repr(value, limit + 1, 0), limit)


def _bounded_repr(value: Any, budget: int, depth: int) -> str:
    if isinstance(value, str):
        return repr(value[:budget])
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        digits = int(value.bit_length() * 0.30103) + 1
        return repr(value) if digits <= budget else f"<integer of about {digits} digits>"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return _bounded_container_repr(value, budget, depth)
    return f"<{type(value).__name__}>"  # arbitrary objects: their repr may be neither short nor cheap


def _bounded_container_repr(value: Any, budget: int, depth: int) -> str:
    opening, closing = {dict: "{}", tuple: "()", list: "[]"}.get(type(value), "{}")
    if depth >= _MAX_REPR_DEPTH:
        return f"{opening}...{closing}" if len(value) else opening + closing
    items = value.items() if isinstance(value, dict) else value
    parts: list[str] = []
    used = 2
    for item in items:
        if used >= budget:
            parts.append("...")
            break
        if isinstance(value, dict):
            key = _bounded_repr(item[0], budget - used, depth + 1)
            part = f"{key}: {_bounded_repr(item[1], budget - used - len(key), depth + 1)}"
        else:
            part = _bounded_repr(item, budget - used, depth + 1)
        parts.append(part)
        used += len(part) + 2
    return opening + ", ".join(parts) + closing


class AFSDError(Exception):
    """Base class of every error the library raises on purpose.

    ``message`` and ``path`` are kept whole; the text shown (``str(error)``) is bounded
    (``MAX_MESSAGE_CHARS``, ``MAX_PATH_CHARS``), a last line of defence against echoing a
    hostile input.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.message = message
        shown = clip_text(message, MAX_MESSAGE_CHARS)
        super().__init__(f"{clip_text(self.path, MAX_PATH_CHARS)}: {shown}" if self.path else shown)


class ConfigError(AFSDError):
    """A config file or override is malformed, has an unknown key, or a wrong type."""


class InputError(AFSDError):
    """An input file (video, array, annotation, JSON/CSV) is missing, unreadable or malformed."""


class CheckpointError(AFSDError):
    """A checkpoint is unreadable or does not match the model architecture."""


class TrainingError(AFSDError):
    """Training cannot continue (e.g. a non-finite loss)."""


class OutputError(AFSDError):
    """An output path cannot be written (read-only, full disk, a folder where a file is expected, ...)."""
