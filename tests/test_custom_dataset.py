"""A custom dataset through the five commands of the README, with no config edit.

Four tiny videos in mixed containers and frame rates (mp4 at 25 and 30 fps, MJPG avi at 20 and
15 fps), non-THUMOS class names, 48 px frames: `prepare --annotations anno.json` writes the
arrays and dataset.yaml; `train` runs one step (overrides: epochs and clip lengths only);
`predict RUN` and `predict RUN --video` give the same detections; `evaluate` takes its subset
and thresholds from the detections' metadata. A wrong class count is refused before any run
folder exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from helpers.video_helpers import make_clip, textured_frames

runner = CliRunner()

CLASSES = ("open-door", "pour water")  # sorted: model ids 1, 2
# name: (container codec, fps, seconds, subset, actions)
VIDEOS = {
    "kitchen_01": ("mp4v", 25.0, 6.0, "training", [("pour water", 0.8, 2.6), ("open-door", 3.4, 5.2)]),
    "hall_02": ("MJPG", 20.0, 5.0, "train", [("open-door", 1.0, 3.5)]),
    "kitchen_03": ("mp4v", 30.0, 5.0, "validation", [("pour water", 1.2, 3.0)]),
    "hall_04": ("MJPG", 15.0, 4.0, "validation", [("open-door", 0.5, 2.5)]),
}
CLIPS = ["dataset.training.clip_length=32", "dataset.training.clip_stride=16",
         "dataset.testing.clip_length=32", "dataset.testing.clip_stride=16"]


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("custom")
    videos = root / "videos"
    database = {}
    for i, (name, (codec, fps, seconds, subset, actions)) in enumerate(VIDEOS.items()):
        count = int(round(fps * seconds))
        make_clip(videos / f"{name}{'.mp4' if codec == 'mp4v' else '.avi'}", fps=fps, num_frames=count,
                  size=(64, 48), fourcc=codec, frames=textured_frames(count, (64, 48), seed=i))
        database[name] = {"subset": subset, "duration": seconds,
                          "annotations": [{"label": label, "segment": [s, e]} for label, s, e in actions]}
    (root / "anno.json").write_text(json.dumps({"database": database}))
    result = invoke("prepare", videos, root / "data", "--annotations", root / "anno.json", "--size", 48, "-j", 1)
    assert result.exit_code == 0, result.output
    return root


def test_prepare_writes_arrays_and_a_complete_config(dataset):
    import yaml

    data = dataset / "data"
    for name, (_, fps, seconds, _, _) in VIDEOS.items():
        array = np.load(data / f"{name}.npy")
        assert array.dtype == np.uint8 and array.shape[1:] == (48, 48, 3)
        assert abs(array.shape[0] - seconds * 10) <= 1  # 10 fps whatever the native rate
    config = yaml.safe_load((data / "dataset.yaml").read_text())
    assert config["dataset"]["name"] == "custom" and config["dataset"]["num_classes"] == 3
    assert config["dataset"]["frame_size"] == 48 and config["dataset"]["sample_fps"] == 10.0
    assert config["dataset"]["resize"] == "pil-bicubic"
    assert config["dataset"]["training"]["subset"] == "training"
    assert config["dataset"]["testing"]["subset"] == "validation"
    assert (data / "classes.txt").read_text().splitlines() == ["1 open-door", "2 pour water"]


@pytest.fixture(scope="module")
def run(dataset) -> Path:
    runs = dataset / "runs"
    result = invoke("train", dataset / "data" / "dataset.yaml", "--name", "mine", "--runs-dir", runs,
                    "--device", "cpu", "--jobs", "0", "--max-steps", "2", "training.max_epoch=1", *CLIPS)
    assert result.exit_code == 0, result.output
    return runs / "mine"


def test_the_run_folder_records_the_profile_and_predicts_the_held_out_subset(dataset, run):
    profile = json.loads((run / "profile.json").read_text())
    assert profile["kind"] == "custom" and profile["class_names"] == list(CLASSES)
    out = dataset / "det.json"
    result = invoke("predict", run, "--output", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert set(document["results"]) == {"kitchen_03", "hall_04"}  # the validation subset only
    assert document["profile"]["test_subset"] == "validation"
    labels = {d["label"] for dets in document["results"].values() for d in dets}
    assert labels and labels <= set(CLASSES)


def test_predict_video_equals_predict_on_the_prepared_arrays(dataset, run):
    from_arrays = dataset / "det_arrays.json"
    from_videos = dataset / "det_videos.json"
    assert invoke("predict", run, "--output", from_arrays, "--device", "cpu").exit_code == 0
    result = invoke("predict", run, "--video", dataset / "videos" / "kitchen_03.mp4",
                    "--video", dataset / "videos" / "hall_04.avi", "--output", from_videos, "--device", "cpu")
    assert result.exit_code == 0, result.output
    arrays, videos = json.loads(from_arrays.read_text()), json.loads(from_videos.read_text())
    assert videos["results"] == arrays["results"]
    assert videos["profile"] == arrays["profile"]


def test_predict_video_takes_a_folder(dataset, run):
    out = dataset / "det_folder.json"
    result = invoke("predict", run, "--video", dataset / "videos", "--output", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())["results"]) == set(VIDEOS)


def test_evaluate_takes_subset_and_thresholds_from_the_metadata(dataset, run):
    predicted = dataset / "det_eval.json"
    assert invoke("predict", run, "--output", predicted, "--device", "cpu").exit_code == 0
    # The predicted file's metadata, with perfect detections of every annotated video: the
    # training videos are outside the recorded test subset, so they count as unknown videos.
    document = json.loads(predicted.read_text())
    document["results"] = {name: [{"label": label, "segment": [s, e], "score": 0.9} for label, s, e in actions]
                           for name, (_, _, _, _, actions) in VIDEOS.items()}
    perfect = dataset / "det_perfect.json"
    perfect.write_text(json.dumps(document))
    metrics = dataset / "metrics.json"
    result = invoke("evaluate", perfect, "--gt", dataset / "anno.json", "--output", metrics)
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert "0.30, 0.40, 0.50, 0.60, 0.70" in header and "subset 'validation'" in header
    assert "dataset profile" in header
    written = json.loads(metrics.read_text())
    assert written["tiou_thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7] and written["average_mAP"] == 1.0
    assert written["num_ground_truth"] == 2  # kitchen_03 and hall_04 only
    assert written["profile"] == document["profile"]


def test_wrong_class_count_is_refused_before_any_run_folder(dataset):
    runs = dataset / "refused_runs"
    result = invoke("train", dataset / "data" / "dataset.yaml", "--name", "bad", "--runs-dir", runs,
                    "--device", "cpu", "dataset.num_classes=7", *CLIPS)
    assert result.exit_code != 0
    assert "set dataset.num_classes=3" in result.output
    assert not runs.exists()


def test_a_missing_training_array_is_named_before_training(dataset, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset / "data", data)
    shutil.copy(dataset / "anno.json", tmp_path / "anno.json")  # dataset.yaml names it ../anno.json
    (data / "hall_02.npy").unlink()
    result = invoke("train", data / "dataset.yaml", "--name", "x", "--runs-dir", tmp_path / "runs",
                    "--device", "cpu", *CLIPS)
    assert result.exit_code != 0
    assert "hall_02.npy not found" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_simple_csv_converts(tmp_path, dataset):
    rows = ["video,start,end,label,subset"] + [
        f"{name},{s},{e},{label},{subset}" for name, (_, _, _, subset, actions) in VIDEOS.items()
        for label, s, e in actions]
    (tmp_path / "anno.csv").write_text("\n".join(rows) + "\n")
    result = invoke("prepare", dataset / "videos", tmp_path / "data", "--annotations", tmp_path / "anno.csv",
                    "--size", 40, "--fps", 5, "-j", 1)
    assert result.exit_code == 0, result.output
    converted = json.loads((tmp_path / "data" / "annotations.json").read_text())["database"]
    assert set(converted) == set(VIDEOS) and converted["hall_02"]["subset"] == "train"
    assert converted["hall_02"]["duration"] == pytest.approx(5.0)
    assert np.load(tmp_path / "data" / "hall_04.npy").shape == (20, 40, 40, 3)  # 4 s at 5 fps


def test_the_json_layout_trains_on_the_same_windows_as_the_thumos14_csvs(tmp_path):
    """The demo moved from the THUMOS14 CSVs to the JSON layout: same windows, same targets."""
    from afsd_cli.config import build_config, load_config
    from afsd_cli.data import synthetic
    from afsd_cli.data.datasets import build_training_dataset

    synthetic.render_dataset(tmp_path / "syn", num_videos=6, num_classes=3, seed=3, size=(64, 48),
                             video_seconds=(4.0, 5.0), action_seconds=(1.0, 1.5), actions_per_video=(1, 2))
    annotations = tmp_path / "syn" / "annotations"
    assert invoke("prepare", tmp_path / "syn" / "videos" / "train", tmp_path / "csv", "--annotations",
                  annotations / "train_Annotation.csv", "--size", 40, "-j", 1).exit_code == 0
    assert invoke("prepare", tmp_path / "syn" / "videos", tmp_path / "json", "--annotations", annotations / "gt.json",
                  "--class-names", annotations / "classes.txt", "--size", 40, "-j", 1).exit_code == 0
    sizes = {"clip_length": 32, "clip_stride": 8, "crop_size": 32}
    old = build_config({"dataset": {
        "name": "thumos14", "num_classes": 4, "class_index_path": str(annotations / "classes.txt"),
        "training": {"video_info_path": str(tmp_path / "csv" / "video_info.csv"),
                     "video_anno_path": str(annotations / "train_Annotation.csv"),
                     "video_data_path": str(tmp_path / "csv"), **sizes}}})
    new = load_config(tmp_path / "json" / "dataset.yaml", [f"dataset.training.{k}={v}" for k, v in sizes.items()])
    old_windows, new_windows = build_training_dataset(old).windows, build_training_dataset(new).windows
    assert len(old_windows) == len(new_windows) > 0
    for a, b in zip(old_windows, new_windows):
        same = ("video", "offset", "num_frames", "consistency_threshold")
        assert [getattr(a, k) for k in same] == [getattr(b, k) for k in same]
        np.testing.assert_allclose(np.asarray(a.annotations, dtype=float), np.asarray(b.annotations, dtype=float),
                                   rtol=0, atol=1e-9)
