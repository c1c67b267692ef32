"""What a training run records per epoch: the ``metrics.csv`` row and the ``loss_curve.png`` plot.

``EpochTally`` collects one epoch's steps as the trainer takes them (``engine/trainer.py
Trainer.run_step``) and turns them into the epoch's row; ``read_metrics`` gives the rows back to a
resumed run; ``write_metrics`` and ``plot_loss_curve`` are what the ``WriteMetrics`` hook
(``engine/hooks.py``) does after each epoch.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from afsd_cli.engine.losses import TERM_NAMES

METRIC_COLUMNS = ("epoch", "total", *TERM_NAMES, "steps", "skipped_steps", "amp_skipped_steps", "lr_backbone",
                  "lr_head", "seconds", "frames_per_second", "val_map")
INT_COLUMNS = ("epoch", "steps", "skipped_steps", "amp_skipped_steps")


@dataclass
class EpochTally:
    """One epoch's steps as they are taken: the weighted loss terms of each optimisation step and
    the counts of the steps that changed nothing. The clock starts when the tally is made."""

    losses: list[dict[str, float]] = field(default_factory=list)
    skipped: int = 0  # non-finite loss, skipped under training.skip_nonfinite
    amp_skipped: int = 0  # optimiser steps the fp16 GradScaler dropped (inf/NaN gradients)
    started: float = field(default_factory=time.perf_counter)

    def row(self, epoch: int, optimizer: torch.optim.Optimizer, frames_per_step: int) -> dict[str, Any]:
        """The epoch's ``metrics.csv`` row (keys in ``METRIC_COLUMNS`` order): mean weighted terms,
        step counts, learning rates of both parameter groups, throughput; ``val_map`` NaN until
        validation fills it in."""
        seconds = time.perf_counter() - self.started
        done = len(self.losses)
        row: dict[str, Any] = {"epoch": epoch, "total": _mean(self.losses, "total")}
        row.update({name: _mean(self.losses, name) for name in TERM_NAMES})
        row.update({
            "steps": done, "skipped_steps": self.skipped, "amp_skipped_steps": self.amp_skipped,
            "lr_backbone": optimizer.param_groups[0]["lr"], "lr_head": optimizer.param_groups[1]["lr"],
            "seconds": seconds,
            "frames_per_second": done * frames_per_step / max(seconds, 1e-9),
            "val_map": float("nan"),
        })
        return row


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(sum(values) / len(values)) if values else float("nan")


def read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` up to ``upto_epoch`` (a resumed run continues after it), typed
    as written; an empty cell (a NaN) is left out of its row."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (int(v) if k in INT_COLUMNS else float(v)) for k, v in row.items() if v not in ("", None)}
            for row in rows if int(row["epoch"]) <= upto_epoch]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every row so far as ``metrics.csv`` (rewritten whole, atomically); NaN as an empty cell."""
    from afsd_cli.io import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def plot_loss_curve(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Loss terms per epoch as a PNG; ``None`` when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    from afsd_cli.io import save_figure

    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for key in ("total", *TERM_NAMES):
        values = [r.get(key, float("nan")) for r in rows]
        if all(not (v > 0) for v in values):  # nothing to draw on a log axis (e.g. ssl = 0)
            continue
        axis.plot(epochs, values, marker="o", linewidth=2.2 if key == "total" else 1.2, label=key)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("weighted loss (epoch mean)")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    if axis.lines:
        axis.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    save_figure(path, figure, dpi=110)
    return path
