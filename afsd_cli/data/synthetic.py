"""The bundled demo dataset: small synthetic action videos with THUMOS14-format annotations.

Each video shows a slowly panning grey texture. Action instances are saturated coloured objects
that appear at an exact time, move in a class-specific way and vanish at an exact time, so that
appearance (RGB stream) and motion (flow stream) each identify the class:

=========  =========  =======================================================
class      colour     motion
=========  =========  =======================================================
Bounce     red        disc bouncing up and down
Slide      green      square sliding left and right
Spin       blue       bar rotating about its centre
Grow       yellow     disc whose radius pulses (expands / contracts)
Orbit      cyan       diamond travelling on a circle
Flash      magenta    still square whose brightness blinks
=========  =========  =======================================================

Times are on a 0.1 s grid and the native frame rate is a multiple of 10, so the CSV's seconds
(one decimal) and native frame numbers are both exact: the object is drawn on native frame ``f``
(0-based) iff ``startFrame <= f < endFrame``. Instances never overlap and are separated by
background. Everything is drawn with numpy from one seed: the same seed gives the same pixels
and byte-identical CSV/JSON files.

Layout written under ``out_dir``::

    videos/train/<video>.mp4, videos/test/<video>.mp4
    annotations/train_Annotation.csv, annotations/test_Annotation.csv   (THUMOS14 columns)
    annotations/train_video_info.csv, annotations/test_video_info.csv   (expected after 10 fps sampling)
    annotations/classes.txt                                              ("<idx> <Name>" lines)
    annotations/gt.json                                                  (ActivityNet-style GT)
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.io import write_json, write_text

SPLITS = ("train", "test")
SAMPLE_FPS = 10.0
ANNOTATION_HEADER = ["video", "type", "type_idx", "start", "end", "startFrame", "endFrame"]
VIDEO_INFO_HEADER = ["video", "fps", "sample_fps", "count", "sample_count"]


@dataclass(frozen=True)
class ActionClass:
    name: str
    rgb: tuple[int, int, int]
    motion: str


#: Class order = model id order (1-based); the class index file numbers them 1..K.
ACTION_CLASSES: tuple[ActionClass, ...] = (
    ActionClass("Bounce", (235, 30, 30), "bounce"),
    ActionClass("Slide", (30, 215, 40), "slide"),
    ActionClass("Spin", (40, 70, 255), "spin"),
    ActionClass("Grow", (250, 230, 20), "grow"),
    ActionClass("Orbit", (20, 225, 235), "orbit"),
    ActionClass("Flash", (240, 30, 230), "flash"),
)
MAX_CLASSES = len(ACTION_CLASSES)


@dataclass(frozen=True)
class Instance:
    """One action instance in native frames ``[start_frame, end_frame)`` plus its drawing parameters."""

    class_id: int  # 0-based index into ACTION_CLASSES
    start_frame: int
    end_frame: int
    cx: float  # anchor position (pixels)
    cy: float
    size: float  # characteristic radius (pixels)
    phase: float  # radians


@dataclass(frozen=True)
class VideoSpec:
    name: str
    split: str
    num_frames: int
    fps: int
    width: int
    height: int
    instances: tuple[Instance, ...]
    texture_seed: int
    pan: tuple[float, float]  # background velocity (pixels per native frame)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


# --------------------------------------------------------------------------------------------
# planning (all random draws happen here)


#: Background (tenths of a second) before, between and after the instances of a video, at least.
GAP_TENTHS = 6


@dataclass(frozen=True)
class _Ranges:
    """The drawn quantities' inclusive ranges: video and action lengths in tenths of a second,
    actions per video."""

    video: tuple[int, int]
    action: tuple[int, int]
    actions: tuple[int, int]


def _to_frames(tenths: int, fps: int) -> int:
    # fps is a multiple of 10, so 0.1 s is a whole number of native frames.
    return tenths * fps // 10


def plan_dataset(
    num_videos: int = 40,
    num_classes: int = 4,
    seed: int = 0,
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    video_seconds: tuple[float, float] = (6.0, 9.0),
    action_seconds: tuple[float, float] = (0.8, 2.0),
    actions_per_video: tuple[int, int] = (2, 3),
    test_fraction: float = 0.25,
) -> list[VideoSpec]:
    """Decide every video's length, instances and background, deterministically from ``seed``."""
    _check_plan(num_videos, num_classes, fps, size)
    ranges = _plan_ranges(video_seconds, action_seconds, actions_per_video)
    rng = np.random.default_rng(seed)
    specs: list[VideoSpec] = []
    for split, count in _split_sizes(num_videos, test_fraction).items():
        specs += _plan_split(rng, split, count, num_classes, fps, size, ranges)
    return specs


def _check_plan(num_videos: int, num_classes: int, fps: int, size: tuple[int, int]) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise InputError(f"num_classes must be between 1 and {MAX_CLASSES}, got {num_classes}")
    if num_videos < 2:
        raise InputError(f"num_videos must be at least 2 (one train, one test), got {num_videos}")
    if fps <= 0 or fps % 10:
        raise InputError(f"fps must be a positive multiple of 10 (exact 0.1 s frame grid), got {fps}")
    width, height = size
    if width < 48 or height < 48:
        raise InputError(f"frame size must be at least 48x48, got {width}x{height}")


def _plan_ranges(video_seconds: tuple[float, float], action_seconds: tuple[float, float],
                 actions_per_video: tuple[int, int]) -> _Ranges:
    lo_v, hi_v = (int(round(s * 10)) for s in video_seconds)
    lo_a, hi_a = (int(round(s * 10)) for s in action_seconds)
    lo_n, hi_n = actions_per_video
    if hi_a < lo_a or hi_v < lo_v or hi_n < lo_n or lo_n < 1:
        raise InputError("invalid ranges for the synthetic dataset")
    return _Ranges((lo_v, hi_v), (lo_a, hi_a), (lo_n, hi_n))


def _split_sizes(num_videos: int, test_fraction: float) -> dict[str, int]:
    """Videos per split, in :data:`SPLITS` order (at least one each)."""
    num_test = max(1, int(round(num_videos * test_fraction)))
    num_train = max(1, num_videos - num_test)
    return {"train": num_train, "test": num_videos - num_train}


# The random draws below happen in a fixed order (per split: instance counts, labels; per video:
# length, action lengths, gaps, each instance's shape and place, the pan, the texture seed): the
# same seed gives the same dataset.


def _plan_split(rng: np.random.Generator, split: str, count: int, num_classes: int, fps: int,
                size: tuple[int, int], ranges: _Ranges) -> list[VideoSpec]:
    lo_n, hi_n = ranges.actions
    per_video = rng.integers(lo_n, hi_n + 1, size=count)
    # Balanced classes: a shuffled cycle over the split's instances.
    labels = iter(rng.permutation(np.resize(np.arange(num_classes), int(per_video.sum()))))
    return [_plan_video(rng, f"video_{split}_{v + 1:04d}", split, [int(next(labels)) for _ in range(int(n))],
                        fps, size, ranges)
            for v, n in enumerate(per_video)]


def _plan_video(rng: np.random.Generator, name: str, split: str, labels: list[int], fps: int,
                size: tuple[int, int], ranges: _Ranges) -> VideoSpec:
    """One video with an instance of each of ``labels``, in that order."""
    width, height = size
    tenths, spans = _plan_timeline(rng, len(labels), ranges)
    instances = tuple(_plan_instance(rng, label, _to_frames(start, fps), _to_frames(end, fps), width, height)
                      for label, (start, end) in zip(labels, spans))
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.2, 0.5)
    return VideoSpec(
        name=name,
        split=split,
        num_frames=_to_frames(tenths, fps),
        fps=fps,
        width=width,
        height=height,
        instances=instances,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        pan=(float(speed * np.cos(angle)), float(speed * np.sin(angle))),
    )


def _plan_timeline(rng: np.random.Generator, count: int, ranges: _Ranges) -> tuple[int, list[tuple[int, int]]]:
    """The video's length and its ``count`` instances' ``(start, end)``, all in tenths of a second."""
    lo_v, hi_v = ranges.video
    lo_a, hi_a = ranges.action
    tenths = int(rng.integers(lo_v, hi_v + 1))
    lengths = rng.integers(lo_a, hi_a + 1, size=count)
    needed = int(lengths.sum()) + (count + 1) * GAP_TENTHS
    tenths = max(tenths, needed)  # a video too short for its drawn instances is lengthened to fit them
    slack = tenths - needed
    # Split the slack into count + 1 extra gaps (integer tenths).
    cuts = np.sort(rng.integers(0, slack + 1, size=count))
    extra = np.diff(np.concatenate([[0], cuts, [slack]]))
    spans = []
    t = 0
    for length, more in zip(lengths, extra):
        t += GAP_TENTHS + int(more)
        spans.append((t, t + int(length)))
        t += int(length)
    return tenths, spans


def _plan_instance(rng: np.random.Generator, class_id: int, start_frame: int, end_frame: int, width: int,
                   height: int) -> Instance:
    radius = float(rng.uniform(0.16, 0.2) * min(width, height))
    margin = 2.2 * radius
    return Instance(
        class_id=class_id,
        start_frame=start_frame,
        end_frame=end_frame,
        cx=float(rng.uniform(margin, width - margin)),
        cy=float(rng.uniform(margin, height - margin)),
        size=radius,
        phase=float(rng.uniform(0, 2 * np.pi)),
    )


# --------------------------------------------------------------------------------------------
# drawing


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    """A periodic, low-saturation grey texture (uint8 [H, W, 3]), mid-range so objects stand out."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    # Low-pass in the Fourier domain keeps the texture periodic, so the pan can wrap around.
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(fx**2 + fy**2) / (2 * 0.025**2))))
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-8)
    grey = np.clip(115 + 14 * smooth, 70, 160)
    tint = np.array([1.0, 1.0, 0.96])  # faint warm tint, still far from any object colour
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)


def _background(spec: VideoSpec) -> np.ndarray:
    """All frames of the panning background, uint8 [T, H, W, 3]."""
    tex = _texture(spec.texture_seed, spec.height, spec.width)
    tiled = np.tile(tex, (2, 2, 1))  # a 2x2 tiling lets every wrapped shift be one plain slice
    t = np.arange(spec.num_frames)
    dx = np.round(t * spec.pan[0]).astype(np.int64) % spec.width
    dy = np.round(t * spec.pan[1]).astype(np.int64) % spec.height
    frames = np.empty((spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)
    for i in range(spec.num_frames):
        frames[i] = tiled[dy[i] : dy[i] + spec.height, dx[i] : dx[i] + spec.width]
    return frames


#: Every motion keeps the object within this many radii of its anchor point.
REACH = 2.5


def object_box(inst: Instance, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) pixel box that contains the object on all its frames."""
    reach = REACH * inst.size
    y0, y1 = max(0, int(np.floor(inst.cy - reach))), min(height, int(np.ceil(inst.cy + reach)) + 1)
    x0, x1 = max(0, int(np.floor(inst.cx - reach))), min(width, int(np.ceil(inst.cx + reach)) + 1)
    return y0, y1, x0, x1


def _object_mask(inst: Instance, motion: str, t: np.ndarray, box: tuple[int, int, int, int]):
    """Boolean mask [n, box_h, box_w] of the object on frames ``t`` (seconds since the instance
    start), within ``box``, and a per-frame brightness factor [n]."""
    y0, y1, x0, x1 = box
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    r = inst.size
    w = 2 * np.pi * t[:, None, None]  # one cycle per second, times the class frequency below
    cx = np.full_like(w, inst.cx)
    cy = np.full_like(w, inst.cy)
    brightness = np.ones(t.shape[0], dtype=np.float32)
    if motion == "bounce":
        cy = inst.cy + r - 2.0 * r * np.abs(np.sin(1.2 * w / 2 + inst.phase))
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2
    elif motion == "slide":
        cx = inst.cx + 1.1 * r * np.sin(1.0 * w + inst.phase)
        half = 0.85 * r
        mask = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    elif motion == "spin":
        theta = 1.0 * w + inst.phase
        u = (xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)
        v = -(xs - cx) * np.sin(theta) + (ys - cy) * np.cos(theta)
        mask = (np.abs(u) <= 1.3 * r) & (np.abs(v) <= 0.35 * r)
    elif motion == "grow":
        radius = r * (0.6 + 0.7 * np.abs(np.sin(1.2 * w / 2 + inst.phase)))
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    elif motion == "orbit":
        cx = inst.cx + 1.0 * r * np.cos(1.0 * w + inst.phase)
        cy = inst.cy + 1.0 * r * np.sin(1.0 * w + inst.phase)
        mask = np.abs(xs - cx) + np.abs(ys - cy) <= 1.1 * r
    elif motion == "flash":
        half = 0.8 * r
        mask = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
        brightness = np.where(np.sin(3.0 * 2 * np.pi * t + inst.phase) >= 0, 1.0, 0.55).astype(np.float32)
    else:  # pragma: no cover - the table above is closed
        raise ValueError(motion)
    return np.broadcast_to(mask, (t.shape[0], y1 - y0, x1 - x0)), brightness


def render_video(spec: VideoSpec, classes: tuple[ActionClass, ...] = ACTION_CLASSES) -> np.ndarray:
    """Every native frame of ``spec`` as uint8 RGB ``[T, H, W, 3]``."""
    frames = _background(spec)
    for inst in spec.instances:
        cls = classes[inst.class_id]
        t = np.arange(inst.end_frame - inst.start_frame, dtype=np.float32) / spec.fps
        y0, y1, x0, x1 = box = object_box(inst, spec.height, spec.width)
        mask, brightness = _object_mask(inst, cls.motion, t, box)
        colour = (np.asarray(cls.rgb, dtype=np.float32)[None, :] * brightness[:, None]).astype(np.uint8)
        block = frames[inst.start_frame : inst.end_frame, y0:y1, x0:x1]
        block[...] = np.where(mask[..., None], colour[:, None, None, :], block)
    return frames


# --------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def _atomic_video_path(path: Path) -> Iterator[Path]:
    # cv2.VideoWriter needs a file name whose extension names the container, so the temporary
    # name keeps the suffix; the finished file is renamed over the target like io.atomic_open.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_video(path: str | Path, frames_rgb: np.ndarray, fps: float) -> Path:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an MPEG-4 Part 2 (``mp4v``) ``.mp4``."""
    import cv2

    path = Path(path)
    height, width = frames_rgb.shape[1:3]
    with _atomic_video_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise InputError("OpenCV cannot open an mp4v video writer", path)
        try:
            for frame in frames_rgb:
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        finally:
            writer.release()
    return path


def _kept_count(num_frames: int, fps: float, sample_fps: float = SAMPLE_FPS) -> int:
    # The official 10 fps accumulator (float arithmetic), as `afsd prepare` applies it.
    step, acc, kept = fps / sample_fps, 0.0, 0
    for _ in range(num_frames):
        acc += 1
        if acc >= step:
            acc -= step
            kept += 1
    return kept


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _seconds(frame: int, fps: int) -> float:
    return round(frame / fps, 1)


def annotation_rows(specs: list[VideoSpec], classes: tuple[ActionClass, ...] = ACTION_CLASSES) -> list[list]:
    rows = []
    for spec in specs:
        for inst in spec.instances:
            cls = classes[inst.class_id]
            rows.append(
                [
                    spec.name,
                    cls.name,
                    inst.class_id + 1,
                    f"{_seconds(inst.start_frame, spec.fps):.1f}",
                    f"{_seconds(inst.end_frame, spec.fps):.1f}",
                    inst.start_frame,
                    inst.end_frame,
                ]
            )
    return rows


def ground_truth(specs: list[VideoSpec], classes: tuple[ActionClass, ...] = ACTION_CLASSES) -> dict:
    database = {}
    for spec in specs:
        database[spec.name] = {
            "subset": spec.split,
            "duration": round(spec.duration, 3),
            "annotations": [
                {
                    "segment": [_seconds(i.start_frame, spec.fps), _seconds(i.end_frame, spec.fps)],
                    "label": classes[i.class_id].name,
                }
                for i in spec.instances
            ],
        }
    return {"version": "synthetic", "database": database}


def render_dataset(
    out_dir: str | Path,
    num_videos: int = 40,
    num_classes: int = 4,
    seed: int = 0,
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    progress: Callable[[int, int, str], None] | None = None,
    **plan_options,
) -> dict:
    """Render the synthetic dataset into ``out_dir`` and return a summary dict.

    ``size`` is (width, height) of the native video. ``progress(done, total, video_name)`` is
    called after each video. Extra keyword arguments go to :func:`plan_dataset`
    (``video_seconds``, ``action_seconds``, ``actions_per_video``, ``test_fraction``).
    """
    out = Path(out_dir)
    specs = plan_dataset(num_videos, num_classes, seed, fps, tuple(size), **plan_options)
    classes = ACTION_CLASSES[:num_classes]
    _write_videos(out / "videos", specs, progress)
    paths = _write_annotations(out / "annotations", out / "videos", specs, classes)
    return {
        "out_dir": str(out),
        "seed": seed,
        "fps": fps,
        "size": list(size),
        "classes": [c.name for c in classes],
        "videos": {split: sum(s.split == split for s in specs) for split in SPLITS},
        "instances": {split: sum(len(s.instances) for s in specs if s.split == split) for split in SPLITS},
        "native_frames": sum(s.num_frames for s in specs),
        "paths": paths,
    }


def _write_videos(videos_dir: Path, specs: list[VideoSpec], progress: Callable[[int, int, str], None] | None) -> None:
    """``videos_dir/<split>/<video>.mp4`` for every spec, reporting each one done."""
    for done, spec in enumerate(specs, start=1):
        write_video(videos_dir / spec.split / f"{spec.name}.mp4", render_video(spec), spec.fps)
        if progress is not None:
            progress(done, len(specs), spec.name)


def _write_annotations(annotations: Path, videos_dir: Path, specs: list[VideoSpec],
                       classes: tuple[ActionClass, ...]) -> dict[str, str]:
    """Per split the annotation and video-info CSVs, then the class index and the GT JSON; returns
    the paths of the summary (the split folders of the videos too)."""
    paths: dict[str, str] = {}
    for split in SPLITS:
        split_specs = [s for s in specs if s.split == split]
        anno = write_text(annotations / f"{split}_Annotation.csv",
                          _csv_text(ANNOTATION_HEADER, annotation_rows(split_specs)))
        info = write_text(annotations / f"{split}_video_info.csv",
                          _csv_text(VIDEO_INFO_HEADER, _video_info_rows(split_specs)))
        paths[f"{split}_annotations"] = str(anno)
        paths[f"{split}_video_info"] = str(info)
        paths[f"{split}_videos"] = str(videos_dir / split)
    class_file = write_text(annotations / "classes.txt", "".join(f"{i + 1} {c.name}\n" for i, c in enumerate(classes)))
    gt = write_json(annotations / "gt.json", ground_truth(specs))
    paths["class_index"] = str(class_file)
    paths["ground_truth"] = str(gt)
    return paths


def _video_info_rows(specs: list[VideoSpec]) -> list[list]:
    """The video-info rows ``afsd prepare`` will measure: native fps and frames, frames kept at 10 fps."""
    return [[s.name, f"{float(s.fps)}", f"{SAMPLE_FPS}", f"{float(s.num_frames)}", _kept_count(s.num_frames, s.fps)]
            for s in specs]
