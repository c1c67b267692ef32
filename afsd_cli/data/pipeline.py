"""The two batch jobs over folders: videos → RGB frame arrays (``prepare``) and RGB → flow (``flow``).

Both are resumable (an existing, well-formed output is skipped unless ``overwrite``), write each
output atomically, keep ``OUT_DIR/manifest.json`` up to date, and report a failing item without
stopping the others. The per-item functions (:func:`prepare_one`, :func:`flow_one`) run inside
the joblib workers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from afsd_cli.data.batch import DONE, FAILED, SKIPPED, Task, TaskResult, check_backend, resolve_jobs, run_batch
from afsd_cli.data.manifest import MANIFEST_NAME, Manifest, ManifestRecorder, folder_lock
from afsd_cli.data.npy import open_npy
from afsd_cli.data.video import (
    ANET_MAX_FRAMES,
    FRAME_SIZE,
    RESIZE_METHODS,
    THUMOS_SAMPLE_FPS,
    VIDEO_EXTENSIONS,
    anet_target_fps,
    find_video,
    list_videos,
    make_resizer,
    probe_video,
    read_video,
)
from afsd_cli.data.video_info import (
    ThumosVideoInfo,
    anet_class_ids,
    anet_entry_for,
    anet_key_for,
    anet_info_entry,
    load_anet_video_info,
    read_anet_ground_truth,
    read_annotated_thumos_videos,
    read_class_names,
    write_anet_video_info,
    write_thumos_video_info,
)
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.io import ensure_writable, make_output_folder, write_npy

if TYPE_CHECKING:
    from afsd_cli.profile import KindRules



@dataclass
class BatchReport:
    """Outcome of a batch command: one result per item, in item order."""

    results: list[TaskResult]
    out_dir: Path
    manifest_path: Path
    info_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def ok(self) -> bool:
        return not self.failures


def npy_is_complete(path: Path, channels: int) -> bool:
    """True for a readable ``uint8 [T>0, H, W, channels]`` npy (its header is all we read)."""
    try:
        array = open_npy(path)
    except InputError:
        return False
    return array.dtype == np.uint8 and array.ndim == 4 and array.shape[0] > 0 and array.shape[-1] == channels


# --------------------------------------------------------------------------------------------
# what both jobs share: the manifest, the start announcement, running with progress


def _announce_start(on_start: Callable[..., Any] | None, on_frames: Callable[[str, int], Any] | None, items: int,
                    work: Callable[[], dict[str, int]]) -> None:
    """``on_start(items)``, plus ``{name: units of work}`` when progress inside an item is reported."""
    if on_start is not None:
        on_start(*((items, work()) if on_frames is not None else (items,)))


def _run_tasks(tasks: list[Task], progress_keyword: str, recorder: ManifestRecorder,
               on_frames: Callable[[str, int], Any] | None, backend: str, jobs: int | None) -> None:
    """Run the tasks, each given a progress queue as ``progress_keyword`` when ``on_frames`` listens."""
    try:
        with _progress_queue(on_frames, backend, jobs, len(tasks)) as progress:
            if progress is not None:
                tasks = [Task(t.name, t.func, t.args, {**t.kwargs, progress_keyword: progress}) for t in tasks]
            run_batch(tasks, jobs=jobs, backend=backend, on_result=recorder)
    finally:
        recorder.manifest.save()  # also when interrupted: what finished is on record


@contextlib.contextmanager
def _progress_queue(on_frames: Callable[[str, int], Any] | None, backend: str, jobs: int | None,
                    tasks: int) -> Iterator[Any]:
    """A queue the workers put ``(name, frames or pairs)`` into, drained into ``on_frames`` by a thread.

    In-process runs (sequential, threading, one loky job) get a plain queue, local process pools
    a ``multiprocessing.Manager`` queue; remote backends (dask, ray) none."""
    import queue as queues
    import threading

    if on_frames is None or tasks == 0 or backend not in ("sequential", "threading", "loky", "multiprocessing"):
        yield None
        return
    in_process = backend in ("sequential", "threading") or (
        backend == "loky" and (resolve_jobs(jobs) == 1 or tasks == 1))
    manager = None
    if in_process:
        reports: Any = queues.Queue()
    else:
        import multiprocessing

        manager = multiprocessing.Manager()
        reports = manager.Queue()

    def drain() -> None:
        while (item := reports.get()) is not None:
            on_frames(*item)

    thread = threading.Thread(target=drain, name="batch-progress", daemon=True)
    thread.start()
    try:
        yield reports
    finally:
        reports.put(None)
        thread.join()
        if manager is not None:
            manager.shutdown()


# --------------------------------------------------------------------------------------------
# prepare


def prepare_one(source: str, target: str, mode: str, resize: str, strict_count: bool,
                max_frames: int = ANET_MAX_FRAMES, decode_threads: int | None = None,
                size: int = FRAME_SIZE, sample_fps: float = THUMOS_SAMPLE_FPS, frame_queue: Any = None) -> dict:
    """Decode one video and write its frame array; returns what the manifest/info files need.

    ``frame_queue`` (a queue, possibly a multiprocessing proxy) receives ``(name, frames)`` as
    native frames are decoded, so progress moves inside a long video."""
    name = Path(target).stem
    progress = None if frame_queue is None else (lambda frames: frame_queue.put((name, frames)))
    video = read_video(source, mode, resize=resize, strict_count=strict_count, max_frames=max_frames,
                       decode_threads=decode_threads, size=size, sample_fps=sample_fps, progress=progress)
    write_npy(target, video.frames)
    return {
        "work_frames": video.count,
        "shape": list(video.frames.shape),
        "frames": video.count,
        "fps": video.fps,
        "count": video.count,
        "container_count": video.container_count,
        "sample_fps": video.sample_fps,
        "sample_count": video.sample_count,
        "duration": video.duration,
    }


#: Settings whose change between runs is noted (outputs made with the old ones are kept).
PREPARE_NOTED_SETTINGS = ("dataset", "resize", "max_frames", "size", "sample_fps")


def prepare_videos(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    dataset: str = "thumos14",
    annotations: str | Path | None = None,
    info_path: str | Path | None = None,
    class_names_path: str | Path | None = None,
    jobs: int | None = None,
    backend: str = "loky",
    overwrite: bool = False,
    resize: str = "pil-bicubic",
    strict_count: bool = True,
    max_frames: int = ANET_MAX_FRAMES,
    size: int = FRAME_SIZE,
    sample_fps: float = THUMOS_SAMPLE_FPS,
    video_names: list[str] | None = None,
    on_start: Callable[[int], Any] | None = None,
    on_result: Callable[[TaskResult], Any] | None = None,
    on_frames: Callable[[str, int], Any] | None = None,
) -> BatchReport:
    """Convert every video of ``video_dir`` into ``out_dir/<name>.npy`` and write the info file.

    ``on_frames(name, frames)`` reports native frames decoded inside a video as they come (local
    backends; with dask/ray only ``on_result`` reports, per video); it also makes ``on_start``
    receive ``{name: container frame count}`` of every video as a second argument.

    ``dataset`` (a kind of ``afsd_cli/profile.py``) picks the sampling (``thumos14``, ``custom``:
    fixed-fps accumulator; ``anet``: ≤768 frames) and the info file (``video_info.csv`` /
    ``video_info.json`` in ``out_dir`` unless ``info_path``).
    ``annotations``: THUMOS14 annotation CSV (only its videos, sorted) or ActivityNet GT JSON
    (only its videos; fills the annotations of the info JSON). ``video_names``: exactly these
    videos (files matched by stem, any container), e.g. those of a custom annotation JSON.
    ``sample_fps``: the fixed rate of the ``thumos14`` sampling (official 10).
    """
    from afsd_cli.profile import kind_rules

    rules = kind_rules(dataset)
    decoding = _Decoding(rules.video_mode, rules.sampling == "fps", resize, strict_count, max_frames, size, sample_fps)
    decoding.check()
    check_backend(backend)
    video_dir, out_dir = Path(video_dir), Path(out_dir)
    annotations = Path(annotations) if annotations is not None else None
    if not video_dir.is_dir():
        raise InputError("video folder not found", video_dir)
    info_file = _InfoFile.for_run(rules, out_dir, info_path, annotations, class_names_path)
    plan, notes = _plan_sources(video_dir, rules, annotations, info_file.gt, video_names)
    if not plan:
        listed = f"listed in {annotations.name} " if annotations is not None else ""
        raise InputError(f"no video file {listed}found (extensions: {', '.join(VIDEO_EXTENSIONS)})", video_dir)
    make_output_folder(out_dir)
    ensure_writable(info_file.path, kind="file")

    manifest = Manifest(out_dir / MANIFEST_NAME, "prepare",
                        {"dataset": dataset, "video_dir": str(video_dir),
                         "annotations": str(annotations) if annotations else None, **decoding.manifest_settings()})
    if not overwrite:
        notes += manifest.changed_settings(PREPARE_NOTED_SETTINGS)
    _announce_start(on_start, on_frames, len(plan), lambda: _container_counts(plan))
    sources = {name: str(source) if source else None for name, source, _ in plan}
    recorder = ManifestRecorder(manifest, sources.get, on_result)
    # Parallel workers decode single-threaded: one core each instead of N threads per worker.
    decode_threads = 1 if resolve_jobs(jobs) > 1 and len(plan) > 1 else None
    decoding.build_resizer()
    tasks = _prepare_tasks(plan, out_dir, decoding, decode_threads, overwrite, recorder)
    _run_tasks(tasks, "frame_queue", recorder, on_frames, backend, jobs)

    ordered = [recorder.results[name] for name, _, _ in plan]
    info_file.write({r.name: manifest.get(r.name) for r in ordered if r.status in (DONE, SKIPPED)})
    return BatchReport(ordered, out_dir, manifest.path, info_file.path, notes)


@dataclass(frozen=True)
class _Decoding:
    """How every video of one ``prepare`` run is decoded (the arguments of :func:`prepare_one`)."""

    mode: str  # the profile's sampling rule
    fixed_rate: bool  # "fps" sampling: ``sample_fps`` applies, ``max_frames`` does not (and vice versa)
    resize: str
    strict_count: bool
    max_frames: int
    size: int
    sample_fps: float

    def check(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise ConfigError(f"unknown resize method {self.resize!r}; choose one of {', '.join(RESIZE_METHODS)}")
        if self.max_frames < 1:
            raise ConfigError(f"max_frames must be at least 1, got {self.max_frames}")
        if self.size < 1:
            raise ConfigError(f"size must be at least 1, got {self.size}")
        if not self.sample_fps > 0:
            raise ConfigError(f"sample fps must be positive, got {self.sample_fps}")

    def manifest_settings(self) -> dict[str, Any]:
        """The settings the manifest records (the rate rule that does not apply as None)."""
        return {"resize": self.resize, "size": self.size, "strict_count": self.strict_count,
                "max_frames": None if self.fixed_rate else self.max_frames,
                "sample_fps": self.sample_fps if self.fixed_rate else None}

    def build_resizer(self) -> None:
        """Compile the native resize here, once, rather than in every worker at the same time."""
        if self.resize == "pil-bicubic":
            make_resizer(self.resize, self.size)

    def task_args(self, source: Path, target: Path, decode_threads: int | None) -> tuple:
        return (str(source), str(target), self.mode, self.resize, self.strict_count, self.max_frames,
                decode_threads, self.size, self.sample_fps)


@dataclass(frozen=True)
class _InfoFile:
    """The video-info file a ``prepare`` run keeps up to date: the THUMOS14 CSV, or the ActivityNet
    JSON with the ground truth and class ids of its annotations."""

    path: Path
    anet: bool
    gt: dict | None
    class_ids: dict[str, int]

    @classmethod
    def for_run(cls, rules: KindRules, out_dir: Path, info_path: str | Path | None, annotations: Path | None,
                class_names_path: str | Path | None) -> "_InfoFile":
        anet = rules.annotation_format == "anet_info_json"
        gt = read_anet_ground_truth(annotations) if annotations is not None and anet else None
        class_ids = {}
        if anet:
            names = read_class_names(class_names_path) if class_names_path else None
            class_ids = anet_class_ids(gt or {}, names)
        path = Path(info_path) if info_path else out_dir / ("video_info.json" if anet else "video_info.csv")
        return cls(path, anet, gt, class_ids)

    def write(self, produced: dict[str, dict]) -> None:
        """Merge the records of ``produced`` videos into the file (its other rows are kept)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.path.parent):  # a concurrent run into this folder merges its rows too
            if self.anet:
                _write_anet_info(self.path, produced, self.gt, self.class_ids)
            else:
                _write_thumos_info(self.path, produced)


def _plan_sources(video_dir: Path, rules: KindRules, annotations: Path | None, gt: dict | None,
                  video_names: list[str] | None = None):
    """(name, source or None, reason-if-none) per video to produce, plus notes for the user."""
    if video_names is not None or (annotations is not None and rules.annotation_format == "thumos_csv"):
        return _plan_listed_videos(video_dir, annotations, video_names), []
    files = list_videos(video_dir)
    notes: list[str] = []
    if gt is not None:
        files, notes = _files_in_ground_truth(files, gt, annotations, video_dir)
    return _plan_files(files), notes


def _plan_listed_videos(video_dir: Path, annotations: Path | None,
                        video_names: list[str] | None) -> list[tuple[str, Path | None, str | None]]:
    """As upstream: exactly the annotated videos, sorted; a listed video without a file fails."""
    names = video_names if video_names is not None else read_annotated_thumos_videos(annotations)
    below = _videos_below(video_dir) if video_names is not None else {}
    plan: list[tuple[str, Path | None, str | None]] = []
    for name in names:
        source = find_video(video_dir, name) or below.get(name)
        listed = f"listed in {annotations.name}" if annotations is not None else "annotated"
        plan.append((name, source, None if source else f"{listed} but no video file found in {video_dir}"))
    return plan


def _files_in_ground_truth(files: list[Path], gt: dict, annotations: Path,
                           video_dir: Path) -> tuple[list[Path], list[str]]:
    """The video files the ActivityNet ground truth lists, and notes on those left out either way."""
    notes: list[str] = []
    listed = [f for f in files if anet_key_for(gt, f.stem) is not None]
    unlisted = len(files) - len(listed)
    if unlisted:
        notes.append(f"{unlisted} video file(s) not in {annotations.name} were left out")
    missing = len(gt) - len({anet_key_for(gt, f.stem) for f in listed})
    if missing:
        notes.append(f"{missing} video(s) of {annotations.name} have no file in {video_dir}")
    return listed, notes


def _plan_files(files: list[Path]) -> list[tuple[str, Path | None, str | None]]:
    """One output per stem: a second file with the same stem fails, named by its full file name."""
    plan: list[tuple[str, Path | None, str | None]] = []
    seen: dict[str, Path] = {}
    for source in files:
        name = source.stem
        if name in seen:
            plan.append((name + source.suffix, None, f"{source.name}: {seen[name].name} already produces {name}.npy"))
            continue
        seen[name] = source
        plan.append((name, source, None))
    return plan


def _videos_below(video_dir: Path) -> dict[str, Path]:
    """Video files anywhere below ``video_dir`` by stem (split folders such as train/ and test/);
    the first in sorted path order wins."""
    wanted = {e.lower() for e in VIDEO_EXTENSIONS}
    found: dict[str, Path] = {}
    for path in sorted(video_dir.rglob("*")):
        if path.suffix.lower() in wanted and not path.name.startswith(".") and path.is_file():
            found.setdefault(path.stem, path)
    return found


def _container_counts(plan: list[tuple[str, Path | None, str | None]]) -> dict[str, int]:
    """``{name: native frames the container announces}`` (0 when unknown or unreadable): the
    progress total of ``prepare``, which counts decoded native frames."""
    counts = {}
    for name, source, _ in plan:
        try:
            counts[name] = max(0, int(probe_video(source).container_count)) if source is not None else 0
        except (InputError, OSError, ValueError):
            counts[name] = 0
    return counts


def _prepare_tasks(plan: list[tuple[str, Path | None, str | None]], out_dir: Path, decoding: _Decoding,
                   decode_threads: int | None, overwrite: bool, recorder: ManifestRecorder) -> list[Task]:
    """The videos to decode; the others are reported as they are met: failed (no file) or skipped
    (an earlier run's output is kept)."""
    tasks: list[Task] = []
    for name, source, reason in plan:
        if source is None:
            recorder(TaskResult(name, FAILED, error=reason))
            continue
        target = out_dir / f"{name}.npy"
        kept = None if overwrite else _kept_video_record(source, target, decoding, recorder.manifest.get(name))
        if kept is not None:
            recorder.manifest.record(name, kept)
            recorder(TaskResult(name, SKIPPED, info=kept))
            continue
        tasks.append(Task(name, prepare_one, decoding.task_args(source, target, decode_threads)))
    return tasks


def _kept_video_record(source: Path, target: Path, decoding: _Decoding, previous: dict | None) -> dict | None:
    """The manifest record of an earlier run's complete output, or None: (re)decode the video."""
    if not npy_is_complete(target, 3):
        return None
    try:
        return _skipped_record(source, target, decoding.sample_fps if decoding.fixed_rate else None, previous,
                               decoding.max_frames)
    except Exception:  # noqa: BLE001 - cannot describe the old output: redo it
        return None


def _skipped_record(source: Path, target: Path, fixed_fps: float | None, previous: dict | None,
                    max_frames: int) -> dict:
    """The record of an output kept from an earlier run (manifest first, else probe + npy header);
    ``fixed_fps`` None: the ≤ ``max_frames`` rule."""
    if previous and previous.get("status") == DONE and "sample_count" in previous:
        return dict(previous)
    shape = list(open_npy(target).shape)
    probe = probe_video(source)
    count = probe.container_count
    sample_fps = fixed_fps if fixed_fps is not None else anet_target_fps(probe.fps, max(count, 1), max_frames)
    return {
        "status": DONE,
        "source": str(source),
        "output": target.name,
        "shape": shape,
        "frames": int(count),
        "fps": probe.fps,
        "count": int(count),
        "sample_fps": sample_fps,
        "sample_count": shape[0],
        "duration": count / probe.fps if probe.fps > 0 else 0.0,
    }


def _write_thumos_info(info_path: Path, produced: dict[str, dict]) -> None:
    from afsd_cli.data.annotations import read_video_info_csv

    rows: dict[str, ThumosVideoInfo] = {}
    if info_path.exists():
        try:
            for name, info in read_video_info_csv(info_path).items():
                rows[name] = ThumosVideoInfo(name, info.fps, info.sample_fps, info.count, info.sample_count)
        except InputError:
            rows = {}  # an unreadable old file is replaced by what we know
    for name, record in produced.items():
        if name in rows and rows[name].sample_count == record.get("sample_count"):
            continue  # keep the row as it was written (skipped videos)
        rows[name] = _thumos_info_for(name, record)
    if rows:
        write_thumos_video_info(info_path, rows.values())


def _write_anet_info(info_path: Path, produced: dict[str, dict], gt: dict | None, class_ids: dict[str, int]) -> None:
    entries: dict[str, dict] = {}
    if info_path.exists():
        try:
            entries = load_anet_video_info(info_path)
        except InputError:
            entries = {}
    for name, record in produced.items():
        entries[name] = anet_info_entry(
            frame_num=int(record["sample_count"]),
            fps=float(record["sample_fps"]),
            duration=float(record.get("duration") or 0.0),
            gt=anet_entry_for(gt, name) if gt is not None else None,
            class_ids=class_ids,
        )
    if entries:
        write_anet_video_info(info_path, entries)


def _thumos_info_for(name: str, record: dict) -> ThumosVideoInfo:
    return ThumosVideoInfo(name, record["fps"], float(record.get("sample_fps") or THUMOS_SAMPLE_FPS),
                           float(record["count"]), int(record["sample_count"]))


# --------------------------------------------------------------------------------------------
# flow


def flow_one(source: str, target: str, method: str, device: str, jpeg_quality: int | None,
             method_options: dict | None = None, pair_queue: Any = None) -> dict:
    """Read one RGB npy (memory-mapped), compute its flow, write ``uint8 [T, H, W, 2]``.

    ``pair_queue`` (a queue, possibly a multiprocessing proxy) receives ``(name, pairs)`` as the
    frame pairs are computed, so progress moves inside a long video."""
    frames = open_npy(source)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise InputError(f"expected uint8 [T, H, W, 3] RGB frames, got {frames.dtype} {list(frames.shape)}", source)
    from afsd_cli.data.flow import compute_flow

    try:
        name = Path(source).stem
        progress = None if pair_queue is None else (lambda pairs: pair_queue.put((name, pairs)))
        flow = compute_flow(np.asarray(frames), method=method, device=device, jpeg_quality=jpeg_quality,
                            progress=progress, **(method_options or {}))
    except InputError as exc:
        raise InputError(exc.message, source) from None
    expected = (*frames.shape[:3], 2)
    if flow.dtype != np.uint8 or flow.shape != expected:
        raise InputError(f"flow backend returned {flow.dtype} {list(flow.shape)}, expected uint8 {list(expected)}", source)
    write_npy(target, flow)
    return {"work_frames": int(frames.shape[0]), "shape": list(flow.shape), "frames": int(frames.shape[0])}


#: Settings whose change between runs is noted (flow files made with the old ones are kept).
FLOW_NOTED_SETTINGS = ("method", "jpeg_quality", "method_options")


def flow_files(
    rgb_dir: str | Path,
    out_dir: str | Path,
    *,
    method: str = "tvl1",
    device: str = "cpu",
    jpeg_quality: int | None = None,
    method_options: dict | None = None,
    jobs: int | None = None,
    backend: str = "loky",
    overwrite: bool = False,
    on_start: Callable[[int], Any] | None = None,
    on_result: Callable[[TaskResult], Any] | None = None,
    on_frames: Callable[[str, int], Any] | None = None,
) -> BatchReport:
    """Compute ``out_dir/<name>.npy`` flow for every ``rgb_dir/<name>.npy``.

    ``method_options`` go to ``compute_flow`` (e.g. ``{"preset": "fast", "compile": True}`` for tvl1).
    ``on_frames(name, pairs)`` reports the frame pairs computed inside a video as they finish
    (local backends; with dask/ray only ``on_result`` reports, per video); it also makes
    ``on_start`` receive ``{name: frames}`` of every video as a second argument.
    """
    method_options = dict(method_options or {})
    rgb_dir, out_dir = Path(rgb_dir), Path(out_dir)
    if not rgb_dir.is_dir():
        raise InputError("RGB npy folder not found", rgb_dir)
    if rgb_dir.resolve() == out_dir.resolve():
        raise ConfigError("OUT_DIR must differ from RGB_NPY_DIR (flow files have the same names)")
    check_backend(backend)
    _check_flow_method(method, device, jpeg_quality, method_options)
    sources = sorted(p for p in rgb_dir.glob("*.npy") if not p.name.startswith("."))
    if not sources:
        raise InputError("no .npy file found", rgb_dir)
    make_output_folder(out_dir)

    manifest = Manifest(out_dir / MANIFEST_NAME, "flow",
                        {"rgb_dir": str(rgb_dir), "method": method, "device": device, "jpeg_quality": jpeg_quality,
                         "method_options": method_options})
    notes = [] if overwrite else manifest.changed_settings(FLOW_NOTED_SETTINGS)
    _announce_start(on_start, on_frames, len(sources), lambda: _frame_counts(sources))
    recorder = ManifestRecorder(manifest, lambda name: str(rgb_dir / f"{name}.npy"), on_result,
                                 {"method": method, "device": device, "jpeg_quality": jpeg_quality})
    flow_args = (method, device, jpeg_quality, method_options)
    tasks = _flow_tasks(sources, out_dir, flow_args, overwrite, recorder)
    _run_tasks(tasks, "pair_queue", recorder, on_frames, backend, jobs)
    return BatchReport([recorder.results[s.stem] for s in sources], out_dir, manifest.path, notes=notes)


def _check_flow_method(method: str, device: str, jpeg_quality: int | None, method_options: dict) -> None:
    """Refuse an unknown or unavailable method, or a bad method/device combination, before any file."""
    if jpeg_quality is not None and not 0 <= int(jpeg_quality) <= 100:
        raise ConfigError(f"--jpeg-quality must be in 0..100, got {jpeg_quality}")
    try:
        from afsd_cli.data.flow import METHODS, available_methods, compute_flow
    except ImportError as exc:
        raise ConfigError(f"the optical-flow library is not available: {exc}") from None
    if method not in METHODS:
        raise ConfigError(f"unknown flow method {method!r}; choose one of {', '.join(METHODS)}")
    usable, why = available_methods()[method]
    if not usable:
        raise ConfigError(f"flow method {method!r} is unavailable: {why}")
    # A bad method/device combination is the same error for every file: find it once, up front.
    compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method=method, device=device, jpeg_quality=jpeg_quality,
                 **{k: v for k, v in method_options.items() if k != "compile"})


def _frame_counts(sources: list[Path]) -> dict[str, int]:
    """``{name: T}`` from the arrays' headers (0 for an unreadable one: it fails later, named)."""
    counts = {}
    for source in sources:
        try:
            shape = open_npy(source).shape
            counts[source.stem] = int(shape[0]) if shape else 0
        except (InputError, OSError, ValueError):
            counts[source.stem] = 0
    return counts


def _flow_tasks(sources: list[Path], out_dir: Path, flow_args: tuple, overwrite: bool,
                recorder: ManifestRecorder) -> list[Task]:
    """The arrays to compute flow for; those with a complete flow file are reported skipped."""
    tasks: list[Task] = []
    for source in sources:
        name, target = source.stem, out_dir / source.name
        if not overwrite and npy_is_complete(target, 2):
            recorder(TaskResult(name, SKIPPED, info=_kept_flow_record(source, target, recorder.manifest)))
            continue
        tasks.append(Task(name, flow_one, (str(source), str(target), *flow_args)))
    return tasks


def _kept_flow_record(source: Path, target: Path, manifest: Manifest) -> dict:
    """The manifest record of an earlier run's flow file (described from its header when the
    manifest has none)."""
    record = manifest.get(source.stem)
    if not record or record.get("status") != DONE:
        shape = list(open_npy(target).shape)
        record = {"status": DONE, "source": str(source), "output": target.name, "shape": shape, "frames": shape[0]}
        manifest.record(source.stem, record)
    return record
