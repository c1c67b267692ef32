"""Timeline plots of one video's detections (and ground truth), for ``--plot``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from afsd_cli.errors import InputError
from afsd_cli.io import read_json
from afsd_cli.names import without_v_prefix


def read_ground_truth(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """``video -> [(start_s, end_s, label)]`` of every subset of a ground-truth file, read by the
    evaluation's reader (the ActivityNet-style JSON, or the THUMOS14 annotation CSV as
    ``evaluate --gt`` takes it); each video also under its other ``v_`` spelling."""
    from afsd_cli.evaluation.ground_truth import ground_truth_file_from_dict, read_ground_truth_file

    path = Path(path)
    if path.suffix.lower() == ".csv":
        truth = read_ground_truth_file(path)
    else:
        data = read_json(path, "ground-truth file")
        try:  # drawing needs no subset: entries may omit it
            truth = ground_truth_file_from_dict(data, str(path), require_subset=False)
        except InputError as exc:
            raise InputError(f"not an ActivityNet-style ground-truth JSON: {exc.message}", path) from None
    out: dict[str, list[tuple[float, float, str]]] = {}
    for video, rows in truth.instances_by_video().items():
        out[video] = rows
        out.setdefault(without_v_prefix(video), rows)
    return out


def plot_timeline(path: str | Path, video: str, detections: Sequence[dict[str, Any]],
                  duration: float | None = None, ground_truth: Sequence[tuple[float, float, str]] | None = None,
                  max_per_class: int = 10, max_classes: int = 8) -> Path:
    """One PNG: a row per class (the ``max_classes`` best-scoring ones plus every GT class); in
    each row the ``max_per_class`` best detections as thin bars, best on top, opacity = score;
    ground truth as black bars above them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from afsd_cli.io import save_figure

    ground_truth = list(ground_truth or [])
    classes, top_score = _timeline_rows(detections, ground_truth, max_classes)
    figure, axes = plt.subplots(figsize=(12, 1.2 + 0.45 * max(1, len(classes))))
    colours = plt.get_cmap("tab10")
    for row, label in enumerate(classes):
        _draw_row(axes, row, label, detections, ground_truth, max_per_class, top_score, colours(row % 10))
    end_time = duration or max([d["segment"][1] for d in detections] + [e for _, e, _ in ground_truth] + [1.0])
    _label_axes(axes, video, classes, end_time, len(detections), len(ground_truth), max_per_class)
    figure.tight_layout()
    try:
        return save_figure(path, figure, dpi=100)
    finally:
        plt.close(figure)


def _timeline_rows(detections: Sequence[dict[str, Any]], ground_truth: list[tuple[float, float, str]],
                   max_classes: int) -> tuple[list[str], float]:
    """(class of each row: the best-scoring first, then the ground truth's others; the top score)."""
    best: dict[str, float] = {}
    for det in detections:
        best[det["label"]] = max(best.get(det["label"], 0.0), det["score"])
    classes = sorted(best, key=best.get, reverse=True)[:max_classes]
    for _, _, label in ground_truth:
        if label not in classes:
            classes.append(label)
    return classes, max(best.values(), default=1.0) or 1.0


def _draw_row(axes: Any, row: int, label: str, detections: Sequence[dict[str, Any]],
              ground_truth: list[tuple[float, float, str]], max_per_class: int, top_score: float, colour: Any) -> None:
    """One class: its best detections in lanes (best on top, opacity = score), its ground truth above."""
    own = sorted((d for d in detections if d["label"] == label), key=lambda d: d["score"], reverse=True)
    lane = 0.6 / max_per_class
    for rank, det in enumerate(own[:max_per_class]):
        start, end = det["segment"]
        axes.barh(row - 0.3 + (rank + 0.5) * lane, end - start, left=start, height=lane * 0.8,
                  color=colour, alpha=min(1.0, 0.2 + 0.8 * det["score"] / top_score), linewidth=0)
    for start, end, gt_label in ground_truth:
        if gt_label == label:
            axes.barh(row - 0.38, end - start, left=start, height=0.1, color="black")


def _label_axes(axes: Any, video: str, classes: list[str], end_time: float, detections: int, ground_truth: int,
                max_per_class: int) -> None:
    axes.set_yticks(range(len(classes)), classes)
    axes.set_ylim(-0.6, max(1, len(classes)) - 0.2)
    axes.set_xlim(0, end_time)
    axes.invert_yaxis()
    axes.set_xlabel("time (s)")
    title = f"{video}: {detections} detections"
    if ground_truth:
        title += f", {ground_truth} ground-truth instances (black)"
    axes.set_title(title + f"; top {max_per_class} per class, best on top, opacity = score", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
