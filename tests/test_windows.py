"""Training/inference windows and annotation readers against the official THUMOS14 goldens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from afsd_cli.data.annotations import (
    read_anet_video_info,
    read_class_index,
    read_thumos_annotations,
    read_video_info_csv,
    thumos14_class_index,
)
from afsd_cli.data.windows import (
    anet_training_windows,
    boundary_masks,
    normalised_targets,
    test_window_offsets,
    thumos_training_windows,
    train_window_offsets,
)
from afsd_cli.errors import InputError

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_training" / "windows_thumos_val.json"


@pytest.fixture(scope="module")
def val_windows():
    infos = read_video_info_csv(DATA / "thumos14" / "val_video_info.csv")
    annotations = read_thumos_annotations(DATA / "thumos14" / "val_Annotation_ours.csv", infos)
    windows, thresholds = thumos_training_windows(infos, annotations, 256, 30)
    return infos, annotations, windows, thresholds


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


def _runs(mask: np.ndarray) -> list[list[int]]:
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def test_readers_on_the_real_val_set(val_windows, golden):
    infos, annotations, _, _ = val_windows
    assert len(infos) == golden["n_videos_in_info"] == 200
    assert len(annotations) == golden["n_videos_annotated"]
    assert sum(len(a) for a in annotations.values()) == golden["n_annotations"] == 3007
    first = annotations["video_validation_0000051"][0]
    # 2025 native frames x 1697 / 5091 sampled frames per native frame
    assert first.start == pytest.approx(2025 * 1697 / 5091) and first.label == 3


def test_whole_window_list_matches_aggregates(val_windows, golden):
    _, _, windows, thresholds = val_windows
    agg = golden["aggregates_over_all_windows"]
    annos = [a for w in windows for a in w.annotations]
    assert len(windows) == agg["n_windows"] == 7842
    assert len(annos) == agg["n_targets"]
    assert sum(a.start for a in annos) == pytest.approx(agg["sum_target_start_frames"], rel=1e-12)
    assert sum(a.end for a in annos) == pytest.approx(agg["sum_target_end_frames"], rel=1e-12)
    assert sum(a.label for a in annos) == agg["sum_labels"]
    assert sum(a.start == 1 for a in annos) == agg["n_targets_with_start_eq_1"]
    assert sum(a.end == 256 for a in annos) == agg["n_targets_with_end_eq_256"]
    masks = [boundary_masks(w.annotations, 256) for w in windows]
    assert sum(int(m[0].sum()) for m in masks) == agg["sum_start_mask_ones"]
    assert sum(int(m[1].sum()) for m in masks) == agg["sum_end_mask_ones"]
    assert thresholds == golden["th_per_video"]


def test_window_order_and_offsets(val_windows, golden):
    _, _, windows, _ = val_windows
    offsets: dict[str, list[int]] = {}
    for window in windows:
        offsets.setdefault(window.video, []).append(window.offset)
    assert list(offsets.items()) == list(golden["offsets_per_video_in_training_list_order"].items())
    for video in golden["annotated_videos_without_any_window"]:
        assert video not in offsets


def test_selected_windows_exactly(val_windows, golden):
    _, _, windows, _ = val_windows
    for expected in golden["windows"]:
        window = windows[expected["index"]]
        assert (window.video, window.offset) == (expected["video_name"], expected["offset"])
        assert [list(a) for a in window.annotations] == expected["targets_frames"]
        # the golden stores the float64 quotient; the loss receives it as float32
        np.testing.assert_array_equal(
            normalised_targets(window.annotations, 256),
            np.asarray(expected["targets_normalised"], dtype=np.float64).astype(np.float32),
        )
        masks = boundary_masks(window.annotations, 256)
        assert _runs(masks[0]) == expected["start_mask_ranges"]
        assert _runs(masks[1]) == expected["end_mask_ranges"]
        assert window.consistency_threshold == expected["th_of_video"]


def test_offsets_training_vs_inference():
    assert train_window_offsets(256, 256, 30) == [0]  # n <= L
    assert test_window_offsets(256, 256, 128) == [0]
    assert test_window_offsets(255, 256, 128) == [0]
    assert train_window_offsets(300, 256, 30) == [0, 30, 44]
    assert test_window_offsets(300, 256, 128) == [0, 44]
    assert test_window_offsets(512, 256, 128) == [0, 128, 256]
    assert train_window_offsets(346, 256, 30) == [0, 30, 60, 90]


def test_mask_rounding_is_half_to_even():
    # s = 10, d = 2 -> [round(9), round(11)] ; s = 10.5 -> round(9.5) = 10 (half to even), round(11.5) = 12
    masks = boundary_masks([(10.0, 30.0, 1), (50.5, 70.5, 2)], 100)
    assert _runs(masks[0]) == [[9, 12], [50, 53]]
    assert _runs(masks[1]) == [[29, 32], [70, 73]]
    with_action = boundary_masks([(10.0, 30.0, 1)], 100, with_action=True)
    assert _runs(with_action[0]) == [[10, 31]]


def test_anet_clips(tmp_path):
    info = {
        "v_a": {"subset": "training", "duration": 10.0, "frame_num": 900, "fps": 90.0,
                "annotations": [{"start_frame": 10.0, "end_frame": 100.5, "label": "x", "label_id": 7},
                                {"start_frame": 50.0, "end_frame": 50.0, "label": "x", "label_id": 7}]},
        "v_b": {"subset": "training", "duration": 1.0, "frame_num": 30, "fps": 30.0, "annotations": []},
        "v_c": {"subset": "validation", "duration": 1.0, "frame_num": 30, "fps": 30.0, "annotations": []},
    }
    path = tmp_path / "info.json"
    path.write_text(json.dumps(info))
    infos, annotations = read_anet_video_info(path, "training")
    assert list(infos) == ["v_a", "v_b"] and list(annotations) == ["v_a"]
    assert annotations["v_a"] == [(10.0, 100.5, 1)]  # binarised; the empty one dropped
    windows, th = anet_training_windows(infos, annotations, 768)
    assert len(windows) == 1 and windows[0].offset == 0 and windows[0].num_frames == 768
    assert th == {"v_a": 90} and windows[0].consistency_threshold == 22


def test_malformed_inputs_name_file_and_line(tmp_path):
    info = tmp_path / "info.csv"
    info.write_text("video,fps,sample_fps,count,sample_count\nv1,30.0,10.0,300.0,100\nv2,30.0,10.0,abc,100\n")
    with pytest.raises(InputError, match=r"info\.csv: line 3: column 'count'"):
        read_video_info_csv(info)
    info.write_text("video,fps,sample_fps,count,sample_count\nv1,30.0,10.0,300.0,100\n")
    infos = read_video_info_csv(info)
    anno = tmp_path / "anno.csv"
    anno.write_text("video,type,type_idx,start,end,startFrame,endFrame\nv1,X,8,1.0,2.0,30,60\n")
    with pytest.raises(InputError, match="line 2: unknown class index 8"):
        read_thumos_annotations(anno, infos)
    anno.write_text("video,type,type_idx,start,end,startFrame,endFrame\nv9,Billiards,12,1.0,2.0,30,60\n")
    with pytest.raises(InputError, match="line 2: video 'v9' is not in the video-info CSV"):
        read_thumos_annotations(anno, infos)
    anno.write_text("video,type\n")
    with pytest.raises(InputError, match="line 1: expected the header"):
        read_thumos_annotations(anno, infos)
    bad_json = tmp_path / "info.json"
    bad_json.write_text("{not json")
    with pytest.raises(InputError, match="info.json"):
        read_anet_video_info(bad_json)


def test_class_index_file_matches_builtin(tmp_path):
    path = tmp_path / "Class Index_Detection.txt"
    path.write_text("7 BaseballPitch\n9 BasketballDunk\n")
    index = read_class_index(path)
    assert index.original_to_model == {7: 1, 9: 2} and index.name_of(2) == "BasketballDunk"
    builtin = thumos14_class_index()
    assert builtin.num_classes == 20 and builtin.original_to_model[97] == 20 and builtin.name_of(12) == "HighJump"
