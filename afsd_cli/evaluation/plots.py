"""Figures of an evaluation: precision-recall curves per tIoU threshold, per-class AP bars.

matplotlib is imported inside the functions (Agg backend, no display needed), so importing
this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from afsd_cli.evaluation.detection_map import RECALL_GRID, EvaluationResult
from afsd_cli.io import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(result: EvaluationResult, path: str | Path) -> Path:
    """Class-averaged interpolated precision against recall, one curve per threshold."""
    if result.pr_precision is None:
        raise ValueError("precision-recall curves need evaluate_detections(..., with_pr_curves=True)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(result.tiou_thresholds)))
    for t, (threshold, colour) in enumerate(zip(result.tiou_thresholds, colours)):
        label = f"tIoU {threshold:.2f}  (mAP {100 * result.mAP[t]:.1f})"
        ax.plot(RECALL_GRID, result.pr_precision[t], color=colour, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision (interpolated, mean over classes)")
    ax.set_title(f"Precision-recall, average mAP {100 * result.average_mAP:.2f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def plot_per_class_ap(result: EvaluationResult, path: str | Path) -> Path:
    """AP of each class averaged over thresholds, sorted, as horizontal bars."""
    plt = _pyplot()
    mean_ap = result.ap.mean(axis=0) if result.ap.size else np.zeros(0)
    order = np.argsort(-mean_ap, kind="stable")
    n = len(order)
    fig, ax = plt.subplots(figsize=(7.0, max(3.0, 0.18 * n + 1.2)), dpi=100)
    ax.barh(np.arange(n), 100 * mean_ap[order], color="tab:blue")
    ax.set_yticks(np.arange(n), [result.class_names[i] for i in order], fontsize=7 if n > 40 else 9)
    ax.invert_yaxis()
    ax.axvline(100 * result.average_mAP, color="tab:red", linestyle="--", label="average mAP")
    thresholds = ", ".join(f"{t:g}" for t in result.tiou_thresholds)
    ax.set(xlabel=f"AP (%) averaged over tIoU {thresholds}", xlim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        return save_figure(path, fig)
    finally:
        plt.close(fig)


def save_plots(result: EvaluationResult, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [plot_pr_curves(result, folder / "pr_curves.png"), plot_per_class_ap(result, folder / "per_class_ap.png")]
