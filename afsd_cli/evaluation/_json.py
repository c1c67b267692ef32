"""Reading a JSON file into Python objects, with errors that name the file and the place."""

from __future__ import annotations

import math
from typing import Any

from afsd_cli.io import read_json  # noqa: F401  (re-exported: the readers of this package use it)


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def as_float(value: Any) -> float:
    """A finite number, or a string holding one (the THUMOS14 ground truth stores strings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {type_name(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def read_segment(segment: Any, allow_negative: bool = False, allow_reversed: bool = False) -> tuple[float, float]:
    """``[start, end]`` seconds with ``start <= end`` (unless ``allow_reversed``) and ``0 <= start``
    (unless ``allow_negative``); raises ValueError saying what is wrong."""
    if not isinstance(segment, (list, tuple)) or len(segment) != 2:
        what = f"{len(segment)} values" if isinstance(segment, (list, tuple)) else type_name(segment)
        raise ValueError(f"segment must be [start, end], got {what}")
    try:
        start = as_float(segment[0])
    except ValueError as exc:
        raise ValueError(f"segment start: {exc}") from None
    try:
        end = as_float(segment[1])
    except ValueError as exc:
        raise ValueError(f"segment end: {exc}") from None
    if start < 0 and not allow_negative:
        raise ValueError(f"segment start {start:g} is negative")
    if end < start and not allow_reversed:
        raise ValueError(f"segment end {end:g} < start {start:g}")
    return start, end
