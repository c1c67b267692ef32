"""One reader per file format: the ground-truth JSON/CSV, the ActivityNet info JSON and the
``v_`` rule are each read in one place, and every caller (evaluation, the timeline plots of
``predict``/``fuse --gt``, ``afsd prepare``, training/testing) gets the same answer from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afsd_cli.data.annotations import read_anet_video_info
from afsd_cli.data.video_info import anet_key_for, load_anet_video_info, read_anet_ground_truth
from afsd_cli.engine.plots import read_ground_truth
from afsd_cli.errors import InputError
from afsd_cli.evaluation import load_ground_truth
from afsd_cli.evaluation.ground_truth import read_ground_truth_file
from afsd_cli.names import video_id_spellings, without_v_prefix

DATA = Path(__file__).parent / "data" / "evaluation"
THUMOS_CSV = DATA / "thumos14_test_Annotation.csv"
ANET_JSON = DATA / "anet_subset.json"
EDGE_GT = DATA / "edge_gt.json"


def per_video(ground_truth) -> dict[str, list[tuple[float, float, str]]]:
    """The instances of an evaluation :class:`GroundTruth`, grouped by video, in file order."""
    out: dict[str, list] = {}
    for v, c, start, end in zip(ground_truth.video_index, ground_truth.label_index, ground_truth.starts,
                                ground_truth.ends):
        out.setdefault(ground_truth.videos[v], []).append((float(start), float(end), ground_truth.class_names[c]))
    return out


@pytest.mark.parametrize("path, subset", [(THUMOS_CSV, None), (ANET_JSON, "validation"), (EDGE_GT, "test")])
def test_plots_and_evaluation_read_the_same_instances(path, subset):
    evaluated = per_video(load_ground_truth(path, subset))
    drawn = read_ground_truth(path)
    assert evaluated  # the fixture has instances in that subset
    for video, instances in evaluated.items():
        assert drawn[video] == instances
    # the plots keep every subset: videos of other subsets are drawn too
    everything = read_ground_truth_file(path)
    assert set(drawn) >= set(everything.videos)
    assert sum(len(rows) for video, rows in drawn.items() if video in everything.videos) == len(everything.instances)


def test_prepare_reads_ground_truth_json_through_the_same_reader(tmp_path):
    entries = read_anet_ground_truth(ANET_JSON)
    drawn = read_ground_truth(ANET_JSON)
    raw = json.loads(ANET_JSON.read_text())["database"]
    assert list(entries) == list(raw)
    for video, entry in entries.items():
        assert entry["subset"] == raw[video]["subset"]
        assert [(*a["segment"], a["label"]) for a in entry["annotations"]] == drawn[video]
    # a malformed segment is refused with the same place by evaluation, plots and prepare
    bad = tmp_path / "gt.json"
    bad.write_text(json.dumps({"database": {"v1": {"subset": "validation", "duration": 9.0, "annotations": [
        {"segment": [2.0, 1.0], "label": "Run"}]}}}))
    place = r"database\['v1'\]\['annotations'\]\[0\]: segment end 1 < start 2"
    for reader in (load_ground_truth, read_ground_truth, read_anet_ground_truth):
        with pytest.raises(InputError, match=place) as info:
            reader(bad)
        assert info.value.path == str(bad)


def test_plot_reader_takes_the_thumos_csv_as_evaluate_does(tmp_path):
    path = tmp_path / "Annotation.csv"
    path.write_text("video,type,type_idx,start,end,startFrame,endFrame\n"
                    "video_test_1,Diving,26,1.0,2.5,30,75\n"
                    "v_abc,HighJump,40,0.5,1.0,15,30\n"
                    "video_test_1,Ambiguous,0,3.0,4.0,90,120\n"
                    "video_test_1,Diving,26,5.0,6.0,150,180\n")
    drawn = read_ground_truth(path)
    assert drawn["video_test_1"] == [(1.0, 2.5, "Diving"), (5.0, 6.0, "Diving")]  # Ambiguous left out
    assert drawn["v_abc"] == drawn["abc"] == [(0.5, 1.0, "HighJump")]
    assert load_ground_truth(path).skipped_ambiguous == 1
    path.write_text("video,type,start,end\nvideo_test_1,Diving,2.0,1.0\n")
    with pytest.raises(InputError, match="line 2: segment end 1 < start 2"):
        read_ground_truth(path)


def test_predict_plots_ground_truth_from_a_thumos_csv(tmp_path, monkeypatch):
    from afsd_cli.engine import plots
    from test_predict_cli import invoke, small_checkpoint, small_config, write_arrays

    write_arrays(tmp_path, {"video_test_7": 50})
    config = small_config(tmp_path, checkpoint_path=small_checkpoint(tmp_path))
    gt = tmp_path / "test_Annotation.csv"
    gt.write_text("video,type,type_idx,start,end,startFrame,endFrame\n"
                  "video_test_7,Diving,26,1.0,2.5,30,75\n"
                  "video_test_7,Ambiguous,0,3.0,3.5,90,105\n"
                  "video_test_9,HighJump,40,0.5,1.0,15,30\n")
    drawn: dict[str, list] = {}
    real_plot = plots.plot_timeline

    def recording_plot(path, video, detections, duration=None, ground_truth=None, **kwargs):
        drawn[video] = list(ground_truth or [])
        return real_plot(path, video, detections, duration, ground_truth, **kwargs)

    monkeypatch.setattr(plots, "plot_timeline", recording_plot)
    result, text = invoke("predict", config, "--output", tmp_path / "det.json", "--device", "cpu",
                          "--plot", tmp_path / "plots", "--gt", gt)
    assert result.exit_code == 0, text
    assert drawn == {"video_test_7": [(1.0, 2.5, "Diving")]}
    assert (tmp_path / "plots" / "video_test_7.png").stat().st_size > 1000


def test_one_v_prefix_rule():
    assert without_v_prefix("v_abc") == "abc"
    assert without_v_prefix("abc") == "abc"
    assert without_v_prefix("v_") == ""
    assert video_id_spellings("v_abc") == ("v_abc", "abc", "v_v_abc")
    assert video_id_spellings("abc") == ("abc", "v_abc")
    # prepare finds a video file's GT key under either spelling, as given first
    assert anet_key_for({"abc": {}}, "v_abc") == "abc"
    assert anet_key_for({"v_abc": {}}, "abc") == "v_abc"
    assert anet_key_for({"v_abc": {}, "abc": {}}, "abc") == "abc"
    assert anet_key_for({"abd": {}}, "v_abc") is None


def test_classifier_and_output_keys_use_the_v_rule(tmp_path):
    from afsd_cli.data.annotations import VideoInfo
    from afsd_cli.engine.classifier import read_classifier
    from afsd_cli.engine.jobs import array_jobs

    path = tmp_path / "cuhk.json"
    path.write_text(json.dumps({"results": {"abc": [0.2, 0.8]}, "class": ["Run", "Jump"]}))
    classifier = read_classifier(path)
    assert classifier.top1("v_abc") == classifier.top1("abc") == ("Jump", 0.8)
    assert classifier.top1("v_abd") is None
    info = VideoInfo("v_abc", 10.0, 10.0, 30.0, 30)
    assert [job.output_key for job in array_jobs([info], [tmp_path], [3], 32, strip_v_prefix=True)] == ["abc"]
    assert [job.output_key for job in array_jobs([info], [tmp_path], [3], 32)] == ["v_abc"]


def test_info_json_is_read_once_for_training_and_prepare(tmp_path):
    entry = {"subset": "training", "duration": 3.0, "frame_num": 30, "fps": 10.0,
             "annotations": [{"start_frame": 5.0, "end_frame": 20.0, "label": "Run", "label_id": 3}]}
    for layout in ({"v_a": entry}, {"database": {"v_a": entry}}):
        path = tmp_path / "info.json"
        path.write_text(json.dumps(layout))
        assert load_anet_video_info(path) == {"v_a": entry}
        infos, annotations = read_anet_video_info(path, "training")
        assert list(infos) == ["v_a"] and annotations["v_a"][0] == (5.0, 20.0, 1)
    path.write_text("[1, 2]")
    for reader in (load_anet_video_info, read_anet_video_info):
        with pytest.raises(InputError, match="expected a JSON object mapping video ids to entries"):
            reader(path)
