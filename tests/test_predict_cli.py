"""`afsd predict` / `afsd fuse` end to end with a small model preset (64-frame clips, 32 px crop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import helpers.inference_parity as P
from afsd_cli.cli import app
from afsd_cli.data.annotations import THUMOS14_CLASSES
from afsd_cli.io import save_torch
from afsd_cli.model import AFSD, ModelSpec
from helpers.video_helpers import make_clip

runner = CliRunner()
THUMOS_NAMES = {name for _, name in THUMOS14_CLASSES}


def small_config(tmp_path: Path, name: str = "small.yaml", dataset: str = "thumos14", **testing) -> Path:
    """A THUMOS14-format config for the small preset; arrays and info under tmp_path."""
    clip = 64
    info = "info.json" if dataset == "anet" else "info.csv"
    lines = [
        "dataset:",
        f"  name: {dataset}",
        "  num_classes: 21" if dataset == "thumos14" else "  num_classes: 201",
        "  training:",
        f"    clip_length: {clip}",
        "    crop_size: 32",
        "  testing:",
        f"    video_info_path: {tmp_path / info}",
        f"    video_data_path: {tmp_path / 'rgb'}" if dataset == "thumos14" else "    video_data_path: None",
        f"    video_mp4_path: {tmp_path / 'rgb'}",
        "    crop_size: 32",
        f"    clip_length: {clip}",
        f"    clip_stride: {32 if dataset == 'thumos14' else clip}",
        "model:",
        "  in_channels: 3",
        "testing:",
        f"  output_path: {tmp_path / 'out'}",
    ] + [f"  {key}: {value}" for key, value in testing.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def small_checkpoint(tmp_path: Path, channels: int = 3, seed: int = 5, dataset: str = "thumos14") -> Path:
    spec = ModelSpec(dataset=dataset, num_classes=21 if dataset == "thumos14" else 2, clip_length=64,
                     crop_size=32, in_channels=channels)
    model = AFSD(spec)
    path = tmp_path / f"{dataset}_{channels}_{seed}.ckpt"
    save_torch(path, P.seeded_state_dict(P.state_dict_layout(model.state_dict()), seed))
    return path


def write_arrays(tmp_path: Path, videos: dict[str, int], folder: str = "rgb", channels: int = 3) -> None:
    (tmp_path / folder).mkdir(exist_ok=True)
    for name, frames in videos.items():
        np.save(tmp_path / folder / f"{name}.npy", P.parity_array(name, frames, channels))
    rows = ["video,fps,sample_fps,count,sample_count"] + [f"{n},30.0,10.0,{f * 3}.0,{f}" for n, f in videos.items()]
    (tmp_path / "info.csv").write_text("\n".join(rows) + "\n")


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


def test_predict_on_an_mp4_file_end_to_end(tmp_path):
    # 4 s of 30 fps video with a bright square that appears and moves: 40 frames at 10 fps
    frames = np.full((120, 48, 64, 3), 30, np.uint8)
    for i in range(40, 100):
        x = 5 + (i - 40) // 2
        frames[i, 10:30, x:x + 20] = (220, 180, 40)
    video = make_clip(tmp_path / "clip one.mp4", fps=30.0, num_frames=120, size=(64, 48), frames=frames)
    config = small_config(tmp_path)
    ckpt = small_checkpoint(tmp_path)
    out = tmp_path / "det.json"
    result, text = invoke("predict", config, "--checkpoint", ckpt, "--video", video, "--output", out,
                          "--device", "cpu", "--plot", tmp_path / "plots")
    assert result.exit_code == 0, text
    doc = json.loads(out.read_text())
    assert doc["version"] == "THUMOS14" and doc["external_data"] == {}
    detections = doc["results"]["clip one"]
    assert detections and {d["label"] for d in detections} <= THUMOS_NAMES
    # 40 sampled frames < one 64-frame window: segments stay within the padded window (6.4 s)
    assert all(0.0 <= d["segment"][0] <= d["segment"][1] <= 6.4 + 1e-6 for d in detections)
    assert all(0.0 < d["score"] <= 1.0 for d in detections)
    assert (tmp_path / "plots" / "clip one.png").stat().st_size > 1000
    assert "frames/s" in text and "detections" in text


def test_predict_arrays_batch_sizes_and_overrides(tmp_path):
    write_arrays(tmp_path, {"vid_a": 50, "vid_b": 80})  # 1 and 2 windows
    config = small_config(tmp_path, checkpoint_path=small_checkpoint(tmp_path))
    out1, out3 = tmp_path / "b1.json", tmp_path / "b3.json"
    r1, t1 = invoke("predict", config, "--output", out1, "--device", "cpu")
    r3, t3 = invoke("predict", config, "testing.top_k=3", "--output", out3, "--device", "cpu", "--batch-size", "3")
    assert r1.exit_code == 0, t1
    assert r3.exit_code == 0, t3
    first, capped = json.loads(out1.read_text())["results"], json.loads(out3.read_text())["results"]
    assert list(first) == ["vid_a", "vid_b"]
    # top_k = 3 per class
    for video, dets in capped.items():
        for label in {d["label"] for d in dets}:
            assert sum(d["label"] == label for d in dets) <= 3
        assert len(first[video]) > len(dets)
    # without --output: a new run folder under --runs-dir
    r, t = invoke("predict", config, "--device", "cpu", "--limit", "1", "--runs-dir", tmp_path / "runs")
    assert r.exit_code == 0, t
    assert list(json.loads((tmp_path / "runs" / "exp" / "detections.json").read_text())["results"]) == ["vid_a"]


def test_fuse_arrays_and_videos(tmp_path):
    write_arrays(tmp_path, {"vid_a": 70}, "rgb", 3)
    write_arrays(tmp_path, {"vid_a": 70}, "flow", 2)
    config = small_config(tmp_path, rgb_checkpoint_path=small_checkpoint(tmp_path, 3),
                          flow_checkpoint_path=small_checkpoint(tmp_path, 2, seed=6),
                          flow_data_path=tmp_path / "flow", flow_method="farneback")
    out = tmp_path / "fused.json"
    result, text = invoke("fuse", config, "--output", out, "--device", "cpu")
    assert result.exit_code == 0, text
    assert json.loads(out.read_text())["results"]["vid_a"]
    # straight from a video: flow computed on the fly
    video = make_clip(tmp_path / "v.mp4", fps=30.0, num_frames=60, size=(64, 48))
    result, text = invoke("fuse", config, "--video", video, "--output", tmp_path / "fv.json", "--device", "cpu")
    assert result.exit_code == 0, text
    assert "v" in json.loads((tmp_path / "fv.json").read_text())["results"]


def test_anet_classifier_and_class_agnostic(tmp_path):
    (tmp_path / "rgb").mkdir()
    np.save(tmp_path / "rgb" / "v_abc.npy", P.parity_array("v_abc", 90, 3))
    info = {"v_abc": {"subset": "validation", "duration": 30.0, "frame_num": 90, "fps": 3.0, "annotations": []},
            "v_train": {"subset": "training", "duration": 9.0, "frame_num": 9, "fps": 1.0, "annotations": []}}
    (tmp_path / "info.json").write_text(json.dumps(info))
    config = small_config(tmp_path, dataset="anet")
    ckpt = small_checkpoint(tmp_path, dataset="anet")
    out = tmp_path / "agnostic.json"
    result, text = invoke("predict", config, "-c", ckpt, "--output", out, "--device", "cpu")
    assert result.exit_code == 0, text
    assert "class-agnostic" in text
    agnostic = json.loads(out.read_text())
    assert agnostic["version"] == "ActivityNet-v1.3" and list(agnostic["results"]) == ["abc"]
    dets = agnostic["results"]["abc"]
    assert dets and {d["label"] for d in dets} == {"action"}
    assert all(0 <= d["segment"][0] < d["segment"][1] <= 30.0 for d in dets)
    classifier = tmp_path / "cuhk.json"
    classifier.write_text(json.dumps({"results": {"abc": [0.1, 0.7, 0.2]}, "class": ["Archery", "Bowling", "Curling"]}))
    out2 = tmp_path / "labelled.json"
    result, text = invoke("predict", config, "-c", ckpt, "--output", out2, "--device", "cpu", "--classifier", classifier)
    assert result.exit_code == 0, text
    labelled = json.loads(out2.read_text())["results"]["abc"]
    assert {d["label"] for d in labelled} == {"Bowling"}
    assert [d["score"] for d in labelled] == pytest.approx([d["score"] * 0.7 for d in dets])


def test_bad_inputs_give_one_clear_message_and_no_output(tmp_path):
    write_arrays(tmp_path, {"vid_a": 50, "vid_b": 60, "vid_c": 40})
    np.save(tmp_path / "rgb" / "vid_b.npy", np.zeros((60, 112, 112, 2), np.uint8))  # flow-shaped
    (tmp_path / "rgb" / "vid_c.npy").unlink()
    ckpt = small_checkpoint(tmp_path)
    config = small_config(tmp_path)
    out = tmp_path / "never.json"

    def check(args, *needles):
        result, text = invoke(*args)
        assert result.exit_code != 0
        assert "Traceback" not in text
        for needle in needles:
            assert needle in text, text
        assert not out.exists() and not list(tmp_path.glob(".never.json.*"))

    check(["predict", config, "--checkpoint", ckpt, "-o", out, "--device", "cpu", "--all-or-nothing"],
          "vid_b.npy", "[T, H, W, 3]", "vid_c.npy: array file not found", "2 bad input(s)")
    # without --all-or-nothing the good video's detections are written, the bad ones listed, exit 1
    result, text = invoke("predict", config, "--checkpoint", ckpt, "-o", out, "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in text
    assert "vid_c.npy: array file not found" in text and "2 of 3 video(s) failed" in " ".join(text.split())
    assert list(json.loads(out.read_text())["results"]) == ["vid_a"]
    out.unlink()
    flow_ckpt = small_checkpoint(tmp_path, channels=2)
    check(["predict", config, "-c", flow_ckpt, "-o", out, "--device", "cpu", "--limit", "1"],
          "Conv3d_1a_7x7.conv3d.weight", "shape mismatch")
    anet_ckpt = small_checkpoint(tmp_path, dataset="anet")
    check(["predict", config, "-c", anet_ckpt, "-o", out, "--device", "cpu", "--limit", "1"], "pyramids")
    check(["predict", config, "-c", ckpt, "-o", out, "dataset.testing.video_info_path=None"],
          "dataset.testing.video_info_path is not set")
    check(["predict", config, "-o", out, "--limit", "1"], "no checkpoint")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00 ftypisom not really a video")
    check(["predict", config, "-c", ckpt, "-o", out, "--video", broken, "--device", "cpu"], "broken.mp4")
    check(["fuse", config, "--rgb-checkpoint", ckpt, "-o", out], "--flow-checkpoint")


def test_plot_ground_truth_reader(tmp_path):
    from afsd_cli.engine.plots import read_ground_truth
    from afsd_cli.errors import InputError

    path = tmp_path / "gt.json"
    path.write_text('{"database": {"v_abc": {"annotations": [{"segment": ["1.5", 3], "label": "Run"}]}}}')
    assert read_ground_truth(path) == {"v_abc": [(1.5, 3.0, "Run")], "abc": [(1.5, 3.0, "Run")]}
    with pytest.raises(InputError, match="ground-truth file not found"):
        read_ground_truth(tmp_path / "missing.json")
    path.write_text('{"database": {"v": {"annotations": [{"label": "Run"}]}}}')
    with pytest.raises(InputError, match="not an ActivityNet-style ground-truth JSON"):
        read_ground_truth(path)
