"""Per-dataset evaluation defaults, dataset auto-detection and tIoU threshold parsing.

Every difference between THUMOS14 and ActivityNet evaluation lives in ``DATASETS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from afsd_cli.errors import InputError


@dataclass(frozen=True)
class DatasetDefaults:
    name: str
    subset: str
    tiou_thresholds: tuple[float, ...]


# The official THUMOS14 script passes this plain list; the ActivityNet one passes
# np.linspace(0.5, 0.95, 10) (values such as 0.6000000000000001 are kept bit for bit: a tIoU
# exactly on a threshold is compared against the same double as in the official code).
DATASETS: dict[str, DatasetDefaults] = {
    "thumos14": DatasetDefaults("thumos14", "test", (0.3, 0.4, 0.5, 0.6, 0.7)),
    "anet": DatasetDefaults("anet", "validation", tuple(float(t) for t in np.linspace(0.5, 0.95, 10))),
}

THUMOS14_CLASSES = frozenset(
    "BaseballPitch BasketballDunk Billiards CleanAndJerk CliffDiving CricketBowling CricketShot "
    "Diving FrisbeeCatch GolfSwing HammerThrow HighJump JavelinThrow LongJump PoleVault Shotput "
    "SoccerPenalty TennisSwing ThrowDiscus VolleyballSpiking".split()
)


def dataset_defaults(name: str) -> DatasetDefaults:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(f"unknown dataset {name!r} (choose one of: {', '.join(DATASETS)})") from None


def detect_dataset(labels: Iterable[str], from_csv: bool = False) -> str:
    """THUMOS14 if the ground truth is a THUMOS14 annotation CSV or every label is one of the 20
    THUMOS14 detection classes; ActivityNet otherwise."""
    if from_csv:
        return "thumos14"
    labels = set(labels)
    return "thumos14" if labels and labels <= THUMOS14_CLASSES else "anet"


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
