"""Streaming inference: a video file → detections in memory that does not grow with its length.

The pipeline of one video::

    decoding thread:  frames (data/frame_stream.py) → SlidingWindows → bounded queue of windows
    calling thread:   batches of windows → Predictor.forward → decode → per-window candidates
                      → (end of video) per-class soft-NMS over all candidates → detections

Only ``clip_length`` frames per stream are held by the windower (a ring buffer: the THUMOS14
tail window ``n − L`` needs the last ``L`` frames, and ``n`` is known only when the stream
ends), plus the windows waiting in the queue (``queue_windows``, each ``L`` frames). What grows
with the video is only its candidates (a few rows per window and class), which the whole-video
soft-NMS needs. The windows, their offsets, the decoding of the boundaries and the soft-NMS are
those of the in-memory path (``Predictor.run``), so the detections are the same.

With ``on_region`` (``afsd predict --stream``), provisional detections are handed out region by
region while the video plays; see :class:`RegionEmitter` for exactly what they are.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from afsd_cli.engine.inference import Predictor, center_crop, failed_result, normalised_window, window_outputs
from afsd_cli.engine.jobs import VideoJob, VideoResult
from afsd_cli.engine.postprocess import (
    PostprocessSettings,
    RawOutputs,
    VideoMeta,
    detections_from_candidates,
    soft_nms,
    window_candidates,
)
from afsd_cli.errors import InputError

#: windows the decoding thread may have ready ahead of the network
DEFAULT_QUEUE_WINDOWS = 4


# --------------------------------------------------------------------------- windows


@dataclass
class Window:
    """One window of a video: ``clips[stream]`` is ``uint8 [C, length, crop, crop]``, frames
    ``offset .. offset + length`` (``length < clip_length`` only for a video shorter than a clip)."""

    offset: int
    clips: list[np.ndarray]


class SlidingWindows:
    """Turns a stream of frame tuples (one ``[H, W, C]`` frame per stream) into the inference
    windows of ``window_offsets``: every ``stride`` frames, plus the tail window ``n − L`` (or
    one window at 0 for a video shorter than ``L``, or with ``single_window``).

    Holds at most ``clip_length`` frames per stream (``capacity``); reads no frame beyond the
    ones the next window needs (``frames_seen``).
    """

    def __init__(self, clip_length: int, stride: int, crop_size: int, single_window: bool = False):
        self.clip_length = int(clip_length)
        self.stride = int(stride)
        self.crop_size = int(crop_size)
        self.single_window = single_window
        self.capacity = self.clip_length
        self.frames_seen = 0
        self._rings: list[np.ndarray] = []

    def windows(self, frames: Iterable[tuple[np.ndarray, ...]]) -> Iterator[Window]:
        length = self.clip_length
        next_offset = 0
        for frame in frames:
            count = self.frames_seen
            self.frames_seen += 1
            if self.single_window and count >= length:
                continue  # counted (for the duration), never used: one window at 0
            self._store(count % length, frame)
            if not self.single_window and self.frames_seen == next_offset + length:
                yield self._window(next_offset, length)
                next_offset += self.stride
        total = self.frames_seen
        if total == 0:
            return
        if self.single_window or total < length:
            yield self._window(0, min(total, length))
        elif (total - length) % self.stride:
            yield self._window(total - length, length)  # the tail window

    def _store(self, slot: int, frame: tuple[np.ndarray, ...]) -> None:
        if not self._rings:
            self._rings = [np.empty((self.capacity, *f.shape), np.uint8) for f in frame]
        for ring, part in zip(self._rings, frame):
            ring[slot] = part

    def _window(self, offset: int, length: int) -> Window:
        rows = np.arange(offset, offset + length) % self.capacity
        return Window(offset, [center_crop(ring[rows], self.crop_size) for ring in self._rings])


# --------------------------------------------------------------------------- provisional regions


@dataclass
class Region:
    """Provisional detections of ``video`` ending in ``[start, end)`` seconds (``end`` None: to the
    end of the video, taken from the final detections), or the ``final`` detections of the video."""

    video: str
    start: float | None
    end: float | None
    detections: list[dict[str, Any]]
    final: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON line of ``afsd predict --stream``."""
        if self.final:
            return {"video": self.video, "final": True, "detections": self.detections}
        return {"video": self.video, "final": False, "ends_in": [self.start, self.end],
                "detections": self.detections}


class RegionEmitter:
    """Hands out detections region by region while a video streams (``afsd predict --stream``).

    A window at offset ``o`` only produces candidates starting at or after ``o / fps``. So once
    the next window's offset ``F`` is known, no later window can add a candidate that overlaps
    one ending before ``F / fps``: the region ``[previous F, F)`` is emitted with the detections
    of a per-class soft-NMS over the candidates of the windows overlapping it, keeping those
    that end inside it. Each candidate is emitted at most once (by where it ends).

    These early detections can differ from the final ones (the offline result, computed at the
    end over all candidates) because soft-NMS is global: a candidate outside the pool can change
    which candidate is picked first and so by how much another is decayed, ``top_k`` counts over
    the whole video, the official never-keep-the-last-candidate rule drops one candidate per class
    of the whole video (a region's pool keeps its last one), and
    ``testing.clip_to_video`` cannot clip ends before the duration is known. The last region
    (from the last ``F`` to the end) is cut from the final detections, so it is exact.
    """

    def __init__(self, video: str, clip_length: int, settings: PostprocessSettings,
                 label: Callable[[int], Any], emit: Callable[[Region], None]):
        self.video = video
        self.clip_length = clip_length
        self.settings = settings
        self.label = label
        self.emit = emit
        self.start_frame: int | None = None  # None: the first region has no lower bound
        self._windows: list[tuple[int, list[np.ndarray | None]]] = []

    def add(self, offset: int, per_class: list[np.ndarray | None]) -> None:
        self._windows.append((offset, per_class))

    def advance(self, frontier: int, sample_fps: float) -> None:
        """The next window starts at frame ``frontier``: emit the region that ends there."""
        if self.start_frame is not None and frontier <= self.start_frame:
            return
        low = None if self.start_frame is None else _seconds(self.start_frame, sample_fps)
        high = _seconds(frontier, sample_fps)
        pool = [rows for offset, rows in self._windows if offset < frontier]
        detections = []
        for cls in range(1, max((len(rows) for rows in pool), default=0)):
            parts = [rows[cls] for rows in pool if rows[cls] is not None]
            if not parts:
                continue
            # emit_last: the official loop's never-keep-the-last-candidate rule drops one candidate
            # per class per *video*; applied to every region's pool it would drop one per region
            kept = soft_nms(np.concatenate(parts), sigma=self.settings.nms_sigma, top_k=self.settings.top_k,
                            score_threshold=self.settings.nms_score_thresh, emit_last=True)
            inside = (kept[:, 2] > 0) & (kept[:, 1] < high)
            if low is not None:
                inside &= kept[:, 1] >= low
            for start, end, score in kept[inside].tolist():
                if self.settings.clip_to_video:
                    start = max(0.0, start)
                detections.append({"label": self.label(cls), "score": score, "segment": [start, end]})
        self.emit(Region(self.video, None if low is None else float(low), float(high), detections))
        self.start_frame = frontier
        # a window ending before the new region cannot hold a candidate that ends inside it
        self._windows = [(o, rows) for o, rows in self._windows if o + self.clip_length >= frontier]

    def finish(self, detections: list[dict[str, Any]], sample_fps: float) -> None:
        """The last region, from the final detections, then the final detections themselves."""
        low = None if self.start_frame is None else float(_seconds(self.start_frame, sample_fps))
        last = [d for d in detections if low is None or d["segment"][1] >= low]
        self.emit(Region(self.video, low, None, last))
        self.emit(Region(self.video, None, None, detections, final=True))


def _seconds(frame: int, sample_fps: float) -> np.float32:
    # the float32 arithmetic of window_candidates, so that comparisons with candidate ends are exact
    return np.float32(frame) / np.float32(sample_fps)


# --------------------------------------------------------------------------- the streaming run


class _End:
    """Queue item: the stream ended normally."""


@dataclass
class _Failure:
    error: BaseException


@dataclass
class StreamProgress:
    """Progress of one video: sampled frames read so far and the expected total (None: unknown)."""

    video: str
    frames: int
    total: int | None
    done: bool = False


@dataclass
class _VideoState:
    job: VideoJob
    source: Any
    candidates: list[list[np.ndarray]] = field(default_factory=list)  # [class][window rows]
    windows: int = 0
    offsets: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def run_streaming(predictor: Predictor, jobs: Iterable[VideoJob],
                  on_progress: Callable[[StreamProgress], None] | None = None,
                  on_region: Callable[[Region], None] | None = None,
                  queue_windows: int = DEFAULT_QUEUE_WINDOWS) -> Iterator[VideoResult]:
    """Detections of each job (``job.open_frames`` set), one video after the other, streamed.

    A video that fails (its stream raises InputError) gives a VideoResult with ``error`` set and
    the next video runs. ``on_progress`` is called after each batch of windows;
    ``on_region`` receives the provisional regions and the final detections (``--stream``).
    """
    for job in jobs:
        try:
            yield _stream_video(predictor, job, on_progress, on_region, queue_windows)
        except InputError as exc:
            yield failed_result(job, str(exc))


def _stream_video(predictor: Predictor, job: VideoJob, on_progress, on_region, queue_windows: int) -> VideoResult:
    started = time.perf_counter()
    source = job.open_frames()
    state = _VideoState(job, source, timings={"decode": 0.0, "network": 0.0, "postprocess": 0.0})
    emitter = None
    if on_region is not None and predictor.classifier is None:
        emitter = RegionEmitter(job.name, predictor.clip_length, predictor.settings, _labeller(predictor),
                                on_region)
    _run_windows(predictor, state, emitter, on_progress, queue_windows)
    result = _finish_video(predictor, state)
    if emitter is not None:
        emitter.finish(result.detections, _sample_fps(source, job))
    elif on_region is not None:  # with a video-level classifier: only the final detections
        on_region(Region(job.name, None, None, result.detections, final=True))
    result.timings["wall"] = time.perf_counter() - started
    if on_progress is not None:
        on_progress(StreamProgress(job.name, int(source.frames_read), int(source.frames_read), done=True))
    return result


def _run_windows(predictor: Predictor, state: _VideoState, emitter: RegionEmitter | None, on_progress,
                 queue_windows: int) -> None:
    """The windows a decoding thread cuts from the stream, through the network batch by batch
    (a region emitted as each batch starts); the thread is stopped and joined whatever happens."""
    job, source = state.job, state.source
    windower = SlidingWindows(predictor.clip_length, predictor.clip_stride, predictor.crop_size,
                              predictor.single_window)
    items: queue.Queue = queue.Queue(maxsize=max(1, queue_windows))
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(source, windower, predictor, job, items, stop, state.timings),
                                name=f"afsd-decode-{job.name}", daemon=True)
    producer.start()
    try:
        batch: list[Window] = []
        while True:
            item = items.get()
            if isinstance(item, _Failure):
                raise item.error
            if item is _End:
                break
            if emitter is not None and not batch and state.windows:
                emitter.advance(item.offset, _sample_fps(source, job))
            batch.append(item)
            if len(batch) == predictor.batch_size:
                _run_batch(predictor, state, batch, emitter)
                batch = []
                _report(on_progress, job, source)
        if batch:
            _run_batch(predictor, state, batch, emitter)
    finally:
        stop.set()
        _drain(items)
        producer.join()


def _finish_video(predictor: Predictor, state: _VideoState) -> VideoResult:
    """Per-class soft-NMS over all the video's candidates, then its labelled result."""
    job, source = state.job, state.source
    sample_fps = _sample_fps(source, job)
    t0 = time.perf_counter()
    per_class = [np.concatenate(rows) if rows else None for rows in state.candidates]
    meta = VideoMeta(job.name, sample_fps, float(source.duration))
    names = predictor.class_names if predictor.classifier is None else None
    detections = detections_from_candidates(per_class, meta, predictor.settings, names)
    timings = dict(state.timings)
    timings["postprocess"] += time.perf_counter() - t0
    return predictor.finish(job, detections, meta.duration, int(source.frames_read), len(state.offsets), timings)


def _produce(source, windower: SlidingWindows, predictor: Predictor, job: VideoJob, items: queue.Queue,
             stop: threading.Event, timings: dict[str, float]) -> None:
    """The decoding thread: frames → windows → queue; stops early when ``stop`` is set."""
    windows = windower.windows(_checked(source, predictor, job))
    try:
        t0 = time.perf_counter()
        for window in windows:
            timings["decode"] += time.perf_counter() - t0
            if not _put(items, window, stop):
                return
            t0 = time.perf_counter()
        timings["decode"] += time.perf_counter() - t0
        _put(items, _End, stop)
    except BaseException as exc:  # handed to the calling thread, which raises it
        _put(items, _Failure(exc), stop)
    finally:
        windows.close()  # releases the decoder now when the run stopped early


def _checked(source, predictor: Predictor, job: VideoJob) -> Iterator[tuple[np.ndarray, ...]]:
    """The frames of ``source``; the first is checked as ``check_array`` checks stored arrays."""
    frames = iter(source)
    first = next(frames, None)
    if first is None:
        return
    if len(first) != len(predictor.channels):
        raise InputError(f"expected {len(predictor.channels)} streams, got {len(first)}", job.source)
    for frame, channels in zip(first, predictor.channels):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != channels:
            raise InputError(f"expected uint8 frames [H, W, {channels}], got {frame.dtype} {list(frame.shape)}",
                             job.source)
        if min(frame.shape[:2]) < predictor.crop_size:
            raise InputError(f"frames of {frame.shape[0]}x{frame.shape[1]} px are smaller than the "
                             f"{predictor.crop_size} px crop", job.source)
    yield first
    yield from frames


def _put(items: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(items: queue.Queue) -> None:
    while True:
        try:
            items.get_nowait()
        except queue.Empty:
            return


def _run_batch(predictor: Predictor, state: _VideoState, batch: list[Window],
               emitter: RegionEmitter | None) -> None:
    """Network, boundary decoding and candidate selection of a batch of windows of one video."""
    t0 = time.perf_counter()
    length = predictor.clip_length
    raw: list[RawOutputs] = []
    for stream in range(len(predictor.models)):
        tensor = torch.stack([normalised_window(w.clips[stream], 0, length, predictor.device) for w in batch])
        raw.append(predictor.forward(stream, tensor))
    t1 = time.perf_counter()
    sample_fps = _sample_fps(state.source, state.job)
    for row, window in enumerate(batch):
        segments, scores = predictor.decode_window([window_outputs(outputs, row) for outputs in raw])
        per_class = window_candidates(segments[0], scores[0], window.offset, sample_fps,
                                      predictor.settings.candidate_thresh)
        if not state.candidates:
            state.candidates = [[] for _ in per_class]
        for cls, rows in enumerate(per_class):
            if rows is not None:
                state.candidates[cls].append(rows)
        if emitter is not None:
            emitter.add(window.offset, per_class)
        state.offsets.append(window.offset)
    state.windows += len(batch)
    state.timings["network"] += t1 - t0
    state.timings["postprocess"] += time.perf_counter() - t1


def _sample_fps(source, job: VideoJob) -> float:
    sample_fps = job.sample_fps or getattr(source, "sample_fps", None)
    if not sample_fps or sample_fps <= 0:
        raise InputError("unknown or invalid sample fps", job.source)
    return float(sample_fps)


def _labeller(predictor: Predictor) -> Callable[[int], Any]:
    names = predictor.class_names
    if names is None:
        return lambda _cls: "action"
    return lambda cls: names[cls - 1]


def _report(on_progress, job: VideoJob, source) -> None:
    if on_progress is None:
        return
    frames, total = int(source.frames_read), getattr(source, "expected_frames", None)
    # a header that undercounts: the total is unknown rather than a bar past 100 %
    on_progress(StreamProgress(job.name, frames, total if total is not None and total >= frames else None))
