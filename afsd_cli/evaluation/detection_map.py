"""Mean average precision of temporal detections, numerically identical to the official
ActivityNet evaluator that AFSD uses (interpolated AP, greedy matching by score)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from afsd_cli.errors import InputError
from afsd_cli.evaluation.datasets import check_thresholds, dataset_defaults
from afsd_cli.evaluation.detections import Detections, detections_from_dict
from afsd_cli.evaluation.ground_truth import GroundTruth, ground_truth_from_dict
from afsd_cli.evaluation.matching import TIE_BREAKS, match_detections, score_order

RECALL_GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class Dropped:
    """Detections the evaluation ignores (as the official evaluator silently does)."""

    unknown_video: int = 0
    unknown_label: int = 0
    unknown_video_ids: list[str] = field(default_factory=list)
    unknown_labels: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.unknown_video + self.unknown_label

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "unknown_video": self.unknown_video,
            "unknown_label": self.unknown_label,
            "unknown_video_ids": self.unknown_video_ids,
            "unknown_labels": self.unknown_labels,
        }


@dataclass
class OutOfRange:
    """Evaluated detections outside their video: scored as they are, like the official evaluator
    (``segment_iou`` in ActivityNet's Evaluation/utils.py clips only the intersection at zero)."""

    negative_start: int = 0
    past_end: int = 0  # end after the ground truth's ``duration`` (videos without one: not counted)
    videos_with_duration: int = 0  # evaluated videos whose duration the ground truth gives
    # end < start: AFSD's refined boundaries can cross (official AFSD/thumos14/test.py writes them
    # as they are); the official segment_iou gives them an intersection of 0 and they are scored
    # exactly as there.
    reversed: int = 0

    @property
    def total(self) -> int:
        return self.negative_start + self.past_end + self.reversed

    def to_dict(self) -> dict[str, Any]:
        return {
            "negative_start": self.negative_start,
            "past_end": self.past_end,
            "reversed": self.reversed,
            "videos_with_duration": self.videos_with_duration,
        }


@dataclass(frozen=True)
class Matches:
    """Which detection matched at each threshold, in the order they were visited.

    ``order[bounds[c]:bounds[c+1]]`` are the indices (into the ``Detections``) of class ``c``'s
    evaluated detections, by descending score; ``true_positive[t, k]`` says whether the
    detection ``order[k]`` matched an instance at threshold ``t`` (otherwise: false positive).
    """

    order: np.ndarray
    bounds: np.ndarray
    true_positive: np.ndarray

    def of_class(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(int(self.bounds[c]), int(self.bounds[c + 1]))
        return self.order[part], self.true_positive[:, part]


@dataclass
class EvaluationResult:
    tiou_thresholds: np.ndarray
    class_names: tuple[str, ...]
    ap: np.ndarray  # [n_thresholds, n_classes]
    mAP: np.ndarray  # [n_thresholds]
    average_mAP: float
    num_ground_truth: int
    num_predictions: int
    dropped: Dropped
    subset: str | None
    dataset: str
    tie_break: str
    # Class-averaged interpolated precision at RECALL_GRID, per threshold (with_pr_curves=True).
    pr_precision: np.ndarray | None = field(repr=False, default=None)
    matches: Matches | None = field(repr=False, default=None)
    out_of_range: OutOfRange = field(default_factory=OutOfRange)

    def per_class_ap(self) -> dict[str, list[float]]:
        return {name: self.ap[:, c].tolist() for c, name in enumerate(self.class_names)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "mAP": self.mAP.tolist(),
            "average_mAP": float(self.average_mAP),
            "per_class_ap": self.per_class_ap(),
            "num_ground_truth": self.num_ground_truth,
            "num_predictions": self.num_predictions,
            "dropped": self.dropped.to_dict(),
            "out_of_range": self.out_of_range.to_dict(),
            "subset": self.subset,
            "dataset": self.dataset,
            "num_classes": len(self.class_names),
            "tie_break": self.tie_break,
        }


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All-point interpolated AP (VOC 2011) of each row, plus the envelopes (``mprec``, ``mrec``).

    Same operations as the official code, so the same doubles: pad with (0, 0) and (0, 1),
    make precision non-increasing from the right, sum recall steps times precision (one
    ``np.sum`` per row over the steps only, as there).
    """
    precision, recall = np.atleast_2d(precision), np.atleast_2d(recall)
    rows, n = precision.shape
    mprec = np.zeros((rows, n + 2))
    mprec[:, 1:-1] = precision
    mrec = np.zeros((rows, n + 2))
    mrec[:, 1:-1] = recall
    mrec[:, -1] = 1.0
    np.maximum.accumulate(mprec[:, ::-1], axis=1, out=mprec[:, ::-1])
    changed = mrec[:, 1:] != mrec[:, :-1]
    ap = np.empty(rows)
    for r in range(rows):
        steps = np.flatnonzero(changed[r]) + 1
        ap[r] = np.sum((mrec[r, steps] - mrec[r, steps - 1]) * mprec[r, steps])
    return ap, mprec, mrec


def evaluate_detections(
    ground_truth: GroundTruth | Mapping[str, Any],
    detections: Detections | Mapping[str, Any],
    tiou_thresholds: Sequence[float] | np.ndarray | None = None,
    *,
    subset: str | None = None,
    dataset: str | None = None,
    strict: bool = False,
    tie_break: str = "official",
    with_pr_curves: bool = False,
) -> EvaluationResult:
    """mAP of ``detections`` against ``ground_truth`` at each tIoU threshold.

    ``ground_truth``: a :class:`GroundTruth` (``load_ground_truth``) or an ActivityNet-style
    dict (then ``subset``/``dataset`` select as in ``load_ground_truth``). ``detections``: a
    :class:`Detections` (``load_detections``) or a dict with a ``results`` key.
    ``tiou_thresholds=None``: the dataset's defaults. Detections of videos without annotations
    in the subset, or with labels absent from it, are dropped and counted (``strict=True``:
    ``InputError`` instead). ``tie_break``: order of equal scores, ``"official"`` (default) or
    ``"stable"``. ``with_pr_curves``: also compute ``pr_precision`` (for plots).
    """
    ground_truth, detections, thresholds = _inputs(ground_truth, detections, tiou_thresholds, subset, dataset,
                                                   tie_break)
    pred_video, pred_label = _ground_truth_indices(ground_truth, detections)
    dropped = _dropped(detections, pred_video, pred_label)
    if strict and dropped.total:
        raise InputError(_strict_message(dropped, ground_truth), detections.source)
    keep = (pred_video >= 0) & (pred_label >= 0)
    n_classes = len(ground_truth.class_names)
    order, bounds = _visiting_order(detections.scores, pred_label, keep, n_classes, tie_break)
    n_videos = len(ground_truth.videos)
    tp = match_detections(
        pred_label[order] * n_videos + pred_video[order],
        detections.starts[order],
        detections.ends[order],
        ground_truth.label_index * n_videos + ground_truth.video_index,
        ground_truth.starts,
        ground_truth.ends,
        thresholds,
        tie_break,
    )
    npos = np.bincount(ground_truth.label_index, minlength=n_classes)
    ap, pr_precision = _average_precisions(tp, bounds, npos, with_pr_curves)
    mAP = ap.mean(axis=1)
    return EvaluationResult(
        tiou_thresholds=thresholds,
        class_names=ground_truth.class_names,
        ap=ap,
        mAP=mAP,
        average_mAP=float(mAP.mean()),
        num_ground_truth=len(ground_truth),
        num_predictions=int(keep.sum()),
        dropped=dropped,
        subset=ground_truth.subset,
        dataset=ground_truth.dataset,
        tie_break=tie_break,
        pr_precision=pr_precision,
        matches=Matches(order, bounds, tp),
        out_of_range=_out_of_range(detections, ground_truth, pred_video, keep),
    )


def _inputs(ground_truth: GroundTruth | Mapping[str, Any], detections: Detections | Mapping[str, Any],
            tiou_thresholds: Sequence[float] | np.ndarray | None, subset: str | None, dataset: str | None,
            tie_break: str) -> tuple[GroundTruth, Detections, np.ndarray]:
    """The arguments of :func:`evaluate_detections` checked and in their typed form."""
    if tie_break not in TIE_BREAKS:
        raise InputError(f"unknown tie-break {tie_break!r} (choose one of: {', '.join(TIE_BREAKS)})")
    if not isinstance(ground_truth, GroundTruth):
        ground_truth = ground_truth_from_dict(ground_truth, subset, dataset)
    if not isinstance(detections, Detections):
        detections = detections_from_dict(detections)
    if tiou_thresholds is None:
        tiou_thresholds = dataset_defaults(ground_truth.dataset).tiou_thresholds
    return ground_truth, detections, np.asarray(check_thresholds(tiou_thresholds), dtype=np.float64)


def _ground_truth_indices(ground_truth: GroundTruth, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth index of each detection's video and label (-1: unknown), via one lookup per
    distinct name."""
    video_ids = {v: i for i, v in enumerate(ground_truth.videos)}
    class_ids = {c: i for i, c in enumerate(ground_truth.class_names)}
    pred_video = np.array([video_ids.get(v, -1) for v in detections.videos], dtype=np.int64)[detections.video_index]
    pred_label = np.array([class_ids.get(c, -1) for c in detections.labels], dtype=np.int64)[detections.label_index]
    return pred_video, pred_label


def _visiting_order(scores: np.ndarray, pred_label: np.ndarray, keep: np.ndarray, n_classes: int,
                    tie_break: str) -> tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: the kept detections by class and, inside a class, by score as the
    official per-class sort (which sees that class's detections in file order); class ``c`` is
    ``order[bounds[c]:bounds[c + 1]]``."""
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(pred_label[kept], kind="stable")]
    bounds = np.searchsorted(pred_label[kept], np.arange(n_classes + 1))
    order = kept.copy()
    for c in range(n_classes):
        of_class = kept[bounds[c] : bounds[c + 1]]
        order[bounds[c] : bounds[c + 1]] = of_class[score_order(scores[of_class], tie_break)]
    return order, bounds


def _average_precisions(tp: np.ndarray, bounds: np.ndarray, npos: np.ndarray, with_pr_curves: bool
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """AP ``[n_thresholds, n_classes]`` and, with ``with_pr_curves``, the class-averaged
    interpolated precision at ``RECALL_GRID`` per threshold.

    Running TP counts of all classes in one pass; a class's own counts are the difference to the
    count before its first detection. Counts are integers, exact in float64, and TP + FP after k
    detections is exactly k, so these are the official doubles.
    """
    n_thresholds, n_classes = tp.shape[0], len(npos)
    ap = np.zeros((n_thresholds, n_classes))
    pr_precision = np.zeros((n_thresholds, RECALL_GRID.size)) if with_pr_curves else None
    tp_running = np.cumsum(tp, axis=1, dtype=np.float64)
    visited = np.arange(1, tp.shape[1] + 1, dtype=np.float64)
    for c in range(n_classes):
        start, stop = int(bounds[c]), int(bounds[c + 1])
        if start == stop:
            continue  # no detection of this class: AP 0 at every threshold, as in the official code
        tp_cumsum = tp_running[:, start:stop]
        if start:
            tp_cumsum = tp_cumsum - tp_running[:, start - 1 : start]
        recall = tp_cumsum / float(npos[c])
        precision = tp_cumsum / (visited[: stop - start] if start else visited[:stop])
        ap[:, c], mprec, mrec = interpolated_ap(precision, recall)
        if pr_precision is not None:
            pr_precision += _precision_at_recall_grid(mprec, mrec)
    if pr_precision is not None and n_classes:
        pr_precision /= n_classes
    return ap, pr_precision


def _precision_at_recall_grid(mprec: np.ndarray, mrec: np.ndarray) -> np.ndarray:
    """Interpolated precision at each recall of ``RECALL_GRID`` (= best precision at any recall
    >= r), one row per threshold."""
    rows = np.empty((mprec.shape[0], RECALL_GRID.size))
    for t in range(mprec.shape[0]):
        at = np.minimum(np.searchsorted(mrec[t], RECALL_GRID, side="left"), mrec.shape[1] - 1)
        rows[t] = mprec[t, at]
    return rows


def _out_of_range(
    detections: Detections, ground_truth: GroundTruth, pred_video: np.ndarray, keep: np.ndarray
) -> OutOfRange:
    """Counts over the evaluated detections (``keep``); a NaN duration compares False."""
    durations = ground_truth.duration_array()
    video = pred_video[keep]
    with np.errstate(invalid="ignore"):
        past_end = detections.ends[keep] > durations[video]
    known = np.zeros(len(durations), dtype=bool)
    known[np.unique(video)] = True
    return OutOfRange(
        negative_start=int((detections.starts[keep] < 0).sum()),
        past_end=int(past_end.sum()),
        reversed=int((detections.ends[keep] < detections.starts[keep]).sum()),
        videos_with_duration=int((known & ~np.isnan(durations)).sum()),
    )


def _dropped(detections: Detections, pred_video: np.ndarray, pred_label: np.ndarray) -> Dropped:
    # The official code checks the video first: a detection failing both counts as unknown video.
    no_video = pred_video < 0
    no_label = ~no_video & (pred_label < 0)
    videos = sorted(detections.videos[i] for i in np.unique(detections.video_index[no_video]).tolist())
    labels = sorted(detections.labels[i] for i in np.unique(detections.label_index[no_label]).tolist())
    return Dropped(int(no_video.sum()), int(no_label.sum()), videos, labels)


def _strict_message(dropped: Dropped, ground_truth: GroundTruth) -> str:
    subset = f"subset {ground_truth.subset!r} of " if ground_truth.subset else ""
    parts = []
    if dropped.unknown_video:
        examples = ", ".join(repr(v) for v in dropped.unknown_video_ids[:3])
        parts.append(
            f"{dropped.unknown_video} detection(s) in {len(dropped.unknown_video_ids)} video(s) without "
            f"annotations in {subset}the ground truth (e.g. {examples})"
        )
    if dropped.unknown_label:
        examples = ", ".join(repr(v) for v in dropped.unknown_labels[:3])
        parts.append(
            f"{dropped.unknown_label} detection(s) with {len(dropped.unknown_labels)} label(s) absent from "
            f"{subset}the ground truth (e.g. {examples})"
        )
    return "; ".join(parts) + " (--strict)"
