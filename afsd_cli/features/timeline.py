"""Feature index ↔ time, for features made of clips ``[i*stride, i*stride + clip_frames)``.

Feature ``i`` covers frames ``[i*stride, i*stride + clip_frames)`` of the sampled frame
sequence, i.e. seconds ``[i*stride/fps, (i*stride + clip_frames)/fps)``, and is placed at the
centre of its clip, ``(i*stride + clip_frames/2)/fps`` (the convention of ActionFormer's
``feat_offset = 0.5 * num_frames / feat_stride``). ``fps`` is the rate of the sampled frames:
the video's own rate for ``--fps native``. Nothing here imports torch.
"""

from __future__ import annotations

import math

from afsd_cli.errors import ConfigError


#: Network frames per feature step. AFSD's heads and boundary pooling count in "frames"; on
#: pre-extracted features one feature stands for 4 of them, as a level-0 step of THUMOS14's pyramid
#: (OpenTAD's feature-based AFSD: frame_num = 4 × window, feat_t = window; model/afsd.py).
FRAMES_PER_FEATURE = 4


def _check(clip_frames: int, stride: int, fps: float | None = None) -> None:
    if clip_frames < 1 or stride < 1:
        raise ConfigError(f"clip_frames and stride must be at least 1, got {clip_frames} and {stride}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number, got {fps}")


def feature_count(num_frames: int, clip_frames: int, stride: int) -> int:
    """``floor((T - clip_frames)/stride) + 1``; a video shorter than one clip still gives one."""
    _check(clip_frames, stride)
    if num_frames <= 0:
        return 0
    return max(num_frames - clip_frames, 0) // stride + 1


def feature_span_seconds(index: float, fps: float, clip_frames: int, stride: int) -> tuple[float, float]:
    """Seconds ``[start, end)`` of the frames feature ``index`` is computed from."""
    _check(clip_frames, stride, fps)
    first = index * stride
    return first / fps, (first + clip_frames) / fps


def feature_index_to_seconds(index: float, fps: float, clip_frames: int, stride: int) -> float:
    """The time a feature stands for: the centre of its clip (fractional indices allowed)."""
    _check(clip_frames, stride, fps)
    return (index * stride + clip_frames / 2) / fps


def seconds_to_feature_position(seconds: float, fps: float, clip_frames: int, stride: int) -> float:
    """Exact inverse of :func:`feature_index_to_seconds`: a fractional index (may be < 0)."""
    _check(clip_frames, stride, fps)
    return (seconds * fps - clip_frames / 2) / stride


def seconds_to_feature_index(seconds: float, fps: float, clip_frames: int, stride: int,
                             num_features: int | None = None) -> int:
    """The feature whose centre is nearest to ``seconds`` (clamped to ``[0, num_features)`` if given).

    Inside the covered range the centre is at most ``stride/(2*fps)`` seconds away; before the
    first centre (``clip_frames/(2*fps)``) and after the last one the index is clamped.
    """
    position = seconds_to_feature_position(seconds, fps, clip_frames, stride)
    index = math.floor(position + 0.5)
    if num_features is not None:
        index = min(max(index, 0), max(num_features - 1, 0))
    return index


def segment_to_feature_indices(start: float, end: float, fps: float, clip_frames: int, stride: int,
                               num_features: int | None = None) -> tuple[int, int]:
    """(first, last) feature indices of a segment in seconds (nearest centres, clamped)."""
    return (seconds_to_feature_index(start, fps, clip_frames, stride, num_features),
            seconds_to_feature_index(end, fps, clip_frames, stride, num_features))


def feature_indices_to_segment(first: float, last: float, fps: float, clip_frames: int,
                               stride: int) -> tuple[float, float]:
    """Seconds of the centres of features ``first`` and ``last``."""
    return (feature_index_to_seconds(first, fps, clip_frames, stride),
            feature_index_to_seconds(last, fps, clip_frames, stride))


def time_mapping(clip_frames: int, stride: int) -> dict:
    """The mapping as stored in ``features.json`` (formulas plus the numbers they use)."""
    _check(clip_frames, stride)
    return {
        "clip_frames": clip_frames,
        "stride": stride,
        "frames_of_feature_i": "[i*stride, i*stride + clip_frames)",
        "seconds_of_feature_i": "[i*stride/fps, (i*stride + clip_frames)/fps)",
        "time_of_feature_i": "(i*stride + clip_frames/2)/fps",
        "feature_of_time_t": "round((t*fps - clip_frames/2)/stride), clamped to [0, features-1]",
        "feature_count": "floor((frames - clip_frames)/stride) + 1, at least 1",
        "fps": "per video: videos.<name>.fps (the rate of the sampled frames)",
    }


def seconds_to_network_frames(seconds: float, fps: float, clip_frames: int, stride: int) -> float:
    """Where ``seconds`` lies on a feature model's frame axis: feature ``i`` spans network frames
    ``[4i, 4i + 4)`` with its time (the centre of its clip) at ``4i + 2``."""
    return FRAMES_PER_FEATURE * (seconds_to_feature_position(seconds, fps, clip_frames, stride) + 0.5)


def network_frame_rate(fps: float, stride: int) -> float:
    """Network frames per second of a feature model: ``4 · fps / stride``."""
    _check(1, stride, fps)
    return FRAMES_PER_FEATURE * fps / stride


def network_time_origin(fps: float, clip_frames: int, stride: int) -> float:
    """Seconds at network frame 0: ``(clip_frames - stride) / (2·fps)``, so that
    ``seconds = frames / network_frame_rate + network_time_origin`` inverts
    :func:`seconds_to_network_frames` exactly."""
    _check(clip_frames, stride, fps)
    return (clip_frames - stride) / (2.0 * fps)
