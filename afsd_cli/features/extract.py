"""``afsd extract``: I3D clip features for videos or frame arrays, resumable over folders.

Feature ``i`` of a video is computed from frames ``[i*stride, i*stride + clip_frames)`` of its
sampled frame sequence (see ``features/sources.py`` for decoding, resizing and the crop), scaled
to [-1, 1] as ``x/255*2-1``, run through the Inception-I3D up to ``Mixed_5c`` in eval mode and
averaged over time and space (``features/network.py``). ``both`` puts
the RGB channels first, then flow. Outputs: ``OUT/<video>.npy`` float32 ``[T', C]``,
``OUT/features.json`` (settings, weights' sha256, time mapping, one record per video) and
``OUT/manifest.json`` (per-item status, as ``prepare`` keeps it).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from afsd_cli.data.batch import DONE, FAILED, SKIPPED, Task, TaskResult, check_backend, run_batch
from afsd_cli.data.manifest import MANIFEST_NAME, Manifest, ManifestRecorder
from afsd_cli.data.npy import open_frames, open_npy
from afsd_cli.data.pipeline import BatchReport
from afsd_cli.data.video import VIDEO_EXTENSIONS, list_videos
from afsd_cli.engine.inference import resolve_device
from afsd_cli.errors import CheckpointError, ConfigError, InputError
from afsd_cli.features.network import (
    CHANNELS,
    ENDPOINT,
    IN_CHANNELS,
    ClipEncoder,
    default_batch_size,
    file_sha256,
    load_i3d,
)
from afsd_cli.features.sources import (
    ClipAssembler,
    FlowFromFrames,
    array_chunks,
    centre_crop,
    open_video,
    short_side_for,
)
from afsd_cli.features.timeline import feature_count, time_mapping
from afsd_cli.io import make_output_folder, read_json, write_json, write_npy

FEATURES_JSON = "features.json"
FORMAT_VERSION = 1
MODALITIES = ("rgb", "flow", "both")
AMP_MODES = ("off", "bf16", "fp16")
# Changing one of these changes the features: a folder made with other values is not resumed.
FEATURE_SETTINGS = ("modality", "clip_frames", "stride", "size", "fps", "flow_method", "weights_sha256")


@dataclass
class ExtractSettings:
    """Everything that defines the features, plus how to compute them."""

    modality: str = "rgb"
    weights: str | None = None  # RGB (or, for --modality flow alone, flow) I3D weights / AFSD checkpoint
    flow_weights: str | None = None
    flow_input: str | None = None  # folder of flow arrays <name>.npy
    flow_method: str = "tvl1"  # when flow is computed from the frames
    clip_frames: int = 16
    stride: int = 4
    size: int = 224
    fps: float | None = None  # None: every frame of the video (native rate)
    device: str = "auto"
    amp: str = "off"
    batch_size: int | None = None
    jobs: int = 1

    @classmethod
    def from_options(cls, *, modality: str | None, weights: str | Path | None, flow_weights: str | Path | None,
                     flow_input: str | Path | None, fps: str, **rest: Any) -> ExtractSettings:
        """The settings ``afsd extract``'s options say: ``--modality`` defaults to both with flow
        weights, else rgb; weights may be a training run folder (its best, else last, checkpoint,
        as ``predict --checkpoint``); ``--fps`` is text (:func:`parse_fps`); ``rest`` are fields
        as they are."""
        from afsd_cli.runs import resolve_checkpoint

        return cls(modality=modality or ("both" if flow_weights is not None else "rgb"),
                   weights=_text(resolve_checkpoint(weights)), flow_weights=_text(resolve_checkpoint(flow_weights)),
                   flow_input=_text(flow_input), fps=parse_fps(fps), **rest)

    def modalities(self) -> tuple[str, ...]:
        return ("rgb", "flow") if self.modality == "both" else (self.modality,)

    def weights_for(self, modality: str) -> str | None:
        if modality == "rgb":
            return self.weights
        return self.flow_weights or (self.weights if self.modality == "flow" else None)


def parse_fps(text: str) -> float | None:
    """``--fps``: ``native`` (None: every frame of the video) or a positive number."""
    if text.strip().lower() == "native":
        return None
    try:
        fps = float(text)
    except ValueError:
        raise ConfigError(f"--fps must be 'native' or a number of frames per second, got {text!r}") from None
    if not fps > 0 or fps != fps or fps == float("inf"):
        raise ConfigError(f"--fps must be a positive number, got {text!r}")
    return fps


def _text(path: str | Path | None) -> str | None:
    return str(path) if path else None


@dataclass
class SourceItem:
    """One video to extract: a video file or an RGB frame array (and its flow array, if any)."""

    name: str
    path: Path | None
    kind: str  # "video" | "frames"
    flow_path: Path | None = None
    array_fps: float | None = None  # frames: the rate `afsd prepare` recorded
    problem: str | None = None


# --------------------------------------------------------------------------------------------
# one video


class StreamEncoder:
    """Frames of one modality, chunk by chunk → clips → batches → features ``[T', 1024]``."""

    def __init__(self, encoder: ClipEncoder, settings: ExtractSettings, batch_size: int, where: Path | None,
                 on_clips: Callable[[int], Any] | None = None):
        self.encoder, self.size, self.batch_size, self.where = encoder, settings.size, batch_size, where
        self.assembler = ClipAssembler(settings.clip_frames, settings.stride)
        self.on_clips = on_clips
        self.pending: list[np.ndarray] = []
        self.features: list[np.ndarray] = []

    @property
    def frames(self) -> int:
        return self.assembler.frames

    def push(self, chunk: np.ndarray) -> None:
        clips = self.assembler.push(centre_crop(chunk, self.size, self.where))
        if clips is not None:
            self.pending.extend(clips)
        while len(self.pending) >= self.batch_size:
            self._encode(self.batch_size)

    def finish(self) -> np.ndarray:
        tail = self.assembler.finish()
        if tail is not None:
            self.pending.extend(tail)
        while self.pending:
            self._encode(min(self.batch_size, len(self.pending)))
        return np.concatenate(self.features) if self.features else np.zeros((0, CHANNELS), np.float32)

    def _encode(self, count: int) -> None:
        batch, self.pending = np.stack(self.pending[:count]), self.pending[count:]
        self.features.append(self.encoder(batch))
        if self.on_clips is not None:
            self.on_clips(count)


# --------------------------------------------------------------------------------------------
# one video


def _source_chunks(item: SourceItem, settings: ExtractSettings, decode_threads: int | None):
    """(iterator of {modality: chunk}, record, video stream or None) for one item."""
    wanted = settings.modalities()
    record: dict[str, Any] = {"source": str(item.path), "kind": item.kind}
    rgb: Iterator[np.ndarray] | None = None
    stream = None
    if item.kind == "video":
        stream = open_video(item.path, settings.size, settings.fps, decode_threads=decode_threads)
        rgb = stream.chunks
        record.update(native_fps=stream.fps, fps=stream.sample_fps)
    else:
        record["fps"] = _array_fps(item, settings)
        if "rgb" in wanted or item.flow_path is None:
            rgb = array_chunks(open_frames(item.path, 3))
    flow: Iterator[np.ndarray] | None = None
    if "flow" in wanted and item.flow_path is not None:
        flow = array_chunks(open_frames(item.flow_path, 2))
        record["flow_source"] = str(item.flow_path)
    return _steps(rgb, flow, wanted, settings), record, stream


def _steps(rgb: Iterator[np.ndarray] | None, flow: Iterator[np.ndarray] | None, wanted: tuple[str, ...],
           settings: ExtractSettings) -> Iterator[dict[str, np.ndarray]]:
    """``{modality: chunk}`` steps: RGB alone, RGB beside the flow arrays, or flow computed from
    the RGB chunks (``sources.FlowFromFrames``: its repeated last flow comes after them)."""
    if "flow" not in wanted:
        for chunk in rgb:
            yield {"rgb": chunk}
    elif flow is not None:
        for rgb_chunk, flow_chunk in itertools.zip_longest(rgb if "rgb" in wanted else (), flow):
            yield {key: chunk for key, chunk in (("rgb", rgb_chunk), ("flow", flow_chunk)) if chunk is not None}
    else:
        flower = FlowFromFrames(settings.flow_method, _flow_device(settings))
        for chunk in rgb:
            step = {"rgb": chunk} if "rgb" in wanted else {}
            flow_chunk = flower.push(chunk)
            if flow_chunk is not None:
                step["flow"] = flow_chunk
            yield step
        last = flower.finish()
        if last is not None:
            yield {"flow": last}


def _flow_device(settings: ExtractSettings) -> str:
    # only our TV-L1 runs on a GPU; the OpenCV methods are CPU-only
    return resolve_device(settings.device) if settings.flow_method == "tvl1" else "cpu"


def _array_fps(item: SourceItem, settings: ExtractSettings) -> float | None:
    if item.array_fps is not None and settings.fps is not None and abs(item.array_fps - settings.fps) > 1e-6:
        raise InputError(f"the arrays are at {item.array_fps:g} fps (prepare's manifest), not --fps {settings.fps:g}: "
                         "extract never resamples frame arrays", item.path)
    return item.array_fps if item.array_fps is not None else settings.fps


def extract_one(item: SourceItem, target: Path, settings: ExtractSettings, encoders: dict[str, ClipEncoder],
                batch_size: int, decode_threads: int | None = None,
                on_clips: Callable[[int], Any] | None = None) -> dict:
    """Features of one item written to ``target``; returns its record for features.json."""
    steps, record, stream = _source_chunks(item, settings, decode_threads)
    streams = {m: StreamEncoder(encoders[m], settings, batch_size, item.flow_path if m == "flow" and item.flow_path
                                else item.path, on_clips) for m in settings.modalities()}
    for step in steps:
        for modality, chunk in step.items():
            streams[modality].push(chunk)
    count, table = _feature_table(item, settings, streams)
    write_npy(target, table)
    if stream is not None:
        record["native_frames"] = stream.decoded
    fps = record.get("fps")
    record.update(frames=count, features=int(table.shape[0]), shape=list(table.shape), output=target.name,
                  duration=count / fps if fps else None, work_frames=int(table.shape[0]) * len(streams))
    return record


def _feature_table(item: SourceItem, settings: ExtractSettings, streams: dict[str, StreamEncoder]):
    """(frames, float32 [T', C]) once every stream is finished, checked against the definition."""
    features = {m: stream.finish() for m, stream in streams.items()}
    frames = {m: stream.frames for m, stream in streams.items()}
    if len(set(frames.values())) > 1:
        raise InputError(f"RGB has {frames['rgb']} frames but the flow has {frames['flow']}", item.flow_path or item.path)
    count = next(iter(frames.values()))
    expected = feature_count(count, settings.clip_frames, settings.stride)
    table = np.concatenate([features[m] for m in settings.modalities()], axis=1).astype(np.float32, copy=False)
    if table.shape[0] != expected:
        raise InputError(f"feature extraction produced {table.shape[0]} features for {count} frames, expected {expected}",
                         item.path)
    if not np.isfinite(table).all():
        raise InputError("feature extraction produced non-finite values (NaN/inf in the weights, or an fp16 "
                         "overflow: try --amp bf16 or off)", item.path)
    return count, table


# --------------------------------------------------------------------------------------------
# worker processes

_WORKER_ENCODERS: dict[tuple, dict[str, ClipEncoder]] = {}


def _encoders_for(settings: ExtractSettings, device: str) -> dict[str, ClipEncoder]:
    key = (settings.modality, settings.weights, settings.flow_weights, device, settings.amp)
    if key not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[key] = _load_encoders(settings, device)
    return _WORKER_ENCODERS[key]


def _extract_in_worker(item: SourceItem, target: str, settings: ExtractSettings, device: str, batch_size: int,
                       threads: int) -> dict:
    """A joblib worker: share the cores with the other workers, load the networks once per process."""
    torch.set_num_threads(threads)
    return extract_one(item, Path(target), settings, _encoders_for(settings, device), batch_size, decode_threads=1)


# --------------------------------------------------------------------------------------------
# the folder job


def check_settings(settings: ExtractSettings) -> None:
    if settings.modality not in MODALITIES:
        raise ConfigError(f"unknown modality {settings.modality!r}; choose one of {', '.join(MODALITIES)}")
    if settings.amp not in AMP_MODES:
        raise ConfigError(f"unknown --amp {settings.amp!r}; choose one of {', '.join(AMP_MODES)}")
    for name, value, low in (("clip_frames", settings.clip_frames, 1), ("stride", settings.stride, 1),
                             ("size", settings.size, 1), ("jobs", settings.jobs, 1)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if settings.batch_size is not None and settings.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {settings.batch_size}")
    if settings.fps is not None and not settings.fps > 0:
        raise ConfigError(f"--fps must be 'native' or a positive number, got {settings.fps}")
    for modality in settings.modalities():
        path = settings.weights_for(modality)
        if path is None:
            option = "--weights" if modality == "rgb" else "--flow-weights"
            raise ConfigError(f"--modality {settings.modality} needs {option} (I3D {modality} weights or an AFSD checkpoint)")
        if not Path(path).is_file():
            raise CheckpointError("weights file not found", path)
    if settings.flow_input is not None and not Path(settings.flow_input).is_dir():
        raise InputError("--flow-input folder not found", settings.flow_input)
    if "flow" in settings.modalities() and settings.flow_input is None:
        from afsd_cli.data.flow import METHODS, available_methods

        if settings.flow_method not in METHODS:
            raise ConfigError(f"unknown flow method {settings.flow_method!r}; choose one of {', '.join(METHODS)}")
        usable, why = available_methods()[settings.flow_method]
        if not usable:
            raise ConfigError(f"flow method {settings.flow_method!r} is unavailable: {why}")


def collect_sources(inputs: list[str | Path], flow_input: str | Path | None = None) -> list[SourceItem]:
    """Items of the INPUT paths: video files, folders of videos, ``.npy`` frame arrays or folders of them."""
    items: list[SourceItem] = []
    seen: dict[str, Path] = {}
    for path, rate in _input_files(inputs):
        name = path.stem
        if name in seen:
            if seen[name] != path:
                items.append(SourceItem(path.name, None, "video", problem=f"{path}: {seen[name]} already produces {name}.npy"))
            continue
        seen[name] = path
        kind = "frames" if path.suffix.lower() == ".npy" else "video"
        item = SourceItem(name, path, kind, array_fps=rate)
        if flow_input is not None:
            item.flow_path = Path(flow_input) / f"{name}.npy"
            if not item.flow_path.is_file():
                item.problem = f"no flow array {name}.npy in {flow_input}"
        items.append(item)
    return items


def _input_files(inputs: list[str | Path]) -> list[tuple[Path, float | None]]:
    """Every video or frame array the INPUT paths name (folders listed), with the frame rate
    ``afsd prepare`` recorded for an array, if any."""
    files: list[tuple[Path, float | None]] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            rates = _prepare_rates(entry)
            arrays = sorted(p for p in entry.glob("*.npy") if not p.name.startswith("."))
            found = list_videos(entry) + arrays
            if not found:
                raise InputError(f"no video ({', '.join(VIDEO_EXTENSIONS)}) or .npy frame array found", entry)
            files += [(path, rates.get(path.stem)) for path in found]
        elif entry.is_file():
            if entry.suffix.lower() != ".npy" and entry.suffix.lower() not in VIDEO_EXTENSIONS:
                raise InputError("not a video file or a .npy frame array", entry)
            files.append((entry, _prepare_rates(entry.parent).get(entry.stem) if entry.suffix == ".npy" else None))
        else:
            raise InputError("input not found", entry)
    return files


def _prepare_rates(folder: Path) -> dict[str, float]:
    """Frame rate of each array `afsd prepare` wrote into ``folder`` (its manifest), if known."""
    try:
        manifest = read_json(folder / MANIFEST_NAME)
    except InputError:
        return {}
    items = manifest.get("items") if isinstance(manifest, dict) and manifest.get("command") == "prepare" else None
    if not isinstance(items, dict):
        return {}
    return {name: float(record["sample_fps"]) for name, record in items.items()
            if isinstance(record, dict) and isinstance(record.get("sample_fps"), (int, float)) and record["sample_fps"] > 0}


def feature_output_is_complete(path: Path, channels: int) -> bool:
    try:
        array = open_npy(path)
    except InputError:
        return False
    return array.dtype == np.float32 and array.ndim == 2 and array.shape[0] > 0 and array.shape[1] == channels


def _describe_settings(settings: ExtractSettings, device: str, batch_size: int, weights: dict) -> dict:
    described = asdict(settings)
    described.update(
        fps="native" if settings.fps is None else settings.fps,
        device=device,
        batch_size=batch_size,
        weights_sha256={m: info["sha256"] for m, info in weights.items()},
        flow_method=settings.flow_method if "flow" in settings.modalities() and settings.flow_input is None else None,
    )
    return described


def _check_resumable(manifest: Manifest, described: dict, overwrite: bool, out_dir: Path) -> None:
    if overwrite or not manifest.previous_settings or not any(
            r.get("status") == DONE for r in manifest.items.values() if isinstance(r, dict)):
        return
    changed = [f"{key}={manifest.previous_settings.get(key)!r} (now {described.get(key)!r})"
               for key in FEATURE_SETTINGS if manifest.previous_settings.get(key) != described.get(key)]
    if changed:
        raise ConfigError("this folder holds features made with other settings: " + ", ".join(changed)
                          + "; use another OUT folder or --overwrite", out_dir)


def extract_features(
    inputs: list[str | Path],
    out_dir: str | Path,
    settings: ExtractSettings,
    *,
    overwrite: bool = False,
    backend: str = "loky",
    on_start: Callable[[int], Any] | None = None,
    on_result: Callable[[TaskResult], Any] | None = None,
    on_clips: Callable[[int], Any] | None = None,
) -> BatchReport:
    """Extract ``out_dir/<name>.npy`` for every item of ``inputs``; write features.json and the manifest.

    Finished items are skipped (unless ``overwrite``), failures are reported per item, and the
    outputs of an interrupted run stay valid. ``on_clips(n)`` is told of every batch of clips
    encoded in this process (``settings.jobs == 1``).
    """
    check_settings(settings)
    check_backend(backend)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, [Path(p) for p in inputs], settings)
    items = collect_sources(inputs, settings.flow_input if "flow" in settings.modalities() else None)
    run = _start_run(settings, out_dir, overwrite)
    to_do = {item.name for item in items if item.problem is None
             and (overwrite or not _finished(item, out_dir, run.manifest, CHANNELS * len(settings.modalities())))}
    make_output_folder(out_dir)  # before the networks load: a read-only or full OUT is said at once
    encoders = _load_encoders(settings, run.device) if to_do else {}
    if on_start is not None:
        on_start(len(items))
    sources = {item.name: str(item.path) if item.path else None for item in items}
    recorder = ManifestRecorder(run.manifest, sources.get, on_result)
    jobs = min(settings.jobs, max(1, len(items)))
    tasks = _tasks(items, to_do, out_dir, settings, run, encoders, jobs, recorder, on_clips)
    try:
        run_batch(tasks, jobs=jobs, backend=backend if jobs > 1 else "sequential", on_result=recorder)
    finally:
        run.manifest.save()  # also when interrupted: what finished is on record
        write_features_json(out_dir, run.described, run.weights, run.manifest, [item.name for item in items])
    return BatchReport([recorder.results[item.name] for item in items], out_dir, run.manifest.path)


@dataclass
class _Run:
    """How this run computes (device, batch size) and what it records (weights, settings, manifest)."""

    device: str
    batch_size: int
    weights: dict[str, dict[str, str]]  # modality -> {path, sha256}
    described: dict[str, Any]  # the settings as features.json and the manifest record them
    manifest: Manifest


def _start_run(settings: ExtractSettings, out_dir: Path, overwrite: bool) -> _Run:
    """The run's device and records; a folder holding features of other settings is refused."""
    device, batch_size = _compute_settings(settings)
    weights = {m: {"path": str(settings.weights_for(m)), "sha256": file_sha256(settings.weights_for(m))}
               for m in settings.modalities()}
    described = _describe_settings(settings, device, batch_size, weights)
    manifest = Manifest(out_dir / MANIFEST_NAME, "extract", described)
    _check_resumable(manifest, described, overwrite, out_dir)
    return _Run(device, batch_size, weights, described, manifest)


def _tasks(items: list[SourceItem], to_do: set[str], out_dir: Path, settings: ExtractSettings, run: _Run,
           encoders: dict[str, ClipEncoder], jobs: int, recorder: ManifestRecorder,
           on_clips: Callable[[int], Any] | None) -> list[Task]:
    """A task per item to extract (in this process, or in ``jobs`` workers loading their own
    networks); items with a problem or already finished are recorded at once."""
    tasks: list[Task] = []
    for item in items:
        if item.problem is not None:
            recorder(TaskResult(item.name, FAILED, error=item.problem))
        elif item.name not in to_do:
            recorder(TaskResult(item.name, SKIPPED, info=run.manifest.get(item.name)))
        elif jobs == 1:
            tasks.append(Task(item.name, extract_one, (item, out_dir / f"{item.name}.npy", settings, encoders,
                                                       run.batch_size), {"on_clips": on_clips}))
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            tasks.append(Task(item.name, _extract_in_worker,
                              (item, str(out_dir / f"{item.name}.npy"), settings, run.device, run.batch_size, threads)))
    return tasks


def _check_out_dir(out_dir: Path, inputs: list[Path], settings: ExtractSettings) -> None:
    for entry in inputs + ([Path(settings.flow_input)] if settings.flow_input else []):
        if entry.is_dir() and entry.resolve() == out_dir.resolve():
            raise ConfigError("OUT must differ from the input folders (the outputs have the same names)", out_dir)


def _compute_settings(settings: ExtractSettings) -> tuple[str, int]:
    """(device, batch size) the run uses."""
    device = resolve_device(settings.device)
    if settings.amp == "fp16" and not device.startswith("cuda"):
        raise ConfigError("--amp fp16 needs a CUDA device (use bf16 or off on the CPU)")
    return device, settings.batch_size or default_batch_size(device)


def _finished(item: SourceItem, out_dir: Path, manifest: Manifest, channels: int) -> bool:
    previous = manifest.get(item.name)
    return (isinstance(previous, dict) and previous.get("status") == DONE
            and feature_output_is_complete(out_dir / f"{item.name}.npy", channels))


def _load_encoders(settings: ExtractSettings, device: str) -> dict[str, ClipEncoder]:
    """Every network, loaded once before the first video: a wrong file fails here, not per video."""
    encoders = {m: ClipEncoder(load_i3d(settings.weights_for(m), IN_CHANNELS[m])[0], device, settings.amp)
                for m in settings.modalities()}
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # one clip shape per run
    return encoders


def write_features_json(out_dir: Path, described: dict, weights: dict, manifest: Manifest, names: list[str]) -> Path:
    """``features.json``: how the features were made and how to map them to time, per video."""
    videos = {}
    for name in sorted(set(names) | set(manifest.items)):
        record = manifest.get(name)
        if isinstance(record, dict) and record.get("status") == DONE and (out_dir / f"{name}.npy").is_file():
            videos[name] = {key: record.get(key) for key in
                            ("output", "features", "frames", "fps", "native_fps", "native_frames", "duration",
                             "source", "flow_source", "kind") if record.get(key) is not None}
    modalities = ("rgb", "flow") if described["modality"] == "both" else (described["modality"],)
    document = {
        "format": "afsd-features",
        "version": FORMAT_VERSION,
        "dtype": "float32",
        "layout": "[features, channels]",
        "channels": CHANNELS * len(modalities),
        "channel_blocks": {m: [k * CHANNELS, (k + 1) * CHANNELS] for k, m in enumerate(modalities)},
        "definition": {
            "clip": "frames [i*stride, i*stride + clip_frames) of the sampled frames; shorter videos: "
                    "one clip padded with the last frame",
            "spatial": (f"videos: resized (Pillow bicubic) so the short side is {short_side_for(described['size'])}, "
                        f"then centre-cropped to {described['size']}x{described['size']}; frame arrays: only "
                        "centre-cropped (offsets rounded half to even, as pytorch-i3d's CenterCrop)"),
            "scaling": "x/255*2-1",
            "network": f"Inception-I3D up to {ENDPOINT}, eval mode, averaged over time and space",
        },
        "settings": described,
        "weights": weights,
        "time_mapping": time_mapping(described["clip_frames"], described["stride"]),
        "videos": videos,
    }
    return write_json(out_dir / FEATURES_JSON, document)
