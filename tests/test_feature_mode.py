"""AFSD on pre-extracted features (model.input: features): the network, the time mapping, and
train → predict → fuse → evaluate through the CLI on a tiny feature dataset.

The features are synthetic (what `afsd extract` writes: OUT/<video>.npy float32 [T', C] plus
features.json), with a class-specific direction added during each action, so that a few epochs
learn them: the end-to-end test asserts detections in seconds that match the ground truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.config import load_config
from afsd_cli.data.feature_dataset import (
    build_feature_training_dataset,
    read_feature_catalog,
    split_feature_videos,
    write_feature_dataset_config,
)
from afsd_cli.features.timeline import (
    FRAMES_PER_FEATURE,
    feature_index_to_seconds,
    seconds_to_feature_index,
)
from afsd_cli.model import AFSD, build_model, features_spec
from afsd_cli.profile import resolve_profile

runner = CliRunner()

FPS, STRIDE, CLIP_FRAMES, DIM = 10.0, 4, 8, 16  # 2.5 features per second
VIDEO_FEATURES = 48  # 19.6 s per video
WINDOW = 16  # features per window: 64 network frames, 6.4 s


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _write_dataset(folder: Path, channels: int = DIM, seed: int = 0, name_suffix: str = "") -> Path:
    """Feature arrays, features.json and an annotation JSON (4 training, 2 validation videos)."""
    rng = np.random.default_rng(seed)
    directions = {"jump": np.eye(channels)[0] * 3.0, "wave": np.eye(channels)[1] * 3.0}
    folder.mkdir(parents=True, exist_ok=True)
    database, videos = {}, {}
    for index in range(6):
        name = f"clip{index}{name_suffix}"
        features = rng.normal(scale=0.3, size=(VIDEO_FEATURES, channels))
        actions = []
        for label, start in ((("jump", 2.0 + 0.5 * index), ("wave", 11.0 + 0.5 * index))):
            end = start + 3.0
            first = seconds_to_feature_index(start, FPS, CLIP_FRAMES, STRIDE)
            last = seconds_to_feature_index(end, FPS, CLIP_FRAMES, STRIDE)
            features[first:last + 1] += directions[label]
            actions.append({"label": label, "segment": [start, end]})
        np.save(folder / f"{name}.npy", features.astype(np.float32))
        database[name] = {"subset": "training" if index < 4 else "validation", "annotations": actions}
        videos[name] = {"fps": FPS, "features": VIDEO_FEATURES,
                        "duration": ((VIDEO_FEATURES - 1) * STRIDE + CLIP_FRAMES) / FPS}
    (folder / "features.json").write_text(json.dumps({
        "format": "afsd-features", "channels": channels,
        "settings": {"stride": STRIDE, "clip_frames": CLIP_FRAMES, "modality": "rgb"}, "videos": videos}))
    anno = folder.parent / "anno.json"
    anno.write_text(json.dumps({"database": database}))
    return anno


@pytest.fixture()
def feature_set(tmp_path):
    anno = _write_dataset(tmp_path / "features")
    return tmp_path / "features", anno


SMALL = (f"dataset.training.clip_length={WINDOW}", "dataset.training.clip_stride=2",
         f"dataset.testing.clip_length={WINDOW}", "dataset.testing.clip_stride=8",
         "training.batch_size=8", "training.learning_rate=3e-4", "training.num_workers=0", "training.lw=3.0")


# ------------------------------------------------------------------------------------- the network


def test_feature_model_takes_feature_windows_and_has_no_backbone_weights():
    torch.manual_seed(0)
    model = AFSD(features_spec(WINDOW, feature_dim=DIM, num_classes=3)).eval()
    assert not any(key.startswith("backbone.") for key in model.state_dict())
    projection = model.state_dict()["coarse_pyramid_detection.pyramids.0.0.conv1d.weight"]
    assert tuple(projection.shape) == (512, DIM, 1)  # a 1x1 projection of the [B, C, T'] sequence
    with torch.no_grad():
        out = model(torch.randn(2, DIM, WINDOW))
    levels = [WINDOW // 2**i for i in range(model.spec.num_levels)]
    assert out.loc.shape == (2, sum(levels), 2) and out.conf.shape == (2, sum(levels), 3)
    assert out.start.shape[1] == WINDOW * FRAMES_PER_FEATURE  # frame-level boundary features: 4 per feature
    with pytest.raises(Exception, match="features window"):
        model(torch.randn(1, DIM, WINDOW + 8))


# ------------------------------------------------------------------------------------- time mapping


@pytest.mark.parametrize("fps,stride,clip_frames", [(10.0, 2, 4), (30.0, 4, 16), (29.97, 8, 16), (25.0, 1, 8)])
def test_ground_truth_survives_the_round_trip_through_feature_indices_within_one_stride(fps, stride, clip_frames):
    count = 400
    first_centre = clip_frames / 2 / fps
    last_centre = ((count - 1) * stride + clip_frames / 2) / fps
    for seconds in np.linspace(first_centre, last_centre, 97):
        index = seconds_to_feature_index(float(seconds), fps, clip_frames, stride, count)
        back = feature_index_to_seconds(index, fps, clip_frames, stride)
        assert abs(back - seconds) <= stride / fps / 2 + 1e-9


def test_network_frames_of_a_segment_decode_back_to_its_seconds(feature_set, tmp_path):
    folder, anno = feature_set
    cfg = load_config(write_feature_dataset_config(folder, anno), list(SMALL))
    video = split_feature_videos(cfg, resolve_profile(cfg), "training")["clip1"]
    assert video.frame_rate == pytest.approx(FRAMES_PER_FEATURE * FPS / STRIDE)
    for seconds in (0.2, 3.0, 6.05, 17.3):
        frames = video.to_network_frames(seconds)
        assert video.to_seconds(frames) == pytest.approx(seconds, abs=1e-9)
    # feature i's time (its clip's centre) is network frame 4i + 2, the centre of its 4 frames
    assert video.to_network_frames(feature_index_to_seconds(7, FPS, CLIP_FRAMES, STRIDE)) == pytest.approx(30.0)


def test_training_windows_count_features_and_carry_the_ground_truth(feature_set):
    folder, anno = feature_set
    cfg = load_config(write_feature_dataset_config(folder, anno), list(SMALL))
    dataset = build_feature_training_dataset(cfg)
    assert len(dataset) > 0
    video = dataset.videos["clip0"]
    for window in dataset.windows:
        assert window.offset % FRAMES_PER_FEATURE == 0  # windows start on a feature
        sample = dataset[dataset.windows.index(window)]
        assert tuple(sample.clip.shape) == (DIM, WINDOW)
        assert sample.scores.shape[-1] == WINDOW * FRAMES_PER_FEATURE
        assert sample.consistency is None
    window = next(w for w in dataset.windows if w.video == "clip0")
    features = np.load(folder / "clip0.npy")
    first = window.offset // FRAMES_PER_FEATURE
    np.testing.assert_array_equal(dataset.window_features(window)[:, :5], features[first:first + 5].T)
    # a fully included action: its normalised target is its seconds mapped into the window
    target = dataset[dataset.windows.index(window)].targets[0].numpy()
    start = (video.to_network_frames(2.0) - window.offset) / (WINDOW * FRAMES_PER_FEATURE)
    assert target[0] == pytest.approx(start, abs=1e-6)


# ------------------------------------------------------------------------------------- config


def test_written_config_describes_the_feature_folder(feature_set):
    folder, anno = feature_set
    path = write_feature_dataset_config(folder, anno)
    cfg = load_config(path)
    profile = resolve_profile(cfg)
    assert cfg.model.input == "features" and cfg.model.feature_dim == DIM
    assert (profile.input, profile.feature_stride, profile.feature_clip_frames) == ("features", STRIDE, CLIP_FRAMES)
    assert profile.class_names == ("jump", "wave") and profile.head == "features"
    assert cfg.dataset.training.clip_length == 64  # 25.6 s at 2.5 features per second, a multiple of 8
    assert read_feature_catalog(folder).fps["clip0"] == FPS
    model = build_model(cfg)
    assert model.spec.feature_steps == 64 and model.spec.clip_length == 256


def test_config_stride_must_match_the_extraction(feature_set):
    folder, anno = feature_set
    cfg = load_config(write_feature_dataset_config(folder, anno), [*SMALL, "dataset.feature_stride=3"])
    with pytest.raises(Exception, match=f"extracted with {STRIDE} / {CLIP_FRAMES}"):
        split_feature_videos(cfg, resolve_profile(cfg), "training")


def test_thumos14_features_config_loads():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "thumos14_features.yaml")
    assert cfg.model.input == "features" and cfg.model.feature_dim == 2048
    assert (cfg.dataset.feature_stride, cfg.dataset.feature_clip_frames) == (4, 16)
    assert cfg.dataset.training.clip_length % 8 == 0
    model = build_model(cfg)
    assert model.spec.num_levels == 6


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A feature model trained for 2 steps through `afsd train` (enough to exercise every stage)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("short")
    anno = _write_dataset(root / "features")
    config = write_feature_dataset_config(root / "features", anno)
    cli("train", config, "--name", "feat", "--runs-dir", root / "runs", "--device", "cpu", "--max-steps", "2",
        *SMALL, "training.max_epoch=1")
    return root, root / "runs" / "feat", anno


def test_predict_on_features_writes_seconds_and_equals_the_library(short_run):
    root, run, anno = short_run
    assert (run / "checkpoint-1.ckpt").is_file() and not any(run.glob("checkpoint-*backbone*"))
    detections = root / "det.json"
    cli("predict", run, "--output", detections, "--device", "cpu")
    document = json.loads(detections.read_text())
    assert set(document["results"]) == {"clip4", "clip5"}  # the validation subset
    assert document["profile"]["input"] == "features" and document["profile"]["feature_stride"] == STRIDE
    duration = ((VIDEO_FEATURES - 1) * STRIDE + CLIP_FRAMES) / FPS
    origin = (CLIP_FRAMES - STRIDE) / (2 * FPS)  # network frame 0, in seconds
    segments = np.array([d["segment"] for d in document["results"]["clip4"]])
    assert len(segments) > 0
    # seconds, not network frames (the last frame is 4 x 48 = 192) nor features (48)
    assert segments.min() >= origin - 1e-4 and segments.max() <= VIDEO_FEATURES * STRIDE / FPS + origin + 1e-4
    assert segments.max() < duration + 1

    from afsd_cli.engine.planning import plan_prediction

    plan = plan_prediction(load_config(run / "config.yaml"), [run / "checkpoint-1.ckpt"], device="cpu")
    assert plan.predictor.clip_length == WINDOW * FRAMES_PER_FEATURE
    direct = {video.key: video.detections for video in plan.predictor.run(plan.jobs)}
    assert direct == document["results"]

    # fusing two feature streams: the same model twice averages to the same raw outputs
    fused = root / "fused.json"
    cli("fuse", run, "--flow-checkpoint", run, "--flow-data", root / "features", "--output", fused, "--device", "cpu")
    assert json.loads(fused.read_text())["results"] == document["results"]


def test_two_feature_streams_of_other_widths_fuse(short_run, tmp_path):
    """RGB and flow I3D features (1024 each in practice) in two folders, one model per stream."""
    root, run, anno = short_run
    flow_dir = tmp_path / "flow"
    _write_dataset(flow_dir, channels=8, seed=1)
    flow_cfg = load_config(run / "config.yaml", ["model.feature_dim=8"])
    from afsd_cli.model import save_checkpoint

    torch.manual_seed(1)
    flow_ckpt = save_checkpoint(build_model(flow_cfg), tmp_path / "flow.ckpt")
    fused = tmp_path / "fused.json"
    cli("fuse", run, "--flow-checkpoint", flow_ckpt, "--flow-data", flow_dir, "--output", fused, "--device", "cpu")
    assert set(json.loads(fused.read_text())["results"]) == {"clip4", "clip5"}


@pytest.mark.slow
def test_training_on_features_learns_the_actions(tmp_path):
    """32 steps on the synthetic features: the detections sit on the ground truth (about 15 s on 2 idle cores)."""
    torch.set_num_threads(1)
    anno = _write_dataset(tmp_path / "features")
    config = write_feature_dataset_config(tmp_path / "features", anno)
    cli("train", config, "--name", "feat", "--runs-dir", tmp_path / "runs", "--device", "cpu", *SMALL,
        "training.max_epoch=8", "training.checkpoint_every=8")
    detections = tmp_path / "det.json"
    cli("predict", tmp_path / "runs" / "feat", "--output", detections, "--device", "cpu")
    results = json.loads(detections.read_text())["results"]
    best_jump = max((d for d in results["clip4"] if d["label"] == "jump"), key=lambda d: d["score"])
    start, end = best_jump["segment"]  # ground truth [4, 7] s
    overlap = max(0.0, min(end, 7.0) - max(start, 4.0)) / (max(end, 7.0) - min(start, 4.0))
    assert overlap > 0.5, best_jump
    metrics = tmp_path / "metrics.json"
    cli("evaluate", detections, "--gt", anno, "--output", metrics)
    assert json.loads(metrics.read_text())["average_mAP"] > 0.5


def test_predict_refuses_video_files_for_a_feature_model(feature_set, tmp_path):
    folder, anno = feature_set
    config = write_feature_dataset_config(folder, anno)
    model = build_model(load_config(config, list(SMALL)))
    from afsd_cli.model import save_checkpoint

    checkpoint = save_checkpoint(model, tmp_path / "m.ckpt")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0")
    result = runner.invoke(app, ["predict", str(config), *SMALL, "--checkpoint", str(checkpoint),
                                 "--video", str(video), "--output", str(tmp_path / "o.json")])
    assert result.exit_code != 0
    assert "feature model" in result.output and "Traceback" not in result.output


def test_a_missing_feature_array_is_one_line_naming_it(feature_set, tmp_path):
    folder, anno = feature_set
    config = write_feature_dataset_config(folder, anno)
    from afsd_cli.model import save_checkpoint

    checkpoint = save_checkpoint(build_model(load_config(config, list(SMALL))), tmp_path / "m.ckpt")
    (folder / "clip0.npy").unlink()  # a training video
    (folder / "clip5.npy").unlink()  # a validation video
    for argv, missing in ((["train", config, "--runs-dir", tmp_path / "runs", *SMALL], "clip0.npy"),
                          (["predict", config, *SMALL, "--checkpoint", checkpoint, "--output", tmp_path / "o.json"],
                           "clip5.npy")):
        result = runner.invoke(app, [str(a) for a in argv])
        assert result.exit_code != 0
        assert f"{missing} not found" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o.json").exists()


def test_extract_with_annotations_then_train_on_the_features(tmp_path):
    """`afsd extract ARRAYS OUT --weights AFSD_CHECKPOINT --annotations` → OUT/dataset.yaml → `afsd train`
    (the demo's path, on two tiny frame arrays and a random-weight RGB checkpoint)."""
    from afsd_cli.model import save_checkpoint, thumos14_spec

    torch.manual_seed(0)
    rgb = save_checkpoint(AFSD(thumos14_spec(num_classes=3, clip_length=32, crop_size=32)), tmp_path / "rgb.ckpt")
    arrays = tmp_path / "frames"
    arrays.mkdir()
    rng = np.random.default_rng(0)
    database = {}
    for index, subset in enumerate(("training", "validation")):
        np.save(arrays / f"v{index}.npy", rng.integers(0, 255, size=(40, 36, 36, 3), dtype=np.uint8))
        database[f"v{index}"] = {"subset": subset, "annotations": [{"label": "jump", "segment": [1.0, 2.5]}]}
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps({"database": database}))
    out = tmp_path / "feats"
    cli("extract", arrays, out, "--weights", rgb, "--clip-frames", 4, "--stride", 2, "--size", 32, "--fps", 10,
        "--device", "cpu", "--annotations", anno)
    cfg = load_config(out / "dataset.yaml", ["dataset.training.clip_length=8", "dataset.training.clip_stride=2"])
    assert cfg.model.input == "features" and cfg.model.feature_dim == 1024
    assert (cfg.dataset.testing.clip_length, cfg.dataset.testing.clip_stride) == (8, 4)  # follow the override
    videos = split_feature_videos(cfg, resolve_profile(cfg), "training")
    assert list(videos) == ["v0"] and videos["v0"].count == (40 - 4) // 2 + 1 and videos["v0"].fps == 10.0
    cli("train", out / "dataset.yaml", "--runs-dir", tmp_path / "runs", "--name", "f", "--device", "cpu",
        "--max-steps", "1", "dataset.training.clip_length=8", "dataset.training.clip_stride=2", "dataset.testing.clip_stride=4",
        "training.max_epoch=1", "training.num_workers=0")
    assert (tmp_path / "runs" / "f" / "checkpoint-1.ckpt").is_file()


def test_profiles_written_before_the_feature_keys_still_read_as_frames(feature_set):
    from afsd_cli.profile import DatasetProfile

    folder, anno = feature_set
    written = resolve_profile(load_config(write_feature_dataset_config(folder, anno))).to_dict()
    assert DatasetProfile.from_dict(written).feature_clip_frames == CLIP_FRAMES
    older = {k: v for k, v in written.items() if not (k == "input" or k.startswith("feature_"))}
    profile = DatasetProfile.from_dict(older)
    assert profile.input == "frames" and profile.network_frames_per_step == 1
