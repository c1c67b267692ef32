"""Detections to evaluate: ``{"results": {video: [{"segment": [s, e], "score": x, "label": name}]}}``.

The official evaluator also requires the keys ``version`` and ``external_data``; they carry no
information for the metric, so only ``results`` is required here.

Segments may start before 0 s or end after the video: detectors emit them and the official
evaluator scores them (its ``segment_iou`` clips only the intersection at zero; the union uses
the raw lengths), so they are evaluated as they are and only counted (see ``OutOfRange``).
Reversed segments (end < start) are scored the same way: AFSD's refined boundaries can cross and
the official scripts write them as they are; their intersection with any instance is 0, and the
official comparison decides (a false positive, unless the union is exactly 0: its 0/0 quirk).
Non-finite or non-numeric values are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.evaluation._json import read_json, read_segment, type_name


@dataclass(frozen=True)
class Detections:
    """All detections of a file in file order (videos in key order, then list order).

    Videos and labels are stored once each (``videos``, ``labels``, in order of first
    appearance) and referenced per detection by ``video_index`` / ``label_index``.
    """

    videos: tuple[str, ...]
    labels: tuple[str, ...]
    video_index: np.ndarray
    label_index: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    scores: np.ndarray
    source: str = "<detections>"
    version: Any = None  # the file's "version" (THUMOS14, ActivityNet-v1.3, custom, ...)
    profile: Any = None  # the dataset profile that produced the file (afsd_cli/profile.py), if recorded

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def load_detections(path: str | Path) -> Detections:
    """Read and validate a detections JSON file; raises ``InputError`` naming file and place."""
    return detections_from_dict(read_json(path), source=str(path))


def detections_from_dict(data: Any, source: str = "<detections>") -> Detections:
    """Validate an already loaded detections object (a mapping with a ``results`` key)."""
    items = _read_items(_results_of(data, source), source)
    starts, ends = _segments_array(items.segments, items.places, source)
    scores = _scores_array(items.scores, items.places, source)
    counts = np.fromiter((count for _, count in items.places), np.int64, len(items.places))
    return Detections(
        videos=tuple(video for video, _ in items.places),
        labels=tuple(items.label_ids),
        video_index=np.repeat(np.arange(len(items.places)), counts),
        label_index=np.asarray(items.label_index, dtype=np.int64),
        starts=starts,
        ends=ends,
        scores=scores,
        source=source,
        version=data.get("version"),
        profile=data.get("profile"),
    )


def _results_of(data: Any, source: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise InputError(f"expected a JSON object with a 'results' key, got {type_name(data)}", source)
    if "results" not in data:
        raise InputError("missing key 'results'", source)
    results = data["results"]
    if not isinstance(results, Mapping):
        raise InputError(f"results: expected an object mapping video ids to lists, got {type_name(results)}", source)
    return results


class _Items(NamedTuple):
    """The detections' fields in file order, values not yet converted (checked in bulk after)."""

    segments: list[Any]
    scores: list[Any]
    label_ids: dict[str, int]  # label -> index, by first appearance
    label_index: list[int]
    places: list[tuple[str, int]]  # (video, count) runs, to name the place of a bad value later


def _read_items(results: Mapping, source: str) -> _Items:
    """Each item's keys and the types of its label and score, checked one by one (the cheap checks)."""
    items = _Items([], [], {}, [], [])
    segments, scores, label_ids, label_index = items.segments, items.scores, items.label_ids, items.label_index
    for video, entries in results.items():
        if not isinstance(entries, list):
            raise InputError(f"results[{video!r}]: expected a list of detections, got {type_name(entries)}", source)
        for i, item in enumerate(entries):
            try:
                segment, score, label = item["segment"], item["score"], item["label"]
            except (KeyError, TypeError):
                raise InputError(_item_problem(item, f"results[{video!r}][{i}]"), source) from None
            if type(label) is not str:
                raise InputError(f"results[{video!r}][{i}]['label']: expected a string, got {type_name(label)}", source)
            if type(score) is not float and type(score) is not int:
                raise InputError(f"results[{video!r}][{i}]['score']: expected a number, got {type_name(score)}", source)
            segments.append(segment)
            scores.append(score)
            label_index.append(label_ids.setdefault(label, len(label_ids)))
        items.places.append((video, len(entries)))
    return items


def _scores_array(scores: list[Any], places: list[tuple[str, int]], source: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise InputError(f"{_place(places, int(bad[0]))}['score']: expected a finite number, got {scores[bad[0]]!r}",
                         source)
    return array


def _item_problem(item: Any, where: str) -> str:
    if not isinstance(item, Mapping):
        return f"{where}: expected an object, got {type_name(item)}"
    missing = [k for k in ("segment", "score", "label") if k not in item]
    return f"{where}: missing key {missing[0]!r}"


def _segments_array(segments: list[Any], places: list[tuple[str, int]], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised conversion and checks; on any problem, re-read one value to name it precisely."""
    try:
        array = np.asarray(segments, dtype=np.float64).reshape(len(segments), 2)
        ok = np.isfinite(array).all(axis=1)
        bad = np.flatnonzero(~ok)
    except (ValueError, TypeError):
        array, bad = None, None
    if bad is None or bad.size:
        indices = range(len(segments)) if bad is None else bad.tolist()
        for index in indices:
            try:
                read_segment(segments[index], allow_negative=True, allow_reversed=True)
            except ValueError as exc:
                raise InputError(f"{_place(places, index)}: {exc}", source) from None
    assert array is not None
    return array[:, 0].copy(), array[:, 1].copy()


def _place(places: list[tuple[str, int]], index: int) -> str:
    for video, count in places:
        if index < count:
            return f"results[{video!r}][{index}]"
        index -= count
    return f"detection #{index}"
