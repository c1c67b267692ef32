"""Decode one video into the official AFSD frame array: ``uint8 [T, 112, 112, 3]`` RGB.

Two temporal sampling modes, both applied to frames decoded with OpenCV:

* ``"fps"`` (alias ``"thumos14"``): the official 10 fps accumulator (``step = fps / 10``; every decoded frame adds 1
  to an accumulator, a frame is kept when the accumulator reaches ``step``, which is then
  subtracted). At 30 fps this keeps native frames 3, 6, 9, ... (1-based).
* ``"max_frames"`` (alias ``"anet"``): "dynamic fps": the video is resampled to ``target_fps = fps * min(768 / count, 1)``
  so that it has at most 768 frames. The official code re-encodes with ffmpeg ``-r target_fps``;
  here the frames are chosen on the decoded stream the way a constant-frame-rate resampler does
  (see :func:`anet_keep_indices`).

Each kept frame is resized to 112x112 (aspect ratio not kept) with PIL's antialiased bicubic,
the official resampling. The native frame count is measured by decoding, not read from the
container header.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from afsd_cli.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
#: Sampling rules: "fps" keeps frames at a fixed rate (the official THUMOS14 10 fps accumulator),
#: "max_frames" resamples each video to at most N frames (the official ActivityNet rule). The
#: dataset profile (afsd_cli/profile.py) picks one; the dataset names are accepted as aliases.
MODES = ("fps", "max_frames")
MODE_ALIASES = {"thumos14": "fps", "custom": "fps", "anet": "max_frames"}


def sampling_rule(mode: str) -> str:
    """``mode`` as one of :data:`MODES` (dataset names as aliases); InputError when unknown."""
    rule = MODE_ALIASES.get(mode, mode)
    if rule not in MODES:
        raise InputError(f"unknown sampling mode {mode!r}; choose one of {', '.join(MODES)}")
    return rule
RESIZE_METHODS = ("pil-bicubic", "cv2-area", "cv2-cubic")

THUMOS_SAMPLE_FPS = 10.0
ANET_MAX_FRAMES = 768
FRAME_SIZE = 112


@dataclass
class VideoFrames:
    """Frames of one video and what was measured while decoding it."""

    frames: np.ndarray  # uint8 [T, size, size, 3] RGB
    path: str
    mode: str
    fps: float  # native fps as OpenCV reports it
    count: int  # native frames actually decoded
    container_count: float  # CAP_PROP_FRAME_COUNT, for the record
    sample_fps: float  # 10.0 (THUMOS) or the dynamic target fps (ANet)
    kept_indices: list[int] = field(repr=False, default_factory=list)  # 0-based native indices

    @property
    def sample_count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Native duration in seconds (decoded frames / fps)."""
        return self.count / self.fps if self.fps > 0 else 0.0


@dataclass
class VideoProbe:
    path: str
    fps: float
    container_count: float
    width: int
    height: int


def _cv2():
    # FFmpeg's own warnings ("moov atom not found", "header damaged") would otherwise flood the
    # terminal from every worker; the failure is reported as an InputError instead.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


# --------------------------------------------------------------------------------------------
# temporal sampling rules


class TenFpsAccumulator:
    """The official THUMOS14 rule, fed one decoded frame at a time (float arithmetic as upstream)."""

    def __init__(self, fps: float, sample_fps: float = THUMOS_SAMPLE_FPS):
        self.step = fps / sample_fps
        self.acc = 0.0

    def keep_next(self) -> bool:
        self.acc += 1
        if self.acc >= self.step:
            self.acc -= self.step
            return True
        return False


def accumulator_keep_indices(num_frames: int, fps: float, sample_fps: float = THUMOS_SAMPLE_FPS) -> list[int]:
    """0-based native indices the THUMOS14 accumulator keeps out of ``num_frames`` frames."""
    rule = TenFpsAccumulator(fps, sample_fps)
    return [i for i in range(num_frames) if rule.keep_next()]


def anet_target_fps(fps: float, count: float, max_frames: int = ANET_MAX_FRAMES) -> float:
    """The official "dynamic fps": ``fps * min(max_frames / count, 1)``."""
    return fps * min(max_frames / count, 1.0)


def anet_keep_indices(num_frames: int, ratio: float, max_frames: int = ANET_MAX_FRAMES) -> list[int]:
    """Native indices a constant-frame-rate resample by ``ratio = target_fps / fps`` keeps.

    Rule (that of ffmpeg's ``fps`` filter with its default ``round=near``): native frame ``i``
    lands at output slot ``round(i * ratio)``; output frame ``k`` shows the last native frame whose
    slot is ``<= k``, i.e. ``i_k = ceil((k + 0.5) / ratio) - 1``. The output has
    ``round(num_frames * ratio)`` frames (at least one), truncated to ``max_frames`` as the
    official loader does. With ``ratio == 1`` every frame is kept.
    """
    if num_frames <= 0:
        return []
    if ratio >= 1.0:
        return list(range(min(num_frames, max_frames)))
    def slot(i: int) -> int:
        return math.floor(i * ratio + 0.5)

    out_count = max(1, min(slot(num_frames), max_frames))
    kept = []
    for k in range(out_count):
        i = min(num_frames - 1, max(0, math.ceil((k + 0.5) / ratio) - 1))
        # The closed form can be off by one where i * ratio lands on a half slot in floating
        # point; settle it with the slot function itself.
        while i + 1 < num_frames and slot(i + 1) <= k:
            i += 1
        while i > 0 and slot(i) > k:
            i -= 1
        kept.append(i)
    return kept


# --------------------------------------------------------------------------------------------
# spatial resize


def make_resizer(method: str = "pil-bicubic", size: int = FRAME_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """A function BGR frame (H, W, 3) -> RGB uint8 (size, size, 3).

    Resampling works per channel, so resizing the BGR frame and reversing the channels of the
    small result equals resizing the RGB frame (and converts far fewer pixels).
    """
    if method == "pil-bicubic":
        # Pillow's exact integers, from the native kernel when it builds (see ops/bicubic_resize.py).
        from afsd_cli.ops.bicubic_resize import BicubicResizer

        return BicubicResizer(size, size, reverse_channels=True)
    if method in ("cv2-area", "cv2-cubic"):
        cv2 = _cv2()
        interp = cv2.INTER_AREA if method == "cv2-area" else cv2.INTER_CUBIC

        def resize(bgr: np.ndarray) -> np.ndarray:
            return cv2.resize(bgr, (size, size), interpolation=interp)[:, :, ::-1]

        return resize
    raise InputError(f"unknown resize method {method!r}; choose one of {', '.join(RESIZE_METHODS)}")


# --------------------------------------------------------------------------------------------
# decoding


class _FrameBuffer:
    """Growable [N, size, size, 3] uint8 buffer (avoids a list + np.stack double copy)."""

    def __init__(self, estimate: int):
        self.estimate = max(int(estimate), 16)
        self.data: np.ndarray | None = None
        self.n = 0

    def next_slot(self, shape: tuple[int, ...]) -> np.ndarray:
        """The (uninitialised) row the next frame goes to; it counts as appended."""
        if self.data is None:
            self.data = np.empty((self.estimate,) + tuple(shape), np.uint8)
        elif self.n == self.data.shape[0]:
            grown = np.empty((self.n * 2,) + self.data.shape[1:], np.uint8)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.n += 1
        return self.data[self.n - 1]

    def append(self, frame: np.ndarray) -> None:
        self.next_slot(frame.shape)[...] = frame

    def result(self) -> np.ndarray:
        if self.data is None:
            return np.empty((0, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
        out = self.data[: self.n]
        # Hand back a compact array when the estimate was far off (the view would pin the buffer).
        return out.copy() if self.n < self.data.shape[0] // 2 else out


def open_capture(path: Path, threads: int | None = None):
    """An OpenCV capture of ``path`` (``threads``: FFmpeg decoder threads); InputError naming what is wrong."""
    cv2 = _cv2()
    if not path.exists():
        raise InputError("video file not found", path)
    if not path.is_file():
        raise InputError("not a regular file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", path)
    if threads:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(threads)])
        if not capture.isOpened():  # not an FFmpeg-readable file: let OpenCV try its other backends
            capture = cv2.VideoCapture(str(path))
    else:
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError("cannot open video (unreadable, corrupt or truncated container)", path)
    return capture


def probe_video(path: str | Path) -> VideoProbe:
    """fps, header frame count and size as OpenCV reports them (no decoding)."""
    cv2 = _cv2()
    path = Path(path)
    capture = open_capture(path)
    try:
        return VideoProbe(
            path=str(path),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            container_count=float(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def retrieve_frame(capture, index: int, path: str | Path) -> np.ndarray:
    """The BGR frame the last ``grab()`` decoded (native index ``index``, for the message)."""
    ok, frame = capture.retrieve()
    if not ok or frame is None:
        raise InputError(f"cannot retrieve decoded frame {index}", path)
    return frame


#: Decoded frames between two progress reports of one video.
PROGRESS_EVERY = 64


def _decode(path: Path, keep: Callable[[int], bool], estimate: int, resize, threads: int | None = None,
            progress: Callable[[int], Any] | None = None):
    """Decode every native frame; resize those ``keep(i)`` selects. Returns (frames, decoded, kept).
    ``progress(n)``: called with the count of native frames decoded since its last call."""
    capture = open_capture(path, threads)
    buffer = _FrameBuffer(estimate)
    into = getattr(resize, "into", None)  # resizes straight into the array (no allocation + copy)
    kept: list[int] = []
    decoded = 0
    try:
        while True:
            # grab() decodes; retrieve() only pays the pixel conversion for frames we keep.
            if not capture.grab():
                break
            index = decoded
            decoded += 1
            if progress is not None and decoded % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            if not keep(index):
                continue
            frame = retrieve_frame(capture, index, path)
            if into is not None:
                into(frame, buffer.next_slot(resize.output_shape(frame)))
            else:
                buffer.append(resize(frame))
            kept.append(index)
    finally:
        capture.release()
    if progress is not None and decoded % PROGRESS_EVERY:
        progress(decoded % PROGRESS_EVERY)
    return buffer.result(), decoded, kept


def read_video(
    path: str | Path,
    mode: str = "fps",
    *,
    resize: str = "pil-bicubic",
    sample_fps: float = THUMOS_SAMPLE_FPS,
    max_frames: int = ANET_MAX_FRAMES,
    strict_count: bool = True,
    decode_threads: int | None = None,
    size: int = FRAME_SIZE,
    progress: Callable[[int], Any] | None = None,
) -> VideoFrames:
    """Decode, resample and resize one video; return the frames with the measured fps/count.

    Raises :class:`InputError` naming the file for anything that makes the video unusable:
    missing/unreadable/corrupt container, no frames, fps <= 0, fps below the 10 fps target
    (THUMOS14 mode), or (``strict_count``, the official behaviour) a decoded frame count that
    differs from the container's, which is how truncated files show up.
    ``decode_threads``: FFmpeg decoder threads (None: OpenCV's default, every core); batch
    workers use 1 so that N workers do not each start N threads. ``progress(n)``: called as
    native frames are decoded (every 64), so a long video's progress moves.
    """
    mode = sampling_rule(mode)
    path = Path(path)
    probe = probe_video(path)
    check_frame_rate(probe.fps, path)
    resizer = make_resizer(resize, size)
    if mode == "fps":
        frames, decoded, kept, target_fps = _read_at_fixed_rate(path, probe, resizer, sample_fps, decode_threads,
                                                                progress)
    else:
        frames, decoded, kept, target_fps = _read_at_most(path, probe, resizer, max_frames, strict_count,
                                                          decode_threads, progress)
    check_decoded(path, decoded, frames.shape[0], probe.container_count, strict_count)
    return VideoFrames(
        frames=frames,
        path=str(path),
        mode=mode,
        fps=probe.fps,
        count=decoded,
        container_count=probe.container_count,
        sample_fps=target_fps,
        kept_indices=kept,
    )


def check_frame_rate(fps: float, path: str | Path) -> None:
    """Sampling needs the container's frame rate: refuse one that is not a positive number."""
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"container reports an invalid frame rate ({fps})", path)


def check_sampling_rate(fps: float, sample_fps: float, path: str | Path) -> None:
    """The fixed-rate rule never repeats a frame: the video must have at least ``sample_fps``."""
    if fps < sample_fps:
        raise InputError(f"frame rate {fps:g} fps is below the {sample_fps:g} fps sampling rate", path)


def check_decoded(path: str | Path, decoded: int, kept: int, container_count: float, strict_count: bool) -> None:
    """What only decoding the whole video shows: no frame at all, a decoded count that differs from
    the container's (``strict_count``: how truncated files show up), no frame kept."""
    if decoded == 0:
        raise InputError("no frames could be decoded (zero-frame or corrupt video)", path)
    # A header without a frame count (<= 0) has nothing to check against.
    if strict_count and container_count > 0 and decoded != int(container_count):
        raise InputError(
            f"decoded {decoded} frames but the container says {int(container_count)} "
            "(truncated or corrupt file; --lenient-count accepts the decoded count)",
            path,
        )
    if kept == 0:
        raise InputError(f"no frame kept out of {decoded} decoded", path)


def _read_at_fixed_rate(path: Path, probe: VideoProbe, resizer, sample_fps: float, threads: int | None,
                        progress: Callable[[int], Any] | None) -> tuple[np.ndarray, int, list[int], float]:
    """``(frames, decoded, kept indices, sample fps)`` of the THUMOS14 accumulator at ``sample_fps``."""
    check_sampling_rate(probe.fps, sample_fps, path)
    rule = TenFpsAccumulator(probe.fps, sample_fps)
    estimate = int(probe.container_count / rule.step) + 2 if probe.container_count > 0 else 64
    frames, decoded, kept = _decode(path, lambda _i: rule.keep_next(), estimate, resizer, threads, progress)
    return frames, decoded, kept, sample_fps


def _read_at_most(path: Path, probe: VideoProbe, resizer, max_frames: int, strict_count: bool, threads: int | None,
                  progress: Callable[[int], Any] | None) -> tuple[np.ndarray, int, list[int], float]:
    """``(frames, decoded, kept indices, sample fps)`` of ActivityNet's "dynamic fps": at most ``max_frames``."""
    # Frames are chosen before decoding, from the header's count; a header without a count
    # costs one extra counting pass.
    planned = int(probe.container_count) if probe.container_count > 0 else _count_frames(path, threads)
    ratio = min(max_frames / planned, 1.0) if planned > 0 else 1.0
    frames, decoded, kept = _decode_anet(path, anet_keep_indices(planned, ratio, max_frames), resizer, threads,
                                         progress)
    if decoded != planned and decoded > 0 and not strict_count:
        # The header was wrong: plan again on the measured count (a second decoding pass).
        ratio = min(max_frames / decoded, 1.0)
        frames, decoded, kept = _decode_anet(path, anet_keep_indices(decoded, ratio, max_frames), resizer, threads)
    return frames, decoded, kept, probe.fps * ratio


def _count_frames(path: Path, threads: int | None = None) -> int:
    capture = open_capture(path, threads)
    try:
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def _decode_anet(path: Path, wanted: list[int], resizer, threads: int | None = None,
                 progress: Callable[[int], Any] | None = None):
    # A native frame may be shown by several output frames (upsampling never happens here since
    # ratio <= 1, but rounding can repeat the last one): keep each needed native frame once and
    # expand afterwards.
    needed = set(wanted)
    frames, decoded, kept = _decode(path, needed.__contains__, len(needed), resizer, threads, progress)
    position = {native: row for row, native in enumerate(kept)}
    rows = [position[i] for i in wanted if i in position]
    if len(rows) != len(kept) or rows != list(range(len(rows))):
        frames = frames[rows]
    return frames, decoded, [kept[r] for r in rows]


def read_frames(path: str | Path, mode: str = "fps", **kwargs) -> np.ndarray:
    """Just the ``uint8 [T, 112, 112, 3]`` RGB array (see :func:`read_video` for the details)."""
    return read_video(path, mode, **kwargs).frames


# --------------------------------------------------------------------------------------------
# listing


def list_videos(video_dir: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Every video file (by extension, case-insensitive) directly inside ``video_dir``, sorted."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise InputError("video folder not found", video_dir)
    wanted = {e.lower() for e in extensions}
    return sorted(p for p in video_dir.iterdir() if p.suffix.lower() in wanted and not p.name.startswith("."))


def find_video(video_dir: str | Path, name: str, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> Path | None:
    """The file for video ``name`` (a stem, as in the annotation files): ``.mp4`` first."""
    video_dir = Path(video_dir)
    for ext in extensions:
        for candidate in (video_dir / f"{name}{ext}", video_dir / f"{name}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None
