"""Training datasets over memory-mapped frame arrays (official ``THUMOS_Dataset``, ``ANET_Dataset``).

Each video's ``<name>.npy`` (``uint8 [T, H, W, C]``) is opened memory-mapped (``afsd_cli.data.npy``)
the first time a worker needs it, and only the cropped window is copied out: memory stays flat
however large the training set is (the official code loads all of it into RAM first).

Randomness (crop, flip, consistency sample) comes from a ``random.Random`` seeded by
``(seed, epoch, index)``: a sample is the same whatever worker draws it, and a resumed run
sees exactly the samples an uninterrupted one would. The draws happen in the official order
(crop top, crop left, flip, then the four choices of the consistency sample).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from afsd_cli.data.annotations import Annotation
from afsd_cli.data.npy import array_problems_error, open_frames, open_or_problem
from afsd_cli.data.windows import TrainingWindow, boundary_masks, normalised_targets
from afsd_cli.errors import InputError

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.profile import DatasetProfile


class ConsistencySample(NamedTuple):
    """The boundary-consistency sample of the official ``augment_`` as an index map: the new clip is
    ``clip[:, source_index]``; ``proposals`` ``[[s, e]] x 3`` in window frames = (first part of
    the split action, second part, inserted background)."""

    source_index: np.ndarray  # int64 [L]
    proposals: np.ndarray  # float32 [3, 2]


def _background_region(annotations: Sequence[Annotation], clip_length: int, th: int, rng: random.Random):
    """A gap between annotation boundaries longer than ``th`` frames, as integer ``[a, b]``."""
    spans = [(a.start, a.end) for a in annotations]
    times = sorted([t for span in spans for t in span] + [0, clip_length - 1])
    regions = [(times[i], times[i + 1]) for i in range(len(times) - 1)]
    regions = [r for r in regions if r not in spans and math.floor(r[1]) - math.ceil(r[0]) > th]
    if not regions:
        return None
    a, b = rng.choice(regions)
    return math.ceil(a), math.floor(b)


def consistency_sample(
    annotations: Sequence[Sequence[float]],
    clip_length: int,
    th: int,
    rng: random.Random,
    inclusive_length: bool = False,
) -> ConsistencySample | None:
    """Build the boundary-consistency sample (official ``augment_``), or ``None`` when the window has none.

    An action longer than ``2·th`` (``inclusive_length``: at least, ActivityNet) is cut at a
    random point and a ``th``-frame background snippet from elsewhere in the window is inserted
    at the cut, shifting the frames in between. The four random draws keep the official order:
    the action, the cut, the background region, the snippet in it.
    """
    annotations = [Annotation(float(a[0]), float(a[1]), int(a[2])) for a in annotations]
    cut = _action_cut(annotations, th, rng, inclusive_length)
    if cut is None:
        return None
    snippet_start = _background_snippet(annotations, clip_length, th, rng)
    if snippet_start is None:
        return None
    return _insert_snippet(clip_length, *cut, snippet_start, th)


def _action_cut(annotations: Sequence[Annotation], th: int, rng: random.Random,
                inclusive_length: bool) -> tuple[Annotation, int] | None:
    """A long enough action and the frame it is cut at (at least ``th`` from either end)."""
    if inclusive_length:
        candidates = [a for a in annotations if a.end - a.start >= 2 * th]
    else:
        candidates = [a for a in annotations if a.end - a.start > 2 * th]
    if not candidates:
        return None
    gt = rng.choice(candidates)
    cut_range = range(math.floor(th), math.ceil(gt.end - gt.start - th))
    if not cut_range:
        return None
    return gt, rng.choice(cut_range) + math.ceil(gt.start)


def _background_snippet(annotations: Sequence[Annotation], clip_length: int, th: int,
                        rng: random.Random) -> int | None:
    """First frame of a ``th``-frame snippet inside a background region of the window."""
    background = _background_region(annotations, clip_length, th, rng)
    if background is None:
        return None
    bg_a, bg_b = background
    snippet_range = range(bg_b - bg_a - th)
    if not snippet_range:
        return None
    return rng.choice(snippet_range) + bg_a


def _insert_snippet(clip_length: int, gt: Annotation, t: int, st: int, th: int) -> ConsistencySample | None:
    """The index map that moves frames ``[st, st + th)`` to the cut ``t`` of action ``gt``, and the
    proposals of the two action parts and the inserted background."""
    en = st + th
    original = np.arange(clip_length, dtype=np.int64)
    source = original.copy()
    try:
        # slices as in the official tensor copies; both read the unmodified clip
        if gt.end < st:  # background after the action
            source[t:t + th] = original[st:en]
            source[t + th:en] = original[t:st]
            proposals = [[gt.start, t], [t + th, th + gt.end], [t + 1, t + th - 1]]
        else:  # background before the action
            source[st:t - th] = original[en:t]
            source[t - th:t] = original[st:en]
            proposals = [[gt.start - th, t - th], [t, gt.end], [t - th + 1, t - 1]]
    except ValueError:  # a slice ran past the clip: no sample (ActivityNet's behaviour)
        return None
    return ConsistencySample(source, np.asarray(proposals, dtype=np.float64).astype(np.float32))


class TrainingSample(NamedTuple):
    clip: Any  # float32 tensor [C, L, crop, crop] in [-1, 1]
    targets: Any  # float32 tensor [N, 3] = (s/L, e/L, label)
    scores: Any  # float32 tensor [2, L] (start, end) or [3, L] (action, start, end)
    consistency: ConsistencySample | None


class TrainingBatch(NamedTuple):
    clips: Any  # [B, C, L, crop, crop]
    targets: list  # B x [N_b, 3]
    scores: Any  # [B, 2|3, L]
    consistency_index: list  # B x (LongTensor [L] | None)
    consistency_proposals: list  # B x (FloatTensor [3, 2] | None)


def collate_training(samples: Sequence[TrainingSample]) -> TrainingBatch:
    """Stack clips and masks; keep targets and consistency samples as per-sample lists."""
    import torch

    return TrainingBatch(
        clips=torch.stack([s.clip for s in samples]),
        targets=[s.targets for s in samples],
        scores=torch.stack([s.scores for s in samples]),
        consistency_index=[None if s.consistency is None else torch.from_numpy(s.consistency.source_index)
                           for s in samples],
        consistency_proposals=[None if s.consistency is None else torch.from_numpy(s.consistency.proposals)
                               for s in samples],
    )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit seed for one sample of one epoch."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint64)[0])


class MappedWindowDataset:
    """What the training datasets share (torch-free): their windows, the epoch whose random draws
    the next samples use, and each video's memory-mapped array, opened once per process.

    A torch ``Dataset`` by duck typing (``len`` and ``[index]`` of a subclass). DataLoader workers
    receive a pickled copy: the open maps stay behind and each worker opens its own.
    """

    def __init__(self, windows: Sequence[TrainingWindow]):
        self.windows = list(windows)
        self.epoch = 0
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws the next samples use."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # each worker opens its own maps
        return state

    def array(self, video: str) -> np.ndarray:
        """The memory-mapped array of ``video`` (opened once per process)."""
        array = self._arrays.get(video)
        if array is None:
            array = self.open_array(video)
            self._arrays[video] = array
        return array

    def open_array(self, video: str) -> np.ndarray:
        """Open and check the array of ``video`` (memory-mapped, not read)."""
        raise NotImplementedError


class WindowDataset(MappedWindowDataset):
    """Training clips cut from memory-mapped ``<data_dir>/<video>.npy`` arrays ``uint8 [T, H, W, C]``.

    ``pad_value`` fills frames past the end of the video before normalisation (THUMOS 0 → −1,
    ActivityNet 127.5 → 0); ``action_mask`` adds the ActivityNet action row to ``scores``;
    ``inclusive_split`` is the ActivityNet ``>=`` of the consistency sample.
    """

    def __init__(
        self,
        windows: Sequence[TrainingWindow],
        data_dir: str | Path,
        clip_length: int,
        crop_size: int,
        in_channels: int = 3,
        pad_value: float = 0.0,
        action_mask: bool = False,
        inclusive_split: bool = False,
        augment: bool = True,
        consistency: bool = True,
        seed: int = 2020,
    ):
        super().__init__(windows)
        self.data_dir = Path(data_dir)
        self.clip_length = clip_length
        self.crop_size = crop_size
        self.in_channels = in_channels
        self.pad_value = pad_value
        self.action_mask = action_mask
        self.inclusive_split = inclusive_split
        self.augment = augment
        self.consistency = consistency
        self.seed = seed

    def open_array(self, video: str) -> np.ndarray:
        return open_frames(self.data_dir / f"{video}.npy", self.in_channels, self.crop_size)

    def _crop_window(self, window: TrainingWindow, rng: random.Random):
        """Cropped, padded, flipped uint8->float clip ``[C, L, crop, crop]`` (not normalised)."""
        array = self.array(window.video)
        height, width = array.shape[1], array.shape[2]
        crop = self.crop_size
        if self.augment:
            top = rng.randint(0, height - crop) if height != crop else 0
            left = rng.randint(0, width - crop) if width != crop else 0
            flip = rng.random() < 0.5
        else:
            top, left, flip = int(np.round((height - crop) / 2.0)), int(np.round((width - crop) / 2.0)), False
        stop = window.offset + min(window.num_frames, self.clip_length)
        frames = np.asarray(array[window.offset:stop, top:top + crop, left:left + crop, :])
        clip = np.full((self.in_channels, self.clip_length, crop, crop), self.pad_value, dtype=np.float32)
        clip[:, :frames.shape[0]] = frames.transpose(3, 0, 1, 2)
        if flip:  # the x-flow channel is not negated (as THUMOS_Dataset.__getitem__)
            clip = clip[..., ::-1]
        return np.ascontiguousarray(clip)

    def __getitem__(self, index: int) -> TrainingSample:
        import torch

        window = self.windows[index]
        rng = random.Random(sample_seed(self.seed, self.epoch, index))
        clip = torch.from_numpy(self._crop_window(window, rng))
        clip = (clip / 255.0) * 2.0 - 1.0
        consistency = None
        if self.consistency:
            consistency = consistency_sample(
                window.annotations, self.clip_length, window.consistency_threshold, rng, self.inclusive_split)
        targets = torch.from_numpy(normalised_targets(window.annotations, self.clip_length))
        scores = torch.from_numpy(boundary_masks(window.annotations, self.clip_length, with_action=self.action_mask))
        return TrainingSample(clip, targets, scores, consistency)


def build_training_dataset(cfg: Config, seed: int | None = None,
                           consistency: bool | None = None) -> MappedWindowDataset:
    """The training dataset a config describes: sliding windows (THUMOS14, custom) or one clip per
    video (ActivityNet), as its dataset profile says; feature windows for ``model.input: features``."""
    from afsd_cli.profile import resolve_profile

    if _is_feature_config(cfg):
        from afsd_cli.data.feature_dataset import build_feature_training_dataset

        return build_feature_training_dataset(cfg)
    profile = resolve_profile(cfg)
    split = cfg.dataset.training
    infos, annotations = training_annotations(cfg, profile)
    windows = training_windows(profile, infos, annotations)
    data_dir = training_data_dir(cfg, profile)
    if not windows:
        raise InputError("no training window: no annotated video has an action inside a window",
                         split.video_info_path)
    rules = profile.rules
    return WindowDataset(
        windows, data_dir, split.clip_length, split.crop_size, cfg.model.in_channels,
        pad_value=rules.pad_value, action_mask=rules.action_mask, inclusive_split=rules.inclusive_split,
        consistency=cfg.training.ssl > 0 if consistency is None else consistency,
        seed=cfg.training.random_seed if seed is None else int(seed),
    )


def _is_feature_config(cfg: Config) -> bool:
    """``model.input: features``: the data are feature arrays (data/feature_dataset.py)."""
    return cfg.model.input == "features"


def training_data_dir(cfg: Config, profile: DatasetProfile) -> str:
    """The folder of the training arrays: ``video_data_path``, or the video folder where the
    profile keeps its arrays there (ActivityNet's official layout)."""
    from afsd_cli.errors import ConfigError

    split = cfg.dataset.training
    data_dir = split.video_data_path or (split.video_mp4_path if profile.rules.arrays_in_mp4_path else None)
    if not data_dir:
        raise ConfigError("dataset.training.video_data_path is not set")
    return data_dir


def training_annotations(cfg: Config, profile: DatasetProfile) -> tuple[dict, dict]:
    """``(video infos, annotations in stored frames)`` of the training subset, read in the
    profile's annotation format (THUMOS14 CSVs, ActivityNet info JSON, or the custom JSON)."""
    from afsd_cli.data import annotations as readers
    from afsd_cli.errors import ConfigError

    split = cfg.dataset.training
    if not split.video_info_path:
        raise ConfigError("dataset.training.video_info_path is not set")
    if profile.annotation_format == "anet_info_json":
        return readers.read_anet_video_info(split.video_info_path, profile.train_subset, binary=True)
    if not split.video_anno_path:
        raise ConfigError("dataset.training.video_anno_path is not set")
    infos = readers.read_video_info_csv(split.video_info_path)
    if profile.annotation_format == "json":
        return readers.json_training_annotations(readers.read_json_annotations(split.video_anno_path), infos,
                                                 profile.class_names, profile.train_subset)
    class_index_path = cfg.dataset.class_index_path
    class_index = readers.read_class_index(class_index_path) if class_index_path else None
    return infos, readers.read_thumos_annotations(split.video_anno_path, infos, class_index)


def training_windows(profile: DatasetProfile, infos: dict, annotations: dict) -> list[TrainingWindow]:
    """Training windows: one clip per video (single-window profiles) or sliding windows."""
    from afsd_cli.data.windows import anet_training_windows, thumos_training_windows

    if profile.single_window:
        return anet_training_windows(infos, annotations, profile.train_clip_length)[0]
    return thumos_training_windows(infos, annotations, profile.train_clip_length, profile.train_clip_stride)[0]


def check_training_inputs(cfg: Config) -> DatasetProfile:
    """Everything ``afsd train`` can check in seconds, before any run folder or model exists.

    The class count against the class list (the message says which number to set), the crop
    against the frame size, clip lengths and strides, and that every annotated video of the
    training subset has a readable array of the right size. Returns the dataset profile; raises
    ConfigError / InputError naming every missing or malformed array (at most ten).
    """
    from afsd_cli.profile import resolve_profile

    if _is_feature_config(cfg):
        from afsd_cli.data.feature_dataset import check_feature_training_inputs

        return check_feature_training_inputs(cfg)
    profile = resolve_profile(cfg)
    explicit_frame_size = cfg.dataset.frame_size is not None
    check_profile_numbers(profile, explicit_frame_size=explicit_frame_size)
    _, annotations = training_annotations(cfg, profile)
    data_dir = training_data_dir(cfg, profile)
    if not Path(data_dir).is_dir():
        raise InputError("array folder not found (dataset.training.video_data_path)", data_dir)
    size = profile.frame_size if explicit_frame_size else None
    problems = []
    for name in annotations:
        problem = _array_problem(Path(data_dir) / f"{name}.npy", cfg.model.in_channels, profile.crop_size, size)
        if problem:
            problems.append(problem)
    if problems:
        raise array_problems_error(problems, "training", data_dir)
    return profile


def check_profile_numbers(profile: DatasetProfile, explicit_frame_size: bool = True) -> None:
    """Crop within the frame size, clip lengths positive multiples of 8, strides in 1..clip length."""
    from afsd_cli.errors import ConfigError

    for split in ("train", "test"):
        length = getattr(profile, f"{split}_clip_length")
        stride = getattr(profile, f"{split}_clip_stride")
        key = "training" if split == "train" else "testing"
        if length <= 0 or length % 8:
            raise ConfigError(f"dataset.{key}.clip_length must be a positive multiple of 8, got {length}")
        if not profile.single_window and not 1 <= stride <= length:
            raise ConfigError(f"dataset.{key}.clip_stride must lie in 1..clip_length ({length}), got {stride}")
    for key, crop in (("training", profile.crop_size), ("testing", profile.test_crop_size)):
        if crop <= 0:
            raise ConfigError(f"dataset.{key}.crop_size must be positive, got {crop}")
        if explicit_frame_size and crop > profile.frame_size:
            raise ConfigError(f"dataset.{key}.crop_size {crop} is larger than the {profile.frame_size} px frames "
                              f"(dataset.frame_size); lower the crop or prepare larger frames")


def _array_problem(path: Path, channels: int, crop: int, size: int | None) -> str | None:
    array, problem = open_or_problem(path)  # the one .npy reader: it names what is wrong with the file
    if problem is not None:
        return problem
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != channels or array.shape[0] == 0:
        return f"{path.name} is {array.dtype} {list(array.shape)}, expected uint8 [T, H, W, {channels}]"
    if min(array.shape[1:3]) < crop:
        return f"{path.name} has {array.shape[1]}x{array.shape[2]} px frames, smaller than the {crop} px crop"
    if size is not None and tuple(array.shape[1:3]) != (size, size):
        return f"{path.name} has {array.shape[1]}x{array.shape[2]} px frames, the config says {size} (dataset.frame_size)"
    return None
