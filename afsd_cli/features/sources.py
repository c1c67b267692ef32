"""Frames → centre-cropped clips, streamed in chunks so a long video never sits in memory whole.

A source yields chunks ``uint8 [n, H, W, C]`` of consecutive frames: decoded from a video
(every frame, or resampled to N fps with the THUMOS14 accumulator rule of ``data/video.py``,
resized so the short side is ``round(size * 256/224)``), or read from a frame array (only
cropped). Flow chunks are computed from RGB chunks with ``afsd flow``'s methods, one frame
carried over between chunks so every consecutive pair is seen once. :class:`ClipAssembler`
cuts the cropped stream into clips ``[i*stride, i*stride + clip_frames)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from afsd_cli.errors import ConfigError, InputError

if TYPE_CHECKING:
    from afsd_cli.data.video import VideoProbe

CHUNK_FRAMES = 128
RESIZE_RATIO = 256 / 224  # short side before the crop, as Kinetics I3D inputs are made


def short_side_for(size: int) -> int:
    """Short side the decoded frames are resized to before the centre crop (224 → 256)."""
    return math.floor(size * RESIZE_RATIO + 0.5)


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side ``short_side`` and the aspect ratio kept."""
    if height <= width:
        return short_side, max(short_side, math.floor(width * short_side / height + 0.5))
    return max(short_side, math.floor(height * short_side / width + 0.5)), short_side


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centre crop, rounded half to even as pytorch-i3d's
    ``videotransforms.CenterCrop`` (``np.round``) does."""
    return int(np.round((height - size) / 2)), int(np.round((width - size) / 2))


def centre_crop(chunk: np.ndarray, size: int, where: str | Path | None = None) -> np.ndarray:
    """``chunk[:, top:top+size, left:left+size]`` (a view); frames smaller than ``size`` raise."""
    height, width = chunk.shape[1:3]
    if height < size or width < size:
        raise InputError(f"frames of {height}x{width} px are smaller than the {size} px crop (--size)", where)
    top, left = crop_offsets(height, width, size)
    return chunk[:, top:top + size, left:left + size]


# --------------------------------------------------------------------------------------------
# sources


@dataclass
class VideoStream:
    """Chunks of RGB frames decoded from one video, and its rates (filled in while decoding)."""

    path: Path
    fps: float  # native
    sample_fps: float  # rate of the frames yielded
    chunks: Iterator[np.ndarray]
    decoded: int = 0
    kept: int = 0


def open_video(path: str | Path, size: int, target_fps: float | None, chunk_frames: int | None = None,
               decode_threads: int | None = None) -> VideoStream:
    """Decode ``path`` lazily: every frame (``target_fps=None``) or ``target_fps`` frames/s."""
    from afsd_cli.data.video import TenFpsAccumulator
    from afsd_cli.ops.bicubic_resize import BicubicResizer

    path = Path(path)
    probe = _probe_for_extraction(path, target_fps)
    shape = resized_shape(probe.height, probe.width, short_side_for(size))
    resizer = BicubicResizer(*shape, reverse_channels=True)
    keep = TenFpsAccumulator(probe.fps, target_fps).keep_next if target_fps is not None else (lambda: True)
    stream = VideoStream(path, probe.fps, target_fps or probe.fps, iter(()))
    stream.chunks = _decoded_chunks(stream, probe, resizer, shape, keep, chunk_frames or CHUNK_FRAMES, decode_threads)
    return stream


def _probe_for_extraction(path: Path, target_fps: float | None) -> VideoProbe:
    """The video's header, refused when its rate or size is unusable or below ``target_fps``."""
    from afsd_cli.data.video import check_frame_rate, probe_video

    probe = probe_video(path)
    check_frame_rate(probe.fps, path)
    if target_fps is not None and target_fps > probe.fps:
        raise InputError(f"--fps {target_fps:g} is above the video's {probe.fps:g} fps (frames are never repeated)",
                         path)
    if probe.width <= 0 or probe.height <= 0:
        raise InputError(f"container reports an invalid frame size ({probe.width}x{probe.height})", path)
    return probe


def _decoded_chunks(stream: VideoStream, probe: VideoProbe, resizer: Any, shape: tuple[int, int],
                    keep: Callable[[], bool], chunk_frames: int, decode_threads: int | None) -> Iterator[np.ndarray]:
    """The frames ``keep()`` selects, resized to ``shape``, in chunks of ``chunk_frames``; counts the
    decoded and kept frames on ``stream``. A frame of another size than the header's is refused."""
    from afsd_cli.data.video import open_capture, retrieve_frame

    capture = open_capture(stream.path, decode_threads)
    buffer = np.empty((chunk_frames, *shape, 3), np.uint8)
    filled = 0
    try:
        while capture.grab():
            stream.decoded += 1
            if not keep():
                continue
            frame = retrieve_frame(capture, stream.decoded - 1, stream.path)
            if frame.shape[:2] != (probe.height, probe.width):
                raise InputError(f"frame {stream.decoded - 1} is {frame.shape[1]}x{frame.shape[0]}, the "
                                 f"container says {probe.width}x{probe.height}", stream.path)
            resizer.into(frame, buffer[filled])
            filled += 1
            stream.kept += 1
            if filled == chunk_frames:
                yield buffer.copy()
                filled = 0
    finally:
        capture.release()
    if filled:
        yield buffer[:filled].copy()
    if stream.decoded == 0:
        raise InputError("no frames could be decoded (zero-frame or corrupt video)", stream.path)


def array_chunks(array: np.ndarray, chunk_frames: int | None = None) -> Iterator[np.ndarray]:
    chunk_frames = chunk_frames or CHUNK_FRAMES
    for start in range(0, array.shape[0], chunk_frames):
        yield np.asarray(array[start:start + chunk_frames])


class FlowFromFrames:
    """Quantised flow ``uint8 [n, H, W, 2]`` of an RGB chunk stream, equal to ``compute_flow`` on
    the whole sequence: flow ``t`` maps frame ``t`` to ``t+1`` and the last flow is repeated (a
    single frame gives one zero-motion frame). One frame is carried over between chunks."""

    def __init__(self, method: str, device: str = "cpu", method_options: dict | None = None):
        self.method, self.device, self.options = method, device, dict(method_options or {})
        self.previous: np.ndarray | None = None  # last frame seen
        self.last_flow: np.ndarray | None = None

    def push(self, chunk: np.ndarray) -> np.ndarray | None:
        from afsd_cli.data.flow import compute_flow_float
        from afsd_cli.data.flow.quantize import quantize_flow

        if len(chunk) == 0:
            return None
        frames = chunk if self.previous is None else np.concatenate([self.previous[None], chunk])
        self.previous = chunk[-1].copy()
        if len(frames) < 2:
            return None
        flow = quantize_flow(compute_flow_float(frames, method=self.method, device=self.device, **self.options))
        self.last_flow = flow[-1]
        return flow

    def finish(self) -> np.ndarray | None:
        from afsd_cli.data.flow.quantize import quantize_flow

        if self.previous is None:
            return None
        if self.last_flow is None:  # one frame in all
            return quantize_flow(np.zeros((1, *self.previous.shape[:2], 2), np.float32))
        return self.last_flow[None]


# --------------------------------------------------------------------------------------------
# clips


class ClipAssembler:
    """Cuts a stream of frame chunks into clips ``[i*stride, i*stride + clip_frames)``.

    ``push`` returns the clips completed by a chunk (``uint8 [n, clip_frames, H, W, C]``);
    ``finish`` returns the single clip of a stream shorter than one clip, padded with its last
    frame, or nothing. Only the frames a future clip needs are kept.
    """

    def __init__(self, clip_frames: int, stride: int):
        if clip_frames < 1 or stride < 1:
            raise ConfigError(f"clip_frames and stride must be at least 1, got {clip_frames} and {stride}")
        self.clip_frames, self.stride = clip_frames, stride
        self.buffer: np.ndarray | None = None
        self.base = 0  # global index of buffer[0]
        self.next_start = 0  # first frame of the next clip
        self.frames = 0
        self.clips = 0

    def push(self, chunk: np.ndarray) -> np.ndarray | None:
        if len(chunk) == 0:
            return None
        self.frames += len(chunk)
        self.buffer = chunk if self.buffer is None or len(self.buffer) == 0 else np.concatenate([self.buffer, chunk])
        starts = []
        while self.next_start + self.clip_frames <= self.base + len(self.buffer):
            starts.append(self.next_start - self.base)
            self.next_start += self.stride
        clips = np.stack([self.buffer[s:s + self.clip_frames] for s in starts]) if starts else None
        drop = min(self.next_start - self.base, len(self.buffer))
        self.buffer = self.buffer[drop:]
        self.base += drop
        self.clips += len(starts)
        return clips

    def finish(self) -> np.ndarray | None:
        if self.clips or self.buffer is None or len(self.buffer) == 0:
            return None
        padding = np.repeat(self.buffer[-1:], self.clip_frames - len(self.buffer), axis=0)
        self.clips = 1
        return np.concatenate([self.buffer, padding])[None]
