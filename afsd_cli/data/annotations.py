"""Annotation readers (as ``AFSD/common/{thumos,anet}_dataset.py``): THUMOS14 CSVs, the class index,
ActivityNet info JSON.

Every reader returns the same in-memory form: an ordered ``dict`` of :class:`VideoInfo` and an
ordered ``dict`` ``video -> [Annotation(start, end, label)]`` with boundaries in *sampled* frames
(the frames stored in the ``.npy``) and labels as model class ids (1-based, 0 = background).
Malformed input raises :class:`~afsd_cli.errors.InputError` naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from afsd_cli.errors import InputError
from afsd_cli.io import read_json, read_text
from afsd_cli.names import check_video_name

#: THUMOS14 detection classes as ``(original THUMOS index, name)``; model id = position + 1.
THUMOS14_CLASSES: tuple[tuple[int, str], ...] = (
    (7, "BaseballPitch"), (9, "BasketballDunk"), (12, "Billiards"), (21, "CleanAndJerk"),
    (22, "CliffDiving"), (23, "CricketBowling"), (24, "CricketShot"), (26, "Diving"),
    (31, "FrisbeeCatch"), (33, "GolfSwing"), (36, "HammerThrow"), (40, "HighJump"),
    (45, "JavelinThrow"), (51, "LongJump"), (68, "PoleVault"), (79, "Shotput"),
    (85, "SoccerPenalty"), (92, "TennisSwing"), (93, "ThrowDiscus"), (97, "VolleyballSpiking"),
)


class Annotation(NamedTuple):
    """One action instance: boundaries in sampled frames, model class id (1-based)."""

    start: float
    end: float
    label: int


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about one stored video.

    ``sample_count`` is the number of frames in the ``.npy``; ``sample_fps`` converts those
    frames to seconds. ``count``/``fps`` describe the native video (THUMOS CSV) and equal the
    sampled values for ActivityNet, whose stored video already is the resampled one.
    """

    name: str
    fps: float
    sample_fps: float
    count: float
    sample_count: int
    subset: str | None = None
    duration: float | None = None


@dataclass(frozen=True)
class ClassIndex:
    """Mapping between original dataset class indices, model ids (1-based) and names."""

    original_to_model: dict[int, int]
    names: tuple[str, ...]  # names[model_id - 1]

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (the model has one more, the background)."""
        return len(self.names)

    def name_of(self, model_id: int) -> str:
        return self.names[model_id - 1]


def thumos14_class_index() -> ClassIndex:
    """The built-in THUMOS14 class index (identical to ``Class Index_Detection.txt``)."""
    return ClassIndex(
        original_to_model={orig: i + 1 for i, (orig, _) in enumerate(THUMOS14_CLASSES)},
        names=tuple(name for _, name in THUMOS14_CLASSES),
    )


def _read_csv_rows(path: str | Path, header: list[str]) -> list[tuple[int, list[str]]]:
    """Rows of a CSV with the given header as ``(line number, fields)``."""
    path = Path(path)
    rows = list(csv.reader(read_text(path).splitlines()))
    if not rows or [c.strip() for c in rows[0]] != header:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise InputError(f"line 1: expected the header {','.join(header)!r}, found {found!r}", path)
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(f"line {number}: expected {len(header)} fields, found {len(row)}", path)
        out.append((number, [c.strip() for c in row]))
    return out


def _number(text: str, kind: type, path: Path | str, line: int, column: str):
    try:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError
        if kind is int:
            if value != int(value):
                raise ValueError
            return int(value)
        return value
    except ValueError:
        raise InputError(f"line {line}: column {column!r} is not a valid number: {text!r}", path) from None


VIDEO_INFO_HEADER = ["video", "fps", "sample_fps", "count", "sample_count"]
THUMOS_ANNOTATION_HEADER = ["video", "type", "type_idx", "start", "end", "startFrame", "endFrame"]


def read_video_info_csv(path: str | Path) -> dict[str, VideoInfo]:
    """Read a THUMOS14 ``video,fps,sample_fps,count,sample_count`` CSV (``get_video_info``), in file order."""
    infos: dict[str, VideoInfo] = {}
    for line, (video, fps, sample_fps, count, sample_count) in _read_csv_rows(path, VIDEO_INFO_HEADER):
        check_video_name(video, str(path), f"line {line}")
        if video in infos:
            raise InputError(f"line {line}: video {video!r} listed twice", path)
        info = VideoInfo(
            name=video,
            fps=_number(fps, float, path, line, "fps"),
            sample_fps=_number(sample_fps, float, path, line, "sample_fps"),
            count=_number(count, float, path, line, "count"),
            sample_count=_number(sample_count, int, path, line, "sample_count"),
        )
        if info.sample_fps <= 0 or info.count <= 0 or info.sample_count <= 0:
            raise InputError(f"line {line}: sample_fps, count and sample_count must be positive", path)
        infos[video] = info
    return infos


def read_class_index(path: str | Path) -> ClassIndex:
    """Read ``Class Index_Detection.txt`` (lines ``"<original index> <name>"``; id = line number)."""
    path = Path(path)
    lines = read_text(path, "class index file").splitlines()
    mapping: dict[int, int] = {}
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"line {number}: expected '<index> <name>', found {line!r}", path)
        original = _number(parts[0], int, path, number, "index")
        mapping[original] = len(names) + 1
        names.append(parts[1])
    if not names:
        raise InputError("no classes listed", path)
    return ClassIndex(original_to_model=mapping, names=tuple(names))


def read_thumos_annotations(
    path: str | Path,
    video_infos: dict[str, VideoInfo],
    class_index: ClassIndex | None = None,
) -> dict[str, list[Annotation]]:
    """Read a THUMOS14 annotation CSV into sampled-frame annotations (``get_video_anno``).

    Boundaries come from the last two columns (native frames) times
    ``sample_count / count``; the label from ``type_idx`` through the class index. Videos keep
    their order of first appearance (the training-window order depends on it).
    """
    class_index = class_index or thumos14_class_index()
    annotations: dict[str, list[Annotation]] = {}
    for line, row in _read_csv_rows(path, THUMOS_ANNOTATION_HEADER):
        video, type_idx, start_frame, end_frame = row[0], row[2], row[5], row[6]
        check_video_name(video, str(path), f"line {line}")
        info = video_infos.get(video)
        if info is None:
            raise InputError(f"line {line}: video {video!r} is not in the video-info CSV", path)
        original = _number(type_idx, int, path, line, "type_idx")
        label = class_index.original_to_model.get(original)
        if label is None:
            raise InputError(f"line {line}: unknown class index {original} ({row[1]!r})", path)
        start = _number(start_frame, float, path, line, "startFrame")
        end = _number(end_frame, float, path, line, "endFrame")
        ratio = info.sample_count * 1.0 / info.count
        annotations.setdefault(video, []).append(Annotation(start * ratio, end * ratio, label))
    return annotations


def read_anet_info_entries(path: str | Path) -> dict[str, dict]:
    """The ``{video: entry}`` object of a ``video_info_train_val.json`` (also under a ``database``
    key), video names checked; the one reader of that file (training, testing, ``afsd prepare``)."""
    path = Path(path)
    data = read_json(path, "video-info JSON")
    if isinstance(data, dict) and "database" in data and isinstance(data["database"], dict):
        data = data["database"]
    if not isinstance(data, dict):
        raise InputError("expected a JSON object mapping video ids to entries", path)
    for number, video in enumerate(data, start=1):
        check_video_name(video, str(path), f"entry {number}")
    return data


def read_anet_video_info(
    path: str | Path, subset: str = "training", binary: bool = True
) -> tuple[dict[str, VideoInfo], dict[str, list[Annotation]]]:
    """Read ActivityNet ``video_info_train_val.json`` for one subset (``get_video_info`` of ``anet_dataset.py``).

    Returns the video infos (``sample_count = frame_num``) and the annotations in frames of the
    resampled video; labels are binarised (any action -> 1) when ``binary``. Annotations with
    ``end_frame <= start_frame`` are dropped (``split_videos``); videos left without one keep their info but
    get no annotation entry.
    """
    path = Path(path)
    infos: dict[str, VideoInfo] = {}
    annotations: dict[str, list[Annotation]] = {}
    for video, entry in read_anet_info_entries(path).items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise InputError(f"video {video!r}: entry without a 'subset'", path)
        if entry["subset"] != subset:
            continue
        try:
            frame_num = int(entry["frame_num"])
            fps = float(entry["fps"])
            duration = float(entry.get("duration", frame_num / fps if fps > 0 else 0.0))
            annos = []
            for anno in entry.get("annotations", []):
                start, end = float(anno["start_frame"]), float(anno["end_frame"])
                label = int(anno.get("label_id", 1))
                if end <= start:
                    continue
                annos.append(Annotation(start, end, (1 if label > 0 else 0) if binary else label))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"video {video!r}: malformed entry ({exc.__class__.__name__}: {exc})", path) from None
        infos[video] = VideoInfo(video, fps, fps, float(frame_num), frame_num, subset, duration)
        if annos:
            annotations[video] = annos
    return infos, annotations


# --------------------------------------------------------------------------------------------
# Custom datasets: the ActivityNet-style JSON layout (OpenTAD, ActionFormer) and a plain CSV


@dataclass(frozen=True)
class JsonVideo:
    """One video of an annotation JSON: its subset as spelled in the file, actions in seconds."""

    name: str
    subset: str
    duration: float | None
    fps: float | None
    actions: tuple[tuple[str, float, float], ...]  # (label, start s, end s)


@dataclass(frozen=True)
class JsonAnnotations:
    """``{"database": {video: {"subset", "duration"?, "fps"?, "annotations": [{label, segment}]}}}``."""

    videos: dict[str, JsonVideo]
    source: str

    @property
    def class_names(self) -> tuple[str, ...]:
        """Every label of the file, sorted (a stable order: model id = position + 1)."""
        return tuple(sorted({label for video in self.videos.values() for label, _, _ in video.actions}))

    @property
    def subsets(self) -> list[str]:
        return list(dict.fromkeys(video.subset for video in self.videos.values()))

    def in_subset(self, subset: str) -> list[JsonVideo]:
        from afsd_cli.profile import same_subset

        return [video for video in self.videos.values() if same_subset(video.subset, subset)]


def read_json_annotations(path: str | Path) -> JsonAnnotations:
    """Read a custom dataset's annotation JSON, or convert a ``video,start,end,label[,subset]`` CSV.

    Segments are ``[start, end]`` in seconds (numbers or numeric strings) with ``end > start``;
    ``duration`` and ``fps`` are optional (the measured values of ``afsd prepare`` are used).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_simple_csv(path)
    data = read_json(path, "annotation JSON")
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise InputError('expected {"database": {video_id: {"subset": ..., "annotations": [...]}}}', path)
    videos = {str(name): _json_video(name, entry, path) for name, entry in database.items()}
    if not videos:
        raise InputError("the database lists no video", path)
    return JsonAnnotations(videos, str(path))


def _json_video(name: str, entry: Any, path: Path) -> JsonVideo:
    """One ``database`` entry: its subset, optional duration and fps, and its actions."""
    where = f"database[{name!r}]"
    _check_video_id(name, path, where)
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object", path)
    subset = entry.get("subset")
    if not isinstance(subset, str) or not subset.strip():
        raise InputError(f"{where}: missing or empty 'subset'", path)
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
        raise InputError(f"{where}['annotations']: expected a list", path)
    actions = tuple(_json_action(item, path, f"{where}['annotations'][{i}]") for i, item in enumerate(annotations))
    return JsonVideo(str(name), subset.strip(), _optional_number(entry, "duration", path, where),
                     _optional_number(entry, "fps", path, where), actions)


def _json_action(item: Any, path: Path, here: str) -> tuple[str, float, float]:
    """``(label, start, end)`` of one annotation ``{"label": ..., "segment": [start, end]}`` (seconds)."""
    if not isinstance(item, dict) or not isinstance(item.get("label"), str) or not item["label"].strip():
        raise InputError(f"{here}: expected an object with a non-empty string 'label'", path)
    segment = item.get("segment")
    if not isinstance(segment, (list, tuple)) or len(segment) != 2:
        raise InputError(f"{here}['segment']: expected [start, end] in seconds", path)
    start, end = (_seconds(v, path, f"{here}['segment']") for v in segment)
    if end <= start:
        raise InputError(f"{here}['segment']: end {end:g} is not after start {start:g}", path)
    return item["label"].strip(), start, end


def _check_video_id(name: str, path: Path, where: str) -> None:
    """A video id names ``<id>.npy`` in the output folder: it is data, never a path."""
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise InputError(f"{where}: a video id must be a file name without folders", path)


def _seconds(value, path: Path, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: not a number: {value!r}", path) from None
    if not math.isfinite(number) or number < 0:
        raise InputError(f"{where}: expected a finite time >= 0, got {value!r}", path)
    return number


def _optional_number(entry: dict, key: str, path: Path, where: str) -> float | None:
    if entry.get(key) is None:
        return None
    value = _seconds(entry[key], path, f"{where}[{key!r}]")
    return value if value > 0 else None


SIMPLE_CSV_COLUMNS = ("video", "start", "end", "label")


def _read_simple_csv(path: Path) -> JsonAnnotations:
    """``video,start,end,label`` rows (seconds), an optional ``subset`` column (default training)."""
    rows = list(csv.reader(read_text(path, "annotation CSV").splitlines()))
    header = [c.strip() for c in rows[0]] if rows else []
    if [c for c in header if c != "subset"] != list(SIMPLE_CSV_COLUMNS):
        raise InputError(f"line 1: expected the header {','.join(SIMPLE_CSV_COLUMNS)} (optionally ,subset), "
                         f"found {','.join(header) or 'an empty file'!r}", path)
    column = {name: i for i, name in enumerate(header)}
    grouped: dict[str, tuple[str, list]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(f"line {number}: expected {len(header)} fields, found {len(row)}", path)
        video, label = row[column["video"]].strip(), row[column["label"]].strip()
        subset = row[column["subset"]].strip() if "subset" in column else "training"
        if not video or not label or not subset:
            raise InputError(f"line {number}: empty video, label or subset", path)
        _check_video_id(video, path, f"line {number}")
        start = _number(row[column["start"]], float, path, number, "start")
        end = _number(row[column["end"]], float, path, number, "end")
        if start < 0 or end <= start:
            raise InputError(f"line {number}: expected 0 <= start < end, got {start:g}, {end:g}", path)
        previous = grouped.setdefault(video, (subset, []))
        if previous[0] != subset:
            raise InputError(f"line {number}: video {video!r} is in subset {previous[0]!r} on an earlier line", path)
        previous[1].append((label, start, end))
    if not grouped:
        raise InputError("no annotation rows", path)
    videos = {name: JsonVideo(name, subset, None, None, tuple(actions)) for name, (subset, actions) in grouped.items()}
    return JsonAnnotations(videos, str(path))


def annotations_document(annotations: JsonAnnotations, durations: dict[str, float] | None = None) -> dict:
    """The JSON layout of ``annotations`` (what ``afsd prepare`` writes for a converted CSV)."""
    durations = durations or {}
    database = {}
    for video in annotations.videos.values():
        entry: dict = {"subset": video.subset}
        duration = video.duration or durations.get(video.name)
        if duration:
            entry["duration"] = round(float(duration), 6)
        if video.fps:
            entry["fps"] = video.fps
        entry["annotations"] = [{"label": label, "segment": [start, end]} for label, start, end in video.actions]
        database[video.name] = entry
    return {"version": "custom", "database": database}


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """Class names of a custom dataset: one name per line (model id = line number), or the
    THUMOS14 ``"<index> <name>"`` lines."""
    path = Path(path)
    names: list[str] = []
    for number, line in enumerate(read_text(path, "class list").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        parts = text.split(maxsplit=1)
        name = parts[1].strip() if len(parts) == 2 and parts[0].isdigit() else text
        if name in names:
            raise InputError(f"line {number}: class {name!r} listed twice", path)
        names.append(name)
    if not names:
        raise InputError("no classes listed", path)
    return tuple(names)


def json_training_annotations(
    annotations: JsonAnnotations, infos: dict[str, VideoInfo], class_names: tuple[str, ...], subset: str,
) -> tuple[dict[str, VideoInfo], dict[str, list[Annotation]]]:
    """The videos of ``subset`` with their actions in sampled frames and model class ids.

    Seconds become stored frames as for THUMOS14: ``t · fps · sample_count / count`` (measured
    native fps and frame count of the video-info file). Raises InputError for a video of the
    subset without a video-info row (no array) or for a label outside the class list.
    """
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    chosen: dict[str, VideoInfo] = {}
    frames: dict[str, list[Annotation]] = {}
    missing = []
    for video in annotations.in_subset(subset):
        info = infos.get(video.name)
        if info is None:
            missing.append(video.name)
            continue
        chosen[video.name] = info
        ratio = info.fps * info.sample_count / info.count
        for label, start, end in video.actions:
            if label not in ids:
                raise InputError(f"video {video.name!r}: label {label!r} is not in the class list "
                                 f"({', '.join(class_names)})", annotations.source)
            frames.setdefault(video.name, []).append(Annotation(start * ratio, end * ratio, ids[label]))
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} video(s) of subset {subset!r} have no prepared array listed in the "
                         f"video-info file ({shown}); run afsd prepare on them", annotations.source)
    return chosen, frames
