"""``afsd prepare`` of a video folder: which dataset kind, then its folder job.

A kind whose annotations are the JSON layout (``custom``, ``profile.py``) gets the arrays plus
the dataset's config (``custom_dataset.prepare_custom_dataset``); the official kinds get the
arrays and their video-info file (``pipeline.prepare_videos``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from afsd_cli.errors import InputError

if TYPE_CHECKING:
    from afsd_cli.data.custom_dataset import CustomPreparation
    from afsd_cli.data.pipeline import BatchReport

DEFAULT_KIND = "thumos14"  # without --dataset and without an annotation file saying otherwise


@dataclass(frozen=True, kw_only=True)
class PrepareRequest:
    """What ``afsd prepare VIDEO_DIR OUT_DIR`` is asked (its options, defaults included)."""

    video_dir: Path
    out_dir: Path
    dataset: str | None  # None: what the annotation file implies (annotation_file_kind)
    annotations: Path | None
    info: Path | None
    class_names: Path | None
    jobs: int
    backend: str
    overwrite: bool
    resize: str
    strict_count: bool
    max_frames: int
    size: int
    fps: float


@dataclass
class PreparedFolder:
    """The folder job's report; for a custom dataset also what it wrote besides the arrays."""

    report: BatchReport
    dataset: CustomPreparation | None = None


def preparation_kind(request: PrepareRequest) -> str:
    """``--dataset``, else the kind the annotation file implies, else ``DEFAULT_KIND``; raises
    (before any video is read) when a kind that writes its config has no annotation file."""
    from afsd_cli.data.custom_dataset import annotation_file_kind

    if request.dataset is not None:
        kind = request.dataset
    else:
        kind = annotation_file_kind(request.annotations) if request.annotations is not None else DEFAULT_KIND
    if writes_dataset_config(kind) and request.annotations is None:
        raise InputError("--dataset custom needs --annotations (the annotation JSON or video,start,end,label CSV)")
    return kind


def writes_dataset_config(kind: str) -> bool:
    """Whether ``prepare`` writes the dataset's config too (the kinds with the JSON annotation layout)."""
    from afsd_cli.profile import kind_rules

    return kind_rules(kind).annotation_format == "json"


def prepare_folder(request: PrepareRequest, kind: str, *, on_start: Callable[..., Any] | None = None,
                   on_result: Callable[..., Any] | None = None,
                   on_frames: Callable[[str, int], Any] | None = None) -> PreparedFolder:
    """The arrays of ``request.video_dir`` in ``request.out_dir``, as ``kind`` (``preparation_kind``) says."""
    callbacks = dict(on_start=on_start, on_result=on_result, on_frames=on_frames)
    batch = dict(jobs=request.jobs, backend=request.backend, overwrite=request.overwrite, resize=request.resize,
                 strict_count=request.strict_count)
    if writes_dataset_config(kind):
        from afsd_cli.data.custom_dataset import prepare_custom_dataset

        prepared = prepare_custom_dataset(request.video_dir, request.out_dir, request.annotations, size=request.size,
                                          fps=request.fps, class_names_path=request.class_names, **callbacks, **batch)
        return PreparedFolder(prepared.report, prepared)
    from afsd_cli.data.pipeline import prepare_videos

    report = prepare_videos(request.video_dir, request.out_dir, dataset=kind, annotations=request.annotations,
                            info_path=request.info, class_names_path=request.class_names,
                            max_frames=request.max_frames, size=request.size, **callbacks, **batch)
    return PreparedFolder(report)
