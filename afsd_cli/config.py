"""Configuration: the official AFSD YAML files, unchanged, plus typed ``key.path=value`` overrides.

``load_config(path, overrides=())`` reads a YAML file with ``yaml.safe_load`` (bounded: alias
bombs, deep nesting and oversized files are refused before anything is expanded), checks every
key against the schema below (unknown key -> error with a "did you mean" hint; wrong type, a
numeric value outside the key's range, or null for a required key -> error naming the key),
fills defaults, applies overrides (checked the same way), resolves paths and returns a
``Config`` with attribute access (``cfg.training.learning_rate``).

Path resolution: a relative path in the file is taken relative to the current working
directory, as the official scripts do (their configs say ``./datasets/thumos14/...`` and are run
from the repository root). Setting the top-level key ``paths_relative_to: config`` makes relative
paths resolve against the folder holding the YAML file instead. Paths given as overrides on the
command line are always relative to the current working directory.

Keys beyond the official ones (``training.lw``, ``testing.classifier_path``, ...) have defaults;
a few defaults depend on the dataset (``DATASET_DEFAULTS``), which is ``dataset.name`` when set,
else inferred: ActivityNet when the training video-info file is JSON or the clip is 768 frames.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from afsd_cli.errors import ConfigError, clip_text, short_repr

DATASETS = ("thumos14", "anet", "custom")  # the kinds of afsd_cli/profile.py

#: A config is a few kilobytes and about a hundred YAML nodes; far more is a mistake or an attack.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 50  # the schema is 3 levels deep; PyYAML recurses per level and slows down
#: Largest integer the native soft-NMS loop takes (a C ``int``; see afsd_cli/engine/postprocess.py).
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key: bounds (``None`` = open), each included or not.

    Floats must also be finite; ``multiple_of`` constrains integers (window lengths).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: int | None = None

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return not self.multiple_of or value % self.multiple_of == 0

    def describe(self) -> str:
        """``"> 0"``, ``">= 1"``, ``"in [0, 1)"``, ``"a multiple of 8, >= 8"``."""
        if self.low is not None and self.high is not None:
            text = (f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                    f"{_number(self.high)}{')' if self.high_open else ']'}")
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = "any finite number"
        return f"a multiple of {self.multiple_of}, {text}" if self.multiple_of else text


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def at_least(low: float, multiple_of: int | None = None) -> Range:
    return Range(low=low, multiple_of=multiple_of)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def between(low: float, high: float, high_open: bool = False) -> Range:
    return Range(low=low, high=high, high_open=high_open)


@dataclass(frozen=True)
class Rule:
    """The valid values of a non-numeric key, for keys with a small language of their own
    (``training.keep_checkpoints``): ``accepts(value)`` says whether a value is one, ``text`` what
    the valid values are, in words. Used like a ``Range``."""

    accepts: Callable[[Any], bool]
    text: str

    def __contains__(self, value: Any) -> bool:
        return self.accepts(value)

    def describe(self) -> str:
        return self.text


def _parses(parse: Callable[[Any], Any]) -> Callable[[Any], bool]:
    def accepts(value: Any) -> bool:
        try:
            parse(value)
        except ConfigError:
            return False
        return True

    return accepts


def _keep_checkpoints(value: Any) -> Any:
    from afsd_cli.runs import parse_keep_checkpoints  # runs imports no config: no cycle

    return parse_keep_checkpoints(value)


#: ``training.keep_checkpoints``: what ``afsd_cli.runs.parse_keep_checkpoints`` reads.
KEEP_CHECKPOINTS = Rule(_parses(_keep_checkpoints), "last, all, N or every N (N >= 1)")


@dataclass(frozen=True)
class Field:
    """One leaf of the schema: its type, default (``None`` = unset / optional) and valid range.

    A key whose default is not ``None`` is required: ``null`` is refused. Every int/float key
    has a ``valid`` range (a few string keys a ``Rule``), checked when the file is loaded and on
    each override.
    """

    kind: str  # int | float | bool | str | path | choice
    default: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""
    valid: Range | Rule | None = None


#: Testing sizes that default to the training split's: the network is built for those
#: (model/__init__.py model_spec_from_config), so no other value can go through it.
SIZES_FROM_TRAINING = ("clip_length", "crop_size")


def _split_fields(testing: bool = False) -> dict[str, Field]:
    """The ``dataset.training`` / ``dataset.testing`` keys (same in both but the sizes' defaults)."""
    fields = {
        "video_mp4_path": Field("path", None, help="folder of source videos (ANet: the npy folder)"),
        "video_info_path": Field("path", None, help="video-info CSV (THUMOS) or info JSON (ANet)"),
        "video_anno_path": Field("path", None, help="annotation CSV"),
        "video_data_path": Field("path", None, help="folder of frame arrays <video>.npy"),
        # the backbone downsamples time by 8 (model/afsd.py ModelSpec)
        "clip_length": Field("int", 256, help="frames per window (features: features per window)", valid=at_least(8, multiple_of=8)),
        "clip_stride": Field("int", 30, help="stride between windows (frames or features)", valid=at_least(1)),
        "crop_size": Field("int", 96, help="square crop fed to the network", valid=at_least(1)),
        "gt_path": Field("path", None, help="ActivityNet-style GT JSON (validation / plots)"),
        "subset": Field("str", None, help="GT subset to evaluate on"),
    }
    if testing:
        for size in SIZES_FROM_TRAINING:
            fields[size] = Field("int", None, help=f"{fields[size].help}; must equal the training one",
                                 valid=fields[size].valid)
        # half-overlapping windows, as the official THUMOS14 testing (256 / 128): a clip_length
        # override alone then keeps a valid stride
        fields["clip_stride"] = Field("int", None, help=f"{fields['clip_stride'].help}; default: half the clip length",
                                      valid=fields["clip_stride"].valid)
    return fields


SCHEMA: dict[str, Any] = {
    "paths_relative_to": Field("choice", "cwd", choices=("cwd", "config"),
                               help="what relative paths in the file are relative to"),
    "ngpu": Field("int", 1, help="official key; multi-GPU goes through torchrun here", valid=at_least(0)),
    "dataset": {
        "name": Field("choice", None, choices=DATASETS, help="inferred when absent"),
        "num_classes": Field("int", 21, help="classes incl. background (the ANet model uses 2)",
                             valid=at_least(2)),
        "class_index_path": Field("path", None, help="class names; default THUMOS14's 20 classes"),
        # dataset profile (afsd_cli/profile.py); frame_size >= the crops, sample_fps > 0
        "frame_size": Field("int", None, help="side of the stored square frames (prepare --size); default 112",
                            valid=between(8, 4096)),
        "sample_fps": Field("float", None, help="frames kept per second (thumos14, custom); default 10",
                            valid=between(0.1, 1000.0)),
        "resize": Field("choice", None, choices=("pil-bicubic", "cv2-area", "cv2-cubic"),
                        help="frame resize of prepare (predict --video repeats it); default pil-bicubic"),
        # feature datasets (model.input: features; afsd_cli/data/feature_dataset.py): default from the
        # features.json of `afsd extract` in the training feature folder
        "feature_stride": Field("int", None, help="features: frames between consecutive clips (afsd extract --stride)",
                                valid=between(1, 4096)),
        "feature_clip_frames": Field("int", None, help="features: frames per clip (afsd extract --clip-frames)",
                                     valid=between(1, 4096)),
        "feature_sample_stride": Field("int", None, help="features: use every Nth feature (OpenTAD's sample_stride); "
                                       "default 1", valid=between(1, 64)),
        "training": _split_fields(),
        "testing": _split_fields(testing=True),
    },
    "model": {
        "input": Field("choice", "frames", choices=("frames", "features"),
                       help="frames (end to end, I3D backbone) or pre-extracted features [T', C]"),
        "feature_dim": Field("int", 2048, help="features: channels per feature (1024 RGB or flow I3D, 2048 both)",
                             valid=between(1, 65536)),
        "in_channels": Field("int", 3, help="3 = RGB, 2 = optical flow", valid=at_least(1)),
        "freeze_bn": Field("bool", True),
        "freeze_bn_affine": Field("bool", True),
        "backbone_model": Field("path", None, help="inflated I3D weights (rgb/flow_imagenet.pt)"),
        "legacy_bmp_grad": Field("bool", False, help="reproduce the official op's misrouted backward"),
    },
    "training": {
        "batch_size": Field("int", 1, valid=at_least(1)),
        "learning_rate": Field("float", 1e-5, valid=above(0)),
        "weight_decay": Field("float", 1e-3, valid=at_least(0)),
        "max_epoch": Field("int", 16, valid=at_least(1)),
        "focal_loss": Field("bool", True),
        "checkpoint_path": Field("path", None, help="official key; afsd train saves into its run folder "
                                 "(the run's config.yaml names it)"),
        # torch.manual_seed takes at most 64 bits (engine/trainer.py seed_everything)
        "random_seed": Field("int", 2020, valid=between(0, 2**63 - 1)),
        "resume": Field("int", 0, help="official key (epoch to resume); use --resume RUN_DIR", valid=at_least(0)),
        "lw": Field("float", None, help="boundary loss weight (THUMOS 10, ANet 1)", valid=at_least(0)),
        "cw": Field("float", 1.0, help="classification loss weight", valid=at_least(0)),
        "piou": Field("float", None, help="IoU for refined positives (THUMOS 0.5, ANet 0.6)", valid=between(0, 1)),
        "ssl": Field("float", 0.1, help="boundary-consistency (triplet) weight", valid=at_least(0)),
        # > 0: the trainer reads an unset (None) scale as 1, so 0 would not freeze the backbone
        "backbone_lr_scale": Field("float", None, help="backbone lr = lr x this (THUMOS 1, ANet 0.1)",
                                   valid=above(0)),
        "num_workers": Field("int", 2, valid=at_least(0)),
        "grad_clip": Field("float", 0.0, help="max grad norm; 0 = off", valid=at_least(0)),
        "amp": Field("choice", "off", choices=("off", "bf16", "fp16")),
        "skip_nonfinite": Field("bool", False, help="skip a step with a non-finite loss instead of stopping"),
        "validate_every": Field("int", 0, help="epochs between validations; 0 = off", valid=at_least(0)),
        "checkpoint_every": Field("int", 1, valid=at_least(1)),
        "keep_checkpoints": Field("str", "last", help="models kept: last (the last and the best epoch), all, "
                                  "or N (also every N-th epoch); training states likewise",
                                  valid=KEEP_CHECKPOINTS),
    },
    "testing": {
        # scores are softmax probabilities compared with `>`: 1 or more would keep nothing
        "conf_thresh": Field("float", 0.01, valid=between(0, 1, high_open=True)),
        "top_k": Field("int", 5000, valid=between(1, INT32_MAX)),
        "nms_thresh": Field("float", 0.5, help="official key, unused by Gaussian soft-NMS", valid=between(0, 1)),
        # the Gaussian decay divides by sigma in float32 (engine/postprocess.py soft_nms): a sigma
        # that rounds to 0 gives NaN scores; below 1e-6 the decay is hard NMS anyway
        "nms_sigma": Field("float", 0.5, valid=at_least(1e-6)),
        "checkpoint_path": Field("path", None),
        "output_path": Field("path", None, help="official key; afsd predict/fuse write into run folders "
                             "(or --output)"),
        "output_json": Field("str", "detection_results.json"),
        "fusion": Field("bool", False),
        "rgb_data_path": Field("path", None),
        "flow_data_path": Field("path", None),
        "rgb_checkpoint_path": Field("path", None),
        "flow_checkpoint_path": Field("path", None),
        "classifier_path": Field("path", None, help="CUHK video-level classification JSON (ANet)"),
        "batch_size": Field("int", 1, help="windows per forward pass", valid=at_least(1)),
        "flow_method": Field("str", "tvl1", help="flow method for predict --video with flow models"),
        "softnms_emit_last": Field("bool", False, help="fix: emit the last soft-NMS candidate"),
        "clip_to_video": Field("bool", False, help="fix: clip segments to the video's end"),
    },
}

def _dataset_defaults() -> dict[str, dict[str, Any]]:
    """Defaults that differ per kind of dataset: the profile's (afsd_cli/profile.py KIND_RULES)."""
    from afsd_cli.profile import KIND_RULES

    return {kind: dict(rules.config_defaults) for kind, rules in KIND_RULES.items()}


DATASET_DEFAULTS: dict[str, dict[str, Any]] = _dataset_defaults()

_NONE_STRINGS = {"none", "null", "~", ""}


class Section:
    """A config section with attribute access; iterate with ``to_dict()``."""

    def __init__(self, values: Mapping[str, Any], name: str = ""):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        raise AttributeError(f"config has no key {_join(self._name, key)!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("config sections are read-only; use overrides")

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Section) else v for k, v in self._values.items()}

    def __repr__(self) -> str:
        return f"Section({self._name or 'root'}: {self.to_dict()!r})"


class Config(Section):
    """The resolved configuration (root section) plus where it came from."""

    def __init__(self, values: Mapping[str, Any], source: str | None):
        super().__init__(values)
        object.__setattr__(self, "source", source)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        """Write the resolved config (atomically) next to an output."""
        from afsd_cli.io import write_text

        return write_text(path, self.to_yaml())


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(value: Any, field: Field, key: str, where: str) -> Any:
    """Check/convert one value to its field's type and range; raise ConfigError naming the key."""
    converted = _convert(value, field, key, where)
    if converted is None:
        if field.default is not None:
            raise ConfigError(f"key {key!r} must be set ({_expectation(field)}), got null", where)
        return None
    if field.valid is not None and converted not in field.valid:
        raise ConfigError(f"key {key!r} must be {field.valid.describe()}, got {short_repr(converted)}", where)
    return converted


def _expectation(field: Field) -> str:
    """What a key takes, in words: ``"a number > 0"``, ``"an integer >= 1"``, ``"true or false"``."""
    if field.kind in ("int", "float"):
        noun = "an integer" if field.kind == "int" else "a number"
        return f"{noun} {field.valid.describe()}" if field.valid else noun
    if field.kind == "choice":
        return f"one of {', '.join(field.choices)}"
    return {"bool": "true or false", "str": "a string", "path": "a path"}[field.kind]


def _convert(value: Any, field: Field, key: str, where: str) -> Any:
    """``value`` as its field's type (``None`` when unset); ConfigError naming the key if it is not one."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_STRINGS
                         and field.kind in ("path", "str", "float", "choice")):
        return None
    converter = _CONVERTERS.get(field.kind)
    if converter is None:
        raise AssertionError(field.kind)
    try:
        return converter(value, field)
    except _NotOfType as exc:
        raise ConfigError(f"key {key!r}: expected {exc}, got {short_repr(value)}", where) from None


class _NotOfType(Exception):
    """A value that is not of its field's type; the message says what was expected."""


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _to_bool(value: Any, field: Field) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _NotOfType("true or false")


def _to_int(value: Any, field: Field) -> int:
    if isinstance(value, bool):
        raise _NotOfType("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _NotOfType("an integer")


def _to_float(value: Any, field: Field) -> float:
    if isinstance(value, bool):
        raise _NotOfType("a number")
    if isinstance(value, float):
        return value
    if isinstance(value, int):  # an integer beyond float range is as infinite as `.inf`
        return float(value) if abs(value) < 2**1023 else math.inf
    if isinstance(value, str):  # YAML 1.1 reads `1e-5` as a string; the official code float()s it
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _NotOfType("a number")


def _to_text(value: Any, field: Field) -> str:
    """``str`` and ``path`` keys; numbers are taken as their text."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise _NotOfType("a string" if field.kind == "str" else "a path")


def _to_choice(value: Any, field: Field) -> str:
    text = str(value).strip() if isinstance(value, (str, int, float)) else None
    if text in field.choices:
        return text
    raise _NotOfType(f"one of {', '.join(field.choices)}")


_CONVERTERS: dict[str, Callable[[Any, Field], Any]] = {
    "bool": _to_bool, "int": _to_int, "float": _to_float, "str": _to_text, "path": _to_text, "choice": _to_choice,
}


def _unknown_key(key: str, schema: Mapping[str, Any], prefix: str, where: str) -> ConfigError:
    if len(key) > 100:  # no schema key is that long; difflib would be quadratic in it
        return ConfigError(f"unknown key {short_repr(_join(prefix, key))}", where)
    candidates = list(schema)
    hint = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not hint:  # a key put in the wrong section: look everywhere
        everywhere = list(_all_keys(SCHEMA))
        leaf_hint = difflib.get_close_matches(_join(prefix, key), everywhere, n=1, cutoff=0.6)
        hint = leaf_hint
        full = True
    else:
        full = False
    message = f"unknown key {short_repr(_join(prefix, key))}"
    if hint:
        message += f"; did you mean {hint[0] if full else _join(prefix, hint[0])!r}?"
    return ConfigError(message, where)


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, sub in schema.items():
        if isinstance(sub, dict):
            yield from _all_keys(sub, _join(prefix, key))
        else:
            yield _join(prefix, key)


def _merge(data: Any, schema: Mapping[str, Any], prefix: str, where: str) -> dict[str, Any]:
    """Validate ``data`` against ``schema``; returns a full nested dict with defaults filled."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"section {prefix or 'top level'!r} must be a mapping, got {type(data).__name__}", where)
    out: dict[str, Any] = {}
    for key in data:
        if not isinstance(key, str) or key not in schema:
            raise _unknown_key(key if isinstance(key, str) else short_repr(key), schema, prefix, where)
    for key, sub in schema.items():
        full = _join(prefix, key)
        if isinstance(sub, dict):
            out[key] = _merge(data.get(key), sub, full, where)
        else:
            out[key] = _coerce(data[key], sub, full, where) if key in data else sub.default
    return out


def _field(path: str) -> Field:
    node: Any = SCHEMA
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise _unknown_key(part, node if isinstance(node, dict) else {}, ".".join(parts[:i]), "override")
        node = node[part]
    if isinstance(node, dict):
        raise ConfigError(f"override {path!r} names a section, not a key", "override")
    return node


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        node = node[part]
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.learning_rate=1e-4"`` -> ``("training.learning_rate", 1e-4)`` (type- and range-checked)."""
    if "=" not in text:
        raise ConfigError(f"override {short_repr(text)} is not of the form key.path=value", "override")
    key, raw = text.split("=", 1)
    key = key.strip()
    field = _field(key)
    try:
        value = safe_load_bounded(raw, f"override {key}") if raw.strip() else None
    except _MalformedYAML:
        value = raw
    if field.kind in ("str", "path") and value is not None and not isinstance(value, str):
        value = raw.strip()  # keep "001" or "1e5" as typed for strings and paths
    return key, _coerce(value, field, key, "override")


def infer_dataset(tree: Mapping[str, Any]) -> str:
    info = tree["dataset"]["training"]["video_info_path"] or tree["dataset"]["testing"]["video_info_path"]
    if info and str(info).lower().endswith(".json"):
        return "anet"
    if tree["dataset"]["training"]["clip_length"] == 768:
        return "anet"
    return "thumos14"


def _path_fields(schema: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, sub in schema.items():
        if isinstance(sub, dict):
            yield from _path_fields(sub, _join(prefix, key))
        elif sub.kind == "path":
            yield _join(prefix, key)


def build_config(data: Mapping[str, Any] | None, overrides: Iterable[str] = (),
                 source: str | None = None) -> Config:
    """Validate a loaded mapping (e.g. from YAML), apply overrides, fill defaults, resolve paths."""
    where = source or "config"
    tree = _merge(data or {}, SCHEMA, "", where)
    override_paths: set[str] = set()
    for text in overrides:
        key, value = parse_override(text)
        _set(tree, key, value)
        override_paths.add(key)
    _fill_and_check_split_sizes(tree, where)

    name = tree["dataset"]["name"] or infer_dataset(tree)
    tree["dataset"]["name"] = name
    for key, value in DATASET_DEFAULTS[name].items():
        if _get(tree, key) is None:
            _set(tree, key, value)

    base_config = Path(source).resolve().parent if source else Path.cwd()
    relative_to_config = tree["paths_relative_to"] == "config"
    for key in _path_fields(SCHEMA):
        value = _get(tree, key)
        if value is None:
            continue
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            base = base_config if (relative_to_config and key not in override_paths) else Path.cwd()
            path = base / path
        _set(tree, key, str(path.resolve()))
    return Config(_to_sections(tree, ""), source)


def _fill_and_check_split_sizes(tree: dict[str, Any], where: str) -> None:
    """Unset testing sizes take the training ones; set ones must equal them (see SIZES_FROM_TRAINING)."""
    training, testing = tree["dataset"]["training"], tree["dataset"]["testing"]
    for size in SIZES_FROM_TRAINING:
        if testing[size] is None:
            testing[size] = training[size]
        elif testing[size] != training[size]:
            raise ConfigError(f"dataset.testing.{size} is {testing[size]} but dataset.training.{size} is "
                              f"{training[size]}: the network is built for the training "
                              f"{size.replace('_', ' ')}, set both to the same value (or leave the testing one out)",
                              where)
    if testing["clip_stride"] is None:
        testing["clip_stride"] = max(1, testing["clip_length"] // 2)


def _to_sections(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k: Section(_to_sections(v, _join(prefix, k)), _join(prefix, k)) if isinstance(v, dict) else v
            for k, v in tree.items()}


class _MalformedYAML(ConfigError):
    """Text that is not YAML at all (an override then stays a plain string)."""


def _expanded_node_count(root: Any, budget: int, where: str) -> int:
    """Nodes of the YAML graph under ``root`` with every alias expanded, counted up to ``budget``.

    Aliases share nodes, so the graph stays small while its expansion (what walking, printing or
    merging ``<<`` keys costs) can be exponential: count each node once with the expanded size
    of its children (memoised by identity), refusing a graph over the budget or with a cycle.
    """
    import yaml

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _yaml_children(node, yaml)
        if not children_done:
            if id(node) in on_path:
                raise ConfigError("YAML aliases refer to themselves (a recursive structure)", where)
            on_path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        on_path.discard(id(node))
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > budget:
            raise ConfigError(
                f"YAML aliases expand to more than {budget:,} values; a config has about a hundred "
                "(refusing what looks like an alias bomb)", where)
        sizes[id(node)] = total
    return sizes[id(root)]


def _yaml_children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def safe_load_bounded(text: str, where: str | Path) -> Any:
    """``yaml.safe_load(text)``, refusing alias bombs, deep nesting and unconvertible scalars.

    ConfigError (naming ``where``) instead of a MemoryError, RecursionError or ValueError from
    PyYAML; ``_MalformedYAML`` for text that does not parse.
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", where)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_document(self, node):
            _expanded_node_count(node, MAX_YAML_NODES, str(where))  # before any value is built
            return super().construct_document(node)

    try:
        return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader: same types as yaml.safe_load
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _MalformedYAML(f"malformed YAML{location}: {clip_text(str(problem), 200)}", where) from None
    except RecursionError:  # a last resort: compose_node stops far earlier
        raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep", where) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts, a bad date
        raise _MalformedYAML(f"malformed YAML: {str(exc)[:200]}", where) from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load an official-format YAML config, validate it, apply ``key.path=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is {size:,} bytes; a config is a few kilobytes "
                              f"(limit {MAX_CONFIG_BYTES:,})", path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path) from None
    data = safe_load_bounded(text, path)
    if data is None:
        raise ConfigError("empty config file", path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"top level must be a mapping of sections, got {type(data).__name__}", path)
    return build_config(data, overrides, source=str(path))


def describe_schema() -> list[tuple[str, str, Any, str, str]]:
    """(key, type, default, valid values, help) rows for the config reference in the docs."""
    rows = []
    for key in _all_keys(SCHEMA):
        field = _field(key)
        kind = field.kind if field.kind != "choice" else " / ".join(field.choices)
        valid = field.valid.describe() if field.valid else ""
        rows.append((key, kind, field.default, valid, field.help))
    return rows


def schema_markdown() -> str:
    """The config reference as a markdown table (docs/config.md is generated from this)."""
    lines = ["| key | type | default | valid values | meaning |", "|---|---|---|---|---|"]
    for key, kind, default, valid, help_text in describe_schema():
        shown = "dataset-dependent" if default is None and any(
            key in values for values in DATASET_DEFAULTS.values()) else ("—" if default is None else f"`{default}`")
        if key in (f"dataset.testing.{size}" for size in SIZES_FROM_TRAINING):
            shown = "the training one"
        elif key == "dataset.testing.clip_stride":
            shown = "half the clip length"
        lines.append(f"| `{key}` | {kind} | {shown} | {valid.replace('>=', '≥')} | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m afsd_cli.config > table (used to refresh docs/config.md)
    print(schema_markdown(), end="")
