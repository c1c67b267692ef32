"""`afsd prepare` end to end on real clips of several containers/codecs, plus the batch runner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from helpers.video_helpers import NTSC_FPS, frame_indices, make_clip, truncate_file, write_garbage

from afsd_cli.cli import app
from afsd_cli.data.batch import FAILED, Task, run_batch
from afsd_cli.data.video import accumulator_keep_indices, anet_keep_indices
from afsd_cli.errors import ConfigError, InputError

runner = CliRunner()

GOOD = {  # name: (file name, fps, frames, fourcc)
    "a": ("a.mp4", 30.0, 90, "mp4v"),
    "b": ("b.avi", 25.0, 100, "MJPG"),
    "c": ("c.avi", 24.0, 96, "XVID"),
    "d": ("d.mp4", NTSC_FPS, 120, "mp4v"),
    "e": ("e.mkv", 30.0, 60, "MJPG"),
    "f": ("f.mov", 25.0, 75, "mp4v"),
}
BAD = {"garbage": "cannot open video", "slow": "below the 10 fps", "trunc": "but the container says", "zero": "no frames"}


def _make_video_dir(root: Path) -> Path:
    import cv2

    videos = root / "videos"
    for file_name, fps, n, fourcc in GOOD.values():
        make_clip(videos / file_name, fps, n, fourcc=fourcc)
    write_garbage(videos / "garbage.mp4")
    make_clip(videos / "slow.mp4", 5, 20)
    truncate_file(make_clip(videos / "trunc.avi", 30, 90, fourcc="MJPG"))
    writer = cv2.VideoWriter(str(videos / "zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    writer.release()
    (videos / "notes.txt").write_text("not a video")
    return videos


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One first run over good and bad videos (in-process, -j 1)."""
    root = tmp_path_factory.mktemp("prepare")
    videos = _make_video_dir(root)
    out = root / "npy"
    result = runner.invoke(app, ["prepare", str(videos), str(out), "--jobs", "1"])
    return videos, out, result


def _info_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_first_run_converts_good_videos_and_lists_each_failure(prepared):
    videos, out, result = prepared
    assert result.exit_code == 1, result.output
    for name, (_, fps, n, _) in GOOD.items():
        frames = np.load(out / f"{name}.npy")
        kept = accumulator_keep_indices(n, fps)
        assert frames.shape == (len(kept), 112, 112, 3) and frames.dtype == np.uint8
        assert frame_indices(frames) == kept
    items = json.loads((out / "manifest.json").read_text())["items"]
    flat_output = " ".join(result.output.split())
    for name, reason in BAD.items():
        assert not (out / f"{name}.npy").exists()
        assert name in flat_output and reason in items[name]["error"]
    assert "4 failure(s)" in result.output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_video_info_csv_has_the_official_layout_and_measured_values(prepared):
    _, out, _ = prepared
    text = (out / "video_info.csv").read_text()
    assert text.splitlines()[0] == "video,fps,sample_fps,count,sample_count"
    assert text.splitlines()[1] == "a,30.0,10.0,90.0,30"
    rows = _info_rows(out / "video_info.csv")
    assert [r["video"] for r in rows] == sorted(GOOD)
    for row in rows:
        _, fps, n, _ = GOOD[row["video"]]
        assert float(row["fps"]) == pytest.approx(fps, abs=0.01)
        assert float(row["count"]) == n and float(row["sample_fps"]) == 10.0
        assert int(row["sample_count"]) == len(accumulator_keep_indices(n, float(row["fps"])))


def test_manifest_records_outputs_and_failures(prepared):
    videos, out, _ = prepared
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert set(items) == set(GOOD) | set(BAD)
    a = items["a"]
    assert a["status"] == "done" and a["shape"] == [30, 112, 112, 3] and a["frames"] == 90
    assert a["source"] == str(videos / "a.mp4") and a["seconds"] >= 0
    assert items["slow"]["status"] == "failed" and "below the 10 fps" in items["slow"]["error"]


def test_rerun_skips_finished_videos_and_keeps_their_rows(prepared, tmp_path):
    videos, out, _ = prepared
    before = {name: (out / f"{name}.npy").stat().st_mtime_ns for name in GOOD}
    rows_before = (out / "video_info.csv").read_text()
    result = runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1"])
    assert result.exit_code == 1  # the bad ones still fail
    assert {name: (out / f"{name}.npy").stat().st_mtime_ns for name in GOOD} == before
    assert (out / "video_info.csv").read_text() == rows_before
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items["a"]["status"] == "done" and items["a"]["frames"] == 90


def test_skipped_rows_are_rebuilt_without_info_file_or_manifest(tmp_path):
    videos = tmp_path / "v"
    make_clip(videos / "a.mp4", 30, 60)
    make_clip(videos / "b.avi", 25, 50, fourcc="MJPG")
    out = tmp_path / "out"
    assert runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1"]).exit_code == 0
    first = (out / "video_info.csv").read_text()
    (out / "video_info.csv").unlink()
    (out / "manifest.json").unlink()
    (out / "b.npy").write_bytes(b"\x93NUMPY broken")  # e.g. written by another tool and cut short
    result = runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "video_info.csv").read_text() == first
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items["a"]["status"] == "done" and items["b"]["status"] == "done"
    assert np.load(out / "b.npy").shape == (20, 112, 112, 3)  # redone, not skipped


def test_overwrite_redoes_outputs(tmp_path):
    videos = tmp_path / "v"
    make_clip(videos / "a.mp4", 30, 30)
    out = tmp_path / "out"
    assert runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1"]).exit_code == 0
    np.save(out / "a.npy", np.zeros((1, 112, 112, 3), np.uint8))
    result = runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1", "--resize", "cv2-area"])
    assert np.load(out / "a.npy").shape[0] == 1  # skipped, with a note that the settings differ
    assert "resize='pil-bicubic'" in " ".join(result.output.split())
    assert runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1", "--overwrite"]).exit_code == 0
    assert np.load(out / "a.npy").shape[0] == 10


def test_annotations_restrict_and_sort_videos_and_flag_missing_ones(tmp_path):
    videos = tmp_path / "v"
    make_clip(videos / "video_b.mp4", 30, 30)
    make_clip(videos / "video_a.avi", 25, 50, fourcc="MJPG")
    make_clip(videos / "unlisted.mp4", 30, 30)
    annotations = tmp_path / "anno.csv"
    annotations.write_text(
        "video,type,type_idx,start,end,startFrame,endFrame\n"
        "video_b,HighJump,40,0.1,0.5,3,15\nvideo_a,Diving,26,0.2,1.0,5,25\n"
        "video_b,HighJump,40,0.6,0.9,18,27\nvideo_missing,Diving,26,0.1,0.2,3,6\n"
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(videos), str(out), "-a", str(annotations), "-j", "1"])
    assert result.exit_code == 1
    assert "video_missing" in result.output and "no video file found" in " ".join(result.output.split())
    assert sorted(p.name for p in out.glob("*.npy")) == ["video_a.npy", "video_b.npy"]
    assert [r["video"] for r in _info_rows(out / "video_info.csv")] == ["video_a", "video_b"]


def test_two_files_with_one_stem_do_not_overwrite_each_other(tmp_path):
    videos = tmp_path / "v"
    make_clip(videos / "same.avi", 25, 50, fourcc="MJPG")
    make_clip(videos / "same.mp4", 30, 30)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(videos), str(out), "-j", "1"])
    assert result.exit_code == 1
    assert np.load(out / "same.npy").shape[0] == 20  # the first in name order: same.avi
    assert "already produces same.npy" in " ".join(result.output.split())


def test_anet_mode_resamples_and_writes_the_info_json(tmp_path):
    videos = tmp_path / "v"
    make_clip(videos / "v_abc.mp4", 30, 180)
    make_clip(videos / "v_short.avi", 25, 40, fourcc="MJPG")
    make_clip(videos / "v_unlisted.mp4", 30, 30)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {
        "abc": {"subset": "training", "duration": 6.0,
                "annotations": [{"segment": [1.0, 2.5], "label": "Zumba"}, {"segment": [3, 4], "label": "Archery"}]},
        "short": {"subset": "validation", "duration": 1.6, "annotations": []},
        "gone": {"subset": "training", "duration": 3.0, "annotations": []},
    }}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(videos), str(out), "--dataset", "anet", "-a", str(gt),
                                 "--max-frames", "64", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "1 video(s) of gt.json have no file" in result.output
    assert sorted(p.name for p in out.glob("*.npy")) == ["v_abc.npy", "v_short.npy"]
    frames = np.load(out / "v_abc.npy")
    assert frame_indices(frames) == anet_keep_indices(180, 64 / 180, 64)
    info = json.loads((out / "video_info.json").read_text())
    abc = info["v_abc"]
    fps = 30.0 * 64 / 180
    assert abc["frame_num"] == 64 and abc["fps"] == pytest.approx(fps)
    assert abc["subset"] == "training" and abc["duration"] == 6.0
    # start/end frames in the resampled video's frames; label ids from the sorted GT labels here.
    assert abc["annotations"][0] == {"start_frame": pytest.approx(fps), "end_frame": pytest.approx(2.5 * fps),
                                     "label": "Zumba", "label_id": 2}
    assert abc["annotations"][1]["label_id"] == 1
    assert info["v_short"]["frame_num"] == 40 and info["v_short"]["fps"] == 25.0

    from afsd_cli.data.annotations import read_anet_video_info  # the training reader accepts it

    infos, annos = read_anet_video_info(out / "video_info.json", subset="training")
    assert infos["v_abc"].sample_count == 64 and len(annos["v_abc"]) == 2


def test_parallel_run_with_loky(tmp_path):
    videos = tmp_path / "v"
    for i in range(3):
        make_clip(videos / f"clip{i}.avi", 30, 30 + 3 * i, fourcc="MJPG")
    write_garbage(videos / "broken.mp4")
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(videos), str(out), "--jobs", "2"])
    assert result.exit_code == 1
    assert [np.load(out / f"clip{i}.npy").shape[0] for i in range(3)] == [10, 11, 12]
    assert "broken" in result.output


def test_bad_arguments_give_one_clear_line(tmp_path):
    result = runner.invoke(app, ["prepare", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "video folder not found" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "v").mkdir()
    result = runner.invoke(app, ["prepare", str(tmp_path / "v"), str(tmp_path / "o"), "--dataset", "kinetics"])
    assert result.exit_code == 1 and "unknown dataset" in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path / "v")])
    assert result.exit_code == 1 and "OUT_DIR" in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path / "v"), str(tmp_path / "o")])
    assert result.exit_code == 1 and "no video file found" in result.output
    make_clip(tmp_path / "v" / "a.mp4", 30, 30)
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["prepare", str(tmp_path / "v"), str(tmp_path / "file" / "out")])
    assert result.exit_code == 1 and "cannot create the output folder" in result.output
    assert "Traceback" not in result.output


def test_synthetic_option_calls_the_renderer(tmp_path, monkeypatch):
    import afsd_cli.data.synthetic as synthetic

    calls = {}

    def fake_render(out_dir, num_videos, num_classes, seed, progress=None, **_):
        calls.update(out_dir=str(out_dir), num_videos=num_videos, num_classes=num_classes, seed=seed)
        for i in range(num_videos):
            progress(i + 1, num_videos, f"video_{i}")
        return {"paths": {"ground_truth": str(Path(out_dir) / "gt.json")}}

    monkeypatch.setattr(synthetic, "render_dataset", fake_render)
    result = runner.invoke(app, ["prepare", "--synthetic", str(tmp_path / "syn"), "--videos", "3",
                                 "--classes", "2", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert calls == {"out_dir": str(tmp_path / "syn"), "num_videos": 3, "num_classes": 2, "seed": 7}
    assert "gt.json" in result.output


# ---------------------------------------------------------------------------------- batch runner


def _square(x: int) -> dict:
    if x < 0:
        raise InputError("negative input", f"item{x}")
    if x == 13:
        raise RuntimeError("unlucky\nsecond line")
    return {"value": x * x, "frames": x}


@pytest.mark.parametrize("backend, jobs", [("sequential", 1), ("threading", 2)])
def test_batch_runner_collects_failures_and_keeps_order(backend, jobs):
    seen = []
    tasks = [Task(f"t{x}", _square, (x,)) for x in (3, -1, 13, 5)]
    results = run_batch(tasks, jobs=jobs, backend=backend, on_result=lambda r: seen.append(r.name))
    assert [r.name for r in results] == ["t3", "t-1", "t13", "t5"]
    assert sorted(seen) == sorted(r.name for r in results)
    assert [r.status for r in results] == ["done", FAILED, FAILED, "done"]
    assert results[0].info == {"value": 9, "frames": 3} and results[0].frames == 3
    assert results[1].error == "item-1: negative input"
    assert results[2].error == "RuntimeError: unlucky"


def test_batch_runner_rejects_unknown_backend():
    with pytest.raises(ConfigError, match="unknown joblib backend"):
        run_batch([Task("a", _square, (1,)), Task("b", _square, (2,))], jobs=2, backend="nope")
