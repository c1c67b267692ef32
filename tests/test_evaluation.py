"""`afsd_cli.evaluation` and `afsd evaluate`: loading, validation, metric details, CLI, startup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.errors import InputError
from afsd_cli.evaluation import (
    DATASETS,
    evaluate_detections,
    interpolated_ap,
    load_detections,
    load_ground_truth,
    parse_tiou,
)

DATA = Path(__file__).parent / "data" / "evaluation"
THUMOS_GT = DATA / "thumos_gt.json"
ANET_GT = DATA / "anet_subset.json"
EDGE_GT = DATA / "edge_gt.json"
EDGE_DETECTIONS = DATA / "edge_detections.json"
ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# ---------------------------------------------------------------- thresholds and datasets


def test_parse_tiou_list_and_range():
    assert parse_tiou("0.3,0.4, 0.5") == (0.3, 0.4, 0.5)
    assert parse_tiou("0.5:0.95:10") == tuple(np.linspace(0.5, 0.95, 10))
    assert parse_tiou("0.5:0.95:10") == DATASETS["anet"].tiou_thresholds
    for bad in ("", "a,b", "0.3:0.7", "0.3:0.7:0", "1.5", "-0.1,0.5"):
        with pytest.raises(InputError, match="--tiou"):
            parse_tiou(bad)


def test_dataset_detection_and_defaults():
    # The kind comes from the layout, never from class names: a JSON without an ActivityNet
    # version or taxonomy is custom (THUMOS14's thresholds, its testing subset 'test').
    thumos = load_ground_truth(THUMOS_GT)
    assert (thumos.dataset, thumos.subset, len(thumos), len(thumos.videos), len(thumos.class_names)) == (
        "custom", "test", 3311, 210, 20)
    assert load_ground_truth(THUMOS_GT, dataset="thumos14").subset == "test"
    anet = load_ground_truth(ANET_GT)
    assert (anet.dataset, anet.subset, len(anet.videos)) == ("anet", "validation", 303)
    assert load_ground_truth(THUMOS_GT, "train").subset == "train"
    with pytest.raises(InputError, match=r"no annotated video in subset 'test'.*'validation' \(303 videos\)"):
        load_ground_truth(ANET_GT, dataset="thumos14")


def test_thumos_csv_matches_json_ground_truth():
    csv_gt = load_ground_truth(DATA / "thumos14_test_Annotation.csv")
    ambiguous = sum(",Ambiguous," in line for line in (DATA / "thumos14_test_Annotation.csv").read_text().splitlines())
    assert csv_gt.dataset == "thumos14" and csv_gt.subset is None
    assert csv_gt.skipped_ambiguous == ambiguous > 0
    json_gt = load_ground_truth(THUMOS_GT)

    def instances(gt, videos):
        return sorted(
            (gt.videos[v], gt.class_names[c], s, e)
            for v, c, s, e in zip(gt.video_index, gt.label_index, gt.starts, gt.ends)
            if gt.videos[v] in videos
        )

    # The official thumos_gt.json lacks two test videos of the CSV; the rest is the same instances.
    assert set(csv_gt.videos) - set(json_gt.videos) == {"video_test_0000270", "video_test_0001496"}
    assert instances(csv_gt, set(json_gt.videos)) == instances(json_gt, set(json_gt.videos))


def test_csv_subset_column_is_honoured(tmp_path):
    path = write(tmp_path / "gt.csv", "video,type,start,end,subset\nv1,A,0.5,2.0,test\nv2,A,1,3,validation\n")
    assert load_ground_truth(path).videos == ("v1",)  # CSV -> thumos14 -> default subset 'test'
    assert load_ground_truth(path, "validation").videos == ("v2",)


# ---------------------------------------------------------------- metric details


def test_interpolated_ap_by_hand():
    # hits: yes, no, yes with 2 instances -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    ap, _, _ = interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]))
    assert ap[0] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


def test_perfect_detections_score_one():
    gt = json.loads(THUMOS_GT.read_text())
    results = {}
    for video, entry in gt["database"].items():
        if entry["subset"] == "test":
            results[video] = [{"segment": a["segment"], "label": a["label"], "score": 1.0 - 1e-4 * i}
                              for i, a in enumerate(entry["annotations"])]
    result = evaluate_detections(load_ground_truth(THUMOS_GT), {"results": results})
    np.testing.assert_array_equal(result.mAP, np.ones(5))
    assert result.tiou_thresholds.tolist() == [0.3, 0.4, 0.5, 0.6, 0.7]


def test_edge_case_counts_and_classes():
    result = evaluate_detections(load_ground_truth(EDGE_GT, "test"), load_detections(EDGE_DETECTIONS), [0.5])
    assert result.dataset == "custom" and result.subset == "test"
    # vC is in another subset, vD has no annotation (as in the official code: not a GT video), vE unknown.
    assert result.dropped.to_dict() == {
        "total": 4, "unknown_video": 3, "unknown_label": 1,
        "unknown_video_ids": ["vC", "vD", "vE"], "unknown_labels": ["Unknown"],
    }
    assert result.num_predictions == 16 and result.num_ground_truth == 10
    assert list(result.class_names) == ["X", "Y", "Z"]  # order of first appearance
    assert result.ap[0, 2] == 0.0  # Z: instances but no detection


def test_pr_curves_only_on_request(tmp_path):
    from afsd_cli.evaluation.plots import plot_pr_curves

    gt, detections = load_ground_truth(EDGE_GT, "test"), load_detections(EDGE_DETECTIONS)
    plain = evaluate_detections(gt, detections, [0.5])
    assert plain.pr_precision is None
    with pytest.raises(ValueError, match="with_pr_curves=True"):
        plot_pr_curves(plain, tmp_path / "pr.png")
    curves = evaluate_detections(gt, detections, [0.5], with_pr_curves=True).pr_precision
    assert curves.shape == (1, 101) and curves[0, 0] > 0 and np.all(np.diff(curves[0]) <= 0)


def test_strict_rejects_dropped_detections():
    with pytest.raises(InputError) as info:
        evaluate_detections(load_ground_truth(EDGE_GT, "test"), load_detections(EDGE_DETECTIONS), [0.5], strict=True)
    message = str(info.value)
    assert message.startswith(str(EDGE_DETECTIONS))
    assert "3 detection(s) in 3 video(s)" in message and "'Unknown'" in message


def test_raw_dicts_are_accepted():
    gt = json.loads(EDGE_GT.read_text())
    detections = json.loads(EDGE_DETECTIONS.read_text())
    from_dicts = evaluate_detections(gt, detections, [0.3, 0.5], subset="test")
    from_files = evaluate_detections(load_ground_truth(EDGE_GT, "test"), load_detections(EDGE_DETECTIONS), [0.3, 0.5])
    np.testing.assert_array_equal(from_dicts.ap, from_files.ap)


# ---------------------------------------------------------------- bad input


GOOD_ITEM = {"segment": [1.0, 2.0], "score": 0.5, "label": "X"}


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "file is empty"),
        ("{\n  \"results\": {,\n}", "malformed JSON at line 2 column"),
        ({"version": 1}, "missing key 'results'"),
        ([1, 2], "expected a JSON object with a 'results' key, got a list"),
        ({"results": []}, "results: expected an object"),
        ({"results": {"v": {}}}, "results['v']: expected a list of detections, got an object"),
        ({"results": {"v": [GOOD_ITEM, 3]}}, "results['v'][1]: expected an object, got a number"),
        ({"results": {"v": [{"segment": [1, 2], "label": "X"}]}}, "results['v'][0]: missing key 'score'"),
        ({"results": {"v": [GOOD_ITEM, dict(GOOD_ITEM, segment=[4.5, float("nan")])]}},
         "results['v'][1]: segment end: expected a finite number, got nan"),
        ({"results": {"v": [dict(GOOD_ITEM, segment=[1, "x"])]}}, "results['v'][0]: segment end: expected a number, got 'x'"),
        ({"results": {"v": [dict(GOOD_ITEM, segment=[1, 2, 3])]}}, "results['v'][0]: segment must be [start, end], got 3 values"),
        ({"results": {"v": [dict(GOOD_ITEM, segment=[1, None])]}}, "results['v'][0]: segment end: expected a number, got null"),
        ({"results": {"w": [GOOD_ITEM], "v": [GOOD_ITEM, dict(GOOD_ITEM, score="0.5")]}},
         "results['v'][1]['score']: expected a number, got a string"),
        ({"results": {"v": [dict(GOOD_ITEM, label=7)]}}, "results['v'][0]['label']: expected a string"),
        ("{\"results\": {\"v\": [{\"segment\": [1, 2], \"score\": NaN, \"label\": \"X\"}]}}",
         "results['v'][0]['score']: expected a finite number, got nan"),
    ],
)
def test_bad_detections_name_file_and_place(tmp_path, content, expected):
    path = write(tmp_path / "detections.json", content)
    with pytest.raises(InputError) as info:
        load_detections(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"results": {}}, "missing key 'database'"),
        ({"database": {"v": {"annotations": []}}}, "database['v']: missing key 'subset'"),
        ({"database": {"v": {"subset": "test", "annotations": {}}}}, "database['v']['annotations']: expected a list"),
        ({"database": {"v": {"subset": "test", "annotations": [{"segment": ["5.0", "2.5"], "label": "X"}]}}},
         "database['v']['annotations'][0]: segment end 2.5 < start 5"),
        ({"database": {"v": {"subset": "test", "annotations": [{"segment": [1, 2]}]}}},
         "database['v']['annotations'][0]: missing key 'label'"),
    ],
)
def test_bad_ground_truth_names_file_and_place(tmp_path, content, expected):
    path = write(tmp_path / "gt.json", content)
    with pytest.raises(InputError) as info:
        load_ground_truth(path, "test")
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)


def test_bad_csv_names_line(tmp_path):
    path = write(tmp_path / "gt.csv", "video,type,type_idx,start,end\nv1,A,1,0.5,2.0\nv1,A,1,3.0,abc\n")
    with pytest.raises(InputError, match=r"gt\.csv: line 3: segment end: expected a number, got 'abc'"):
        load_ground_truth(path)
    path = write(tmp_path / "other.csv", "name,label\nv1,A\n")
    with pytest.raises(InputError, match="line 1: missing column"):
        load_ground_truth(path)
    with pytest.raises(InputError, match="file not found"):
        load_ground_truth(tmp_path / "missing.json")


# ---------------------------------------------------------------- the command

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)], env={"COLUMNS": "200"})


def test_cli_output_json_table_and_plots(tmp_path):
    out, plots = tmp_path / "metrics.json", tmp_path / "plots"
    result = invoke(EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test", "--tiou", "0.3,0.5",
                    "--per-class", "--output", out, "--plot", plots)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    expected = evaluate_detections(load_ground_truth(EDGE_GT, "test"), load_detections(EDGE_DETECTIONS), [0.3, 0.5])
    assert {"tiou_thresholds", "mAP", "average_mAP", "per_class_ap", "num_ground_truth", "num_predictions",
            "dropped"} <= set(metrics)
    assert metrics["tiou_thresholds"] == [0.3, 0.5]
    assert metrics["mAP"] == expected.mAP.tolist() and metrics["average_mAP"] == expected.average_mAP
    assert metrics["per_class_ap"]["Y"] == expected.ap[:, 1].tolist()
    assert metrics["dropped"]["unknown_video"] == 3 and metrics["num_predictions"] == 16
    assert f"{100 * expected.average_mAP:.2f}" in result.output
    assert "AP per class" in result.output and "dropped 3 detections" in result.output
    for name in ("pr_curves.png", "per_class_ap.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_defaults_follow_the_dataset(tmp_path):
    out = tmp_path / "m.json"
    assert invoke(EDGE_DETECTIONS, "--gt", EDGE_GT, "--dataset", "thumos14", "--output", out).exit_code == 0
    assert json.loads(out.read_text())["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    detections = write(tmp_path / "anet.json", {"results": {}})
    assert invoke(detections, "--gt", ANET_GT, "--output", out).exit_code == 0
    metrics = json.loads(out.read_text())
    assert metrics["tiou_thresholds"] == list(np.linspace(0.5, 0.95, 10)) and metrics["subset"] == "validation"
    assert metrics["average_mAP"] == 0.0 and metrics["num_ground_truth"] > 300


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strict"], "(--strict)"),
        (["--dataset", "kinetics"], "unknown dataset 'kinetics'"),
        (["--tiou", "0.5:0.9:x"], "--tiou '0.5:0.9:x'"),
        (["--ties", "random"], "unknown tie-break 'random'"),
        (["--subset", "nope"], "no annotated video in subset 'nope'"),  # the last --subset wins
    ],
)
def test_cli_bad_options_fail_cleanly(tmp_path, args, message):
    out = tmp_path / "m.json"
    result = invoke(EDGE_DETECTIONS, "--gt", EDGE_GT, "--subset", "test", "--output", out, *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_bad_file_fails_cleanly(tmp_path):
    path = write(tmp_path / "detections.json", {"results": {"video_x": [GOOD_ITEM] * 3 + [dict(GOOD_ITEM, segment=[4.5, "x"])]}})
    out = tmp_path / "m.json"
    result = invoke(path, "--gt", THUMOS_GT, "--output", out)
    assert result.exit_code == 1
    assert "detections.json: results['video_x'][3]: segment end: expected a number, got 'x'" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


def test_evaluate_never_imports_torch(tmp_path):
    out = tmp_path / "m.json"
    code = (
        "import sys\n"
        "import afsd_cli.cli, afsd_cli.commands.evaluate, afsd_cli.evaluation, afsd_cli.evaluation.plots\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        "from afsd_cli.cli import app\n"
        f"try:\n    app(['evaluate', {str(EDGE_DETECTIONS)!r}, '--gt', {str(EDGE_GT)!r}, '--subset', 'test', '--output', {str(out)!r}])\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'run'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["num_predictions"] == 16
