"""Configuration: the official AFSD YAML files, unchanged, plus typed ``key.path=value`` overrides.

``load_config(path, overrides=())`` reads a YAML file with ``yaml.safe_load``, checks every key
against the schema below (unknown key -> error with a "did you mean" hint; wrong type -> error
naming the key), fills defaults, applies overrides, resolves paths and returns a ``Config``
with attribute access (``cfg.training.learning_rate``).

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from afsd_cli.errors import ConfigError

DATASETS = ("thumos14", "anet")


@dataclass(frozen=True)
class Field:
    """One leaf of the schema: its type and default (``None`` = unset / optional)."""

    kind: str  # int | float | bool | str | path | choice
    default: Any = None
    choices: tuple[str, ...] = ()
    help: str = ""


def _split_fields() -> dict[str, Field]:
    """The ``dataset.training`` / ``dataset.testing`` keys (same in both)."""
    return {
        "video_mp4_path": Field("path", None, help="folder of source videos (ANet: the npy folder)"),
        "video_info_path": Field("path", None, help="video-info CSV (THUMOS) or info JSON (ANet)"),
        "video_anno_path": Field("path", None, help="annotation CSV"),
        "video_data_path": Field("path", None, help="folder of frame arrays <video>.npy"),
        "clip_length": Field("int", 256, help="frames per window"),
        "clip_stride": Field("int", 30, help="stride between windows"),
        "crop_size": Field("int", 96, help="square crop fed to the network"),
        "gt_path": Field("path", None, help="ActivityNet-style GT JSON (validation / plots)"),
        "subset": Field("str", None, help="GT subset to evaluate on"),
    }


SCHEMA: dict[str, Any] = {
    "paths_relative_to": Field("choice", "cwd", choices=("cwd", "config"),
                               help="what relative paths in the file are relative to"),
    "ngpu": Field("int", 1, help="official key; multi-GPU goes through torchrun here"),
    "dataset": {
        "name": Field("choice", None, choices=DATASETS, help="inferred when absent"),
        "num_classes": Field("int", 21, help="classes incl. background (the ANet model uses 2)"),
        "class_index_path": Field("path", None, help="class names; default THUMOS14's 20 classes"),
        "training": _split_fields(),
        "testing": _split_fields(),
    },
    "model": {
        "in_channels": Field("int", 3, help="3 = RGB, 2 = optical flow"),
        "freeze_bn": Field("bool", True),
        "freeze_bn_affine": Field("bool", True),
        "backbone_model": Field("path", None, help="inflated I3D weights (rgb/flow_imagenet.pt)"),
        "legacy_bmp_grad": Field("bool", False, help="reproduce the official op's misrouted backward"),
    },
    "training": {
        "batch_size": Field("int", 1),
        "learning_rate": Field("float", 1e-5),
        "weight_decay": Field("float", 1e-3),
        "max_epoch": Field("int", 16),
        "focal_loss": Field("bool", True),
        "checkpoint_path": Field("path", None, help="official key; afsd train saves into its run folder "
                                 "(the run's config.yaml names it)"),
        "random_seed": Field("int", 2020),
        "resume": Field("int", 0, help="official key (epoch to resume); use --resume RUN_DIR"),
        "lw": Field("float", None, help="boundary loss weight (THUMOS 10, ANet 1)"),
        "cw": Field("float", 1.0, help="classification loss weight"),
        "piou": Field("float", None, help="IoU for refined positives (THUMOS 0.5, ANet 0.6)"),
        "ssl": Field("float", 0.1, help="boundary-consistency (triplet) weight"),
        "backbone_lr_scale": Field("float", None, help="backbone lr = lr x this (THUMOS 1, ANet 0.1)"),
        "num_workers": Field("int", 2),
        "grad_clip": Field("float", 0.0, help="max grad norm; 0 = off"),
        "amp": Field("choice", "off", choices=("off", "bf16", "fp16")),
        "skip_nonfinite": Field("bool", False, help="skip a step with a non-finite loss instead of stopping"),
        "validate_every": Field("int", 0, help="epochs between validations; 0 = off"),
        "checkpoint_every": Field("int", 1),
        "keep_checkpoints": Field("str", "last", help="models kept: last (the last and the best epoch), all, "
                                  "or N (also every N-th epoch); training states likewise"),
    },
    "testing": {
        "conf_thresh": Field("float", 0.01),
        "top_k": Field("int", 5000),
        "nms_thresh": Field("float", 0.5, help="official key, unused by Gaussian soft-NMS"),
        "nms_sigma": Field("float", 0.5),
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
        "batch_size": Field("int", 1, help="windows per forward pass"),
        "flow_method": Field("str", "tvl1", help="flow method for predict --video with flow models"),
        "softnms_emit_last": Field("bool", False, help="fix: emit the last soft-NMS candidate"),
        "clip_to_video": Field("bool", False, help="fix: clip segments to the video's end"),
    },
}

# Defaults that differ per dataset (official README commands / spec §0).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "thumos14": {
        "training.lw": 10.0,
        "training.piou": 0.5,
        "training.backbone_lr_scale": 1.0,
    },
    "anet": {
        "training.lw": 1.0,
        "training.piou": 0.6,
        "training.backbone_lr_scale": 0.1,
    },
}

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
    """Check/convert one value to its field's type; raise ConfigError naming the key."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"key {key!r}: expected {expected}, got {value!r}", where)

    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_STRINGS
                         and field.kind in ("path", "str", "float", "choice")):
        return None
    kind = field.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad("true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` as a string; the official code float()s it
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad("a number")
    if kind in ("str", "path"):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string" if kind == "str" else "a path")
    if kind == "choice":
        text = str(value).strip()
        if text in field.choices:
            return text
        raise ConfigError(f"key {key!r}: expected one of {', '.join(field.choices)}, got {value!r}", where)
    raise AssertionError(kind)


def _unknown_key(key: str, schema: Mapping[str, Any], prefix: str, where: str) -> ConfigError:
    candidates = list(schema)
    hint = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not hint:  # a key put in the wrong section: look everywhere
        everywhere = list(_all_keys(SCHEMA))
        leaf_hint = difflib.get_close_matches(_join(prefix, key), everywhere, n=1, cutoff=0.6)
        hint = leaf_hint
        full = True
    else:
        full = False
    message = f"unknown key {_join(prefix, key)!r}"
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
            raise _unknown_key(str(key), schema, prefix, where)
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
    """``"training.learning_rate=1e-4"`` -> ``("training.learning_rate", 1e-4)`` (type-checked)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value", "override")
    key, raw = text.split("=", 1)
    key = key.strip()
    field = _field(key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
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


def _to_sections(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k: Section(_to_sections(v, _join(prefix, k)), _join(prefix, k)) if isinstance(v, dict) else v
            for k, v in tree.items()}


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load an official-format YAML config, validate it, apply ``key.path=value`` overrides."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML{location}: {problem}", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path) from None
    if data is None:
        raise ConfigError("empty config file", path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"top level must be a mapping of sections, got {type(data).__name__}", path)
    return build_config(data, overrides, source=str(path))


def describe_schema() -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) rows for the config reference in the docs."""
    rows = []
    for key in _all_keys(SCHEMA):
        field = _field(key)
        kind = field.kind if field.kind != "choice" else " / ".join(field.choices)
        rows.append((key, kind, field.default, field.help))
    return rows


def schema_markdown() -> str:
    """The config reference as a markdown table (docs/config.md is generated from this)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, help_text in describe_schema():
        shown = "dataset-dependent" if default is None and any(
            key in values for values in DATASET_DEFAULTS.values()) else ("—" if default is None else f"`{default}`")
        lines.append(f"| `{key}` | {kind} | {shown} | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m afsd_cli.config > table (used to refresh docs/config.md)
    print(schema_markdown(), end="")
