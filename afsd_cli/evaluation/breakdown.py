"""Where the errors are: a false-positive and false-negative breakdown after DETAD
(Alwassel, Caba Heilbron, Escorcia and Ghanem, "Diagnosing Error in Temporal Action Detectors",
ECCV 2018; rules as in their code, HumamAlwassel/DETAD ``src/action_detector_diagnosis.py``).

At a tIoU threshold ``t``, a detection the metric counted as a true positive stays one; every
false positive is labelled by the ground-truth instance of its video with the highest tIoU
(any class, the first one on equal tIoUs, as DETAD's ``argmax``):

* tIoU >= t, same class: **double detection** (that instance was already taken by a higher score);
* tIoU >= t, other class: **wrong label**;
* ``MIN_TIOU`` (0.1) <= tIoU < t, same class: **localization** error;
* ``MIN_TIOU`` <= tIoU < t, other class: **confusion** (wrong label and location);
* tIoU < ``MIN_TIOU`` with every instance: **background**.

As DETAD (``limit_factor=10`` in ``false_positive_analysis.py``), the false-positive profile
looks at the ``LIMIT_FACTOR * G_c`` best-scored detections of each class ``c`` (``G_c``: its
instances), in blocks of ``G_c``: block ``k`` holds the detections of rank ``[k G_c, (k+1) G_c)``
in their class. False negatives are the instances no detection matched, binned by length
(DETAD's bins: THUMOS14 0-3-6-12-18 s, ActivityNet 0-30-60-120-180 s).

Plain NumPy functions of arrays; :func:`diagnose` runs them all on an evaluation result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from afsd_cli.evaluation.detection_map import EvaluationResult, interpolated_ap
from afsd_cli.evaluation.detections import Detections
from afsd_cli.evaluation.ground_truth import GroundTruth
from afsd_cli.evaluation.matching import _visit_order, segment_tiou

ERROR_TYPES = ("true_positive", "double_detection", "wrong_label", "localization", "confusion", "background")
TRUE_POSITIVE, DOUBLE_DETECTION, WRONG_LABEL, LOCALIZATION, CONFUSION, BACKGROUND = range(len(ERROR_TYPES))
MIN_TIOU = 0.1  # DETAD's min_tiou_thr: below it a detection overlaps nothing
LIMIT_FACTOR = 10  # DETAD's limit_factor: the best 10 G_c detections of each class are profiled
LENGTH_NAMES = ("XS", "S", "M", "L", "XL")
# Lower edges of the length bins in seconds (DETAD's false_negative_analysis.py; bins are (a, b]).
def length_edges(dataset: str) -> tuple[float, ...]:
    """The instance-length bins (seconds) of the dataset profile (``afsd_cli/profile.py``)."""
    from afsd_cli.profile import KIND_RULES, KindRules

    rules = KIND_RULES.get(dataset)
    return rules.length_bins if rules is not None else KindRules.__dataclass_fields__["length_bins"].default


@dataclass(frozen=True)
class BestOverlap:
    """For each detection: the instance of its video with the highest tIoU (-1 if the video has
    none) and that tIoU (0 when none)."""

    instance: np.ndarray
    tiou: np.ndarray


def best_overlaps(det_video, det_start, det_end, gt_video, gt_start, gt_end) -> BestOverlap:
    """Highest-tIoU instance of every detection among all instances of its video (any class).

    A 0/0 tIoU (zero-length detection on a zero-length instance) counts as 0 here.
    """
    det_video, gt_video = np.asarray(det_video), np.asarray(gt_video)
    instance = np.full(det_video.shape[0], -1, dtype=np.int64)
    best = np.zeros(det_video.shape[0])
    gt_order = np.argsort(gt_video, kind="stable")  # each video's instances in file order
    gt_bounds = np.searchsorted(gt_video[gt_order], np.arange(int(max(gt_video.max(initial=-1), det_video.max(initial=-1))) + 2))
    det_order = np.argsort(det_video, kind="stable")
    det_bounds = np.searchsorted(det_video[det_order], np.arange(gt_bounds.size))
    for video in np.flatnonzero(np.diff(det_bounds)):
        dets = det_order[det_bounds[video] : det_bounds[video + 1]]
        gts = gt_order[gt_bounds[video] : gt_bounds[video + 1]]
        if gts.size == 0:
            continue
        pairs = np.broadcast_arrays(
            det_start[dets][:, None], det_end[dets][:, None], np.asarray(gt_start)[gts][None, :], np.asarray(gt_end)[gts][None, :]
        )
        tiou = segment_tiou(*(np.array(a, dtype=np.float64) for a in pairs))
        tiou = np.nan_to_num(tiou, nan=0.0)
        column = np.argmax(tiou, axis=1)  # first of equal maxima, as DETAD
        instance[dets] = gts[column]
        best[dets] = tiou[np.arange(dets.size), column]
    return BestOverlap(instance, best)


def classify_detections(
    true_positive, det_label, best: BestOverlap, gt_label, threshold: float, min_tiou: float = MIN_TIOU
) -> np.ndarray:
    """Error type code (index into ``ERROR_TYPES``) of each detection at ``threshold``."""
    true_positive = np.asarray(true_positive, dtype=bool)
    has = best.instance >= 0
    same = has & (np.asarray(gt_label)[np.maximum(best.instance, 0)] == np.asarray(det_label))
    high = has & (best.tiou >= threshold)
    middle = has & ~high & (best.tiou >= min_tiou)
    codes = np.full(true_positive.shape[0], BACKGROUND, dtype=np.int8)
    codes[high & same] = DOUBLE_DETECTION
    codes[high & ~same] = WRONG_LABEL
    codes[middle & same] = LOCALIZATION
    codes[middle & ~same] = CONFUSION
    codes[true_positive] = TRUE_POSITIVE
    return codes


def class_ranks(det_label, order) -> np.ndarray:
    """Rank of each detection inside its class when visited in ``order`` (0 = best score)."""
    det_label = np.asarray(det_label)
    order = np.asarray(order)
    rank = np.empty(order.size, dtype=np.int64)
    labels = det_label[order]
    by_label = np.argsort(labels, kind="stable")  # keeps the visiting order inside a class
    starts = np.searchsorted(labels[by_label], labels[by_label])
    rank[order[by_label]] = np.arange(order.size) - starts
    return rank


def false_positive_profile(codes, det_label, rank, instances_per_class, limit_factor: int = LIMIT_FACTOR) -> np.ndarray:
    """Counts ``[limit_factor, len(ERROR_TYPES)]``: row ``k`` counts the error types of the
    detections ranked ``[k G_c, (k+1) G_c)`` in their class ``c`` (``G_c`` its instances)."""
    per_class = np.asarray(instances_per_class)[np.asarray(det_label)]
    block = np.asarray(rank) // np.maximum(per_class, 1)
    keep = (block < limit_factor) & (per_class > 0)
    flat = block[keep] * len(ERROR_TYPES) + np.asarray(codes)[keep]
    return np.bincount(flat, minlength=limit_factor * len(ERROR_TYPES)).reshape(limit_factor, len(ERROR_TYPES))


def removal_gain(codes_by_class, instances_per_class) -> np.ndarray:
    """mAP gain from removing each error type (``ERROR_TYPES[1:]``), DETAD's "removing error impact".

    ``codes_by_class[c]``: the codes of class ``c``'s detections in visiting order. AP is the
    interpolated AP as in :mod:`detection_map`, before and after dropping that type's detections.
    """
    n_classes = len(codes_by_class)
    gains = np.zeros(len(ERROR_TYPES) - 1)
    if n_classes == 0:
        return gains
    base = np.array([_ap(codes, npos) for codes, npos in zip(codes_by_class, instances_per_class)])
    for error in range(1, len(ERROR_TYPES)):
        kept = [_ap(codes[codes != error], npos) for codes, npos in zip(codes_by_class, instances_per_class)]
        gains[error - 1] = float(np.mean(kept) - np.mean(base))
    return gains


def _ap(codes: np.ndarray, npos: int) -> float:
    if codes.size == 0 or npos == 0:
        return 0.0
    tp = np.cumsum(codes == TRUE_POSITIVE, dtype=np.float64)
    precision = tp / np.arange(1, codes.size + 1)
    return float(interpolated_ap(precision, tp / npos)[0][0])


def length_bins(lengths, edges) -> np.ndarray:
    """Bin index of each length: bins are ``(edges[i], edges[i+1]]``, the first includes 0."""
    return np.searchsorted(np.asarray(edges[1:], dtype=np.float64), np.asarray(lengths), side="left")


def false_negatives_by_length(lengths, matched, edges) -> tuple[np.ndarray, np.ndarray]:
    """``(instances, missed)`` per length bin; ``matched[i]``: whether instance ``i`` was matched."""
    bins = length_bins(lengths, edges)
    total = np.bincount(bins, minlength=len(edges))
    missed = np.bincount(bins[~np.asarray(matched, dtype=bool)], minlength=len(edges))
    return total, missed


def matched_instances(
    true_positive, det_group, det_start, det_end, gt_group, gt_start, gt_end, tie_break: str = "official"
) -> np.ndarray:
    """Which instances the true positives took, for detections in visiting order.

    ``true_positive``: flags at one threshold (from the metric). Each true positive took the
    not yet taken instance of its group (class, video) with the highest tIoU, visiting equal
    tIoUs in the metric's order (``matching._visit_order``); this replays that choice.
    """
    matched = np.zeros(np.asarray(gt_group).shape[0], dtype=bool)
    gt_order = np.argsort(gt_group, kind="stable")  # a group's instances in file order, as the metric's rows
    sorted_groups = np.asarray(gt_group)[gt_order]
    for p in np.flatnonzero(true_positive).tolist():
        lo, hi = np.searchsorted(sorted_groups, det_group[p], side="left"), np.searchsorted(sorted_groups, det_group[p], side="right")
        ids = gt_order[lo:hi]
        row = segment_tiou(det_start[p], det_end[p], gt_start[ids], gt_end[ids])
        for j in _visit_order(row, tie_break).tolist():
            if not matched[ids[j]]:
                matched[ids[j]] = True
                break
    return matched


@dataclass
class Diagnosis:
    """The breakdown of one detection file, at every threshold of its evaluation.

    Per evaluated detection (``detection`` indexes the :class:`Detections`): its video and
    class (ground-truth indices), best-overlap instance and tIoU, rank in its class, and the
    error code at each threshold. Per threshold: the false-positive profile, the mAP gain of
    removing each error type, the instances matched, and false negatives per length bin.
    """

    thresholds: np.ndarray
    detection: np.ndarray
    video: np.ndarray
    label: np.ndarray
    best: BestOverlap
    rank: np.ndarray
    codes: np.ndarray  # [n_thresholds, n_evaluated]
    profile: np.ndarray  # [n_thresholds, limit_factor, len(ERROR_TYPES)]
    gain: np.ndarray  # [n_thresholds, len(ERROR_TYPES) - 1]
    gt_matched: np.ndarray  # [n_thresholds, n_instances]
    length_edges: tuple[float, ...]
    length_total: np.ndarray  # [n_bins]
    length_missed: np.ndarray  # [n_thresholds, n_bins]
    limit_factor: int

    def profile_totals(self, t: int) -> np.ndarray:
        """Error-type counts over all profiled detections (the best ``limit_factor * G_c``)."""
        return self.profile[t].sum(axis=0)


def diagnose(
    ground_truth: GroundTruth,
    detections: Detections,
    result: EvaluationResult,
    *,
    limit_factor: int = LIMIT_FACTOR,
    min_tiou: float = MIN_TIOU,
) -> Diagnosis:
    """The DETAD-style breakdown of ``detections`` (as evaluated in ``result``) at each threshold."""
    if result.matches is None:
        raise ValueError("the evaluation result carries no matches")
    matches = result.matches
    visited = _visited_detections(ground_truth, detections, matches.order)
    best = best_overlaps(visited.video, visited.start, visited.end,
                         ground_truth.video_index, ground_truth.starts, ground_truth.ends)
    npos = np.bincount(ground_truth.label_index, minlength=len(ground_truth.class_names))
    rank = class_ranks(visited.label, np.arange(matches.order.size))  # `order` already visits each class by score
    edges = length_edges(ground_truth.dataset)
    lengths = ground_truth.ends - ground_truth.starts
    steps = [
        _breakdown_at(threshold, matches.true_positive[t], matches.bounds, ground_truth, visited, best, rank, npos,
                      edges, result.tie_break, limit_factor, min_tiou)
        for t, threshold in enumerate(result.tiou_thresholds)
    ]
    n_thr, n_evaluated = len(result.tiou_thresholds), matches.order.size
    return Diagnosis(
        thresholds=np.asarray(result.tiou_thresholds),
        detection=matches.order,
        video=visited.video,
        label=visited.label,
        best=best,
        rank=rank,
        codes=np.array([step.codes for step in steps], dtype=np.int8).reshape(n_thr, n_evaluated),
        profile=np.array([step.profile for step in steps]).reshape(n_thr, limit_factor, len(ERROR_TYPES)),
        gain=np.array([step.gain for step in steps]).reshape(n_thr, len(ERROR_TYPES) - 1),
        gt_matched=np.array([step.matched for step in steps], dtype=bool).reshape(n_thr, len(ground_truth)),
        length_edges=tuple(edges),
        length_total=false_negatives_by_length(lengths, np.ones(len(ground_truth), bool), edges)[0],
        length_missed=np.array([step.missed for step in steps]).reshape(n_thr, len(edges)),
        limit_factor=limit_factor,
    )


@dataclass(frozen=True)
class _Visited:
    """The evaluated detections in the metric's visiting order: ground-truth video and class
    indices (-1: none), bounds in seconds, and the (class, video) group of each."""

    video: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray
    group: np.ndarray


def _visited_detections(ground_truth: GroundTruth, detections: Detections, order: np.ndarray) -> _Visited:
    video_ids = {v: i for i, v in enumerate(ground_truth.videos)}
    class_ids = {c: i for i, c in enumerate(ground_truth.class_names)}
    video = np.array([video_ids.get(v, -1) for v in detections.videos], dtype=np.int64)[detections.video_index][order]
    label = np.array([class_ids.get(c, -1) for c in detections.labels], dtype=np.int64)[detections.label_index][order]
    return _Visited(video, label, detections.starts[order], detections.ends[order],
                    label * len(ground_truth.videos) + video)


class _ThresholdBreakdown(NamedTuple):
    codes: np.ndarray  # error type of each visited detection
    profile: np.ndarray  # false-positive profile [limit_factor, len(ERROR_TYPES)]
    gain: np.ndarray  # mAP gain of removing each error type
    matched: np.ndarray  # instances the true positives took
    missed: np.ndarray  # false negatives per length bin


def _breakdown_at(threshold: float, true_positive: np.ndarray, bounds: np.ndarray, ground_truth: GroundTruth,
                  visited: _Visited, best: BestOverlap, rank: np.ndarray, npos: np.ndarray, edges: tuple[float, ...],
                  tie_break: str, limit_factor: int, min_tiou: float) -> _ThresholdBreakdown:
    """Every part of the breakdown at one threshold (``true_positive``: the metric's flags there)."""
    codes = classify_detections(true_positive, visited.label, best, ground_truth.label_index, threshold, min_tiou)
    profile = false_positive_profile(codes, visited.label, rank, npos, limit_factor)
    profiled = rank < limit_factor * npos[visited.label]
    by_class = [codes[lo:hi][profiled[lo:hi]] for lo, hi in zip(bounds[:-1], bounds[1:])]
    gt_group = ground_truth.label_index * len(ground_truth.videos) + ground_truth.video_index
    matched = matched_instances(true_positive, visited.group, visited.start, visited.end, gt_group,
                                ground_truth.starts, ground_truth.ends, tie_break)
    _, missed = false_negatives_by_length(ground_truth.ends - ground_truth.starts, matched, edges)
    return _ThresholdBreakdown(codes, profile, removal_gain(by_class, npos), matched, missed)
