"""DETAD-style error breakdown (afsd_cli/evaluation/breakdown.py) on hand-made cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from afsd_cli.evaluation import evaluate_detections, ground_truth_from_dict, load_ground_truth
from afsd_cli.evaluation.breakdown import (
    BACKGROUND,
    CONFUSION,
    DOUBLE_DETECTION,
    ERROR_TYPES,
    length_edges,
    LOCALIZATION,
    TRUE_POSITIVE,
    WRONG_LABEL,
    BestOverlap,
    best_overlaps,
    class_ranks,
    classify_detections,
    diagnose,
    false_negatives_by_length,
    false_positive_profile,
    length_bins,
    matched_instances,
    removal_gain,
)
from afsd_cli.evaluation.detections import detections_from_dict

sys.path.insert(0, str(Path(__file__).parent))
from helpers.reference_map import synthesize_detections  # noqa: E402

DATA = Path(__file__).parent / "data" / "evaluation"

# video v1: A [10, 20], B [30, 40]; video v2: A [0, 5]
GT = {
    "database": {
        "v1": {"subset": "test", "annotations": [
            {"segment": [10, 20], "label": "A"}, {"segment": [30, 40], "label": "B"}]},
        "v2": {"subset": "test", "annotations": [{"segment": [0, 5], "label": "A"}]},
    }
}


def det(segment, score, label):
    return {"segment": segment, "score": score, "label": label}


# One detection of every kind at tIoU 0.5 (the comment gives its best overlap).
DETECTIONS = {
    "results": {
        "v1": [
            det([10, 20], 0.9, "A"),  # A [10, 20], 1.0: true positive
            det([10.5, 20], 0.8, "A"),  # same instance again, 0.95: double detection
            det([11, 19], 0.7, "B"),  # A [10, 20], 0.8, other class: wrong label
            det([12, 35], 0.6, "A"),  # A [10, 20], 0.32 (B: 0.2): localization
            det([15, 28], 0.5, "B"),  # A [10, 20], 0.33, other class: confusion
            det([50, 60], 0.4, "A"),  # nothing: background
            det([30, 40], 0.95, "B"),  # B [30, 40], 1.0: true positive
        ],
        "v2": [det([0, 2], 0.1, "A")],  # A [0, 5], 0.4: localization; the instance is missed
    }
}
EXPECTED = [TRUE_POSITIVE, DOUBLE_DETECTION, WRONG_LABEL, LOCALIZATION, CONFUSION, BACKGROUND, TRUE_POSITIVE, LOCALIZATION]


def diagnosed(thresholds=(0.5,)):
    ground_truth = ground_truth_from_dict(GT, "test", "thumos14")
    detections = detections_from_dict(DETECTIONS)
    result = evaluate_detections(ground_truth, detections, thresholds)
    return ground_truth, detections, result, diagnose(ground_truth, detections, result)


def codes_in_file_order(diagnosis, t=0):
    codes = np.empty(diagnosis.detection.size, dtype=np.int8)
    codes[diagnosis.detection] = diagnosis.codes[t]
    return codes.tolist()


def test_every_error_type_of_a_constructed_case():
    _, _, _, diagnosis = diagnosed()
    assert codes_in_file_order(diagnosis) == EXPECTED


def test_error_types_depend_on_the_threshold():
    # At 0.3, [12, 35] (0.32 with A) reaches A, which is taken: a double detection; v2's (0.4) is a hit.
    _, _, _, diagnosis = diagnosed((0.3, 0.5, 0.9))
    low, mid, high = (codes_in_file_order(diagnosis, t) for t in range(3))
    assert mid == EXPECTED
    assert low[3] == DOUBLE_DETECTION and low[7] == TRUE_POSITIVE
    # [11, 19] has 0.8 with A: above 0.5, below 0.9 -> confusion at 0.9; 0.95 stays a double detection
    assert high[2] == CONFUSION and high[1] == DOUBLE_DETECTION


def test_codes_agree_with_the_metric_true_positives():
    _, _, result, diagnosis = diagnosed((0.3, 0.5, 0.7))
    assert np.array_equal(diagnosis.codes == TRUE_POSITIVE, result.matches.true_positive)
    assert np.array_equal(diagnosis.gt_matched.sum(axis=1), result.matches.true_positive.sum(axis=1))


def test_classification_boundaries():
    # tIoU exactly on the threshold counts as overlapping it; exactly MIN_TIOU is not background.
    best = BestOverlap(np.array([0, 0, 0, 0, -1, 1]), np.array([0.5, 0.1, 0.0999, 0.5, 0.0, 0.1]))
    codes = classify_detections(
        np.zeros(6, bool), det_label=np.array([0, 0, 0, 1, 0, 0]), best=best, gt_label=np.array([0, 1]), threshold=0.5
    )
    assert codes.tolist() == [DOUBLE_DETECTION, LOCALIZATION, BACKGROUND, WRONG_LABEL, BACKGROUND, CONFUSION]


def test_best_overlap_takes_the_first_of_equal_maxima_and_ignores_other_videos():
    best = best_overlaps(
        det_video=np.array([0, 1, 2]), det_start=np.array([10.0, 0.0, 0.0]), det_end=np.array([20.0, 1.0, 1.0]),
        gt_video=np.array([0, 0, 1]), gt_start=np.array([5.0, 15.0, 0.0]), gt_end=np.array([15.0, 25.0, 1.0]),
    )
    assert best.instance.tolist() == [0, 2, -1]  # both instances of video 0 have 5/15; video 2 has none
    assert best.tiou == pytest.approx([1 / 3, 1.0, 0.0])


def test_profile_counts_blocks_of_instances_per_class():
    _, _, _, diagnosis = diagnosed()
    # A has 2 instances: A's detections by score (TP .9, DD .8, LOC .6, BG .4, LOC .1) fill
    # blocks 0, 0, 1, 1, 2; B has 1: (TP .95, WL .7, CONF .5) fill blocks 0, 1, 2.
    profile = diagnosis.profile[0]
    assert profile.shape == (10, len(ERROR_TYPES))
    assert profile[0].tolist() == [2, 1, 0, 0, 0, 0]
    assert profile[1].tolist() == [0, 0, 1, 1, 0, 1]
    assert profile[2].tolist() == [0, 0, 0, 1, 1, 0]
    assert profile[3:].sum() == 0
    limited = false_positive_profile(
        codes=diagnosis.codes[0], det_label=diagnosis.label, rank=diagnosis.rank,
        instances_per_class=np.array([2, 1]), limit_factor=2,
    )
    assert limited.sum() == 6  # block 2 (one A, one B detection) is beyond 2 G


def test_class_ranks_follow_the_visiting_order():
    assert class_ranks(np.array([1, 0, 1, 0, 1]), np.array([4, 3, 0, 1, 2])).tolist() == [1, 1, 2, 0, 0]


def test_removal_gain_is_the_ap_without_that_error_type():
    # One instance; a background detection ranked above the hit: AP 0.5, 1.0 without it.
    gains = removal_gain([np.array([BACKGROUND, TRUE_POSITIVE], dtype=np.int8)], np.array([1]))
    assert gains.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.5])
    # two classes: the mean over classes moves by half of one class's gain
    gains = removal_gain(
        [np.array([LOCALIZATION, TRUE_POSITIVE], dtype=np.int8), np.array([TRUE_POSITIVE], dtype=np.int8)], np.array([1, 1])
    )
    assert gains[LOCALIZATION - 1] == pytest.approx(0.25)


def test_false_negatives_by_length_bins():
    edges = length_edges("thumos14")  # (0, 3], (3, 6], (6, 12], (12, 18], (18, inf)
    lengths = np.array([0.0, 3.0, 3.01, 6.0, 12.0, 18.0, 18.5, 100.0])
    assert length_bins(lengths, edges).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    total, missed = false_negatives_by_length(lengths, np.array([1, 0, 1, 1, 0, 1, 0, 0], bool), edges)
    assert total.tolist() == [2, 2, 1, 1, 2] and missed.tolist() == [1, 0, 1, 0, 2]
    _, _, _, diagnosis = diagnosed()
    # instances 10 s, 10 s, 5 s; the 5 s one (v2) is missed at 0.5
    assert diagnosis.length_total.tolist() == [0, 1, 2, 0, 0]
    assert diagnosis.length_missed[0].tolist() == [0, 1, 0, 0, 0]


def test_matched_instances_replays_the_greedy_choice():
    # Two instances; the first detection prefers the second (higher tIoU), the next takes the first.
    matched = matched_instances(
        true_positive=np.array([True, False]), det_group=np.array([0, 0]),
        det_start=np.array([4.0, 0.0]), det_end=np.array([12.0, 1.0]),
        gt_group=np.array([0, 0, 1]), gt_start=np.array([0.0, 3.0, 4.0]), gt_end=np.array([10.0, 12.0, 12.0]),
    )
    assert matched.tolist() == [False, True, False]


def test_thumos14_sized_breakdown_is_consistent():
    ground_truth = load_ground_truth(DATA / "thumos_gt.json", "test")
    data = json.loads((DATA / "thumos_gt.json").read_text())
    detections = detections_from_dict(synthesize_detections(data, "test", seed=3))
    result = evaluate_detections(ground_truth, detections)
    diagnosis = diagnose(ground_truth, detections, result)
    tp = result.matches.true_positive
    assert np.array_equal(diagnosis.codes == TRUE_POSITIVE, tp)
    assert np.array_equal(diagnosis.gt_matched.sum(axis=1), tp.sum(axis=1))
    assert np.array_equal(diagnosis.length_missed.sum(axis=1), len(ground_truth) - tp.sum(axis=1))
    assert (diagnosis.codes[:, ~tp.any(axis=0)] != TRUE_POSITIVE).all()
    # every error type occurs in such a set, and errors only grow with the threshold
    assert set(np.unique(diagnosis.codes).tolist()) == set(range(len(ERROR_TYPES)))
    assert (np.diff((diagnosis.codes != TRUE_POSITIVE).sum(axis=1)) >= 0).all()
