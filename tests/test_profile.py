"""The dataset profile: the official configs resolve to the official procedures, custom datasets
to THUMOS14-style training at their own fps and frame size; metadata round trips; run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from afsd_cli.config import build_config, load_config
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.evaluation import load_detections, load_ground_truth
from afsd_cli.evaluation.datasets import choose_evaluation
from afsd_cli.profile import DatasetProfile, canonical_subset, held_out_subset, resolve_profile
from afsd_cli.runs import resolve_run

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_official_thumos14_config_resolves_to_the_official_procedure():
    profile = resolve_profile(load_config(CONFIGS / "thumos14.yaml"))
    assert (profile.kind, profile.head, profile.sampling, profile.sample_fps, profile.frame_size) == (
        "thumos14", "thumos14", "fps", 10.0, 112)
    assert (profile.fusion, profile.single_window, profile.output_version) == ("average", False, "THUMOS14")
    assert profile.tiou_thresholds == (0.3, 0.4, 0.5, 0.6, 0.7) and profile.test_subset == "test"
    assert len(profile.class_names) == 20 and profile.num_classes == 21
    assert profile.decode_options() == {"mode": "fps", "sample_fps": 10.0, "size": 112, "resize": "pil-bicubic"}
    assert (profile.test_clip_length, profile.test_clip_stride, profile.test_crop_size) == (256, 128, 96)


def test_official_anet_config_resolves_to_the_official_procedure():
    profile = resolve_profile(load_config(CONFIGS / "anet.yaml"))
    assert (profile.kind, profile.head, profile.sampling, profile.max_frames) == ("anet", "anet", "max_frames", 768)
    assert (profile.fusion, profile.single_window, profile.output_version) == ("geometric", True, "ActivityNet-v1.3")
    assert profile.class_names is None and profile.num_classes == 2  # the config's 201 is ignored, as officially
    assert profile.tiou_thresholds == tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
    assert profile.test_subset == "validation"
    assert profile.postprocess_thresholds(fusion=True) == (0.0, 1e-18)


def custom_config(tmp_path: Path, **dataset) -> dict:
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps({"database": {
        "a": {"subset": "train", "annotations": [{"label": "zebra crossing", "segment": [1, 2]}]},
        "b": {"subset": "test", "annotations": [{"label": "Apple", "segment": ["0.5", "3"]}]},
    }}))
    return {"dataset": {"name": "custom", "num_classes": 3, "frame_size": 48, "sample_fps": 5, "resize": "cv2-area",
                        "training": {"video_anno_path": str(anno), "crop_size": 40, "subset": "train"},
                        "testing": {"video_anno_path": str(anno), "crop_size": 40, "subset": "test"}, **dataset}}


def test_custom_profile_classes_from_the_json_in_sorted_order(tmp_path):
    profile = resolve_profile(build_config(custom_config(tmp_path)))
    assert profile.class_names == ("Apple", "zebra crossing")
    assert (profile.head, profile.sample_fps, profile.frame_size, profile.crop_size) == ("thumos14", 5.0, 48, 40)
    assert profile.decode_options() == {"mode": "fps", "sample_fps": 5.0, "size": 48, "resize": "cv2-area"}
    assert (profile.train_subset, profile.test_subset, profile.output_version) == ("train", "test", "custom")


def test_custom_profile_class_list_file_wins_and_class_count_is_checked(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra crossing\nApple\nBanana split\n")
    profile = resolve_profile(build_config(custom_config(tmp_path, class_index_path=str(classes), num_classes=4)))
    assert profile.class_names == ("zebra crossing", "Apple", "Banana split")
    classes.write_text("1 3 point shot\n2 Apple\n")  # the "<id> <name>" lines prepare writes
    profile = resolve_profile(build_config(custom_config(tmp_path, class_index_path=str(classes))))
    assert profile.class_names == ("3 point shot", "Apple")
    with pytest.raises(ConfigError, match=r"names 2 classes: set dataset.num_classes=3 \(background \+ 2\)"):
        resolve_profile(build_config(custom_config(tmp_path, num_classes=21)))


def test_profile_round_trips_through_its_dict(tmp_path):
    profile = resolve_profile(build_config(custom_config(tmp_path)))
    again = DatasetProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
    broken = profile.to_dict()
    del broken["test_subset"]
    with pytest.raises(InputError, match="missing key"):
        DatasetProfile.from_dict(broken, "det.json")


def test_subset_spellings():
    assert canonical_subset("val") == "validation" and canonical_subset("Test") == "testing"
    assert held_out_subset(["train", "val", "test"]) == "test"  # as spelled in the file
    assert held_out_subset(["training", "validation"]) == "validation"
    assert held_out_subset(["training"]) is None


def _detections(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"results": {"b": [{"label": "Apple", "segment": [0.5, 3], "score": 0.5}]}, **extra}))
    return path


def test_evaluation_choice_order_flags_then_metadata_then_version(tmp_path):
    profile = resolve_profile(build_config(custom_config(tmp_path))).to_dict()
    recorded = load_detections(_detections(tmp_path, version="custom", profile=profile))
    choice = choose_evaluation(recorded)
    assert (choice.dataset, choice.subset, choice.tiou_thresholds) == ("custom", "test", (0.3, 0.4, 0.5, 0.6, 0.7))
    flagged = choose_evaluation(recorded, subset="train", tiou_thresholds=[0.5])
    assert (flagged.subset, flagged.tiou_thresholds) == ("train", (0.5,))
    other_kind = choose_evaluation(recorded, dataset="anet")
    assert (other_kind.dataset, other_kind.subset, other_kind.tiou_thresholds) == ("anet", None, None)
    by_version = choose_evaluation(load_detections(_detections(tmp_path, version="ActivityNet-v1.3")))
    assert by_version.dataset == "anet" and by_version.origin == "the detections' version"
    nothing = choose_evaluation(load_detections(_detections(tmp_path)))
    assert nothing.dataset is None and nothing.origin == "the ground truth's layout"


def test_ground_truth_kind_comes_from_the_layout_not_the_class_names(tmp_path):
    custom = tmp_path / "gt.json"
    # THUMOS14 class names in a plain JSON: still custom (no guessing from names)
    custom.write_text(json.dumps({"database": {
        "a": {"subset": "training", "annotations": [{"label": "HighJump", "segment": [1, 2]}]},
        "b": {"subset": "validation", "annotations": [{"label": "HighJump", "segment": [1, 2]}]}}}))
    gt = load_ground_truth(custom)
    assert (gt.dataset, gt.subset, gt.videos) == ("custom", "validation", ("b",))
    anet = tmp_path / "anet.json"
    anet.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": {
        "c": {"subset": "validation", "annotations": [{"label": "Ballet", "segment": [1, 2]}]}}}))
    assert load_ground_truth(anet).dataset == "anet"


def test_resolve_run_picks_config_and_best_else_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputError, match="without config.yaml"):
        resolve_run(run)
    (run / "config.yaml").write_text("dataset: {}\n")
    with pytest.raises(InputError, match="no checkpoint"):
        resolve_run(run)
    for epoch in (2, 9, 10):
        (run / f"checkpoint-{epoch}.ckpt").write_bytes(b"x")
    assert resolve_run(run) == (run / "config.yaml", run / "checkpoint-10.ckpt")  # numeric, not lexical
    (run / "checkpoint-best.ckpt").write_bytes(b"x")
    assert resolve_run(run) == (run / "config.yaml", run / "checkpoint-best.ckpt")
    assert resolve_run(run, tmp_path / "other.ckpt") == (run / "config.yaml", tmp_path / "other.ckpt")
    assert resolve_run(tmp_path / "c.yaml", run) == (tmp_path / "c.yaml", run / "checkpoint-best.ckpt")


def test_json_annotation_errors_name_the_place(tmp_path):
    from afsd_cli.data.annotations import read_json_annotations

    path = tmp_path / "anno.json"
    path.write_text(json.dumps({"database": {"a": {"subset": "training", "annotations": [
        {"label": "x", "segment": [3, 2]}]}}}))
    with pytest.raises(InputError, match=r"database\['a'\]\['annotations'\]\[0\]\['segment'\]: end 2 is not after start 3"):
        read_json_annotations(path)
    path.write_text(json.dumps({"a": {}}))
    with pytest.raises(InputError, match="database"):
        read_json_annotations(path)
    path.write_text(json.dumps({"database": {"../escape": {"subset": "training", "annotations": []}}}))
    with pytest.raises(InputError, match="without folders"):
        read_json_annotations(path)
    csv = tmp_path / "anno.csv"
    csv.write_text("video,start,end,label\nv1,0,1,x\nv1,2,1,x\n")
    with pytest.raises(InputError, match="line 3: expected 0 <= start < end"):
        read_json_annotations(csv)


def test_video_folders_expand_and_clashing_names_are_refused(tmp_path):
    from afsd_cli.engine.jobs import expand_video_paths

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in (tmp_path / "a" / "x.mp4", tmp_path / "a" / "y.avi", tmp_path / "b" / "x.mkv"):
        path.write_bytes(b"")
    assert expand_video_paths([tmp_path / "a"]) == [tmp_path / "a" / "x.mp4", tmp_path / "a" / "y.avi"]
    assert expand_video_paths([tmp_path / "a" / "x.mp4", tmp_path / "a"]) == [tmp_path / "a" / "x.mp4",
                                                                              tmp_path / "a" / "y.avi"]
    with pytest.raises(InputError, match="two videos named 'x'"):
        expand_video_paths([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match="video file not found"):
        expand_video_paths([tmp_path / "nope.mp4"])
