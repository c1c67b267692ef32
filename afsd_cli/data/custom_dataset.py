"""``afsd prepare VIDEOS DATA --annotations anno.json``: a user's own dataset, ready to train.

From an annotation file in the JSON layout of the field (or a ``video,start,end,label[,subset]``
CSV, converted), this prepares the annotated videos (files matched by stem, any container) at a
fixed fps and frame size and writes, into the output folder:

* ``<video>.npy``: ``uint8 [T, size, size, 3]`` frames, as for THUMOS14 but at ``fps``;
* ``video_info.csv``: measured fps / frame counts (the THUMOS14 video-info layout);
* ``classes.txt``: ``<model id> <class name>`` lines (ids from 1; 0 is the background);
* ``annotations.json``: only for a CSV input, its JSON conversion;
* ``dataset.yaml``: a complete config in the official layout (``dataset.name: custom``), with
  paths relative to itself, so that ``afsd train DATA/dataset.yaml`` needs no edit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from afsd_cli.data.annotations import JsonAnnotations, annotations_document, read_class_list, read_json_annotations
from afsd_cli.errors import InputError
from afsd_cli.profile import DEFAULT_FRAME_SIZE, DEFAULT_SAMPLE_FPS, held_out_subset, training_subset

if TYPE_CHECKING:
    from afsd_cli.data.batch import TaskResult
    from afsd_cli.data.pipeline import BatchReport

DATASET_CONFIG = "dataset.yaml"
CLASS_LIST = "classes.txt"
CONVERTED_ANNOTATIONS = "annotations.json"
# THUMOS14's official numbers, scaled: a 256-frame window at 10 fps spans 25.6 s, the training
# stride is 30 frames (3 s), the test stride half a window, the crop 96 of 112 px.
WINDOW_SECONDS = 25.6
TRAIN_STRIDE_SECONDS = 3.0
CROP_FRACTION = 96 / 112


@dataclass
class CustomPreparation:
    """What ``prepare_custom_dataset`` produced besides the arrays."""

    report: BatchReport
    config_path: Path
    class_names: tuple[str, ...]
    train_subset: str | None
    test_subset: str | None
    notes: list[str]


def window_numbers(fps: float, size: int) -> dict[str, int]:
    """Clip lengths (multiples of 8), strides and crop suited to ``fps`` and ``size``."""
    clip = max(8, int(round(WINDOW_SECONDS * fps / 8.0)) * 8)
    return {
        "clip_length": clip,
        "train_stride": max(1, min(clip, int(round(TRAIN_STRIDE_SECONDS * fps)))),
        "crop_size": max(1, int(round(size * CROP_FRACTION))),
    }


def prepare_custom_dataset(
    video_dir: str | Path,
    out_dir: str | Path,
    annotations_path: str | Path,
    *,
    size: int = DEFAULT_FRAME_SIZE,
    fps: float = DEFAULT_SAMPLE_FPS,
    class_names_path: str | Path | None = None,
    on_start: Callable[[int], Any] | None = None,
    on_result: Callable[[TaskResult], Any] | None = None,
    **batch_options: Any,
) -> CustomPreparation:
    """Prepare the annotated videos and write the dataset's config (see the module docstring).

    ``batch_options`` go to :func:`afsd_cli.data.pipeline.prepare_videos` (jobs, backend,
    overwrite, resize, strict_count). The config is written even when some videos failed, so a
    re-run after fixing them only redoes those.
    """
    from afsd_cli.data.pipeline import prepare_videos
    from afsd_cli.io import write_json, write_text

    out_dir = Path(out_dir)
    annotations_path = Path(annotations_path)
    annotations = read_json_annotations(annotations_path)
    class_names = dataset_class_names(annotations, class_names_path)
    train_subset, test_subset, notes = dataset_subsets(annotations, annotations_path.name)
    report = prepare_videos(video_dir, out_dir, dataset="custom", annotations=None, size=size,
                            sample_fps=fps, video_names=list(annotations.videos),
                            on_start=on_start, on_result=on_result, **batch_options)
    if annotations_path.suffix.lower() == ".csv":  # the config names the JSON conversion (measured durations)
        annotations_path = write_json(out_dir / CONVERTED_ANNOTATIONS,
                                      annotations_document(annotations, _measured_durations(report)))
    class_list = write_class_list(out_dir, class_names) if class_names_path is None else Path(class_names_path)
    config_text = dataset_config_text(out_dir, Path(video_dir), annotations_path, class_list, class_names,
                                      size, fps, train_subset, test_subset,
                                      batch_options.get("resize", "pil-bicubic"))
    config_path = write_text(out_dir / DATASET_CONFIG, config_text)
    return CustomPreparation(report, config_path, class_names, train_subset, test_subset, notes + report.notes)


def dataset_class_names(annotations: JsonAnnotations, class_names_path: str | Path | None) -> tuple[str, ...]:
    """The class list (model ids 1..K in its order): the given file, else the annotations' labels;
    InputError for a label outside it or an empty list."""
    class_names = read_class_list(class_names_path) if class_names_path else annotations.class_names
    unknown = sorted({label for v in annotations.videos.values() for label, _, _ in v.actions} - set(class_names))
    if unknown:
        raise InputError(f"label(s) {', '.join(map(repr, unknown[:5]))} of {annotations.source} are not in the "
                         "class list", class_names_path)
    if not class_names:
        raise InputError("no annotated action: the class list would be empty", annotations.source)
    return class_names


def dataset_subsets(annotations: JsonAnnotations, source_name: str) -> tuple[str | None, str | None, list[str]]:
    """``(training subset, held-out subset, notes)``; without a held-out subset the training one is
    used for testing too, and a note says so."""
    notes: list[str] = []
    train_subset, test_subset = training_subset(annotations.subsets), held_out_subset(annotations.subsets)
    if train_subset is None:
        notes.append(f"no 'training' (or 'train') subset in {source_name}: nothing to train on")
    if test_subset is None:
        notes.append(f"no 'testing'/'validation' subset in {source_name}: predict and evaluate use "
                     "the training subset")
        test_subset = train_subset
    return train_subset, test_subset, notes


def write_class_list(out_dir: Path, class_names: tuple[str, ...]) -> Path:
    """``out_dir/classes.txt``: ``<model id> <name>`` lines, ids from 1."""
    from afsd_cli.io import write_text

    # "<id> <name>" lines: a name that itself starts with a number stays intact
    return write_text(out_dir / CLASS_LIST, "".join(f"{i} {name}\n" for i, name in enumerate(class_names, start=1)))


def _measured_durations(report: BatchReport) -> dict[str, float]:
    from afsd_cli.data.manifest import Manifest

    durations = {}
    manifest = Manifest(report.manifest_path, "prepare", {})
    for result in report.results:
        record = manifest.get(result.name) or {}
        if record.get("duration"):
            durations[result.name] = float(record["duration"])
    return durations


def relative_path(path: Path, base: Path) -> str:
    """``path`` as a config beside ``base`` names it (``paths_relative_to: config``)."""
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        return str(path.resolve())


def dataset_config_text(out_dir: Path, video_dir: Path, annotations_path: Path, class_list: Path,
                        class_names: tuple[str, ...], size: int, fps: float,
                        train_subset: str | None, test_subset: str | None, resize: str = "pil-bicubic") -> str:
    """``dataset.yaml``: the official config layout for this dataset, paths relative to itself."""
    import yaml

    numbers = window_numbers(fps, size)
    anno = relative_path(annotations_path, out_dir)

    def split(subset: str | None) -> dict[str, Any]:
        return {
            "video_mp4_path": relative_path(video_dir, out_dir),
            "video_info_path": "video_info.csv",
            "video_anno_path": anno,
            "video_data_path": ".",
            "subset": subset,
        }

    training = {**split(train_subset), "clip_length": numbers["clip_length"], "clip_stride": numbers["train_stride"],
                "crop_size": numbers["crop_size"]}
    # The network is built for the training clip and crop; the testing ones follow them, and the
    # testing stride is half the clip (config.py), so `dataset.training.clip_length=64` alone is a
    # complete override.
    testing = {**split(test_subset), "gt_path": anno}
    config = {
        "paths_relative_to": "config",
        "dataset": {
            "name": "custom",
            "num_classes": len(class_names) + 1,
            "class_index_path": relative_path(class_list, out_dir),
            "frame_size": int(size),
            "sample_fps": float(fps),
            "resize": resize,
            "training": training,
            "testing": testing,
        },
        "model": {"in_channels": 3, "backbone_model": None},
        "training": {"max_epoch": 16},
        "testing": {"output_json": "detections.json"},
    }
    header = (
        "# Written by `afsd prepare --annotations`: the complete config of this dataset (dataset profile\n"
        f"# 'custom': {len(class_names)} classes + background, {fps:g} fps, {size} px frames). Paths are\n"
        "# relative to this file. Train with `afsd train <this file> --name NAME`; override any key with\n"
        "# key=value (e.g. training.max_epoch=4, model.backbone_model=rgb_imagenet.pt). Every key: docs/config.md.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def annotation_file_kind(path: str | Path) -> str:
    """The dataset kind an annotation file implies: ``custom`` for the JSON layout and the simple
    ``video,start,end,label`` CSV, ``thumos14`` for the THUMOS14 annotation CSV."""
    from afsd_cli.io import read_text

    path = Path(path)
    if path.suffix.lower() != ".csv":
        return "custom"
    first = read_text(path, "annotation CSV").splitlines()[:1]
    header = [c.strip() for c in first[0].split(",")] if first else []
    return "thumos14" if "type_idx" in header or "startFrame" in header else "custom"
