"""Temporal windows (official ``split_videos`` in ``AFSD/common/{thumos,anet}_dataset.py``, the window
loop of ``AFSD/thumos14/test.py``): which clips are cut from a video, and the
window-relative annotations, boundary masks and consistency threshold that go with them.

Plain Python/NumPy, no torch. Arithmetic follows the official code literally (Python floats, ``round``
half-to-even) because the window list and masks must match the official ones exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from afsd_cli.data.annotations import Annotation, VideoInfo


@dataclass(frozen=True)
class TrainingWindow:
    """One training clip: ``frames [offset, offset + clip_length)`` of ``video``.

    ``annotations`` are window-relative sampled frames (THUMOS: clipped to ``[1, L]``;
    ActivityNet: unclipped); ``consistency_threshold`` is the per-video ``th`` of ``augment_`` as the
    consistency sample uses it.
    """

    video: str
    offset: int
    annotations: tuple[Annotation, ...]
    num_frames: int  # frames read from offset (THUMOS: L, fewer only if the array is shorter; ANet: min(frame_num, L))
    consistency_threshold: int


def train_window_offsets(num_frames: int, clip_length: int, stride: int) -> list[int]:
    """Training offsets (``split_videos``): ``[0]`` when ``n <= L``, else every ``stride`` plus the tail."""
    if num_frames <= clip_length:
        return [0]
    offsets = list(range(0, num_frames - clip_length + 1, stride))
    if (num_frames - clip_length) % stride:
        offsets.append(num_frames - clip_length)
    return offsets


def test_window_offsets(num_frames: int, clip_length: int, stride: int) -> list[int]:
    """Inference offsets (``thumos14/test.py``): ``[0]`` when ``n < L`` (strict, unlike training), else every
    ``stride`` plus the tail window ``n - L``."""
    if num_frames < clip_length:
        return [0]
    offsets = list(range(0, num_frames - clip_length + 1, stride))
    if (num_frames - clip_length) % stride:
        offsets.append(num_frames - clip_length)
    return offsets


test_window_offsets.__test__ = False  # not a pytest test despite the name


def boundary_masks(
    annotations: Iterable[Sequence[float]], clip_length: int, with_action: bool = False
) -> np.ndarray:
    """Start/end masks (``split_videos``) as float32 ``[2, L]`` (or ``[3, L]`` = action, start, end).

    Each annotation marks ``d = max((e - s) / 10, 2)`` frames around its start and its end;
    the value written is the annotation's label when ``with_action`` (ActivityNet; the label is
    1 there) and 1 otherwise.
    """
    last = clip_length - 1
    start = np.zeros(clip_length, dtype=np.float64)
    end = np.zeros(clip_length, dtype=np.float64)
    action = np.zeros(clip_length, dtype=np.float64)

    def span(centre: float, half: float) -> slice:
        lo = min(max(int(round(centre - half)), 0), last)
        hi = min(max(int(round(centre + half)), 0), last) + 1
        return slice(lo, hi)

    for s, e, label in annotations:
        value = label if with_action else 1
        d = max((e - s) / 10.0, 2.0)
        if with_action:
            action[min(max(int(round(s)), 0), last): min(max(int(round(e)), 0), last) + 1] = value
        start[span(s, d / 2.0)] = value
        end[span(e, d / 2.0)] = value
    rows = [action, start, end] if with_action else [start, end]
    return np.stack(rows).astype(np.float32)


def thumos_training_windows(
    video_infos: dict[str, VideoInfo],
    video_annotations: dict[str, list[Annotation]],
    clip_length: int = 256,
    stride: int = 30,
) -> tuple[list[TrainingWindow], dict[str, int]]:
    """THUMOS14 sliding training windows (``split_videos`` of ``thumos_dataset.py``).

    Videos in the order of ``video_annotations`` (first appearance in the CSV), offsets
    ascending. A window is kept iff one annotation lies fully inside ``[offset+1, offset+L]``;
    annotations covering at least half their length are included, clipped to ``[1, L]``.
    Returns the windows and ``th`` per video (ceil of the shortest included annotation over
    all windows, kept or not, starting from ``L``).
    """
    windows: list[TrainingWindow] = []
    thresholds: dict[str, int] = {}
    pending: list[tuple[str, int, tuple[Annotation, ...], int]] = []
    for video, annos in video_annotations.items():
        num_frames = video_infos[video].sample_count
        shortest = float(clip_length)
        if num_frames <= clip_length:
            shortest = min(shortest, min(a.end - a.start for a in annos))
        for offset in train_window_offsets(num_frames, clip_length, stride):
            left, right = offset + 1, offset + clip_length
            included: list[Annotation] = []
            keep = False
            for s, e, label in annos:
                # intersection over the annotation's own length; may be negative (no clamp)
                ioa = (min(right, e) - max(left, s)) * 1.0 / (e - s)
                if ioa >= 1.0:
                    keep = True
                if ioa >= 0.5:
                    included.append(Annotation(max(s - offset, 1), min(e - offset, clip_length), label))
            if included:
                shortest = min(shortest, min(a.end - a.start for a in included))
            if keep:
                pending.append((video, offset, tuple(included), clip_length))
        thresholds[video] = math.ceil(shortest)
    for video, offset, included, available in pending:
        windows.append(TrainingWindow(video, offset, included, available, thresholds[video]))
    return windows, thresholds


def anet_training_windows(
    video_infos: dict[str, VideoInfo],
    video_annotations: dict[str, list[Annotation]],
    clip_length: int = 768,
) -> tuple[list[TrainingWindow], dict[str, int]]:
    """ActivityNet training clips (``anet_dataset.split_videos``): one per annotated video at offset 0, annotations
    unclipped. ``th`` per video = ``floor(min(L, shortest annotation))``; the window carries
    ``int(th / 4)``, the value the consistency sample uses."""
    windows: list[TrainingWindow] = []
    thresholds: dict[str, int] = {}
    for video, info in video_infos.items():
        annos = video_annotations.get(video)
        if not annos:
            continue
        shortest = min(float(clip_length), min(a.end - a.start for a in annos))
        thresholds[video] = math.floor(shortest)
        windows.append(
            TrainingWindow(video, 0, tuple(annos), min(info.sample_count, clip_length), int(thresholds[video] / 4))
        )
    return windows, thresholds


def normalised_targets(annotations: Sequence[Sequence[float]], clip_length: int) -> np.ndarray:
    """Loss targets ``[N, 3]`` float32: ``(s / L, e / L, label)`` (``annos_transform``)."""
    rows = [[s * 1.0 / clip_length, e * 1.0 / clip_length, label] for s, e, label in annotations]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3).astype(np.float32)
