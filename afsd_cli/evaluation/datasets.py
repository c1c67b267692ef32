"""Per-dataset evaluation defaults and tIoU threshold parsing.

The defaults (thresholds, subset) come from the dataset profiles (``afsd_cli/profile.py``); the
kind of a ground truth comes from its layout or from explicit flags, never from its class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.evaluation.detections import Detections
from afsd_cli.profile import DATASET_KINDS, KIND_RULES, held_out_subset, kind_from_ground_truth_layout


@dataclass(frozen=True)
class DatasetDefaults:
    name: str
    subset: str
    tiou_thresholds: tuple[float, ...]


DATASETS: dict[str, DatasetDefaults] = {
    kind: DatasetDefaults(kind, KIND_RULES[kind].test_subset, KIND_RULES[kind].tiou_thresholds) for kind in DATASET_KINDS
}


def dataset_defaults(name: str) -> DatasetDefaults:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r} (choose one of: {', '.join(DATASETS)})") from None


def detect_dataset(data: Any, from_csv: bool = False) -> str:
    """The kind a ground truth's layout says (see :func:`afsd_cli.profile.kind_from_ground_truth_layout`)."""
    return kind_from_ground_truth_layout(data, from_csv)


def default_subset(dataset: str, subsets_in_file: Iterable[str]) -> str:
    """The subset evaluated when none is asked for: the profile's (custom: the file's testing
    subset, else its validation subset, as spelled in the file)."""
    defaults = dataset_defaults(dataset)
    if KIND_RULES[dataset].subset_from_file:
        return held_out_subset(subsets_in_file) or defaults.subset
    return defaults.subset


def parse_tiou(spec: str) -> tuple[float, ...]:
    """``"0.3,0.4,0.5"`` (exactly these values) or ``"start:stop:num"`` (``np.linspace``)."""
    text = spec.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            if not 1 <= num <= 1000:  # each threshold is a full matching pass; more is a typo
                raise ValueError
            values = tuple(float(v) for v in np.linspace(start, stop, num))
        else:
            values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"--tiou {spec!r}: expected comma-separated values (0.3,0.5,0.7) or start:stop:num (0.5:0.95:10)"
        ) from None
    return check_thresholds(values, f"--tiou {spec!r}")


def check_thresholds(values: Iterable[float], where: str = "tiou_thresholds") -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if not values:
        raise InputError(f"{where}: no tIoU threshold given")
    bad = [v for v in values if not (0.0 <= v <= 1.0)]
    if bad:
        raise InputError(f"{where}: tIoU thresholds must lie in [0, 1], got {bad[0]}")
    return values


@dataclass(frozen=True)
class EvaluationChoice:
    """Dataset kind, subset and thresholds to evaluate with, and where each came from.

    ``None`` leaves the choice to the ground truth (its layout, then the kind's defaults).
    """

    dataset: str | None
    subset: str | None
    tiou_thresholds: tuple[float, ...] | None
    origin: str


def choose_evaluation(detections: Detections, dataset: str | None = None, subset: str | None = None,
                      tiou_thresholds: Iterable[float] | None = None) -> EvaluationChoice:
    """Explicit flags first, then the detections' recorded profile, then their ``version``;
    whatever is still open is decided by the ground truth's layout."""
    from afsd_cli.profile import DatasetProfile, kind_from_version

    if dataset is not None:
        dataset_defaults(dataset)
    thresholds = check_thresholds(tiou_thresholds) if tiou_thresholds is not None else None
    recorded = detections.profile
    if recorded is not None:
        profile = DatasetProfile.from_dict(recorded, detections.source)
        same_kind = dataset is None or dataset == profile.kind
        return EvaluationChoice(
            dataset or profile.kind,
            subset if subset is not None else (profile.test_subset if same_kind else None),
            thresholds if thresholds is not None else (profile.tiou_thresholds if same_kind else None),
            "the detections' dataset profile" if same_kind else "--dataset",
        )
    if dataset is None:
        dataset = kind_from_version(detections.version)
        origin = "the detections' version" if dataset else "the ground truth's layout"
    else:
        origin = "--dataset"
    return EvaluationChoice(dataset, subset, thresholds, origin)
