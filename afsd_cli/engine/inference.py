"""Windows → batched forward passes → raw outputs → detections, for one or two streams.

The official scripts (``thumos14/test.py``, ``anet/test.py``) run one window at a time. Here the windows of all
videos flow through the network in batches of ``batch_size`` (windows of different videos may
share a batch); each video is post-processed as soon as its last window is back. In fp32 the
detections do not depend on the batch size (tested with 1 vs 3).

Per window: the uint8 frames ``[T, H, W, C]`` are centre-cropped, sliced, normalised
``x / 255 · 2 − 1`` and *then* zero-padded to ``clip_length`` (pad value 0.0, as
``thumos14/test.py``; ``anet/test.py`` pads raw 127.5 before normalising, the same 0.0). Fusion runs both
networks on the same windows and combines their raw outputs before decoding.

:class:`Predictor` (models + settings) runs :class:`~afsd_cli.engine.jobs.VideoJob` items in three
stages, each timed per video in ``VideoResult.timings``:

* :meth:`Predictor.preprocess`: a job → its arrays loaded, checked and cut into windows ("decode");
* :meth:`Predictor.inference`: a batch of windows, of one or more videos → raw outputs ("network",
  the batch's time shared among its windows);
* :meth:`Predictor.postprocess`: a video whose windows are all back → boundaries decoded →
  candidates → soft-NMS → labelled detections ("postprocess").

:class:`WindowBatcher` groups the windows into batches and says when a video is complete;
:meth:`Predictor.run` chains the stages (video files go to engine/streaming.py instead).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from afsd_cli.engine.classifier import Classifier
from afsd_cli.engine.jobs import VideoJob, VideoResult, check_array
from afsd_cli.engine.postprocess import (
    PostprocessSettings,
    RawOutputs,
    VideoMeta,
    assemble_detections,
    decode,
    decode_fused,
    relabel_with_classifier,
)
from afsd_cli.errors import CheckpointError, ConfigError, InputError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (CUDA when available) → the device to run on."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    return device


# --------------------------------------------------------------------------- window inputs


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """``[T, H, W, C]`` → ``[C, T, size, size]`` centre crop (official offsets ``round((H-size)/2)``)."""
    _, height, width, _ = frames.shape
    top = int(np.round((height - size) / 2.0))
    left = int(np.round((width - size) / 2.0))
    return np.ascontiguousarray(frames[:, top:top + size, left:left + size].transpose(3, 0, 1, 2))


class CroppedFrames:
    """``[C, T, size, size]`` centre crop of a ``[T, H, W, C]`` array, cut window by window.

    ``frames[:, a:b]`` crops only frames ``a..b`` (:func:`center_crop` of them), so a memory-mapped
    array is read one window at a time instead of being copied whole.
    """

    def __init__(self, frames: np.ndarray, size: int):
        self.frames = frames
        self.size = size
        self.shape = (frames.shape[3], frames.shape[0], size, size)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], slice)):
            raise IndexError("CroppedFrames supports [:, start:stop] only")
        return center_crop(self.frames[key[1]], self.size)


def window_offsets(num_frames: int, clip_length: int, stride: int, single_window: bool) -> list[int]:
    """Window starts of a video: ActivityNet one at 0; THUMOS14 strided plus the tail (thumos14/test.py)."""
    if single_window:
        return [0]
    from afsd_cli.data.windows import test_window_offsets

    return test_window_offsets(num_frames, clip_length, stride)


def normalised_window(clip: np.ndarray, offset: int, clip_length: int,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """``[C, L, h, w]`` float32: frames ``offset..offset+L`` normalised, zero-padded at the end.

    The uint8 frames move to ``device`` first (4× less to copy than floats); the arithmetic is
    the official ``x / 255 · 2 − 1`` in float32, then the padding (0.0) is appended.
    """
    part = torch.from_numpy(np.ascontiguousarray(clip[:, offset:offset + clip_length])).to(device)
    part = (part.float() / 255.0) * 2.0 - 1.0
    if part.shape[1] < clip_length:
        pad = part.new_zeros((part.shape[0], clip_length - part.shape[1], *part.shape[2:]))
        part = torch.cat([part, pad], dim=1)
    return part


def feature_window(sequence: np.ndarray, first: int, steps: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """``[C, steps]`` float32: features ``first..first+steps`` of a ``[C, T']`` sequence, zero-padded
    at the end (the padding of the frame windows, which is 0.0 after normalisation)."""
    part = torch.from_numpy(np.ascontiguousarray(sequence[:, first:first + steps])).to(device)
    if part.shape[1] < steps:
        part = torch.cat([part, part.new_zeros((part.shape[0], steps - part.shape[1]))], dim=1)
    return part


def window_outputs(outputs: RawOutputs, row: int) -> RawOutputs:
    """One window's raw outputs out of a batch's (``priors`` are the same for every window)."""
    return RawOutputs(*(part[row:row + 1] for part in outputs[:5]), outputs.priors)


# --------------------------------------------------------------------------- videos between the stages


@dataclass
class PreparedVideo:
    """A video between :meth:`Predictor.preprocess` and :meth:`Predictor.postprocess`: its
    windows' inputs, and their raw outputs as the batches come back."""

    job: VideoJob
    clips: list[Any]  # per stream: CroppedFrames (frame models) or a [C, T'] feature sequence
    offsets: list[int]  # window starts, in network frames
    frames: int
    duration: float | None
    sample_fps: float
    outputs: list[list[RawOutputs | None]]  # [stream][window]
    remaining: int  # windows not yet back from the network
    timings: dict[str, float]


WindowRef = tuple[PreparedVideo, int]  # (video, window index)


def failed_result(job: VideoJob, message: str, video: PreparedVideo | None = None) -> VideoResult:
    """The result of a video that failed (``error`` set, no detections), with what it cost so far."""
    return VideoResult(job.name, job.output_key or job.name, [], video.frames if video else 0,
                       len(video.offsets) if video else 0, video.timings if video else {}, error=message)


class WindowBatcher:
    """The windows of consecutive videos, queued into batches of ``batch_size`` (a batch may mix
    videos); hands each video back, in job order, once all its windows have been through the network."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self._queue: list[WindowRef] = []
        self._open: dict[int, PreparedVideo] = {}  # job index → video with windows still out

    def add(self, index: int, video: PreparedVideo) -> None:
        self._open[index] = video
        self._queue.extend((video, window) for window in range(len(video.offsets)))

    def next_batch(self, last: bool = False) -> list[WindowRef]:
        """A full batch, or with ``last`` (no video will follow) whatever is left; ``[]`` when none."""
        if not self._queue or (not last and len(self._queue) < self.batch_size):
            return []
        batch, self._queue = self._queue[:self.batch_size], self._queue[self.batch_size:]
        return batch

    def completed(self, batch: list[WindowRef]) -> list[tuple[int, PreparedVideo]]:
        """Count ``batch`` as back from the network; the videos now complete (their frames released)."""
        for video, _ in batch:
            video.remaining -= 1
        complete = [(index, video) for index, video in self._open.items() if video.remaining == 0]
        for index, video in complete:
            del self._open[index]
            video.clips = []  # the frames are no longer needed
        return complete


class _InWorker:
    """A video whose candidate selection + soft-NMS runs in a worker process."""

    def __init__(self, future: Future, finish: Callable[[list[dict[str, Any]], float], VideoResult]):
        self.future = future
        self.finish = finish  # (detections, seconds in the worker) → the video's result

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> VideoResult:
        return self.finish(*self.future.result())


class _InJobOrder:
    """Finished videos handed back in the order of their jobs: one still in a worker holds back
    those after it."""

    def __init__(self, total: int):
        self.total = total
        self._entries: dict[int, VideoResult | _InWorker] = {}
        self._next = 0

    def put(self, index: int, entry: VideoResult | _InWorker) -> None:
        self._entries[index] = entry

    def ready(self) -> Iterator[VideoResult]:
        """The results that can be handed back without waiting."""
        while self._next in self._entries and (
                isinstance(self._entries[self._next], VideoResult) or self._entries[self._next].done()):
            yield self._pop()

    def rest(self) -> Iterator[VideoResult]:
        """Every remaining result, waiting for the workers."""
        while self._next < self.total:
            yield self._pop()

    def _pop(self) -> VideoResult:
        entry = self._entries.pop(self._next)
        self._next += 1
        return entry if isinstance(entry, VideoResult) else entry.result()


# --------------------------------------------------------------------------- the predictor


class Predictor:
    """Runs one model (or an RGB + flow pair) over videos and returns their detections.

    ``models``: one model, or two (RGB first, flow second) for fusion. ``fusion``: "average"
    (THUMOS14) or "geometric" (ActivityNet); ignored for one model.
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        settings: PostprocessSettings,
        class_names: Sequence[str] | None,
        clip_length: int,
        clip_stride: int,
        crop_size: int,
        single_window: bool = False,
        fusion: str = "average",
        device: str | torch.device = "cpu",
        batch_size: int = 1,
        amp: str | None = None,
        classifier: Classifier | None = None,
        deterministic: bool = False,
    ):
        _check_run_settings(models, batch_size)
        self.device = torch.device(device)
        _check_precision(amp, self.device)
        self.models = [model.to(self.device).eval() for model in models]
        self.settings = settings
        self.class_names = class_names
        self.clip_length = clip_length
        self.clip_stride = clip_stride
        self.crop_size = crop_size
        self.single_window = single_window
        self.fusion = fusion
        self.batch_size = batch_size
        self.amp = amp
        self.classifier = classifier
        self.deterministic = deterministic
        # feature models read [T', C] arrays: their windows count features, 4 network frames each
        self.features, self.channels = _stream_inputs(self.models)

    # ---- the whole run
    def run(self, jobs: Iterable[VideoJob], prefetch: int = 1, postprocess_workers: int = 0,
            on_progress: Callable[[Any], None] | None = None,
            on_region: Callable[[Any], None] | None = None) -> Iterator[VideoResult]:
        """Process ``jobs`` in order; yields one VideoResult per job (``error`` set on failure).

        Video files (jobs with ``open_frames``) are streamed one after the other in bounded
        memory by engine/streaming.py, which calls ``on_progress`` / ``on_region``.

        Windows of consecutive videos share batches; arrays of the next videos are loaded in a
        background thread while the network runs. ``postprocess_workers > 0`` runs candidate
        selection + soft-NMS (pure Python/NumPy, the bottleneck on a fast GPU) in that many
        worker processes, overlapping with the network.
        """
        jobs = list(jobs)
        if jobs and all(job.open_frames is not None for job in jobs):
            from afsd_cli.engine.streaming import run_streaming

            yield from run_streaming(self, jobs, on_progress, on_region)
            return
        workers = self._workers(postprocess_workers)
        batcher = WindowBatcher(self.batch_size)
        finished = _InJobOrder(len(jobs))
        with contextlib.closing(self._prefetched(jobs, prefetch)) as prepared_videos:
            for index, prepared in enumerate(prepared_videos):
                if isinstance(prepared, VideoResult):  # it failed to load
                    finished.put(index, prepared)
                else:
                    batcher.add(index, prepared)
                    self._run_batches(batcher, finished, workers)
                yield from finished.ready()
        self._run_batches(batcher, finished, workers, last=True)
        yield from finished.rest()

    def _prefetched(self, jobs: list[VideoJob], prefetch: int) -> Iterator[PreparedVideo | VideoResult]:
        """Each job preprocessed, in job order, the next ``prefetch`` loading in background threads
        meanwhile; a video that fails to load comes back as its failed result."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
            loading = deque(pool.submit(self._preprocess_or_fail, job) for job in jobs[:prefetch + 1])
            waiting = iter(jobs[prefetch + 1:])
            while loading:
                prepared = loading.popleft().result()
                following = next(waiting, None)
                if following is not None:
                    loading.append(pool.submit(self._preprocess_or_fail, following))
                yield prepared

    def _run_batches(self, batcher: WindowBatcher, finished: _InJobOrder, workers: Any, last: bool = False) -> None:
        """Every batch the batcher has ready (``last``: also the final partial one) through the
        network; each video that becomes complete goes on to postprocessing at once."""
        while batch := batcher.next_batch(last):
            self.inference(batch)
            for index, video in batcher.completed(batch):
                finished.put(index, self.postprocess(video, workers))

    # ---- stage 1: preprocess
    def preprocess(self, job: VideoJob) -> PreparedVideo:
        """Load a job's arrays, check them and lay out its windows (InputError: this video fails)."""
        t0 = time.perf_counter()
        loaded = job.load()
        arrays = loaded.arrays
        if len(arrays) != len(self.models):
            raise InputError(f"expected {len(self.models)} arrays, got {len(arrays)}", job.source)
        clips, frames = self._feature_sequences(job, arrays) if self.features else self._frame_clips(job, arrays)
        sample_fps, duration = job.sampling(loaded)
        if not sample_fps or sample_fps <= 0:
            rate = "feature rate" if self.features else "sample fps"
            raise InputError(f"unknown or invalid {rate}", job.source)
        offsets = window_offsets(frames, self.clip_length, self.clip_stride, self.single_window)
        return PreparedVideo(job, clips, offsets, frames, duration, float(sample_fps),
                             [[None] * len(offsets) for _ in self.models], len(offsets),
                             {"decode": time.perf_counter() - t0})

    def _preprocess_or_fail(self, job: VideoJob) -> PreparedVideo | VideoResult:
        try:
            return self.preprocess(job)
        except InputError as exc:
            return failed_result(job, str(exc))

    def _frame_clips(self, job: VideoJob, arrays: list[np.ndarray]) -> tuple[list[CroppedFrames], int]:
        """Frame arrays ``[T, H, W, C]`` → centre crops read window by window, and ``T``."""
        for array, channels in zip(arrays, self.channels):
            check_array(array, channels, self.crop_size, job.source)
        if len({int(a.shape[0]) for a in arrays}) != 1:
            raise InputError(f"RGB and flow arrays differ in length ({arrays[0].shape[0]} vs "
                             f"{arrays[1].shape[0]} frames)", job.source)
        # memory-mapped arrays: read per window
        return [CroppedFrames(a, self.crop_size) for a in arrays], int(arrays[0].shape[0])

    def _feature_sequences(self, job: VideoJob, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
        """Feature arrays ``[T', C]`` → ``[C, T']`` sequences, and their length in network frames
        (4 per feature: the windows count network frames)."""
        from afsd_cli.features.timeline import FRAMES_PER_FEATURE

        for array, channels in zip(arrays, self.channels):
            if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] != channels or array.shape[0] == 0:
                raise InputError(f"features are {array.dtype} {list(array.shape)}, the model takes float "
                                 f"[features, {channels}]", job.source)
        if len({int(a.shape[0]) for a in arrays}) != 1:
            raise InputError(f"the two feature streams differ in length ({arrays[0].shape[0]} vs "
                             f"{arrays[1].shape[0]} features)", job.source)
        sequences = [np.ascontiguousarray(np.asarray(a, dtype=np.float32).T) for a in arrays]
        return sequences, int(arrays[0].shape[0]) * FRAMES_PER_FEATURE

    # ---- stage 2: inference
    def inference(self, batch: list[WindowRef]) -> None:
        """Raw outputs of a batch of windows (of one or more videos), stream by stream, stored in
        their videos; each window's share of the batch's time goes to its video's "network" time."""
        for stream in range(len(self.models)):
            t0 = time.perf_counter()
            tensor = torch.stack([self._window(video.clips[stream], video.offsets[w]) for video, w in batch])
            raw = self.forward(stream, tensor)
            self._refuse_non_finite(stream, raw, batch)
            spent = time.perf_counter() - t0
            for row, (video, w) in enumerate(batch):
                video.outputs[stream][w] = window_outputs(raw, row)
                video.timings["network"] = video.timings.get("network", 0.0) + spent / len(batch)

    def _window(self, clip: np.ndarray, offset: int) -> torch.Tensor:
        """The network input of one window: normalised frames, or the features it covers."""
        if not self.features:
            return normalised_window(clip, offset, self.clip_length, self.device)
        from afsd_cli.features.timeline import FRAMES_PER_FEATURE

        return feature_window(clip, offset // FRAMES_PER_FEATURE, self.clip_length // FRAMES_PER_FEATURE,
                              self.device)

    def forward(self, stream: int, batch: torch.Tensor) -> RawOutputs:
        """One stream's raw outputs for a batch of normalised windows (float32, on the CPU)."""
        if self.deterministic and self.device.type == "cpu" and batch.shape[0] > 1:
            # PyTorch's CPU convolution spreads its threads over the windows of a batch, or inside
            # the window when it is alone: other float32 sums. One window at a time keeps each
            # window's result independent of the batch size.
            parts = [self.forward(stream, batch[i:i + 1]) for i in range(batch.shape[0])]
            return RawOutputs(*(torch.cat(field) for field in list(zip(*parts))[:-1]), priors=parts[0].priors)
        with torch.inference_mode(), self._autocast(), self._kernels():
            out = self.models[stream](batch.to(self.device))
        priors = out.priors[0] if out.priors.dim() == 3 else out.priors
        return RawOutputs(
            loc=out.loc.float().cpu(), conf=out.conf.float().cpu(), prop_loc=out.prop_loc.float().cpu(),
            prop_conf=out.prop_conf.float().cpu(), center=out.center.float().cpu(),
            priors=priors[:, :1].float().cpu(),
        )

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=AMP_DTYPES[self.amp])

    def _kernels(self):
        """``deterministic``: convolution kernels whose per-window result does not depend on the
        batch size (CPU: PyTorch's own instead of oneDNN's, which blocks over the batch; CUDA:
        deterministic cuDNN without autotuning), so fp32 outputs are bit-identical for any
        ``batch_size``. Off by default: oneDNN is faster and is what the official run used."""
        if not self.deterministic:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True)
        return _onednn_disabled()

    def _refuse_non_finite(self, stream: int, raw: RawOutputs, batch: list[WindowRef]) -> None:
        """CheckpointError when a window's outputs hold NaN/inf: every later step would drop
        those scores and the video would silently get no detections (``[]``)."""
        finite = torch.ones(raw.loc.shape[0], dtype=torch.bool)
        for name in ("loc", "conf", "prop_loc", "prop_conf", "center"):
            finite &= torch.isfinite(getattr(raw, name)).flatten(1).all(dim=1)
        if bool(finite.all()):
            return
        video, window = batch[int((~finite).nonzero()[0])]
        start = video.offsets[window]
        hint = " (fp16 overflows easily: try --amp bf16 or no --amp)" if self.amp == "fp16" else ""
        raise CheckpointError(
            f"the network gives non-finite outputs (NaN/inf) for {int((~finite).sum())} window(s), first "
            f"video {video.job.name!r} frames {start}-{start + self.clip_length}: these weights cannot be "
            f"trusted on this input{hint}", getattr(self.models[stream], "checkpoint_path", None))

    # ---- stage 3: postprocess
    def postprocess(self, video: PreparedVideo, workers: Any = None) -> VideoResult | _InWorker:
        """A complete video's detections: its windows decoded here, then candidates + soft-NMS
        (in a worker process when ``workers`` is a pool: the result comes later), then labels."""
        segments, scores, seconds = self._decode(video)
        args = self._assemble_args(video, segments, scores)
        if workers is not None:
            return _InWorker(workers.submit(_timed_assembly, *args),
                             lambda detections, spent: self._finished(video, detections, seconds + spent))
        detections, spent = _timed_assembly(*args)
        return self._finished(video, detections, seconds + spent)

    def _decode(self, video: PreparedVideo) -> tuple[np.ndarray, np.ndarray, float]:
        """Decoded ``segments [W, K, 2]`` and ``scores [W, K, C]`` (NumPy) of a complete video."""
        t0 = time.perf_counter()
        decoded = [self.decode_window([outputs[w] for outputs in video.outputs])
                   for w in range(len(video.offsets))]
        segments = np.concatenate([segments for segments, _ in decoded])
        scores = np.concatenate([scores for _, scores in decoded])
        return segments, scores, time.perf_counter() - t0

    def decode_window(self, streams: Sequence[RawOutputs]) -> tuple[np.ndarray, np.ndarray]:
        """``segments [1, K, 2]``, ``scores [1, K, C]`` of one window from its streams' raw outputs.

        One window at a time, as the official test scripts decode: PyTorch's vectorised
        sigmoid/softmax may round an element differently depending on where it falls in a larger
        tensor, so decoding window by window keeps the result independent of how windows are
        grouped (whole video here, a few at a time in engine/streaming.py)."""
        if len(streams) == 1:
            segments, scores = decode(streams[0], self.clip_length)
        else:
            segments, scores = decode_fused(streams[0], streams[1], self.fusion, self.clip_length)
        return segments.numpy(), scores.numpy()

    def _assemble_args(self, video: PreparedVideo, segments: np.ndarray, scores: np.ndarray) -> tuple:
        meta = VideoMeta(video.job.name, video.sample_fps, video.duration, video.job.time_origin)
        names = self.class_names if self.classifier is None else None
        return segments, scores, video.offsets, meta, self.settings, names

    def _finished(self, video: PreparedVideo, detections: list[dict[str, Any]], seconds: float) -> VideoResult:
        """The video's result, ``seconds`` of postprocessing added (a failed one when labelling fails)."""
        timings = dict(video.timings)
        timings["postprocess"] = timings.get("postprocess", 0.0) + seconds
        try:
            return self.finish(video.job, detections, video.duration, video.frames, len(video.offsets), timings)
        except InputError as exc:
            return failed_result(video.job, str(exc), video)

    def finish(self, job: VideoJob, detections: list[dict[str, Any]], duration: float | None, frames: int,
               windows: int, timings: dict[str, float]) -> VideoResult:
        """A video's result with its detections labelled: by the video-level classifier (its top
        class and score, ``anet/test.py``), as ``"action"`` (class-agnostic proposals), or kept.
        InputError when the classifier does not know the video."""
        if self.classifier is not None:
            top = self.classifier.top1(job.name)
            if top is None:
                raise InputError(f"video {job.name!r} is not in the classifier file", self.classifier.source)
            detections = relabel_with_classifier(detections, top[0], top[1], duration)
        elif self.class_names is None:
            detections = [{**d, "label": "action"} for d in detections]
        return VideoResult(job.name, job.output_key or job.name, detections, frames, windows, timings)

    # ---- soft-NMS worker processes
    def _workers(self, count: int):
        """The soft-NMS process pool (created once, kept across runs; ``close()`` ends it)."""
        if count <= 0:
            return None
        pool = getattr(self, "_pool", None)
        if pool is None or self._pool_size != count:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.close()
            self._pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
            self._pool_size = count
        return self._pool

    def close(self) -> None:
        """End the soft-NMS worker processes, if any."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            self._pool = None


def _check_run_settings(models: Sequence[torch.nn.Module], batch_size: int) -> None:
    if not 1 <= len(models) <= 2:
        raise ValueError("one model, or two for fusion")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")


def _check_precision(amp: str | None, device: torch.device) -> None:
    if amp and device.type != "cuda":
        raise ConfigError("mixed precision (--amp) needs a CUDA device (--device cuda)")
    if amp and amp not in AMP_DTYPES:
        raise ConfigError(f"unknown mixed-precision type {amp!r} (choose bf16 or fp16)")


def _stream_inputs(models: Sequence[torch.nn.Module]) -> tuple[bool, list[int]]:
    """Whether the models read features, and each one's input width: frame channels, or the
    feature dimension of a feature model."""
    specs = [getattr(model, "spec", None) for model in models]  # a model without a spec reads RGB frames
    inputs = {str(getattr(spec, "input", "frames")) for spec in specs}
    if len(inputs) != 1:
        raise ConfigError("fusion needs two frame models or two feature models, not one of each")
    if inputs == {"features"}:
        return True, [int(spec.feature_dim) for spec in specs]
    return False, [int(getattr(spec, "in_channels", 3)) for spec in specs]


@contextlib.contextmanager
def _onednn_disabled():
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def _timed_assembly(*args: Any) -> tuple[list[dict[str, Any]], float]:
    """``assemble_detections`` and its duration (module level, so worker processes can run it)."""
    t0 = time.perf_counter()
    detections = assemble_detections(*args)
    return detections, time.perf_counter() - t0
