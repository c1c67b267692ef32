"""The per-video info files the loaders read, written by ``afsd prepare``.

Readers for training live in :mod:`afsd_cli.data.annotations`; this module writes.

* THUMOS14: ``video,fps,sample_fps,count,sample_count`` CSV (the official ``*_video_info.csv``):
  fps as OpenCV reports it, ``count`` the native frame count written as a float (``1012.0``),
  ``sample_fps`` 10.0, ``sample_count`` the frames stored in the npy.
* ActivityNet: the ``video_info_train_val.json`` layout, keyed by video name:
  ``{subset, duration, frame_num, annotations: [{start_frame, end_frame, label, label_id}], fps}``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from afsd_cli.errors import InputError
from afsd_cli.io import read_text, write_json, write_text
from afsd_cli.names import check_video_name, video_id_spellings

THUMOS_INFO_COLUMNS = ("video", "fps", "sample_fps", "count", "sample_count")


@dataclass
class ThumosVideoInfo:
    video: str
    fps: float
    sample_fps: float
    count: float
    sample_count: int

    def row(self) -> list[str]:
        # repr() of a float is what the official pandas writer printed (30.0, 29.97002997002997).
        return [self.video, repr(float(self.fps)), repr(float(self.sample_fps)), repr(float(self.count)), str(int(self.sample_count))]


def write_thumos_video_info(path: str | Path, infos: Iterable[ThumosVideoInfo]) -> Path:
    """Write the CSV atomically, rows sorted by video name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(THUMOS_INFO_COLUMNS)
    for info in sorted(infos, key=lambda i: i.video):
        writer.writerow(info.row())
    return write_text(path, buffer.getvalue())


def read_annotated_thumos_videos(path: str | Path) -> list[str]:
    """Sorted unique ``video`` names of a THUMOS14 annotation CSV (what the official step converts)."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_text(path, "annotation CSV")))
    if not reader.fieldnames or "video" not in [f.strip() for f in reader.fieldnames]:
        raise InputError("annotation CSV has no `video` column", path)
    key = next(f for f in reader.fieldnames if f.strip() == "video")
    names = set()
    for row in reader:
        name = (row.get(key) or "").strip()
        if name:  # a row without a video names nothing (blank lines, trailing commas)
            names.add(check_video_name(name, str(path), f"line {reader.line_num}"))
    if not names:
        raise InputError("annotation CSV lists no video", path)
    return sorted(names)


# --------------------------------------------------------------------------------------------
# ActivityNet


def read_anet_ground_truth(path: str | Path) -> dict[str, dict]:
    """The videos of an ActivityNet-style GT JSON (``{"database": {id: {...}}}``), read by the
    evaluation's reader, as ``{id: {"subset", "duration"?, "annotations": [{"segment", "label"}]}}``."""
    from afsd_cli.evaluation.ground_truth import read_ground_truth_file

    truth = read_ground_truth_file(path, "annotation JSON", require_subset=False)
    database: dict[str, dict] = {}
    for video, listed in truth.videos.items():
        entry: dict = {"subset": listed.subset, "annotations": []}
        if listed.duration is not None:
            entry["duration"] = listed.duration
        database[video] = entry
    for instance in truth.instances:
        annotation = {"segment": [instance.start, instance.end], "label": instance.label}
        database[instance.video]["annotations"].append(annotation)
    return database


def anet_key_for(database: Mapping[str, dict], video: str) -> str | None:
    """The GT key of a video file stem; ActivityNet ids are stored with or without ``v_``."""
    return next((key for key in video_id_spellings(video) if key in database), None)


def anet_entry_for(database: Mapping[str, dict], video: str) -> dict | None:
    key = anet_key_for(database, video)
    return database[key] if key is not None else None


def anet_info_entry(
    *,
    frame_num: int,
    fps: float,
    duration: float,
    gt: Mapping | None,
    class_ids: Mapping[str, int],
) -> dict:
    """One ``video_info_train_val.json`` entry; annotation frames = seconds x resampled fps (floats)."""
    annotations = []
    for anno in (gt or {}).get("annotations", []) or []:
        start, end = (float(x) for x in anno["segment"])
        label = anno.get("label")
        annotations.append(
            {"start_frame": start * fps, "end_frame": end * fps, "label": label, "label_id": class_ids.get(label)}
        )
    return {
        "subset": (gt or {}).get("subset"),
        "duration": float((gt or {}).get("duration", duration)),
        "frame_num": int(frame_num),
        "annotations": annotations,
        "fps": float(fps),
    }


def anet_class_ids(database: Mapping[str, dict], class_names: list[str] | None = None) -> dict[str, int]:
    """Label → id (1-based). With the official ``action_name.txt`` order when given; otherwise
    the sorted labels of the GT (the ActivityNet loader binarises labels, so only names matter)."""
    if class_names is None:
        labels = {a.get("label") for v in database.values() for a in (v.get("annotations") or [])}
        class_names = sorted(label for label in labels if label)
    return {name: i + 1 for i, name in enumerate(class_names)}


def read_class_names(path: str | Path) -> list[str]:
    path = Path(path)
    names = [line.strip() for line in read_text(path, "class-name file").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise InputError("class-name file is empty", path)
    return names


def load_anet_video_info(path: str | Path) -> dict[str, dict]:
    """The raw ``{video: entry}`` object of an info JSON we wrote (to merge into on resume),
    read by the training reader's :func:`afsd_cli.data.annotations.read_anet_info_entries`."""
    from afsd_cli.data.annotations import read_anet_info_entries

    return read_anet_info_entries(path)


def write_anet_video_info(path: str | Path, infos: Mapping[str, dict]) -> Path:
    return write_json(path, {k: infos[k] for k in sorted(infos)})
