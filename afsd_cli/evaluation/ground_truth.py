"""Ground truth: the one reader of the ActivityNet-style JSON and the THUMOS14 annotation CSV.

:func:`read_ground_truth_file` reads either file whole (every subset) into a
:class:`GroundTruthFile`; evaluation, the timeline plots of ``predict``/``fuse --gt`` and
``afsd prepare`` all read ground truth through it. Evaluation then keeps one subset as
:class:`GroundTruth` (:func:`select_subset`). As in the official evaluator, a video belongs to
the evaluated set only if it has at least one annotation in that subset, and classes are
numbered in order of first appearance.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.evaluation._json import as_float, read_json, read_segment, type_name
from afsd_cli.evaluation.datasets import default_subset, detect_dataset
from afsd_cli.names import check_video_name

CSV_COLUMNS = ("video", "type", "start", "end")


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth instances of one subset, as parallel arrays (one entry per instance)."""

    videos: tuple[str, ...]
    class_names: tuple[str, ...]
    video_index: np.ndarray
    label_index: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    subset: str | None
    dataset: str
    source: str = "<ground truth>"
    skipped_ambiguous: int = 0
    subset_counts: dict[str, int] = field(default_factory=dict)
    # Seconds per entry of ``videos`` (NaN where the file gives none, e.g. the THUMOS14 CSV);
    # only used to count detections ending after their video.
    durations: np.ndarray | None = field(default=None, repr=False)

    def duration_array(self) -> np.ndarray:
        """``durations``, or all-NaN when the file gave none."""
        if self.durations is None:
            return np.full(len(self.videos), np.nan)
        return self.durations

    def __len__(self) -> int:
        return int(self.starts.shape[0])


class _Builder:
    """Collects instances in file order, numbering videos and classes by first appearance."""

    def __init__(self) -> None:
        self.video_ids: dict[str, int] = {}
        self.class_ids: dict[str, int] = {}
        self.video_index: list[int] = []
        self.label_index: list[int] = []
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.durations: dict[str, float] = {}

    def add(self, video: str, label: str, start: float, end: float) -> None:
        self.video_index.append(self.video_ids.setdefault(video, len(self.video_ids)))
        self.label_index.append(self.class_ids.setdefault(label, len(self.class_ids)))
        self.starts.append(start)
        self.ends.append(end)

    def build(self, **kwargs: Any) -> GroundTruth:
        durations = np.array([self.durations.get(video, np.nan) for video in self.video_ids], dtype=np.float64)
        return GroundTruth(
            videos=tuple(self.video_ids),
            class_names=tuple(self.class_ids),
            video_index=np.asarray(self.video_index, dtype=np.int64),
            label_index=np.asarray(self.label_index, dtype=np.int64),
            starts=np.asarray(self.starts, dtype=np.float64),
            ends=np.asarray(self.ends, dtype=np.float64),
            durations=durations,
            **kwargs,
        )


class GroundTruthInstance(NamedTuple):
    """One annotated action of a ground-truth file (seconds); ``subset`` None where the file has none."""

    video: str
    subset: str | None
    label: str
    start: float
    end: float


@dataclass(frozen=True)
class ListedVideo:
    """A video a ground-truth file lists, annotated or not."""

    subset: str | None
    duration: float | None  # seconds; None where absent or unusable


@dataclass(frozen=True)
class GroundTruthFile:
    """Everything a ground-truth file says, every subset kept: the one reader's result.

    Evaluation selects one subset of it (:func:`select_subset`); the timeline plots
    (``engine/plots.py``) and ``afsd prepare`` (``data/video_info.py``) read it whole.
    """

    source: str
    instances: tuple[GroundTruthInstance, ...]  # file order; THUMOS14 ``Ambiguous`` rows left out
    videos: dict[str, ListedVideo]  # every video named, in file order
    subset_counts: dict[str, int]  # JSON: videos per subset; CSV: rows per subset (when it has the column)
    layout_kind: str  # the dataset kind the layout says (profile.kind_from_ground_truth_layout)
    is_csv: bool = False
    has_subsets: bool = True
    skipped_ambiguous: int = 0

    def instances_by_video(self) -> dict[str, list[tuple[float, float, str]]]:
        """``video -> [(start s, end s, label)]`` over every subset, videos in file order."""
        out: dict[str, list[tuple[float, float, str]]] = {name: [] for name in self.videos}
        for instance in self.instances:
            out.setdefault(instance.video, []).append((instance.start, instance.end, instance.label))
        return out


def read_ground_truth_file(path: str | Path, what: str = "JSON file", require_subset: bool = True) -> GroundTruthFile:
    """Read a ground-truth file whole (``.csv``: THUMOS14 annotation CSV; anything else: the
    ActivityNet-style JSON). ``what`` names the file in a not-found/empty/malformed message;
    ``require_subset=False`` lets JSON entries omit ``subset`` (drawing needs none)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    return ground_truth_file_from_dict(read_json(path, what), str(path), require_subset)


def load_ground_truth(path: str | Path, subset: str | None = None, dataset: str | None = None) -> GroundTruth:
    """Read a ground-truth file (``.csv``: THUMOS14 annotation CSV; anything else: JSON).

    ``subset=None`` picks the dataset's default subset; ``dataset=None`` detects it
    (see :func:`afsd_cli.evaluation.datasets.detect_dataset`). Raises ``InputError`` naming
    the file and the place of the first problem.
    """
    return select_subset(read_ground_truth_file(path), subset, dataset)


def ground_truth_from_dict(
    data: Any, subset: str | None = None, dataset: str | None = None, source: str = "<ground truth>"
) -> GroundTruth:
    """Validate an already loaded ActivityNet-style ``{"database": {video: {subset, annotations}}}``."""
    return select_subset(ground_truth_file_from_dict(data, source), subset, dataset)


def ground_truth_file_from_dict(
    data: Any, source: str = "<ground truth>", require_subset: bool = True
) -> GroundTruthFile:
    """Validate an ActivityNet-style ``{"database": {video: {subset, annotations}}}`` object."""
    if not isinstance(data, Mapping):
        raise InputError(f"expected a JSON object with a 'database' key, got {type_name(data)}", source)
    database = data.get("database")
    if database is None:
        raise InputError("missing key 'database'", source)
    if not isinstance(database, Mapping):
        raise InputError(f"database: expected an object of videos, got {type_name(database)}", source)

    instances: list[GroundTruthInstance] = []
    videos: dict[str, ListedVideo] = {}
    counts: dict[str, int] = {}
    for number, (video, entry) in enumerate(database.items(), start=1):
        check_video_name(video, source, f"database entry {number}")
        where = f"database[{video!r}]"
        subset, annotations = _json_entry(entry, where, source, require_subset)
        for i, ann in enumerate(annotations):
            label, start, end = _json_instance(ann, f"{where}['annotations'][{i}]", source)
            instances.append(GroundTruthInstance(video, subset, label, start, end))
        videos[video] = ListedVideo(subset, _duration(entry.get("duration")))
        if subset is not None:
            counts[subset] = counts.get(subset, 0) + 1
    return GroundTruthFile(source=source, instances=tuple(instances), videos=videos, subset_counts=counts,
                           layout_kind=detect_dataset(data))


def _json_entry(entry: Any, where: str, source: str, require_subset: bool) -> tuple[str | None, list]:
    """``(subset, annotations)`` of one video's ``{"subset": ..., "annotations": [...]}`` entry."""
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected an object, got {type_name(entry)}", source)
    for key in ("subset", "annotations") if require_subset else ("annotations",):
        if key not in entry:
            raise InputError(f"{where}: missing key {key!r}", source)
    subset = entry.get("subset")
    if not isinstance(subset, str) and (subset is not None or require_subset):
        raise InputError(f"{where}['subset']: expected a string, got {type_name(subset)}", source)
    annotations = entry["annotations"]
    if not isinstance(annotations, list):
        raise InputError(f"{where}['annotations']: expected a list, got {type_name(annotations)}", source)
    return subset, annotations


def _json_instance(ann: Any, here: str, source: str) -> tuple[str, float, float]:
    """``(label, start, end)`` of one ``{"segment": [start, end], "label": name}`` annotation."""
    if not isinstance(ann, Mapping):
        raise InputError(f"{here}: expected an object, got {type_name(ann)}", source)
    for key in ("segment", "label"):
        if key not in ann:
            raise InputError(f"{here}: missing key {key!r}", source)
    if not isinstance(ann["label"], str):
        raise InputError(f"{here}['label']: expected a string, got {type_name(ann['label'])}", source)
    try:
        start, end = read_segment(ann["segment"])
    except ValueError as exc:
        raise InputError(f"{here}: {exc}", source) from None
    return ann["label"], start, end


def select_subset(file: GroundTruthFile, subset: str | None = None, dataset: str | None = None) -> GroundTruth:
    """The instances of one subset as a :class:`GroundTruth`, as the official evaluator keeps them."""
    if file.is_csv:
        return _select_csv_subset(file, subset, dataset)
    if dataset is None:
        dataset = file.layout_kind
    default_subset(dataset, ())  # an unknown dataset name fails here, before the subset search
    subset = default_subset(dataset, file.subset_counts) if subset is None else subset
    builder = _Builder()
    for instance in file.instances:
        if instance.subset == subset:
            builder.add(instance.video, instance.label, instance.start, instance.end)
    builder.durations = {video: listed.duration for video, listed in file.videos.items()
                         if video in builder.video_ids and listed.duration is not None}
    if not builder.starts:
        available = ", ".join(f"{k!r} ({v} videos)" for k, v in file.subset_counts.items()) or "none"
        raise InputError(f"no annotated video in subset {subset!r} (subsets in the file: {available})", file.source)
    return builder.build(subset=subset, dataset=dataset, source=file.source, subset_counts=file.subset_counts)


def _select_csv_subset(file: GroundTruthFile, subset: str | None, dataset: str | None) -> GroundTruth:
    """The CSV holds one split and has no subset column, so ``subset`` only filters when the
    file has a ``subset`` column."""
    if file.has_subsets and subset is None:
        subset = default_subset(dataset or "thumos14", ())
    builder = _Builder()
    for instance in file.instances:
        if file.has_subsets and subset is not None and instance.subset != subset:
            continue
        builder.add(instance.video, instance.label, instance.start, instance.end)
    if not builder.starts:
        where = f" in subset {subset!r}" if file.has_subsets and subset is not None else ""
        raise InputError(f"no annotation rows{where}", file.source)
    return builder.build(
        subset=subset if file.has_subsets else None,
        dataset=dataset or file.layout_kind,
        source=file.source,
        skipped_ambiguous=file.skipped_ambiguous,
        subset_counts=file.subset_counts,
    )


def _duration(value: Any) -> float | None:
    """A video's ``duration`` in seconds when usable. The official evaluator ignores the key, so
    a missing or odd value is no error: it only leaves the past-the-end count unknown."""
    try:
        seconds = as_float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _read_csv(path: Path) -> GroundTruthFile:
    """THUMOS14 ``video,type,type_idx,start,end,...`` rows (seconds); ``Ambiguous`` rows are skipped.
    An optional ``subset`` column names each row's subset."""
    with _open_csv(path) as handle:
        try:
            reader = csv.DictReader(handle)
            has_subset = _read_csv_header(reader, path)
            rows = _read_csv_rows(reader, has_subset, path)
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text (byte {exc.start})", path) from None
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", path) from None
    return GroundTruthFile(source=str(path), instances=tuple(rows.instances), videos=rows.videos,
                           subset_counts=rows.subset_counts, layout_kind=detect_dataset(None, from_csv=True),
                           is_csv=True, has_subsets=has_subset, skipped_ambiguous=rows.skipped_ambiguous)


def _open_csv(path: Path):
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path) from None


def _read_csv_header(reader: csv.DictReader, path: Path) -> bool:
    """Check the header (``CSV_COLUMNS`` present, names stripped); whether it has a ``subset`` column."""
    header = reader.fieldnames
    if not header:
        raise InputError("file is empty", path)
    header = [h.strip() for h in header]
    reader.fieldnames = header
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"line 1: missing column(s) {', '.join(missing)} (expected a header with {','.join(CSV_COLUMNS)})",
            path,
        )
    return "subset" in header


class _CsvRows(NamedTuple):
    instances: list[GroundTruthInstance]
    videos: dict[str, ListedVideo]
    subset_counts: dict[str, int]
    skipped_ambiguous: int


def _read_csv_rows(reader: csv.DictReader, has_subset: bool, path: Path) -> _CsvRows:
    """Every row checked; each video listed (Ambiguous rows too), each other row an instance."""
    instances: list[GroundTruthInstance] = []
    videos: dict[str, ListedVideo] = {}
    counts: dict[str, int] = {}
    skipped = 0
    columns = len(reader.fieldnames)
    for row in reader:
        line = reader.line_num
        if None in row or any(row[c] is None for c in CSV_COLUMNS):
            raise InputError(f"line {line}: expected {columns} columns", path)
        video, label = row["video"].strip(), row["type"].strip()
        check_video_name(video, str(path), f"line {line}")
        if not label:
            raise InputError(f"line {line}: empty type", path)
        row_subset = row["subset"].strip() if has_subset else None
        videos.setdefault(video, ListedVideo(row_subset, None))
        if label.lower() == "ambiguous" or (row.get("type_idx") or "").strip() == "0":
            skipped += 1
            continue
        try:
            start, end = read_segment([row["start"].strip(), row["end"].strip()])
        except ValueError as exc:
            raise InputError(f"line {line}: {exc}", path) from None
        if row_subset is not None:
            counts[row_subset] = counts.get(row_subset, 0) + 1
        instances.append(GroundTruthInstance(video, row_subset, label, start, end))
    return _CsvRows(instances, videos, counts, skipped)
