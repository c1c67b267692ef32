"""The videos a prediction runs over: one :class:`VideoJob` per video, whose loader returns a
:class:`LoadedVideo`, and the builders of jobs from stored frame arrays, feature arrays or video
files (``engine/planning.py`` chooses which from the config).

A loader may raise InputError: that marks only its video as failed (``engine/inference.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from afsd_cli.data.npy import check_frames, open_frames
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.names import without_v_prefix

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.profile import DatasetProfile


@dataclass
class LoadedVideo:
    """What a job's loader returns: one array per stream (the same length), and the sampling rate
    and duration when loading knows them (a decoded video file learns them only by decoding).

    Frame arrays are ``uint8 [T, H, W, C]``, feature arrays ``float [T', C]``.
    """

    arrays: list[np.ndarray]
    sample_fps: float | None = None
    duration: float | None = None


@dataclass
class VideoJob:
    """One video to process: a loader returning its arrays, plus what is known of it before loading.

    ``sample_fps`` / ``duration``: ``None`` when only loading tells (video files); then the
    :class:`LoadedVideo`'s values are used.
    """

    name: str
    load: Callable[[], LoadedVideo]
    sample_fps: float | None = None
    duration: float | None = None
    output_key: str | None = None
    source: str | None = None
    time_origin: float = 0.0  # seconds at frame 0 (feature models: engine/postprocess.py VideoMeta)
    # a video file read as a stream of frames (engine/streaming.py) instead of by ``load``
    open_frames: Callable[[], Any] | None = None

    def sampling(self, loaded: LoadedVideo) -> tuple[float | None, float | None]:
        """``(sample_fps, duration)``: the job's when it knew them before loading, else the loader's."""
        if self.sample_fps is not None:
            return self.sample_fps, self.duration
        return loaded.sample_fps, loaded.duration


@dataclass
class VideoResult:
    """Detections of one video and what it cost."""

    name: str
    key: str
    detections: list[dict[str, Any]]
    frames: int
    windows: int
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


# --------------------------------------------------------------------------- stored frame arrays


def check_array(array: Any, channels: int, crop_size: int, path: str | Path | None = None) -> None:
    """Raise InputError unless ``array`` is a ``uint8 [T, H, W, channels]`` frame array."""
    check_frames(array, channels, crop_size, path)


def load_array(path: str | Path, channels: int, crop_size: int) -> np.ndarray:
    """Load one stored ``.npy`` frame array, checked (memory-mapped: only cropped frames are read)."""
    return open_frames(path, channels, crop_size)


def array_jobs(infos: Sequence[Any], data_dirs: Sequence[str | Path], channels: Sequence[int], crop_size: int,
               strip_v_prefix: bool = False) -> list[VideoJob]:
    """Jobs over stored arrays ``<dir>/<video>.npy`` (one dir per stream), from VideoInfo rows."""
    jobs = []
    for info in infos:
        paths = [Path(d) / f"{info.name}.npy" for d in data_dirs]
        sample_fps = float(info.sample_fps)
        duration = float(info.duration if getattr(info, "duration", None) else (
            info.count / info.fps if info.fps else info.sample_count / info.sample_fps))

        def load(paths=paths, sample_fps=sample_fps, duration=duration) -> LoadedVideo:
            return LoadedVideo([load_array(p, c, crop_size) for p, c in zip(paths, channels)], sample_fps, duration)

        key = without_v_prefix(info.name) if strip_v_prefix else info.name
        jobs.append(VideoJob(info.name, load, sample_fps, duration, key, str(paths[0])))
    return jobs


def check_array_files(jobs: Sequence[VideoJob], data_dirs: Sequence[str | Path], channels: Sequence[int],
                      crop_size: int, expected_frames: dict[str, int] | None = None) -> list[str]:
    """Problems with the stored arrays of ``jobs`` (missing, unreadable, wrong shape/dtype), found
    before any network runs, one message per bad file."""
    problems = []
    for job in jobs:
        for folder, ch in zip(data_dirs, channels):
            path = Path(folder) / f"{job.name}.npy"
            try:
                array = load_array(path, ch, crop_size)
                if expected_frames and job.name in expected_frames and array.shape[0] != expected_frames[job.name]:
                    problems.append(f"{path}: has {array.shape[0]} frames, the video-info file says "
                                    f"{expected_frames[job.name]}")
            except InputError as exc:
                problems.append(str(exc))
    return problems


# --------------------------------------------------------------------------- video files


class VideoFileLoader:
    """Decodes one video file whole, exactly as ``afsd prepare`` does (the profile's
    ``read_video`` options); a flow stream (2 channels) gets its flow computed from the decoded
    frames with the ``afsd flow`` code, once for all flow streams.

    ``on_flow_pairs(video, pairs_done, pairs_in_video)``, when set, follows that flow's progress.
    """

    on_flow_pairs: Callable[[str, int, int], Any] | None = None

    def __init__(self, path: Path, options: dict[str, Any], stream_channels: Sequence[int],
                 flow_method: str, flow_device: str):
        self.path = path
        self.options = options
        self.stream_channels = list(stream_channels)
        self.flow_method = flow_method
        self.flow_device = flow_device

    def __call__(self) -> LoadedVideo:
        from afsd_cli.data.video import read_video

        video = read_video(self.path, **self.options)
        flow = None
        arrays = []
        for channels in self.stream_channels:
            if channels == 3:
                arrays.append(video.frames)
                continue
            if flow is None:
                flow = self._flow(video.frames)
            arrays.append(flow)
        return LoadedVideo(arrays, float(video.sample_fps), float(video.duration))

    def _flow(self, frames: np.ndarray) -> np.ndarray:
        from afsd_cli.data.flow import compute_flow

        report, total = self.on_flow_pairs, len(frames) - 1
        progress = None if report is None else (lambda pairs: report(self.path.stem, pairs, total))
        return compute_flow(frames, method=self.flow_method, device=self.flow_device, progress=progress)


def video_file_jobs(paths: Sequence[str | Path], decode_options: dict[str, Any] | str, stream_channels: Sequence[int],
                    flow_method: str = "tvl1", flow_device: str = "cpu", streaming: bool = True) -> list[VideoJob]:
    """Jobs over video files, decoded with the exact preprocessing of ``afsd prepare``.

    ``decode_options``: the ``read_video`` arguments of the dataset profile
    (:meth:`afsd_cli.profile.DatasetProfile.decode_options`: sampling rule, fps, frame size), or
    just a sampling mode name. ``streaming``: frames flow through the network as they are decoded
    (engine/streaming.py, bounded memory); otherwise each video is decoded whole first
    (:class:`VideoFileLoader`).
    """
    import functools

    from afsd_cli.data.frame_stream import open_frame_stream

    options = {"mode": decode_options} if isinstance(decode_options, str) else dict(decode_options)
    jobs = []
    for path in map(Path, paths):
        loader = VideoFileLoader(path, options, stream_channels, flow_method, flow_device)
        job = VideoJob(path.stem, loader, None, None, path.stem, str(path))
        if streaming:
            job.open_frames = functools.partial(open_frame_stream, path, options, list(stream_channels),
                                                flow_method, flow_device)
        jobs.append(job)
    return jobs


def expand_video_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Video files, with every folder replaced by the video files directly inside it (sorted)."""
    from afsd_cli.data.video import list_videos

    files: list[Path] = []
    missing = []
    for path in map(Path, paths):
        if path.is_dir():
            found = list_videos(path)
            if not found:
                raise InputError("no video file in this folder", path)
            files += found
        elif path.is_file():
            files.append(path)
        else:
            missing.append(str(path))
    if missing:
        raise InputError("video file not found: " + ", ".join(missing))
    seen: dict[str, Path] = {}
    for path in files:  # a video's detections are keyed by its file name without extension
        if path.stem in seen and seen[path.stem] != path:
            raise InputError(f"two videos named {path.stem!r} ({seen[path.stem]}, {path}): their detections "
                             "would share one key; rename one")
        seen[path.stem] = path
    return list(seen.values())


# --------------------------------------------------------------------------- feature arrays


def feature_jobs(cfg: Config, profile: DatasetProfile, data_dirs: Sequence[str | Path], feature_dims: Sequence[int],
                 limit: int | None = None) -> list[VideoJob]:
    """Jobs over the feature arrays of the held-out subset (one folder per stream; the time mapping
    and durations come from the first)."""
    from afsd_cli.data.annotations import read_json_annotations
    from afsd_cli.data.feature_dataset import feature_videos

    testing = cfg.dataset.testing
    anno_path = testing.video_anno_path or testing.gt_path
    if not anno_path:
        raise ConfigError("dataset.testing.video_anno_path is not set: the annotation JSON says which videos "
                          "are in the test subset")
    annotations = read_json_annotations(anno_path)
    per_stream = [feature_videos(folder, annotations, profile.test_subset, profile, cfg.dataset.sample_fps, dim)
                  for folder, dim in zip(data_dirs, feature_dims)]
    videos = list(per_stream[0].values())[:limit] if limit else list(per_stream[0].values())
    jobs = []
    for video in videos:
        streams = [stream[video.name] for stream in per_stream]

        def load(streams=streams, video=video) -> LoadedVideo:
            return LoadedVideo([stream.load(dim) for stream, dim in zip(streams, feature_dims)],
                               video.frame_rate, video.duration)

        jobs.append(VideoJob(video.name, load, video.frame_rate, video.duration, video.name, str(video.path),
                             video.time_origin))
    return jobs
