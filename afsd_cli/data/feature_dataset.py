"""Datasets of pre-extracted features (``model.input: features``): ``<video>.npy`` float ``[T', C]``
arrays plus the JSON annotations of a custom dataset.

A feature model counts time in *network frames*, four per feature (``features/timeline.py``
``FRAMES_PER_FEATURE``, OpenTAD's ``frame_num = 4 × window``). Everything downstream of this
module is then the frame pipeline unchanged: training windows, boundary masks and targets of
``data/windows.py``, decoding and soft-NMS of ``engine/postprocess.py``. The only new facts are
per video: how many features it has, and how network frames map to seconds::

    frames(t)  = 4 · ((t·fps − clip_frames/2) / stride + 0.5)      (feature i spans frames [4i, 4i+4))
    seconds(f) = f / (4·fps/stride) + (clip_frames − stride) / (2·fps)

where ``fps`` is the rate of the frames the features were computed from (``features.json`` per
video, else the annotation JSON's ``fps``, else ``dataset.sample_fps``), ``stride`` and
``clip_frames`` those of the extraction (``dataset.feature_stride`` / ``feature_clip_frames`` or
``features.json``). No torch at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from afsd_cli.data.annotations import Annotation, JsonAnnotations, JsonVideo, VideoInfo, read_json_annotations
from afsd_cli.data.datasets import MappedWindowDataset, TrainingSample, check_profile_numbers
from afsd_cli.data.npy import array_problems_error, open_npy, open_or_problem
from afsd_cli.data.windows import TrainingWindow, boundary_masks, normalised_targets
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.features.timeline import (
    FRAMES_PER_FEATURE,
    network_frame_rate,
    network_time_origin,
    seconds_to_network_frames,
)

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.profile import DatasetProfile

FEATURES_JSON = "features.json"  # written by `afsd extract` (features/extract.py)


# --------------------------------------------------------------------------------------------
# what a feature folder holds


@dataclass(frozen=True)
class FeatureCatalog:
    """What ``features.json`` says about a folder: the extraction's stride and clip, channels, and
    per video the fps of its sampled frames and its duration."""

    stride: int
    clip_frames: int
    channels: int | None
    fps: dict[str, float]
    durations: dict[str, float]
    source: Path


def read_feature_catalog(folder: str | Path) -> FeatureCatalog | None:
    """The ``features.json`` of ``folder`` (``None`` when there is none)."""
    from afsd_cli.io import read_json

    path = Path(folder) / FEATURES_JSON
    if not path.is_file():
        return None
    document = read_json(path, "features.json")
    try:
        settings = document["settings"]
        videos = document.get("videos") or {}
        return FeatureCatalog(
            stride=int(settings["stride"]), clip_frames=int(settings["clip_frames"]),
            channels=int(document["channels"]) if document.get("channels") else None,
            fps={name: float(v["fps"]) for name, v in videos.items() if v.get("fps")},
            durations={name: float(v["duration"]) for name, v in videos.items() if v.get("duration")},
            source=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"not a features.json of afsd extract ({type(exc).__name__}: {exc})", path) from None


@dataclass(frozen=True)
class FeatureVideo:
    """One video's feature array and its time mapping (see the module docstring)."""

    name: str
    path: Path
    count: int  # features used (every ``every``-th stored one)
    channels: int
    fps: float  # of the frames the features were computed from
    stride: int  # frames between the features used: the extraction's stride × ``every``
    clip_frames: int
    duration: float
    subset: str | None = None
    every: int = 1  # dataset.feature_sample_stride

    def load(self, channels: int | None = None) -> np.ndarray:
        """The features used, ``[count, C]`` (a strided view of the memory map)."""
        return open_feature_array(self.path, channels)[::self.every]

    @property
    def network_frames(self) -> int:
        return self.count * FRAMES_PER_FEATURE

    @property
    def frame_rate(self) -> float:
        """Network frames per second."""
        return network_frame_rate(self.fps, self.stride)

    @property
    def time_origin(self) -> float:
        """Seconds at network frame 0."""
        return network_time_origin(self.fps, self.clip_frames, self.stride)

    def to_network_frames(self, seconds: float) -> float:
        return seconds_to_network_frames(seconds, self.fps, self.clip_frames, self.stride)

    def to_seconds(self, frames: float) -> float:
        return frames / self.frame_rate + self.time_origin

    def info(self) -> VideoInfo:
        """The video as the frame pipeline sees it: ``4·T'`` frames at the network frame rate."""
        frames = self.network_frames
        return VideoInfo(self.name, self.frame_rate, self.frame_rate, float(frames), frames, self.subset,
                         self.duration)


def feature_array_problem(path: Path, channels: int | None = None) -> str | None:
    """Why ``path`` is not a usable ``float [T', C]`` feature array (``None`` when it is)."""
    array, problem = open_or_problem(path)  # the one .npy reader: it names what is wrong with the file
    if problem is not None:
        return problem
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[0] == 0 or array.shape[1] == 0:
        return f"{path.name} is {array.dtype} {list(array.shape)}, expected float [features, channels]"
    if channels is not None and array.shape[1] != channels:
        return f"{path.name} has {array.shape[1]} channels, the model takes {channels} (model.feature_dim)"
    return None


def open_feature_array(path: str | Path, channels: int | None = None) -> np.ndarray:
    """A checked, memory-mapped feature array ``[T', C]``."""
    path = Path(path)
    problem = feature_array_problem(path, channels)
    if problem:
        raise InputError(problem, path)
    return open_npy(path)


def feature_videos(folder: str | Path, annotations: JsonAnnotations, subset: str, profile: DatasetProfile,
                   fallback_fps: float | None, channels: int | None = None) -> dict[str, FeatureVideo]:
    """The videos of ``subset`` in ``folder``, in annotation order, with their time mapping.

    Raises InputError naming every missing or malformed array (at most ten) and every video whose
    fps is nowhere to be found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("feature folder not found", folder)
    catalog = read_feature_catalog(folder)
    stride, clip_frames = int(profile.feature_stride), int(profile.feature_clip_frames)
    _check_extraction(catalog, stride, clip_frames)
    chosen = annotations.in_subset(subset)
    if not chosen:
        raise InputError(f"no video in subset {subset!r}", annotations.source)
    videos: dict[str, FeatureVideo] = {}
    problems: list[str] = []
    for video in chosen:
        path = folder / f"{video.name}.npy"
        fps = (catalog.fps.get(video.name) if catalog else None) or video.fps or fallback_fps
        problem = feature_array_problem(path, channels)
        if problem is None and not fps:
            problem = (f"{video.name}: unknown fps (not in features.json nor the annotation JSON; set "
                       "dataset.sample_fps)")
        if problem:
            problems.append(problem)
            continue
        videos[video.name] = _feature_video(path, video, catalog, float(fps), stride, clip_frames,
                                            profile.feature_sample_stride or 1)
    if problems:
        raise array_problems_error(problems, "feature", folder)
    return videos


def _check_extraction(catalog: FeatureCatalog | None, stride: int, clip_frames: int) -> None:
    """The config's stride and clip must be those the features were extracted with."""
    if catalog is not None and (catalog.stride, catalog.clip_frames) != (stride, clip_frames):
        raise ConfigError(f"the config says stride {stride} / clip {clip_frames} frames but {catalog.source} was "
                          f"extracted with {catalog.stride} / {catalog.clip_frames} (dataset.feature_stride, "
                          "dataset.feature_clip_frames)")


def _feature_video(path: Path, video: JsonVideo, catalog: FeatureCatalog | None, fps: float, stride: int,
                   clip_frames: int, every: int) -> FeatureVideo:
    """The time mapping of a checked array; ``every``: use every Nth stored feature."""
    stored, width = open_npy(path).shape
    duration = ((catalog.durations.get(video.name) if catalog else None) or video.duration
                or ((stored - 1) * stride + clip_frames) / fps)
    # feature j of every `every`-th is stored feature j·every: the same mapping with stride × every
    return FeatureVideo(video.name, path, math.ceil(stored / every), int(width), fps, stride * every, clip_frames,
                        float(duration), video.subset, every)


def split_feature_videos(cfg: Config, profile: DatasetProfile, split: str,
                         channels: int | None = None) -> dict[str, FeatureVideo]:
    """The feature videos of the config's ``training`` or ``testing`` split."""
    section = cfg.dataset.training if split == "training" else cfg.dataset.testing
    folder = section.video_data_path
    if not folder:
        raise ConfigError(f"dataset.{split}.video_data_path is not set: it is the folder of the <video>.npy features")
    anno_path = section.video_anno_path or (section.gt_path if split == "testing" else None)
    if not anno_path:
        raise ConfigError(f"dataset.{split}.video_anno_path is not set: the annotation JSON says which videos "
                          f"are in the {split} subset")
    subset = profile.train_subset if split == "training" else profile.test_subset
    return feature_videos(folder, read_json_annotations(anno_path), subset, profile, cfg.dataset.sample_fps, channels)


def feature_training_annotations(annotations: JsonAnnotations, videos: Mapping[str, FeatureVideo],
                                 class_names: Sequence[str]) -> tuple[dict[str, VideoInfo], dict[str, list[Annotation]]]:
    """``(video infos, actions in network frames)`` of the videos with actions, model class ids."""
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    infos: dict[str, VideoInfo] = {}
    frames: dict[str, list[Annotation]] = {}
    for name, video in videos.items():
        infos[name] = video.info()
        for label, start, end in annotations.videos[name].actions:
            if label not in ids:
                raise InputError(f"video {name!r}: label {label!r} is not in the class list "
                                 f"({', '.join(class_names)})", annotations.source)
            frames.setdefault(name, []).append(
                Annotation(video.to_network_frames(start), video.to_network_frames(end), ids[label]))
    return infos, frames


# --------------------------------------------------------------------------------------------
# training


class FeatureWindowDataset(MappedWindowDataset):
    """Training windows of feature sequences ``[T', C]``.

    Windows are cut in network frames (offsets are multiples of 4, see ``build_feature_training_dataset``);
    a sample is the window's features ``[C, clip_length/4]`` (zero past the end of the video), the
    normalised targets and the boundary masks over ``clip_length`` network frames. No augmentation
    and no boundary-consistency sample: re-cutting a clip to insert background is defined on frames.
    """

    def __init__(self, windows: Sequence[TrainingWindow], videos: Mapping[str, FeatureVideo], clip_length: int,
                 feature_dim: int):
        super().__init__(windows)
        self.videos = dict(videos)
        self.clip_length = clip_length
        self.feature_dim = feature_dim

    def open_array(self, video: str) -> np.ndarray:
        return self.videos[video].load(self.feature_dim)

    def window_features(self, window: TrainingWindow) -> np.ndarray:
        """``float32 [C, clip_length/4]`` features of one window, zero-padded at the end."""
        steps = self.clip_length // FRAMES_PER_FEATURE
        first = window.offset // FRAMES_PER_FEATURE
        part = np.asarray(self.array(window.video)[first:first + steps], dtype=np.float32)
        out = np.zeros((self.feature_dim, steps), dtype=np.float32)
        out[:, :part.shape[0]] = part.T
        return out

    def __getitem__(self, index: int):
        import torch

        window = self.windows[index]
        features = torch.from_numpy(self.window_features(window))
        targets = torch.from_numpy(normalised_targets(window.annotations, self.clip_length))
        scores = torch.from_numpy(boundary_masks(window.annotations, self.clip_length))
        return TrainingSample(features, targets, scores, None)


def build_feature_training_dataset(cfg: Config) -> FeatureWindowDataset:
    """The training dataset of a feature config: the frame pipeline's sliding windows over
    ``4·T'`` network frames, window and stride ``4 ×`` the config's (which count features)."""
    from afsd_cli.data.windows import thumos_training_windows
    from afsd_cli.profile import resolve_profile

    profile = resolve_profile(cfg)
    feature_dim = cfg.model.feature_dim
    videos = split_feature_videos(cfg, profile, "training", feature_dim)
    annotations = read_json_annotations(cfg.dataset.training.video_anno_path)
    infos, actions = feature_training_annotations(annotations, videos, profile.class_names or ())
    scale = profile.network_frames_per_step
    clip_length = profile.train_clip_length * scale
    windows, _ = thumos_training_windows({k: infos[k] for k in actions}, actions, clip_length,
                                         profile.train_clip_stride * scale)
    if not windows:
        raise InputError("no training window: no annotated video has an action inside a window of "
                         f"{profile.train_clip_length} features", cfg.dataset.training.video_data_path)
    return FeatureWindowDataset(windows, videos, clip_length, feature_dim)


def check_feature_training_inputs(cfg: Config) -> DatasetProfile:
    """What ``afsd train`` checks before anything is built: numbers, annotations, every array."""
    from afsd_cli.profile import resolve_profile

    profile = resolve_profile(cfg)
    check_profile_numbers(profile, explicit_frame_size=False)
    split_feature_videos(cfg, profile, "training", cfg.model.feature_dim)
    return profile



# --------------------------------------------------------------------------------------------
# the dataset config of a feature folder (`afsd extract ... --annotations anno.json`)

#: Seconds per window and the window overlaps of OpenTAD's feature-based AFSD on THUMOS14
#: (configs/afsd/thumos_i3d.py: 64 features of 12 frames at 30 fps; overlap 0.875 to train, 0.5 to test).
WINDOW_SECONDS = 25.6
TRAIN_WINDOW_OVERLAP = 0.875


def feature_window_numbers(features_per_second: float) -> dict[str, int]:
    """Window (a multiple of 8 features, at least 8) and training stride for a feature rate (the
    testing stride is half the window: config.py's default)."""
    window = max(8, int(round(WINDOW_SECONDS * features_per_second / 8.0)) * 8)
    return {"clip_length": window, "train_stride": max(1, int(round(window * (1 - TRAIN_WINDOW_OVERLAP))))}


def write_feature_dataset_config(out_dir: str | Path, annotations_path: str | Path,
                                 class_names_path: str | Path | None = None) -> Path:
    """``OUT/dataset.yaml`` for a feature folder written by ``afsd extract`` and an annotation JSON:
    a complete config (``model.input: features``, ``dataset.name: custom``), paths relative to itself,
    so that ``afsd train OUT/dataset.yaml`` needs no edit. ``classes.txt`` is written beside it
    unless a class list is given."""
    from afsd_cli.data.custom_dataset import DATASET_CONFIG, dataset_class_names, dataset_subsets, write_class_list
    from afsd_cli.io import write_text

    out_dir, annotations_path = Path(out_dir), Path(annotations_path)
    catalog = read_feature_catalog(out_dir)
    if catalog is None or not catalog.fps:
        raise InputError("no features.json with extracted videos in this folder (run afsd extract first)", out_dir)
    annotations = read_json_annotations(annotations_path)
    class_names = dataset_class_names(annotations, class_names_path)
    train, test, _ = dataset_subsets(annotations, annotations_path.name)
    class_list = write_class_list(out_dir, class_names) if class_names_path is None else Path(class_names_path)
    text = feature_dataset_config_text(out_dir, annotations_path, class_list, class_names, catalog, train, test)
    return write_text(out_dir / DATASET_CONFIG, text)


def feature_dataset_config_text(out_dir: Path, annotations_path: Path, class_list: Path, class_names: tuple[str, ...],
                                catalog: FeatureCatalog, train: str | None, test: str | None) -> str:
    """``dataset.yaml`` of a feature folder: windows sized for its median feature rate, paths
    relative to itself."""
    import yaml

    from afsd_cli.data.custom_dataset import relative_path

    rates = sorted(catalog.fps.values())
    numbers = feature_window_numbers(rates[len(rates) // 2] / catalog.stride)
    anno = relative_path(annotations_path, out_dir)

    def split(subset: str | None) -> dict[str, Any]:
        return {"video_anno_path": anno, "video_data_path": ".", "subset": subset}

    training = {**split(train), "clip_length": numbers["clip_length"], "clip_stride": numbers["train_stride"]}
    # the testing window follows the training one and its stride is half of it (config.py), so
    # one override of dataset.training.clip_length sets both
    testing = {**split(test), "gt_path": anno}
    config = {
        "paths_relative_to": "config",
        "dataset": {
            "name": "custom",
            "num_classes": len(class_names) + 1,
            "class_index_path": relative_path(class_list, out_dir),
            "feature_stride": catalog.stride,
            "feature_clip_frames": catalog.clip_frames,
            "training": training,
            "testing": testing,
        },
        "model": {"input": "features", "feature_dim": catalog.channels or 1024},
        "training": {"max_epoch": 16, "learning_rate": 1e-4},
        "testing": {"output_json": "detections.json"},
    }
    header = (
        "# Written by `afsd extract --annotations`: the config of AFSD on these features (model.input:\n"
        f"# features, {catalog.channels} channels, stride {catalog.stride}, {catalog.clip_frames}-frame clips; "
        f"windows of {numbers['clip_length']}\n"
        "# features). Paths are relative to this file. Train with `afsd train <this file> --name NAME`;\n"
        "# override any key with key=value. Every key: docs/config.md; the feature mode: docs/features.md.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)
