"""Evaluation of temporal detections (ActivityNet-style mAP, as the official AFSD uses).

Pure NumPy: nothing here imports torch, so ``afsd evaluate`` starts fast.
"""

from afsd_cli.evaluation.datasets import DATASETS, detect_dataset, parse_tiou
from afsd_cli.evaluation.detection_map import (
    Dropped,
    EvaluationResult,
    Matches,
    OutOfRange,
    evaluate_detections,
    interpolated_ap,
)
from afsd_cli.evaluation.detections import Detections, detections_from_dict, load_detections
from afsd_cli.evaluation.ground_truth import GroundTruth, ground_truth_from_dict, load_ground_truth
from afsd_cli.evaluation.matching import TIE_BREAKS

__all__ = [
    "DATASETS",
    "TIE_BREAKS",
    "Detections",
    "Dropped",
    "EvaluationResult",
    "GroundTruth",
    "Matches",
    "OutOfRange",
    "detect_dataset",
    "detections_from_dict",
    "evaluate_detections",
    "ground_truth_from_dict",
    "interpolated_ap",
    "load_detections",
    "load_ground_truth",
    "parse_tiou",
]
