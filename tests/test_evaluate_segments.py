"""Detections starting before 0 s or ending after the video are scored exactly as the official
ActivityNet evaluator scores them (its ``segment_iou`` clips only the intersection at zero; the
union uses the raw lengths), and counted; malformed segments stay one-line errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.evaluation import evaluate_detections
from helpers.reference_map import reference_evaluate, synthesize_detections

DATA = Path(__file__).parent / "data" / "evaluation"
ANET_THRESHOLDS = np.linspace(0.5, 0.95, 10)
runner = CliRunner()


def assert_same_as_reference(gt_data: dict, det_data: dict, subset: str, thresholds) -> None:
    result = evaluate_detections(gt_data, det_data, thresholds, subset=subset, dataset="anet")
    reference = reference_evaluate(gt_data, det_data, subset, thresholds)
    assert list(result.class_names) == reference["class_names"]
    for c, name in enumerate(result.class_names):  # the same match for every detection
        _, true_positive = result.matches.of_class(c)
        expected = reference["tp"].get(name, np.zeros((len(thresholds), 0), dtype=bool))
        np.testing.assert_array_equal(true_positive, expected, err_msg=f"class {name}")
    # The loop sums AP in Python, in another order: equal to the last bits only.
    np.testing.assert_allclose(result.ap, reference["ap"], rtol=0, atol=1e-12)


def push_outside(det_data: dict, gt_data: dict, seed: int) -> dict:
    """A copy where about a third of the detections start before 0 s or end after the video."""
    rng = random.Random(seed)
    database = gt_data["database"]
    results = {}
    for video, items in det_data["results"].items():
        duration = float(database[video]["duration"]) if video in database else 100.0
        moved = []
        for item in items:
            start, end = item["segment"]
            draw = rng.random()
            if draw < 0.15:
                start = -rng.random() * (end - start + 5.0)
            elif draw < 0.3:
                end = max(start, duration) + rng.random() * duration
            elif draw < 0.35:
                start, end = -rng.random() * 3.0, max(end, duration) + rng.random() * 3.0
            moved.append(dict(item, segment=[start, end]))
        results[video] = moved
    return {"results": results}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_out_of_video_segments_match_the_reference_loop(seed):
    gt_data = json.loads((DATA / "anet_subset.json").read_text())
    det_data = push_outside(synthesize_detections(gt_data, "validation", seed=seed), gt_data, seed)
    starts = [d["segment"][0] for items in det_data["results"].values() for d in items]
    assert sum(s < 0 for s in starts) > 20  # the case really has them
    assert_same_as_reference(gt_data, det_data, "validation", ANET_THRESHOLDS)


def crowded_case() -> tuple[dict, dict]:
    """One video with 30 instances of a class (so the vectorised search narrows the candidate
    range) and detections reaching far outside it, up to the float limits."""
    annotations = [{"segment": [10.0 * k, 10.0 * k + 6.0], "label": "Run"} for k in range(30)]
    gt = {"database": {"v": {"subset": "validation", "duration": 300.0, "annotations": annotations}}}
    segments = [
        [-0.73, 6.0], [-5.0, 5.0], [-4.0, 16.0], [286.0, 400.0], [290.0, 296.5], [288.0, 1e6],
        [-1.7e308, 3.0], [289.0, 1.7e308], [-1.7e308, 1.7e308], [-3.0, -1.0], [-2.0, -2.0],
        [301.0, 350.0], [100.0, 106.0], [99.0, 107.5], [-0.1, 0.0], [296.0, 296.0],
    ]
    scores = [0.9, 0.85, 0.8, 0.75, 0.7, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2]
    items = [{"segment": s, "score": p, "label": "Run"} for s, p in zip(segments, scores)]
    # A second video with the same instances: the search spans several (class, video) groups.
    gt["database"]["u"] = dict(gt["database"]["v"], duration=None)
    shifted = [dict(item, score=item["score"] - 0.01) for item in items[:9]]
    return gt, {"results": {"v": items, "u": shifted}}


def test_crowded_video_and_extreme_values_match_the_reference_loop():
    gt, det = crowded_case()
    assert_same_as_reference(gt, det, "validation", ANET_THRESHOLDS)
    assert_same_as_reference(gt, det, "validation", [0.1, 0.3, 0.5])


def test_tiou_of_a_negative_start_uses_the_raw_length():
    # [-1, 1] against [0, 1]: intersection 1, union 2 + 1 - 1 = 2 -> 0.5 (clipping the start
    # to 0 would give 1.0): a true positive at 0.5, a false positive above.
    gt = {"database": {"v": {"subset": "validation", "annotations": [{"segment": [0, 1], "label": "A"}]}}}
    det = {"results": {"v": [{"segment": [-1, 1], "score": 1.0, "label": "A"}]}}
    result = evaluate_detections(gt, det, [0.5, 0.51], subset="validation", dataset="anet")
    assert result.ap[:, 0].tolist() == [1.0, 0.0]


def test_counts_of_negative_starts_and_past_ends():
    gt, det = crowded_case()
    gt["database"]["w"] = {"subset": "validation", "annotations": [{"segment": [1, 2], "label": "Run"}]}  # no duration
    det["results"]["w"] = [{"segment": [-1, 500], "score": 0.5, "label": "Run"}]
    det["results"]["elsewhere"] = [{"segment": [-1, 2], "score": 0.5, "label": "Run"}]  # dropped, not counted
    result = evaluate_detections(gt, det, [0.5], subset="validation", dataset="anet")
    items = det["results"]["v"] + det["results"]["u"] + det["results"]["w"]
    assert result.out_of_range.negative_start == sum(d["segment"][0] < 0 for d in items) == 14
    # Only "v" gives its duration ("u" has null, "w" none).
    assert result.out_of_range.past_end == sum(d["segment"][1] > 300 for d in det["results"]["v"]) == 5
    assert result.to_dict()["out_of_range"] == {"negative_start": 14, "past_end": 5, "reversed": 0, "videos_with_duration": 1}


def test_thumos_csv_has_no_duration_so_only_negative_starts_are_counted(tmp_path):
    csv = tmp_path / "gt.csv"
    csv.write_text("video,type,start,end\nvid,Run,1.0,3.0\n")
    det = {"results": {"vid": [{"segment": [-1, 3], "score": 0.9, "label": "Run"},
                               {"segment": [2, 9e9], "score": 0.8, "label": "Run"}]}}
    from afsd_cli.evaluation import load_ground_truth

    result = evaluate_detections(load_ground_truth(csv, dataset="thumos14"), det, [0.5])
    assert result.to_dict()["out_of_range"] == {"negative_start": 1, "past_end": 0, "reversed": 0, "videos_with_duration": 0}


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


def test_cli_reports_the_counts_and_writes_them(tmp_path):
    gt, det = crowded_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "det.json").write_text(json.dumps(det))
    code, text = invoke("evaluate", tmp_path / "det.json", "--gt", tmp_path / "gt.json", "--dataset", "anet",
                        "-o", tmp_path / "m.json")
    assert code == 0, text
    assert "13 start before 0 s and 5 end after the video's duration" in " ".join(text.split())
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["out_of_range"] == {"negative_start": 13, "past_end": 5, "reversed": 0, "videos_with_duration": 1}
    reference = reference_evaluate(gt, det, "validation", ANET_THRESHOLDS)
    np.testing.assert_allclose(metrics["mAP"], reference["mAP"], rtol=0, atol=1e-12)
    assert metrics["average_mAP"] > 0


@pytest.mark.parametrize(
    "segment_json, message",
    [
        ("[NaN, 2]", "results['v'][0]: segment start: expected a finite number, got nan"),
        ("[1, Infinity]", "results['v'][0]: segment end: expected a finite number, got inf"),
        ("[-Infinity, 1]", "results['v'][0]: segment start: expected a finite number, got -inf"),
        ('["abc", 2]', "results['v'][0]: segment start: expected a number, got 'abc'"),
    ],
)
def test_malformed_segments_stay_one_line_errors(tmp_path, segment_json, message):
    gt = {"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1], "label": "Run"}]}}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    det = tmp_path / "det.json"
    det.write_text('{"results": {"v": [{"segment": %s, "score": 0.5, "label": "Run"}]}}' % segment_json)
    code, text = invoke("evaluate", det, "--gt", tmp_path / "gt.json", "--dataset", "thumos14")
    assert code == 1
    assert "Traceback" not in text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(" ".join(lines).split("error: ")) == 2  # one error
    assert f"{det}: {message}" in " ".join(text.split()).replace(" \n", "")


def reverse_some(det_data: dict, seed: int) -> dict:
    """A copy where about a quarter of the detections have their ends swapped (end < start), as
    AFSD's refined boundaries sometimes come out."""
    rng = random.Random(seed)
    results = {}
    for video, items in det_data["results"].items():
        results[video] = [dict(item, segment=item["segment"][::-1]) if rng.random() < 0.25 else item for item in items]
    return {"results": results}


@pytest.mark.parametrize("seed", [0, 1])
def test_reversed_segments_are_scored_as_the_reference_loop_scores_them(seed):
    gt_data = json.loads((DATA / "anet_subset.json").read_text())
    det_data = reverse_some(synthesize_detections(gt_data, "validation", seed=seed), seed)
    assert_same_as_reference(gt_data, det_data, "validation", ANET_THRESHOLDS)


def test_a_reversed_segment_with_a_zero_union_follows_the_official_quirk():
    """[1, 0] against [0, 1]: intersection 0, union 1 + (-1) = 0, tIoU 0/0 = NaN, which the
    official comparison (``tiou < threshold`` is False for NaN) lets match."""
    gt = {"database": {"v": {"subset": "validation", "duration": 5.0,
                             "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]}}}
    det = {"results": {"v": [{"segment": [1.0, 0.0], "score": 0.9, "label": "Run"},
                             {"segment": [3.0, 2.0], "score": 0.8, "label": "Run"}]}}
    assert_same_as_reference(gt, det, "validation", ANET_THRESHOLDS)
    result = evaluate_detections(gt, det, ANET_THRESHOLDS, subset="validation", dataset="anet")
    assert result.to_dict()["out_of_range"]["reversed"] == 2


def test_cli_counts_reversed_segments(tmp_path):
    gt = {"database": {"v": {"subset": "validation", "duration": 10.0,
                             "annotations": [{"segment": [2.0, 4.0], "label": "Run"}]}}}
    det = {"results": {"v": [{"segment": [2.0, 4.0], "score": 0.9, "label": "Run"},
                             {"segment": [4.5, 1.2], "score": 0.8, "label": "Run"}]}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "det.json").write_text(json.dumps(det))
    code, text = invoke("evaluate", tmp_path / "det.json", "--gt", tmp_path / "gt.json", "--dataset", "anet",
                        "-o", tmp_path / "m.json")
    assert code == 0, text
    assert "1 ends before its start" in " ".join(text.split())
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["out_of_range"]["reversed"] == 1
    assert metrics["average_mAP"] == pytest.approx(1.0)
