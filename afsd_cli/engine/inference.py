"""Windows → batched forward passes → raw outputs → detections, for one or two streams.

The official scripts (``thumos14/test.py``, ``anet/test.py``) run one window at a time. Here the windows of all
videos flow through the network in batches of ``batch_size`` (windows of different videos may
share a batch); each video is post-processed as soon as its last window is back. In fp32 the
detections do not depend on the batch size (tested with 1 vs 3).

Per window: the uint8 frames ``[T, H, W, C]`` are centre-cropped, sliced, normalised
``x / 255 · 2 − 1`` and *then* zero-padded to ``clip_length`` (pad value 0.0, as
``thumos14/test.py``; ``anet/test.py`` pads raw 127.5 before normalising, the same 0.0). Fusion runs both
networks on the same windows and combines their raw outputs before decoding.

Entry points: :class:`Predictor` (models + settings) with :meth:`Predictor.run` over
:class:`VideoJob` items, and the helpers that build jobs from stored arrays or video files.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afsd_cli.engine.postprocess import (
    PostprocessSettings,
    RawOutputs,
    VideoMeta,
    assemble_detections,
    decode,
    decode_fused,
    relabel_with_classifier,
)
from afsd_cli.data.npy import check_frames, open_frames
from afsd_cli.errors import CheckpointError, ConfigError, InputError
from afsd_cli.io import read_json
from afsd_cli.names import check_video_name, without_v_prefix

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- inputs


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


def check_array(array: Any, channels: int, crop_size: int, path: str | Path | None = None) -> None:
    """Raise InputError unless ``array`` is a ``uint8 [T, H, W, channels]`` frame array."""
    check_frames(array, channels, crop_size, path)


def load_array(path: str | Path, channels: int, crop_size: int) -> np.ndarray:
    """Load one stored ``.npy`` frame array, checked (memory-mapped: only cropped frames are read)."""
    return open_frames(path, channels, crop_size)


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


# --------------------------------------------------------------------------- jobs and results


@dataclass
class VideoJob:
    """One video to process: a loader returning one frame array per stream, plus its metadata.

    ``load()`` returns ``[T, H, W, C]`` uint8 arrays (one per stream, same T); it may raise
    InputError, which marks only this video as failed.
    """

    name: str
    load: Callable[[], list[np.ndarray]]
    sample_fps: float | None = None  # None: taken from the loader's ``VideoInfo`` (video files)
    duration: float | None = None
    output_key: str | None = None
    source: str | None = None
    time_origin: float = 0.0  # seconds at frame 0 (feature models: engine/postprocess.py VideoMeta)
    # a video file read as a stream of frames (engine/streaming.py) instead of by ``load``
    open_frames: Callable[[], Any] | None = None


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


@dataclass
class _Pending:
    job: VideoJob
    clips: list[np.ndarray]
    offsets: list[int]
    frames: int
    duration: float | None
    sample_fps: float
    outputs: list[list[RawOutputs | None]]  # [stream][window]
    remaining: int
    timings: dict[str, float]


@dataclass
class Classifier:
    """External video-level classification (ActivityNet, the CUHK file ``anet/test.py`` reads)."""

    scores: dict[str, list[float]]
    classes: list[str]
    source: str

    def top1(self, video: str) -> tuple[str, float] | None:
        scores = self.scores.get(without_v_prefix(video), self.scores.get(video))
        if scores is None:
            return None
        best = int(np.argmax(scores))
        return self.classes[best], float(max(scores))


def read_classifier(path: str | Path) -> Classifier:
    """Read a CUHK-style ``{"results": {video: [scores]}, "class": [names]}`` JSON."""
    path = Path(path)
    data = read_json(path, "classifier file")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not isinstance(data.get("class"), list):
        raise InputError('expected {"results": {video: [scores]}, "class": [names]} (CUHK format)', path)
    classes = [str(c) for c in data["class"]]
    for number, (video, scores) in enumerate(data["results"].items(), start=1):
        check_video_name(video, str(path), f"results entry {number}")
        if not isinstance(scores, list) or len(scores) != len(classes):
            raise InputError(f"video {video!r}: expected {len(classes)} scores, one per class", path)
    return Classifier(data["results"], classes, str(path))


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
        if not 1 <= len(models) <= 2:
            raise ValueError("one model, or two for fusion")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise ConfigError("mixed precision (--amp) needs a CUDA device (--device cuda)")
        if amp and amp not in AMP_DTYPES:
            raise ConfigError(f"unknown mixed-precision type {amp!r} (choose bf16 or fp16)")
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
        self.channels = [int(getattr(getattr(m, "spec", None), "in_channels", 3)) for m in self.models]
        # feature models read [T', C] arrays: their windows count features, 4 network frames each
        self.inputs = {str(getattr(getattr(m, "spec", None), "input", "frames")) for m in self.models}
        if len(self.inputs) != 1:
            raise ConfigError("fusion needs two frame models or two feature models, not one of each")
        self.features = self.inputs == {"features"}
        if self.features:
            self.channels = [int(m.spec.feature_dim) for m in self.models]

    # ---- forward
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

    def _refuse_non_finite(self, stream: int, raw: RawOutputs, batch: list[tuple[_Pending, int]]) -> None:
        """CheckpointError when a window's outputs hold NaN/inf: every later step would drop
        those scores and the video would silently get no detections (``[]``)."""
        finite = torch.ones(raw.loc.shape[0], dtype=torch.bool)
        for name in ("loc", "conf", "prop_loc", "prop_conf", "center"):
            finite &= torch.isfinite(getattr(raw, name)).flatten(1).all(dim=1)
        if bool(finite.all()):
            return
        pending, window = batch[int((~finite).nonzero()[0])]
        start = pending.offsets[window]
        hint = " (fp16 overflows easily: try --amp bf16 or no --amp)" if self.amp == "fp16" else ""
        raise CheckpointError(
            f"the network gives non-finite outputs (NaN/inf) for {int((~finite).sum())} window(s), first "
            f"video {pending.job.name!r} frames {start}-{start + self.clip_length}: these weights cannot be "
            f"trusted on this input{hint}", getattr(self.models[stream], "checkpoint_path", None))

    # ---- per video
    def _prepare(self, job: VideoJob) -> _Pending:
        t0 = time.perf_counter()
        arrays = job.load()
        if len(arrays) != len(self.models):
            raise InputError(f"expected {len(self.models)} arrays, got {len(arrays)}", job.source)
        if self.features:
            return self._prepare_features(job, arrays, t0)
        frames = int(arrays[0].shape[0])
        for array, channels in zip(arrays, self.channels):
            check_array(array, channels, self.crop_size, job.source)
        if len({int(a.shape[0]) for a in arrays}) != 1:
            raise InputError(f"RGB and flow arrays differ in length ({arrays[0].shape[0]} vs "
                             f"{arrays[1].shape[0]} frames)", job.source)
        clips = [CroppedFrames(a, self.crop_size) for a in arrays]  # memory-mapped arrays: read per window
        offsets = window_offsets(frames, self.clip_length, self.clip_stride, self.single_window)
        sample_fps = job.sample_fps
        duration = job.duration
        info = getattr(job.load, "info", None)  # set by video-file loaders after decoding
        if sample_fps is None and info is not None:
            sample_fps, duration = info
        if not sample_fps or sample_fps <= 0:
            raise InputError("unknown or invalid sample fps", job.source)
        return _Pending(job, clips, offsets, frames, duration, float(sample_fps),
                        [[None] * len(offsets) for _ in self.models], len(offsets),
                        {"decode": time.perf_counter() - t0})

    def _prepare_features(self, job: VideoJob, arrays: list[np.ndarray], t0: float) -> _Pending:
        """Feature arrays ``[T', C]`` → ``[C, T']`` sequences; windows in network frames (4 per feature)."""
        from afsd_cli.features.timeline import FRAMES_PER_FEATURE

        for array, channels in zip(arrays, self.channels):
            if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] != channels or array.shape[0] == 0:
                raise InputError(f"features are {array.dtype} {list(array.shape)}, the model takes float "
                                 f"[features, {channels}]", job.source)
        if len({int(a.shape[0]) for a in arrays}) != 1:
            raise InputError(f"the two feature streams differ in length ({arrays[0].shape[0]} vs "
                             f"{arrays[1].shape[0]} features)", job.source)
        if not job.sample_fps or job.sample_fps <= 0:
            raise InputError("unknown or invalid feature rate", job.source)
        sequences = [np.ascontiguousarray(np.asarray(a, dtype=np.float32).T) for a in arrays]
        frames = int(arrays[0].shape[0]) * FRAMES_PER_FEATURE
        offsets = window_offsets(frames, self.clip_length, self.clip_stride, self.single_window)
        return _Pending(job, sequences, offsets, frames, job.duration, float(job.sample_fps),
                        [[None] * len(offsets) for _ in self.models], len(offsets),
                        {"decode": time.perf_counter() - t0})

    def _window(self, clip: np.ndarray, offset: int) -> torch.Tensor:
        """The network input of one window: normalised frames, or the features it covers."""
        if not self.features:
            return normalised_window(clip, offset, self.clip_length, self.device)
        from afsd_cli.features.timeline import FRAMES_PER_FEATURE

        return feature_window(clip, offset // FRAMES_PER_FEATURE, self.clip_length // FRAMES_PER_FEATURE,
                              self.device)

    def _decode(self, pending: _Pending) -> tuple[np.ndarray, np.ndarray, float]:
        """Decoded ``segments [W, K, 2]`` and ``scores [W, K, C]`` (NumPy) of a complete video."""
        t0 = time.perf_counter()
        decoded = [self.decode_window([outputs[w] for outputs in pending.outputs])
                   for w in range(len(pending.offsets))]
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

    def _result(self, pending: _Pending, detections: list[dict[str, Any]], seconds: float) -> VideoResult:
        job = pending.job
        if self.classifier is not None:
            top = self.classifier.top1(job.name)
            if top is None:
                raise InputError(f"video {job.name!r} is not in the classifier file", self.classifier.source)
            detections = relabel_with_classifier(detections, top[0], top[1], pending.duration)
        elif self.class_names is None:
            detections = [{**d, "label": "action"} for d in detections]
        timings = dict(pending.timings)
        timings["postprocess"] = timings.get("postprocess", 0.0) + seconds
        return VideoResult(job.name, job.output_key or job.name, detections, pending.frames,
                           len(pending.offsets), timings)

    def _assemble_args(self, pending: _Pending, segments: np.ndarray, scores: np.ndarray) -> tuple:
        meta = VideoMeta(pending.job.name, pending.sample_fps, pending.duration, pending.job.time_origin)
        names = self.class_names if self.classifier is None else None
        return segments, scores, pending.offsets, meta, self.settings, names

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
        from concurrent.futures import Future, ThreadPoolExecutor

        jobs = list(jobs)
        if jobs and all(job.open_frames is not None for job in jobs):
            from afsd_cli.engine.streaming import run_streaming

            yield from run_streaming(self, jobs, on_progress, on_region)
            return
        queue: list[tuple[_Pending, int]] = []  # (video, window index) waiting for a batch
        done: dict[int, VideoResult | tuple[_Pending, Future, float]] = {}
        pendings: dict[int, _Pending] = {}
        next_to_yield = 0
        workers = self._workers(postprocess_workers)

        def failed(job: VideoJob, message: str, pending: _Pending | None = None) -> VideoResult:
            return VideoResult(job.name, job.output_key or job.name, [], pending.frames if pending else 0,
                               len(pending.offsets) if pending else 0, pending.timings if pending else {},
                               error=message)

        def prepare(job: VideoJob) -> _Pending | VideoResult:
            try:
                return self._prepare(job)
            except InputError as exc:
                return failed(job, str(exc))

        def complete(index: int, pending: _Pending) -> None:
            segments, scores, seconds = self._decode(pending)
            args = self._assemble_args(pending, segments, scores)
            if workers is not None:
                done[index] = (pending, workers.submit(_timed_assembly, *args), seconds)
                return
            detections, spent = _timed_assembly(*args)
            try:
                done[index] = self._result(pending, detections, seconds + spent)
            except InputError as exc:
                done[index] = failed(pending.job, str(exc), pending)

        def resolve(entry: VideoResult | tuple[_Pending, Future, float]) -> VideoResult:
            if isinstance(entry, VideoResult):
                return entry
            pending, future, seconds = entry
            detections, spent = future.result()
            try:
                return self._result(pending, detections, seconds + spent)
            except InputError as exc:
                return failed(pending.job, str(exc), pending)

        def flush(force: bool) -> None:
            while queue and (force or len(queue) >= self.batch_size):
                batch, queue[:] = queue[:self.batch_size], queue[self.batch_size:]
                for stream in range(len(self.models)):
                    t0 = time.perf_counter()
                    tensor = torch.stack([self._window(p.clips[stream], p.offsets[w]) for p, w in batch])
                    raw = self.forward(stream, tensor)
                    self._refuse_non_finite(stream, raw, batch)
                    spent = time.perf_counter() - t0
                    for row, (p, w) in enumerate(batch):
                        p.outputs[stream][w] = RawOutputs(raw.loc[row:row + 1], raw.conf[row:row + 1],
                                                          raw.prop_loc[row:row + 1], raw.prop_conf[row:row + 1],
                                                          raw.center[row:row + 1], raw.priors)
                        p.timings["network"] = p.timings.get("network", 0.0) + spent / len(batch)
                for p, _ in batch:
                    p.remaining -= 1
                for index, p in list(pendings.items()):
                    if p.remaining == 0:
                        del pendings[index]
                        p.clips = []  # the frames are no longer needed
                        complete(index, p)

        with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
            futures: list[Any] = [pool.submit(prepare, job) for job in jobs[:prefetch + 1]]
            for index in range(len(jobs)):
                prepared = futures[index].result()
                futures[index] = None  # free the arrays once consumed
                if index + prefetch + 1 < len(jobs):
                    futures.append(pool.submit(prepare, jobs[index + prefetch + 1]))
                if isinstance(prepared, VideoResult):
                    done[index] = prepared
                else:
                    pendings[index] = prepared
                    queue.extend((prepared, w) for w in range(len(prepared.offsets)))
                    flush(force=False)
                while next_to_yield in done and (
                        not isinstance(done[next_to_yield], tuple) or done[next_to_yield][1].done()):
                    yield resolve(done.pop(next_to_yield))
                    next_to_yield += 1
            flush(force=True)
            while next_to_yield < len(jobs):
                yield resolve(done.pop(next_to_yield))
                next_to_yield += 1

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


# --------------------------------------------------------------------------- building jobs


def array_jobs(infos: Sequence[Any], data_dirs: Sequence[str | Path], channels: Sequence[int], crop_size: int,
               strip_v_prefix: bool = False) -> list[VideoJob]:
    """Jobs over stored arrays ``<dir>/<video>.npy`` (one dir per stream), from VideoInfo rows."""
    jobs = []
    for info in infos:
        paths = [Path(d) / f"{info.name}.npy" for d in data_dirs]

        def load(paths=paths) -> list[np.ndarray]:
            return [load_array(p, c, crop_size) for p, c in zip(paths, channels)]

        duration = info.duration if getattr(info, "duration", None) else (
            info.count / info.fps if info.fps else info.sample_count / info.sample_fps)
        key = without_v_prefix(info.name) if strip_v_prefix else info.name
        jobs.append(VideoJob(info.name, load, float(info.sample_fps), float(duration), key, str(paths[0])))
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


def video_file_jobs(paths: Sequence[str | Path], decode_options: dict[str, Any] | str, stream_channels: Sequence[int],
                    flow_method: str = "tvl1", flow_device: str = "cpu", streaming: bool = True) -> list[VideoJob]:
    """Jobs over video files, decoded with the exact preprocessing of ``afsd prepare``.

    ``decode_options``: the ``read_video`` arguments of the dataset profile
    (:meth:`afsd_cli.profile.DatasetProfile.decode_options`: sampling rule, fps, frame size), or
    just a sampling mode name. A flow stream (2 channels) gets its flow computed on the fly from
    the decoded frames with the ``afsd flow`` code. ``streaming``: frames flow through the network
    as they are decoded (engine/streaming.py, bounded memory); otherwise each video is decoded
    whole first.
    """
    import functools

    from afsd_cli.data.frame_stream import open_frame_stream

    options = {"mode": decode_options} if isinstance(decode_options, str) else dict(decode_options)
    jobs = []
    for path in paths:
        path = Path(path)

        class _Loader:
            info: tuple[float, float] | None = None
            on_flow_pairs: Callable[[str, int, int], Any] | None = None  # (video, pairs done, pairs in all)

            def __init__(self, path: Path):
                self.path = path

            def __call__(self) -> list[np.ndarray]:
                from afsd_cli.data.video import read_video

                video = read_video(self.path, **options)
                self.info = (float(video.sample_fps), float(video.duration))
                arrays = []
                flow = None
                for channels in stream_channels:
                    if channels == 3:
                        arrays.append(video.frames)
                    else:
                        if flow is None:
                            from afsd_cli.data.flow import compute_flow

                            report, total = self.on_flow_pairs, len(video.frames) - 1
                            progress = None if report is None else (
                                lambda pairs: report(self.path.stem, pairs, total))
                            flow = compute_flow(video.frames, method=flow_method, device=flow_device,
                                                progress=progress)
                        arrays.append(flow)
                return arrays

        job = VideoJob(path.stem, _Loader(path), None, None, path.stem, str(path))
        if streaming:
            job.open_frames = functools.partial(open_frame_stream, path, options, list(stream_channels),
                                                flow_method, flow_device)
        jobs.append(job)
    return jobs


# --------------------------------------------------------------------------- models


def load_model(cfg: Any, checkpoint: str | Path, in_channels: int | None = None,
               feature_dim: int | None = None) -> torch.nn.Module:
    """Build the config's model (optionally with another input channel count or feature width)
    and load weights."""
    from afsd_cli.model import build_model, load_checkpoint

    changes = {key: value for key, value in (("in_channels", in_channels), ("feature_dim", feature_dim))
               if value is not None and value != int(getattr(cfg.model, key))}
    if changes:
        from afsd_cli.config import build_config

        data = cfg.to_dict()
        data["model"].update(changes)
        cfg = build_config(data, source=getattr(cfg, "source", None))
    model = build_model(cfg)
    load_checkpoint(model, checkpoint)  # CheckpointError names the mismatching keys
    return model.eval()


def checkpoint_feature_dim(path: str | Path) -> int:
    """Channels a feature model's checkpoint takes: the width of its input projection (one fused
    stream of 2048, or 1024 per I3D stream; ``afsd fuse`` runs two of them)."""
    from afsd_cli.model import read_state_dict

    weight = read_state_dict(path).get(FEATURE_PROJECTION_WEIGHT)
    if weight is None or weight.dim() != 3:
        raise CheckpointError("not a feature model's checkpoint (no input projection "
                              f"{FEATURE_PROJECTION_WEIGHT}): model.input is features", path)
    return int(weight.shape[1])


FEATURE_PROJECTION_WEIGHT = "coarse_pyramid_detection.pyramids.0.0.conv1d.weight"


def feature_jobs(cfg: Any, profile: Any, data_dirs: Sequence[str | Path], feature_dims: Sequence[int],
                 limit: int | None = None) -> list[VideoJob]:
    """Jobs over the feature arrays of the held-out subset (one folder per stream; the time mapping
    and durations come from the first)."""
    from afsd_cli.data.feature_dataset import feature_videos
    from afsd_cli.data.annotations import read_json_annotations

    testing = cfg.dataset.testing
    anno_path = testing.video_anno_path or testing.gt_path
    if not anno_path:
        raise ConfigError("dataset.testing.video_anno_path is not set: the annotation JSON says which videos "
                          "are in the test subset")
    annotations = read_json_annotations(anno_path)
    per_stream = [feature_videos(folder, annotations, profile.test_subset, profile,
                                 getattr(cfg.dataset, "sample_fps", None), dim)
                  for folder, dim in zip(data_dirs, feature_dims)]
    videos = list(per_stream[0].values())[:limit] if limit else list(per_stream[0].values())
    jobs = []
    for video in videos:
        streams = [stream[video.name] for stream in per_stream]

        def load(streams=streams) -> list[np.ndarray]:
            return [stream.load(dim) for stream, dim in zip(streams, feature_dims)]

        jobs.append(VideoJob(video.name, load, video.frame_rate, video.duration, video.name, str(video.path),
                             video.time_origin))
    return jobs


# --------------------------------------------------------------------------- from a config


@dataclass
class PredictionPlan:
    """Everything ``afsd predict`` / ``afsd fuse`` run: the predictor, the jobs, what to write."""

    predictor: Predictor
    jobs: list[VideoJob]
    version: str
    notices: list[str]
    problems: list[str]  # bad inputs found before running (missing/malformed arrays)
    channels: list[int]
    profile: Any = None  # the DatasetProfile (its to_dict() goes into the output's metadata)
    bad_videos: set[str] = field(default_factory=set)  # the jobs those problems concern

    def without_bad_videos(self) -> list[VideoJob]:
        """The jobs whose inputs passed the checks before running."""
        return [job for job in self.jobs if job.name not in self.bad_videos]

    def report_flow_progress(self, callback: Callable[[str, int, int], Any]) -> bool:
        """Have the on-the-fly flow of video files (flow models with ``--video``) call
        ``callback(video, pairs_done, pairs_in_video)`` as frame pairs finish; ``False`` when no
        job computes flow."""
        loaders = [job.load for job in self.jobs if hasattr(job.load, "on_flow_pairs")]
        if 2 not in self.channels or not loaders:
            return False
        for loader in loaders:
            loader.on_flow_pairs = callback
        return True


def class_names_from_config(cfg: Any) -> tuple[str, ...]:
    """Model class names (id 1..C-1) of the config's dataset profile (checked against num_classes)."""
    from afsd_cli.profile import resolve_profile

    names = resolve_profile(cfg).class_names
    return tuple(names or ())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    return device


def plan_prediction(
    cfg: Any,
    checkpoints: Sequence[str | Path],
    data_dirs: Sequence[str | Path | None] = (),
    videos: Sequence[str | Path] = (),
    classifier_path: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    amp: str | None = None,
    limit: int | None = None,
    deterministic: bool = False,
) -> PredictionPlan:
    """Build the predictor and the video jobs of a config.

    One checkpoint: the config's model (``model.in_channels``). Two: RGB then flow, fused as the
    dataset's procedure says. ``data_dirs`` (one per checkpoint) default to
    ``dataset.testing.video_data_path`` (ActivityNet: ``video_mp4_path``, as officially).
    ``videos``: decode these files instead of reading stored arrays.
    """
    from afsd_cli.engine.postprocess import settings_from_config
    from afsd_cli.profile import resolve_profile

    profile = resolve_profile(cfg)
    fusion = len(checkpoints) == 2
    testing = cfg.dataset.testing
    notices: list[str] = []
    channels = [3, 2] if fusion else [int(cfg.model.in_channels)]
    for path in checkpoints:
        if not path:
            raise ConfigError("no checkpoint: pass --checkpoint (or set testing.checkpoint_path / "
                              "testing.rgb_checkpoint_path and testing.flow_checkpoint_path)")
    device = resolve_device(device)
    features = profile.input == "features"
    if features:
        if videos:
            raise ConfigError("--video needs a frame model (model.input: frames); a feature model reads the "
                              "features of `afsd extract` (dataset.testing.video_data_path)")
        channels = [checkpoint_feature_dim(path) for path in checkpoints]

    classifier = None
    class_names: Sequence[str] | None = profile.class_names
    if profile.class_names is None:  # class-agnostic proposals, labelled by a video-level classifier
        path = classifier_path or getattr(cfg.testing, "classifier_path", None)
        if path:
            classifier = read_classifier(path)
        else:
            notices.append("no video-level classifier (testing.classifier_path / --classifier): "
                           "writing class-agnostic proposals labelled 'action'")

    problems: list[str] = []
    bad_videos: set[str] = set()
    if videos:
        videos = expand_video_paths(videos)
        jobs = video_file_jobs(videos, profile.decode_options(), channels,
                               flow_method=str(getattr(cfg.testing, "flow_method", "tvl1") or "tvl1"),
                               flow_device=device)
        if classifier is not None:
            for job in jobs:
                if classifier.top1(job.name) is None:
                    problems.append(f"{classifier.source}: no classification for video {job.name!r}")
                    bad_videos.add(job.name)
    else:
        infos = [] if features else held_out_video_infos(cfg, profile)
        if limit:
            infos = infos[:limit]
        default_dir = testing.video_data_path or (testing.video_mp4_path if profile.rules.arrays_in_mp4_path else None)
        dirs = [d or default_dir for d in (list(data_dirs) or [None] * len(channels))]
        for d in dirs:
            if not d:
                raise ConfigError("dataset.testing.video_data_path is not set: it is the folder of the "
                                  "<video>.npy arrays (or give video files with --video)")
            if not Path(d).is_dir():
                raise InputError("array folder not found", d)
        crop = int(testing.crop_size)
        if features:
            jobs = feature_jobs(cfg, profile, dirs, channels, limit)
        else:
            jobs = array_jobs(infos, dirs, channels, crop, strip_v_prefix=profile.rules.strip_v_prefix)
            expected = None if profile.sampling == "max_frames" else {i.name: i.sample_count for i in infos}
            for job in jobs:  # one job at a time: each problem names the video it stops
                found = check_array_files([job], dirs, channels, crop, expected_frames=expected)
                problems += found
                if found:
                    bad_videos.add(job.name)
        if classifier is not None:
            for job in jobs:
                if classifier.top1(job.name) is None:
                    problems.append(f"{classifier.source}: no classification for video {job.name!r}")
                    bad_videos.add(job.name)

    if features:
        models = [load_model(cfg, ckpt, feature_dim=dim) for ckpt, dim in zip(checkpoints, channels)]
    else:
        models = [load_model(cfg, ckpt, in_channels=ch) for ckpt, ch in zip(checkpoints, channels)]
    settings = settings_from_config(cfg, fusion=fusion)
    scale = profile.network_frames_per_step  # windows count features on feature datasets
    predictor = Predictor(
        models, settings, class_names,
        clip_length=int(testing.clip_length) * scale, clip_stride=int(testing.clip_stride) * scale,
        crop_size=int(testing.crop_size), single_window=profile.single_window, fusion=profile.fusion,
        device=device, batch_size=int(batch_size or getattr(cfg.testing, "batch_size", 1) or 1),
        amp=amp, classifier=classifier, deterministic=deterministic,
    )
    return PredictionPlan(predictor, jobs, profile.output_version, notices, problems, channels, profile, bad_videos)


def held_out_video_infos(cfg: Any, profile: Any) -> list[Any]:
    """The held-out videos of the profile, in file order (VideoInfo rows of the video-info file;
    a custom dataset keeps those of its test subset in the annotation JSON)."""
    from afsd_cli.data.annotations import read_anet_video_info, read_json_annotations, read_video_info_csv

    testing = cfg.dataset.testing
    info_path = testing.video_info_path
    if not info_path:
        raise ConfigError("dataset.testing.video_info_path is not set: it lists the test videos "
                          "(or give video files with --video)")
    if profile.annotation_format == "anet_info_json":
        return list(read_anet_video_info(info_path, subset=profile.test_subset)[0].values())
    infos = read_video_info_csv(info_path)
    if profile.annotation_format != "json":
        return list(infos.values())
    anno_path = testing.video_anno_path or testing.gt_path
    if not anno_path:
        raise ConfigError("dataset.testing.video_anno_path is not set: the annotation JSON says which videos "
                          "are in the test subset")
    held_out = read_json_annotations(anno_path).in_subset(profile.test_subset)
    if not held_out:
        raise InputError(f"no video in subset {profile.test_subset!r}", anno_path)
    missing = [v.name for v in held_out if v.name not in infos]
    if missing:
        raise InputError(f"{len(missing)} video(s) of subset {profile.test_subset!r} are not in the video-info file "
                         f"(not prepared?): {', '.join(missing[:5])}", info_path)
    return [infos[v.name] for v in held_out]


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
