"""The dataset profile: one home for what a dataset *is*.

A profile says how frames are sampled (a fixed fps, or at most N frames per video), the stored
frame size and the crop, the clip lengths and strides of training and testing, the class names,
which subsets train and test, the annotation format, the fusion rule, the evaluation thresholds
and the output "version". It is resolved once from a config (:func:`resolve_profile`), written
into every run folder and every output's metadata (:meth:`DatasetProfile.to_dict`) and read back
with :meth:`DatasetProfile.from_dict`. Everything that used to branch on the dataset name asks
the profile instead.

Three kinds exist. ``thumos14`` and ``anet`` reproduce the official procedures exactly;
``custom`` is a user's dataset in the ActivityNet-style JSON layout (OpenTAD, ActionFormer),
trained and tested like THUMOS14 (multi-class head, sliding windows) at its own sampling fps and
frame size. Which network head a kind uses is a name in ``model/afsd.py: HEAD_SPECS``; the
network keeps its head table, the profile only picks the entry.

Importing this module never imports torch (``afsd evaluate`` reads profiles too).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from afsd_cli.data.video import ANET_MAX_FRAMES, FRAME_SIZE, THUMOS_SAMPLE_FPS
from afsd_cli.errors import ConfigError, InputError

if TYPE_CHECKING:
    from afsd_cli.config import Config

DATASET_KINDS = ("thumos14", "anet", "custom")

#: Subset spellings that mean the same split (ActivityNet spells them out, others abbreviate).
SUBSET_ALIASES: dict[str, str] = {"train": "training", "val": "validation", "test": "testing"}

DEFAULT_SAMPLE_FPS = THUMOS_SAMPLE_FPS  # the official THUMOS14 rate
DEFAULT_FRAME_SIZE = FRAME_SIZE  # the official 112 px
DEFAULT_RESIZE = "pil-bicubic"  # the official PIL bicubic
# The official THUMOS14 script passes this plain list; the ActivityNet one np.linspace(0.5, 0.95, 10)
# (values such as 0.8999999999999999 kept bit for bit: a tIoU on a threshold compares as officially).
THUMOS14_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)
ANET_TIOU = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))


@dataclass(frozen=True)
class KindRules:
    """What a kind of dataset fixes, whatever the config says (official procedures)."""

    head: str  # key of model/afsd.py HEAD_SPECS
    sampling: str  # "fps": fixed-rate accumulator (official THUMOS14); "max_frames": ≤ N frames (ANet)
    annotation_format: str  # "thumos_csv" | "anet_info_json" | "json"
    train_subset: str
    test_subset: str
    fusion: str  # "average" (raw outputs) | "geometric" (boundaries)
    single_window: bool  # one window per video at offset 0 (ANet) instead of sliding windows
    output_version: str  # "version" of the detections JSON
    tiou_thresholds: tuple[float, ...]
    class_agnostic: bool  # proposals relabelled by an external video-level classifier (ANet)
    strip_v_prefix: bool  # output keys without ActivityNet's "v_" file prefix
    # official thresholds the scripts hard-code: (candidate, soft-NMS score) per (single, fused);
    # candidate None = testing.conf_thresh (official thumos14/test.py, anet test.py / test_fusion.py)
    thresholds: tuple[tuple[float | None, float], tuple[float | None, float]]
    # training sample details (official anet/thumos dataset code)
    pad_value: float
    action_mask: bool
    inclusive_split: bool
    arrays_in_mp4_path: bool = False  # the official anet.yaml names its array folder video_mp4_path
    # which official loss procedure trains the model (engine/losses.py LossSettings.official):
    # "sliding" (AFSD/thumos14/multisegment_loss.py) or "single_clip" (AFSD/anet/multisegment_loss.py)
    loss_procedure: str = "sliding"
    # the evaluated subset is the file's held-out one (testing, else validation), however spelled
    subset_from_file: bool = False
    # config defaults of this kind (official README commands and configs/*.yaml): config.py applies them
    config_defaults: Mapping[str, Any] = field(default_factory=lambda: {
        "training.lw": 10.0, "training.piou": 0.5, "training.backbone_lr_scale": 1.0})
    # false negatives by instance length in the error breakdown (evaluation/breakdown.py), seconds:
    # DETAD's bins for ActivityNet; THUMOS14's actions are ten times shorter
    length_bins: tuple[float, ...] = (0.0, 30.0, 60.0, 120.0, 180.0)

    @property
    def video_mode(self) -> str:
        """The name ``data.video.read_video`` gives this sampling rule (the same words)."""
        return self.sampling


KIND_RULES: dict[str, KindRules] = {
    "thumos14": KindRules(
        head="thumos14", sampling="fps", annotation_format="thumos_csv", train_subset="validation",
        test_subset="test", fusion="average", single_window=False, output_version="THUMOS14",
        tiou_thresholds=THUMOS14_TIOU, class_agnostic=False, strip_v_prefix=False,
        thresholds=((None, 0.001), (None, 0.001)), pad_value=0.0, action_mask=False, inclusive_split=False,
        length_bins=(0.0, 3.0, 6.0, 12.0, 18.0)),
    "anet": KindRules(
        head="anet", sampling="max_frames", annotation_format="anet_info_json", train_subset="training",
        test_subset="validation", fusion="geometric", single_window=True, output_version="ActivityNet-v1.3",
        tiou_thresholds=ANET_TIOU, class_agnostic=True, strip_v_prefix=True,
        thresholds=((1e-9, 1e-9), (0.0, 1e-18)), pad_value=127.5, action_mask=True, inclusive_split=True,
        arrays_in_mp4_path=True, loss_procedure="single_clip",
        config_defaults={"training.lw": 1.0, "training.piou": 0.6, "training.backbone_lr_scale": 0.1}),
    "custom": KindRules(
        head="thumos14", sampling="fps", annotation_format="json", train_subset="training",
        test_subset="validation", fusion="average", single_window=False, output_version="custom",
        tiou_thresholds=THUMOS14_TIOU, class_agnostic=False, strip_v_prefix=False,
        thresholds=((None, 0.001), (None, 0.001)), pad_value=0.0, action_mask=False, inclusive_split=False,
        subset_from_file=True),
}


def kind_rules(kind: str) -> KindRules:
    try:
        return KIND_RULES[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r} (choose one of: {', '.join(DATASET_KINDS)})") from None


@dataclass(frozen=True)
class DatasetProfile:
    """Everything the pipeline needs to know about one dataset (see the module docstring)."""

    kind: str
    head: str
    sampling: str
    sample_fps: float | None  # "fps" sampling: frames kept per second
    max_frames: int | None  # "max_frames" sampling: frames per video at most
    frame_size: int  # side of the stored square frames
    resize: str  # resampling of prepare ("pil-bicubic": the official PIL bicubic)
    crop_size: int  # training crop (random); testing uses test_crop_size (centre)
    test_crop_size: int
    train_clip_length: int
    train_clip_stride: int
    test_clip_length: int
    test_clip_stride: int
    class_names: tuple[str, ...] | None  # model ids 1..C-1; None: class-agnostic (ANet)
    num_classes: int  # classes the model predicts, background included
    train_subset: str
    test_subset: str
    annotation_format: str
    fusion: str
    single_window: bool
    output_version: str
    tiou_thresholds: tuple[float, ...]
    # pre-extracted features (model.input: features): clip lengths and strides count features, and
    # feature i is computed from frames [i*feature_stride, i*feature_stride + feature_clip_frames)
    input: str = "frames"
    feature_stride: int | None = None
    feature_clip_frames: int | None = None
    feature_sample_stride: int | None = None  # every Nth stored feature is used (None: each)

    @property
    def rules(self) -> KindRules:
        return kind_rules(self.kind)

    @property
    def network_frames_per_step(self) -> int:
        """Network frames per step of the stored sequence: 1 for frames, 4 for features."""
        from afsd_cli.features.timeline import FRAMES_PER_FEATURE

        return FRAMES_PER_FEATURE if self.input == "features" else 1

    def decode_options(self) -> dict[str, Any]:
        """Keyword arguments of ``data.video.read_video`` that reproduce ``afsd prepare`` for this profile."""
        common = {"mode": self.rules.video_mode, "size": self.frame_size, "resize": self.resize}
        if self.sampling == "fps":
            return {**common, "sample_fps": float(self.sample_fps or DEFAULT_SAMPLE_FPS)}
        return {**common, "max_frames": int(self.max_frames or ANET_MAX_FRAMES)}

    def postprocess_thresholds(self, fusion: bool) -> tuple[float | None, float]:
        """(candidate threshold or None = testing.conf_thresh, soft-NMS score threshold)."""
        return self.rules.thresholds[1 if fusion else 0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names) if self.class_names is not None else None
        data["tiou_thresholds"] = list(self.tiou_thresholds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path | None = None) -> "DatasetProfile":
        """A profile written by :meth:`to_dict` (e.g. the ``profile`` of a detections JSON)."""
        if not isinstance(data, Mapping):
            raise InputError("'profile': expected an object", source)
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}  # older files lack the feature keys
        missing = sorted(required - set(data))
        if missing:
            raise InputError(f"'profile': missing key(s) {', '.join(missing)}", source)
        values = {k: data[k] for k in names if k in data}
        try:
            kind_rules(str(values["kind"]))
            values["class_names"] = tuple(map(str, values["class_names"])) if values["class_names"] is not None else None
            values["tiou_thresholds"] = tuple(float(t) for t in values["tiou_thresholds"])
        except (TypeError, ValueError, ConfigError) as exc:
            raise InputError(f"'profile': malformed ({exc})", source) from None
        return cls(**values)


# --------------------------------------------------------------------------------------------
# resolving a config


def resolve_profile(cfg: Config) -> DatasetProfile:
    """The profile of a loaded config (``dataset.name`` says the kind; see docs/data.md).

    Raises ConfigError when ``dataset.num_classes`` disagrees with the class list (the message
    says which number to set) or when the frame size cannot hold the crop.
    """
    dataset = cfg.dataset
    kind = str(dataset.name)
    rules = kind_rules(kind)
    training, testing = dataset.training, dataset.testing
    frame_size = int(dataset.frame_size or DEFAULT_FRAME_SIZE)
    class_names = None if rules.class_agnostic else class_names_of(cfg, kind)
    model_input = str(cfg.model.input or "frames")
    feature_stride, feature_clip_frames = feature_numbers(cfg, kind) if model_input == "features" else (None, None)
    head_classes = 2 if rules.class_agnostic else int(dataset.num_classes)  # ANet: bg + action, as officially
    profile = DatasetProfile(
        kind=kind,
        head="features" if model_input == "features" else rules.head,  # model/afsd.py HEAD_SPECS
        sampling=rules.sampling,
        sample_fps=float(dataset.sample_fps or DEFAULT_SAMPLE_FPS) if rules.sampling == "fps" else None,
        max_frames=ANET_MAX_FRAMES if rules.sampling == "max_frames" else None,
        frame_size=frame_size,
        resize=str(dataset.resize or DEFAULT_RESIZE),
        crop_size=int(training.crop_size),
        test_crop_size=int(testing.crop_size),
        train_clip_length=int(training.clip_length),
        train_clip_stride=int(training.clip_stride),
        test_clip_length=int(testing.clip_length),
        test_clip_stride=int(testing.clip_stride),
        class_names=class_names,
        num_classes=head_classes,
        train_subset=str(training.subset or rules.train_subset),
        test_subset=str(testing.subset or rules.test_subset),
        annotation_format=rules.annotation_format,
        fusion=rules.fusion,
        single_window=rules.single_window,
        output_version=rules.output_version,
        tiou_thresholds=rules.tiou_thresholds,
        input=model_input,
        feature_stride=feature_stride,
        feature_clip_frames=feature_clip_frames,
        feature_sample_stride=int(cfg.dataset.feature_sample_stride or 1) if model_input == "features" else None,
    )
    check_class_count(profile, cfg)
    return profile


def feature_numbers(cfg: Config, kind: str) -> tuple[int, int]:
    """``(feature_stride, feature_clip_frames)`` of a feature dataset: the config's
    ``dataset.feature_stride`` / ``dataset.feature_clip_frames``, else the ``features.json`` that
    ``afsd extract`` wrote into the training (or testing) feature folder. Only custom datasets (the
    JSON annotation layout) are read from features."""
    if kind != "custom":
        raise ConfigError(f"model.input is features but dataset.name is {kind}: feature datasets use the JSON "
                          "annotation layout (dataset.name: custom; see configs/thumos14_features.yaml)")
    stride, clip_frames = cfg.dataset.feature_stride, cfg.dataset.feature_clip_frames
    if stride is None or clip_frames is None:
        from afsd_cli.data.feature_dataset import read_feature_catalog

        folder = cfg.dataset.training.video_data_path or cfg.dataset.testing.video_data_path
        catalog = read_feature_catalog(folder) if folder else None
        if catalog is None:
            raise ConfigError("a feature dataset needs dataset.feature_stride and dataset.feature_clip_frames "
                              "(or a features.json from `afsd extract` in dataset.training.video_data_path)")
        stride = catalog.stride if stride is None else stride
        clip_frames = catalog.clip_frames if clip_frames is None else clip_frames
    return int(stride), int(clip_frames)


def class_names_of(cfg: Config, kind: str) -> tuple[str, ...]:
    """Class names, model id order: ``dataset.class_index_path``; else THUMOS14's 20 built-in
    classes (thumos14) or the sorted labels of the training annotation JSON (custom)."""
    from afsd_cli.data.annotations import read_class_index, read_class_list, thumos14_class_index

    path = cfg.dataset.class_index_path
    if kind == "custom":
        if path:
            return read_class_list(path)
        anno = cfg.dataset.training.video_anno_path or cfg.dataset.testing.video_anno_path
        if not anno:
            raise ConfigError("a custom dataset needs dataset.class_index_path or dataset.training.video_anno_path "
                              "(the annotation JSON the class names come from)")
        from afsd_cli.data.annotations import read_json_annotations

        return read_json_annotations(anno).class_names
    index = read_class_index(path) if path else thumos14_class_index()
    return index.names


def check_class_count(profile: DatasetProfile, cfg: Config) -> None:
    """``dataset.num_classes`` must be the class list's length plus the background."""
    if profile.class_names is None:
        return
    expected = len(profile.class_names) + 1
    if profile.num_classes != expected:
        where = cfg.dataset.class_index_path or (
            "the annotation JSON" if profile.kind == "custom" else "the built-in THUMOS14 class list")
        raise ConfigError(
            f"dataset.num_classes is {profile.num_classes} but {where} names {len(profile.class_names)} classes: "
            f"set dataset.num_classes={expected} (background + {len(profile.class_names)})")


# --------------------------------------------------------------------------------------------
# subsets


def canonical_subset(name: str) -> str:
    """``train``/``val``/``test`` → ``training``/``validation``/``testing``, lower case."""
    text = str(name).strip().lower()
    return SUBSET_ALIASES.get(text, text)


def same_subset(a: str, b: str) -> bool:
    return canonical_subset(a) == canonical_subset(b)


def held_out_subset(subsets: Iterable[str]) -> str | None:
    """The subset a JSON layout tests on, as spelled in the file: testing, else validation."""
    present = list(dict.fromkeys(subsets))
    for wanted in ("testing", "validation"):
        for name in present:
            if canonical_subset(name) == wanted:
                return name
    return None


def training_subset(subsets: Iterable[str]) -> str | None:
    """The training subset of a JSON layout, as spelled in the file."""
    return next((name for name in dict.fromkeys(subsets) if canonical_subset(name) == "training"), None)


# --------------------------------------------------------------------------------------------
# evaluation side (no config): the kind of a ground truth / detections file


def kind_from_version(version: Any) -> str | None:
    """The kind named by a detections JSON's ``version`` (THUMOS14 / ActivityNet), if any."""
    text = str(version or "").lower()
    if "thumos" in text:
        return "thumos14"
    if "activitynet" in text:
        return "anet"
    if text == "custom":
        return "custom"
    return None


def kind_from_ground_truth_layout(data: Any, is_csv: bool) -> str:
    """The kind a ground truth's layout says: the THUMOS14 annotation CSV; an ActivityNet file
    (its ``version`` names ActivityNet, or it has a ``taxonomy``); any other JSON is custom."""
    if is_csv:
        return "thumos14"
    if isinstance(data, Mapping) and ("taxonomy" in data or kind_from_version(data.get("version")) == "anet"):
        return "anet"
    return "custom"

