"""Frames of a video file one at a time, in bounded memory: the streaming form of ``read_video``.

:class:`VideoFrameStream` decodes a video and yields its sampled, resized RGB frames as they
come out of the decoder, with the exact rules of :func:`afsd_cli.data.video.read_video` (the
THUMOS14 10 fps accumulator, the same resizer): only the current frame is held. After the last
frame it checks what ``read_video`` checks (no frame decoded, the decoded count against the
container's with ``strict_count``) and raises the same :class:`InputError`.

ActivityNet mode picks its frames from the total count before decoding and keeps at most 768 of
them, so its memory is already bounded: the stream decodes them with ``read_video`` and yields
them.

:class:`FlowFrameStream` adds the optical flow of consecutive frames on the fly, in the chunks
of pairs ``compute_flow`` solves at once (so the flow is identical), the last flow repeated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from afsd_cli.data.video import (
    ANET_MAX_FRAMES,
    FRAME_SIZE,
    THUMOS_SAMPLE_FPS,
    TenFpsAccumulator,
    check_decoded,
    check_frame_rate,
    check_sampling_rate,
    make_resizer,
    open_capture,
    probe_video,
    read_video,
    retrieve_frame,
    sampling_rule,
)


class VideoFrameStream:
    """Sampled, resized RGB frames ``uint8 [size, size, 3]`` of one video file, in order.

    Known before decoding: ``fps``, ``container_count`` and (THUMOS14) ``sample_fps`` and
    ``expected_frames`` (from the header, None when the header has no count: a progress total,
    never trusted for the windows). Known after the last frame: ``decoded`` (native frames) and
    ``frames_read`` (sampled frames; it grows while decoding, for progress), ``duration``.
    One pass only: iterating twice raises.
    """

    def __init__(self, path: str | Path, mode: str = "fps", *, resize: str = "pil-bicubic",
                 sample_fps: float = THUMOS_SAMPLE_FPS, max_frames: int = ANET_MAX_FRAMES,
                 strict_count: bool = True, decode_threads: int | None = None, size: int = FRAME_SIZE):
        mode = sampling_rule(mode)
        self.path = Path(path)
        self.mode = mode
        self.resize = resize
        self.size = size
        self.max_frames = max_frames
        self.strict_count = strict_count
        self.decode_threads = decode_threads
        probe = probe_video(self.path)
        self.fps, self.container_count = probe.fps, probe.container_count
        # the checks of read_video, before any decoding
        check_frame_rate(self.fps, self.path)
        if mode == "fps":
            check_sampling_rate(self.fps, sample_fps, self.path)
        self.sample_fps: float | None = float(sample_fps) if mode == "fps" else None
        self.expected_frames = self._expected_frames()
        self.decoded = 0
        self.frames_read = 0
        self._started = False

    @property
    def duration(self) -> float:
        """Native duration in seconds (decoded frames / fps), as ``VideoFrames.duration``."""
        return self.decoded / self.fps

    def _expected_frames(self) -> int | None:
        if self.container_count <= 0 or not math.isfinite(self.container_count):
            return None
        if self.mode == "max_frames":
            return min(int(self.container_count), self.max_frames)
        step = self.fps / float(self.sample_fps)
        return int(self.container_count / step)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError("a VideoFrameStream can be iterated once")
        self._started = True
        if self.mode == "max_frames":
            return self._anet_frames()
        return self._thumos_frames()

    def _thumos_frames(self) -> Iterator[np.ndarray]:
        rule = TenFpsAccumulator(self.fps, float(self.sample_fps))
        resizer = make_resizer(self.resize, self.size)
        capture = open_capture(self.path, self.decode_threads)
        try:
            while capture.grab():  # grab() decodes; retrieve() converts only the kept frames
                index = self.decoded
                self.decoded += 1
                if not rule.keep_next():
                    continue
                frame = retrieve_frame(capture, index, self.path)
                self.frames_read += 1
                yield resizer(frame)
        finally:
            capture.release()
        self._check_end()

    def _check_end(self) -> None:
        """read_video's checks once the stream has ended (the same function)."""
        check_decoded(self.path, self.decoded, self.frames_read, self.container_count, self.strict_count)

    def _anet_frames(self) -> Iterator[np.ndarray]:
        # at most max_frames frames, chosen from the total count: read_video's bounded result
        video = read_video(self.path, "max_frames", resize=self.resize, max_frames=self.max_frames,
                           strict_count=self.strict_count, decode_threads=self.decode_threads, size=self.size)
        self.decoded, self.sample_fps = video.count, float(video.sample_fps)
        self.frames_read = video.sample_count
        yield from video.frames


class FlowFrameStream:
    """``(rgb, flow)`` frame pairs of an RGB frame stream; flow ``uint8 [H, W, 2]`` of ``afsd flow``.

    ``flow[t]`` maps frame ``t`` to ``t + 1``; the last flow is repeated (one frame alone: no
    motion). Pairs are solved ``batch_size`` at a time from the first one, the batches
    ``compute_flow`` forms, so the flow equals that of the whole array; at most
    ``batch_size + 1`` frames are held.
    """

    def __init__(self, frames: VideoFrameStream, method: str = "tvl1", device: str = "cpu",
                 batch_size: int | None = None):
        from afsd_cli.data.flow.api import DEFAULT_BATCH_SIZE, DEFAULT_CUDA_BATCH_SIZE

        self.frames = frames
        self.method = method
        self.device = device
        self.batch_size = int(batch_size or (DEFAULT_CUDA_BATCH_SIZE if str(device).startswith("cuda")
                                             else DEFAULT_BATCH_SIZE))

    def __getattr__(self, name: str):
        # fps, sample_fps, decoded, frames_read, duration... are those of the RGB stream
        return getattr(self.__dict__["frames"], name)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from afsd_cli.data.flow import quantize_flow

        pending: list[np.ndarray] = []
        last_flow: np.ndarray | None = None
        for frame in self.frames:
            pending.append(frame)
            if len(pending) == self.batch_size + 1:
                flows = self._flows(pending)
                yield from zip(pending[:-1], flows)
                last_flow = flows[-1]
                pending = pending[-1:]
        if len(pending) > 1:
            flows = self._flows(pending)
            yield from zip(pending[:-1], flows)
            last_flow = flows[-1]
        if pending:
            if last_flow is None:  # a single frame: no motion
                last_flow = np.broadcast_to(quantize_flow(np.zeros(1, np.float32))[0],
                                            (*pending[0].shape[:2], 2)).copy()
            yield pending[-1], last_flow

    def _flows(self, frames: list[np.ndarray]) -> np.ndarray:
        from afsd_cli.data.flow import compute_flow_float, quantize_flow

        return quantize_flow(compute_flow_float(np.stack(frames), method=self.method, device=self.device,
                                                batch_size=self.batch_size))


def open_frame_stream(path: str | Path, decode_options: dict | str, stream_channels: list[int] | tuple[int, ...],
                      flow_method: str = "tvl1", flow_device: str = "cpu"):
    """The frame stream a model (or an RGB + flow pair) needs: yields one tuple of frames per
    sampled frame, one per stream in ``stream_channels`` order (3: RGB, 2: flow).
    ``decode_options``: ``read_video``'s arguments for the dataset profile (mode, fps, size,
    resize: ``DatasetProfile.decode_options``), or just a mode name."""
    options = {"mode": decode_options} if isinstance(decode_options, str) else dict(decode_options)
    rgb = VideoFrameStream(path, **options)
    if all(channels == 3 for channels in stream_channels):
        return _Tupled(rgb, lambda frame: tuple(frame for _ in stream_channels))
    with_flow = FlowFrameStream(rgb, flow_method, flow_device)
    return _Tupled(with_flow, lambda pair: tuple(pair[0] if c == 3 else pair[1] for c in stream_channels))


class _Tupled:
    """A stream whose items are reshaped by ``arrange``; attributes are the wrapped stream's."""

    def __init__(self, stream, arrange):
        self.stream = stream
        self.arrange = arrange

    def __getattr__(self, name: str):
        return getattr(self.__dict__["stream"], name)

    def __iter__(self):
        return (self.arrange(item) for item in self.stream)

