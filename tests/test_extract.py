"""`afsd extract`: features equal pytorch-i3d's on recorded cases, clips, time mapping, folder job, CLI."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.errors import CheckpointError, ConfigError, InputError, OutputError
from afsd_cli.features import sources
from afsd_cli.features.extract import ExtractSettings, SourceItem, collect_sources, extract_features, extract_one
from afsd_cli.features.network import ClipEncoder, load_i3d
from afsd_cli.features.sources import ClipAssembler, crop_offsets, resized_shape, short_side_for
from afsd_cli.features.timeline import (
    feature_count,
    feature_index_to_seconds,
    feature_span_seconds,
    seconds_to_feature_index,
    seconds_to_feature_position,
    segment_to_feature_indices,
)
from helpers.extract_fixtures import (
    FLOW_WEIGHTS_SEED,
    REFERENCE,
    REFERENCE_CASES,
    RGB_WEIGHTS_SEED,
    generated_frames,
    generated_i3d_weights,
    save_weights,
)
from helpers.video_helpers import make_clip, textured_frames

ANNOTATIONS = REFERENCE.parents[1] / "thumos14" / "val_Annotation_ours.csv"


def assert_features_close(actual: np.ndarray, expected: np.ndarray) -> None:
    # float32 through ~60 layers: a few ulps of the largest value
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    tolerance = 1e-5 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    # the flow file has no num_batches_tracked entries, as some published files
    return {"rgb": save_weights(folder / "rgb.pt", 3, RGB_WEIGHTS_SEED),
            "flow": save_weights(folder / "flow.pt", 2, FLOW_WEIGHTS_SEED, batches_tracked=False)}


@pytest.fixture(scope="module")
def encoders(weights):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return {modality: ClipEncoder(load_i3d(path, 3 if modality == "rgb" else 2)[0], "cpu")
            for modality, path in weights.items()}


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE, allow_pickle=False) as recorded:
        return {name: recorded[name] for name in recorded.files}


def _array(folder, name, shape, seed):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npy"
    np.save(path, generated_frames(shape, seed))
    return path


# --------------------------------------------------------------------------------------------
# against pytorch-i3d


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_features_equal_pytorch_i3d(case, encoders, reference, tmp_path):
    shape, seed, size, clip_frames, stride = REFERENCE_CASES[case]
    modality = "flow" if shape[3] == 2 else "rgb"
    path = _array(tmp_path, case, shape, seed)
    settings = ExtractSettings(modality=modality, size=size, clip_frames=clip_frames, stride=stride)
    item = SourceItem(case, path if modality == "rgb" else None, "frames", flow_path=path if modality == "flow" else None)
    record = extract_one(item, tmp_path / "out.npy", settings, encoders, batch_size=2)
    features = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert_features_close(features, reference[case])
    assert record["features"] == feature_count(shape[0], clip_frames, stride) == len(reference[case])
    assert record["frames"] == shape[0]


def test_features_vary_along_time(reference):
    # the recorded features would not catch a wrong clip order if every clip gave the same vector
    rgb = reference["rgb"]
    assert np.abs(rgb[0] - rgb[1]).max() > 1e-2 and np.abs(rgb[1] - rgb[2]).max() > 1e-2


def test_batch_size_does_not_change_features(encoders, reference, tmp_path):
    shape, seed, size, clip_frames, stride = REFERENCE_CASES["rgb"]
    path = _array(tmp_path, "rgb", shape, seed)
    settings = ExtractSettings(size=size, clip_frames=clip_frames, stride=stride)
    extract_one(SourceItem("rgb", path, "frames"), tmp_path / "out.npy", settings, encoders, batch_size=3)
    assert_features_close(np.load(tmp_path / "out.npy"), reference["rgb"])


def test_bf16_autocast_stays_close_and_stores_float32(weights, reference, tmp_path):
    shape, seed, size, clip_frames, stride = REFERENCE_CASES["rgb_short"]
    clip = np.concatenate([generated_frames(shape, seed), np.repeat(generated_frames(shape, seed)[-1:], 6, 0)])
    encoder = ClipEncoder(load_i3d(weights["rgb"], 3)[0], "cpu", amp="bf16")
    features = encoder(clip[None])
    assert features.dtype == np.float32
    error = np.linalg.norm(features - reference["rgb_short"]) / np.linalg.norm(reference["rgb_short"])
    assert 0 < error < 0.03  # bf16 keeps 8 bits of mantissa: visible, small


# --------------------------------------------------------------------------------------------
# the folder job: both, features.json, resume


def test_both_is_rgb_then_flow_with_features_json_and_resume(weights, reference, tmp_path):
    rgb_shape, rgb_seed, size, clip_frames, stride = REFERENCE_CASES["rgb"]
    flow_shape, flow_seed, *_ = REFERENCE_CASES["flow"]
    assert REFERENCE_CASES["flow"][2:] == (size, clip_frames, stride) and flow_shape[0] == rgb_shape[0]
    _array(tmp_path / "frames", "clip", rgb_shape, rgb_seed)
    _array(tmp_path / "flow", "clip", flow_shape, flow_seed)
    settings = ExtractSettings(modality="both", weights=str(weights["rgb"]), flow_weights=str(weights["flow"]),
                               flow_input=str(tmp_path / "flow"), size=size, clip_frames=clip_frames, stride=stride,
                               device="cpu", batch_size=4)
    seen_clips = []
    report = extract_features([tmp_path / "frames"], tmp_path / "out", settings, on_clips=seen_clips.append)
    assert report.ok and [r.status for r in report.results] == ["done"]
    features = np.load(tmp_path / "out" / "clip.npy")
    assert features.shape == (3, 2048)
    assert_features_close(features, np.concatenate([reference["rgb"], reference["flow"]], axis=1))
    assert sum(seen_clips) == 6  # 3 RGB clips + 3 flow clips

    described = json.loads((tmp_path / "out" / "features.json").read_text())
    assert described["channels"] == 2048 and described["channel_blocks"] == {"rgb": [0, 1024], "flow": [1024, 2048]}
    for modality, path in weights.items():
        assert described["weights"][modality]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert described["settings"]["stride"] == 4 and described["settings"]["clip_frames"] == 16
    assert described["settings"]["fps"] == "native" and described["settings"]["modality"] == "both"
    assert described["videos"]["clip"]["features"] == 3 and described["videos"]["clip"]["frames"] == 24
    assert "(i*stride + clip_frames/2)/fps" in described["time_mapping"]["time_of_feature_i"]

    again = extract_features([tmp_path / "frames"], tmp_path / "out", settings)
    assert [r.status for r in again.results] == ["skipped"]
    changed = ExtractSettings(**{**settings.__dict__, "stride": 8})
    with pytest.raises(ConfigError, match="stride=4"):
        extract_features([tmp_path / "frames"], tmp_path / "out", changed)


def test_failures_are_listed_and_the_others_finish(weights, tmp_path):
    _array(tmp_path / "frames", "good", (16, 32, 32, 3), 1)
    _array(tmp_path / "frames", "small", (16, 20, 40, 3), 2)  # smaller than the crop
    (tmp_path / "frames" / "broken.npy").write_bytes(b"not an array")
    settings = ExtractSettings(weights=str(weights["rgb"]), size=32, device="cpu")
    report = extract_features([tmp_path / "frames"], tmp_path / "out", settings)
    status = {r.name: (r.status, r.error) for r in report.results}
    assert status["good"][0] == "done"
    assert status["small"][0] == "failed" and "smaller than the 32 px crop" in status["small"][1]
    # the one .npy reader's message (data/npy.py): the file and what is wrong with it, on one line
    assert status["broken"][0] == "failed" and "broken.npy: not a .npy file" in status["broken"][1]
    assert "\n" not in status["broken"][1]
    described = json.loads((tmp_path / "out" / "features.json").read_text())
    assert list(described["videos"]) == ["good"]
    assert np.load(tmp_path / "out" / "good.npy").shape == (1, 1024)


def test_an_unwritable_out_is_refused_before_the_networks_load(weights, tmp_path, monkeypatch):
    import afsd_cli.features.extract as extract

    _array(tmp_path / "frames", "clip", (16, 32, 32, 3), 1)
    (tmp_path / "taken").write_text("a file where OUT should be")
    monkeypatch.setattr(extract, "_load_encoders", lambda *a: pytest.fail("networks loaded before OUT was checked"))
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        extract_features([tmp_path / "frames"], tmp_path / "taken", ExtractSettings(weights=str(weights["rgb"]),
                                                                                     size=32, device="cpu"))


def test_the_manifest_records_items_as_prepare_and_flow_do(weights, tmp_path):
    """One manifest record format for every folder job (data/manifest.py ManifestRecorder)."""
    _array(tmp_path / "frames", "good", (16, 32, 32, 3), 1)
    (tmp_path / "frames" / "broken.npy").write_bytes(b"not an array")
    extract_features([tmp_path / "frames"], tmp_path / "out",
                     ExtractSettings(weights=str(weights["rgb"]), size=32, device="cpu"))
    items = json.loads((tmp_path / "out" / "manifest.json").read_text())["items"]
    assert items["good"]["status"] == "done" and items["good"]["output"] == "good.npy"
    assert items["good"]["source"] == str(tmp_path / "frames" / "good.npy")
    assert items["broken"]["status"] == "failed" and items["broken"]["source"] == str(tmp_path / "frames" / "broken.npy")


def test_worker_processes_give_the_same_features(weights, reference, tmp_path):
    shape, seed, size, clip_frames, stride = REFERENCE_CASES["rgb_clip8"]
    for name in ("a", "b"):
        _array(tmp_path / "frames", name, shape, seed)
    settings = ExtractSettings(weights=str(weights["rgb"]), size=size, clip_frames=clip_frames, stride=stride,
                               device="cpu", jobs=2)
    # the worker path (one network per worker, cores shared); threads keep the test light
    threads = torch.get_num_threads()
    try:
        report = extract_features([tmp_path / "frames"], tmp_path / "out", settings, backend="threading")
    finally:
        torch.set_num_threads(threads)
    assert [r.status for r in report.results] == ["done", "done"]
    for name in ("a", "b"):
        assert_features_close(np.load(tmp_path / "out" / f"{name}.npy"), reference["rgb_clip8"])


def test_setting_errors(weights, tmp_path):
    _array(tmp_path / "frames", "clip", (16, 32, 32, 3), 1)
    base = dict(size=32, device="cpu")
    with pytest.raises(ConfigError, match="needs --weights"):
        extract_features([tmp_path / "frames"], tmp_path / "out", ExtractSettings(**base))
    with pytest.raises(ConfigError, match="needs --flow-weights"):
        extract_features([tmp_path / "frames"], tmp_path / "out",
                         ExtractSettings(modality="both", weights=str(weights["rgb"]), **base))
    with pytest.raises(CheckpointError, match="in_channels / modality"):  # an RGB file for the flow network
        extract_features([tmp_path / "frames"], tmp_path / "out",
                         ExtractSettings(modality="flow", flow_weights=str(weights["rgb"]), **base))
    with pytest.raises(ConfigError, match="OUT must differ"):
        extract_features([tmp_path / "frames"], tmp_path / "frames", ExtractSettings(weights=str(weights["rgb"]), **base))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        extract_features([tmp_path / "frames"], tmp_path / "out",
                         ExtractSettings(weights=str(weights["rgb"]), amp="fp16", **base))


def test_incomplete_weights_are_refused(tmp_path):
    state = generated_i3d_weights(3, RGB_WEIGHTS_SEED)
    del state["Mixed_5c.b0.conv3d.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="1 tensor\\(s\\) missing .*Mixed_5c.b0.conv3d.weight"):
        load_i3d(tmp_path / "partial.pt", 3)


def test_an_afsd_checkpoint_gives_its_backbone(tmp_path):
    from afsd_cli.model import AFSD, save_checkpoint, thumos14_spec

    torch.manual_seed(0)
    model = AFSD(thumos14_spec(clip_length=64, crop_size=32, num_classes=5))  # the demo's small RGB network
    save_checkpoint(model, tmp_path / "checkpoint-10.ckpt")
    backbone, report = load_i3d(tmp_path / "checkpoint-10.ckpt", 3)
    assert report.unexpected and all(not key.startswith("backbone.") for key in report.unexpected)  # the heads
    expected = model.backbone._model.state_dict()
    assert backbone.state_dict().keys() == expected.keys()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_the_weights_may_be_a_training_run_folder(tmp_path):
    from afsd_cli.model import AFSD, save_checkpoint, thumos14_spec

    model = AFSD(thumos14_spec(clip_length=64, crop_size=32, num_classes=5))
    run = tmp_path / "runs" / "train" / "mine"
    save_checkpoint(model, run / "checkpoint-3.ckpt")
    save_checkpoint(model, run / "checkpoint-5.ckpt")
    settings = ExtractSettings.from_options(modality=None, weights=run, flow_weights=None, flow_input=None, fps="native")
    assert settings.weights == str(run / "checkpoint-5.ckpt")  # best, else the last epoch: runs.find_checkpoint
    (run / "checkpoint-3.ckpt").unlink(), (run / "checkpoint-5.ckpt").unlink()
    with pytest.raises(InputError, match="no checkpoint in this run folder"):
        ExtractSettings.from_options(modality=None, weights=run, flow_weights=None, flow_input=None, fps="native")


# --------------------------------------------------------------------------------------------
# videos: decoding, resize, fps, flow on the fly


def _decoded_and_resized(path, size):
    import cv2
    from PIL import Image

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1])
    capture.release()
    height, width = resized_shape(*frames[0].shape[:2], short_side_for(size))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((width, height), Image.BICUBIC))
                     for f in frames])


def test_video_equals_its_resized_frames(encoders, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_FRAMES", 7)  # clips straddle chunk boundaries
    video = make_clip(tmp_path / "clip.avi", fps=25.0, size=(60, 44), frames=textured_frames(22, (60, 44)), fourcc="MJPG")
    size = 40  # short side round(40 * 256/224) = 46: frames 44x60 → 46x63, crop 40x40 at (3, 12)
    frames = _decoded_and_resized(video, size)
    assert frames.shape == (22, 46, 63, 3) and crop_offsets(46, 63, 40) == (3, 12)
    np.save(tmp_path / "frames.npy", frames)
    settings = ExtractSettings(size=size, clip_frames=8, stride=3)
    record = extract_one(SourceItem("clip", video, "video"), tmp_path / "video.npy", settings, encoders, batch_size=4)
    extract_one(SourceItem("frames", tmp_path / "frames.npy", "frames"), tmp_path / "arrays.npy", settings, encoders,
                batch_size=4)
    assert_features_close(np.load(tmp_path / "video.npy"), np.load(tmp_path / "arrays.npy"))
    assert record["fps"] == pytest.approx(25.0) and record["frames"] == 22 and record["features"] == 5


def test_video_resampled_to_fewer_fps(encoders, tmp_path):
    video = make_clip(tmp_path / "clip.avi", fps=30.0, size=(48, 40), frames=textured_frames(30, (48, 40)), fourcc="MJPG")
    settings = ExtractSettings(size=32, clip_frames=4, stride=2, fps=10.0)
    record = extract_one(SourceItem("clip", video, "video"), tmp_path / "out.npy", settings, encoders, batch_size=8)
    assert record["fps"] == 10.0 and record["native_fps"] == pytest.approx(30.0)
    assert record["frames"] == 10 and record["native_frames"] == 30 and record["features"] == 4
    with pytest.raises(InputError, match="above the video's 30 fps"):
        extract_one(SourceItem("clip", video, "video"), tmp_path / "up.npy",
                    ExtractSettings(size=32, fps=60.0), encoders, batch_size=8)


def test_frame_arrays_take_their_rate_from_the_prepare_manifest(encoders, tmp_path):
    _array(tmp_path / "npy", "clip", (20, 32, 32, 3), 4)
    (tmp_path / "npy" / "manifest.json").write_text(json.dumps(
        {"command": "prepare", "items": {"clip": {"status": "done", "sample_fps": 10.0}}}))
    [item] = collect_sources([tmp_path / "npy"])
    assert item.kind == "frames" and item.array_fps == 10.0
    settings = ExtractSettings(size=32, clip_frames=8, stride=4)
    record = extract_one(item, tmp_path / "out.npy", settings, encoders, batch_size=8)
    assert record["fps"] == 10.0 and record["duration"] == pytest.approx(2.0) and record["features"] == 4
    with pytest.raises(InputError, match="never resamples frame arrays"):
        extract_one(item, tmp_path / "out.npy", ExtractSettings(size=32, fps=25.0), encoders, batch_size=8)


def test_flow_computed_from_frames_equals_flow_arrays(encoders, tmp_path, monkeypatch):
    from afsd_cli.data.flow import compute_flow

    monkeypatch.setattr(sources, "CHUNK_FRAMES", 5)  # flow pairs across chunk boundaries
    frames = textured_frames(13, (40, 36), seed=3)
    np.save(tmp_path / "clip.npy", frames)
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "flow" / "clip.npy", compute_flow(frames, method="farneback"))
    settings = ExtractSettings(modality="flow", size=32, clip_frames=8, stride=2, flow_method="farneback")
    extract_one(SourceItem("clip", tmp_path / "clip.npy", "frames"), tmp_path / "computed.npy", settings, encoders, 4)
    extract_one(SourceItem("clip", tmp_path / "clip.npy", "frames", flow_path=tmp_path / "flow" / "clip.npy"),
                tmp_path / "stored.npy", settings, encoders, 4)
    assert_features_close(np.load(tmp_path / "computed.npy"), np.load(tmp_path / "stored.npy"))


# --------------------------------------------------------------------------------------------
# clips and time


@pytest.mark.parametrize("frames,clip_frames,stride", [(24, 16, 4), (10, 16, 4), (16, 16, 4), (31, 5, 7), (9, 3, 3), (1, 4, 2)])
def test_clips_follow_the_definition_whatever_the_chunks(frames, clip_frames, stride):
    video = np.arange(frames).reshape(frames, 1, 1, 1)
    rng = np.random.default_rng(frames * 100 + stride)
    cuts = np.sort(rng.choice(np.arange(1, frames), size=min(3, frames - 1), replace=False)) if frames > 1 else []
    assembler = ClipAssembler(clip_frames, stride)
    clips = [c for chunk in np.split(video, cuts) if (c := assembler.push(chunk)) is not None]
    tail = assembler.finish()
    clips = np.concatenate(clips + ([tail] if tail is not None else []))[..., 0, 0, 0]
    count = feature_count(frames, clip_frames, stride)
    assert len(clips) == count == max(math.floor((frames - clip_frames) / stride) + 1, 1)
    if frames >= clip_frames:
        expected = [np.arange(i * stride, i * stride + clip_frames) for i in range(count)]
    else:  # one clip padded with the last frame
        expected = [np.minimum(np.arange(clip_frames), frames - 1)]
    np.testing.assert_array_equal(clips, np.stack(expected))


def test_time_mapping_formulas():
    assert feature_span_seconds(3, 30.0, 16, 4) == (12 / 30, 28 / 30)
    assert feature_index_to_seconds(3, 30.0, 16, 4) == pytest.approx(20 / 30)
    assert seconds_to_feature_position(20 / 30, 30.0, 16, 4) == pytest.approx(3.0)
    assert seconds_to_feature_index(0.0, 30.0, 16, 4, num_features=10) == 0
    assert seconds_to_feature_index(1e6, 30.0, 16, 4, num_features=10) == 9
    with pytest.raises(ConfigError):
        feature_index_to_seconds(1, 0.0, 16, 4)


def test_ground_truth_segments_survive_the_round_trip_within_one_stride():
    import csv

    fps, clip_frames, stride = 30.0, 16, 4
    with open(ANNOTATIONS, newline="") as handle:
        segments = [(float(row["start"]), float(row["end"])) for row in csv.DictReader(handle)]
    assert len(segments) > 100
    first_centre = clip_frames / 2 / fps
    for start, end in segments:
        frames = math.ceil(end * fps) + clip_frames
        count = feature_count(frames, clip_frames, stride)
        first, last = segment_to_feature_indices(start, end, fps, clip_frames, stride, count)
        back = (feature_index_to_seconds(first, fps, clip_frames, stride),
                feature_index_to_seconds(last, fps, clip_frames, stride))
        for original, returned in zip((start, end), back):
            if original >= first_centre:  # before the first centre the index clamps to 0
                assert abs(returned - original) <= stride / fps / 2 + 1e-9
        assert first <= last


# --------------------------------------------------------------------------------------------
# the command


def test_cli_extracts_and_reports_one_line_errors(weights, tmp_path):
    _array(tmp_path / "frames", "clip", (20, 36, 40, 3), 5)
    runner = CliRunner()
    result = runner.invoke(app, ["extract", str(tmp_path / "frames"), str(tmp_path / "out"), "--weights",
                                 str(weights["rgb"]), "--size", "32", "--clip-frames", "8", "--stride", "4",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "out" / "clip.npy").shape == (4, 1024)
    assert "features.json" in result.output

    bad = runner.invoke(app, ["extract", str(tmp_path / "frames"), str(tmp_path / "out2"), "--weights",
                              str(tmp_path / "missing.pt"), "--size", "32"])
    assert bad.exit_code == 1
    assert "missing.pt: weights file not found" in bad.output and "Traceback" not in bad.output
    ranged = runner.invoke(app, ["extract", str(tmp_path / "frames"), str(tmp_path / "out3"), "--weights",
                                 str(weights["rgb"]), "--stride", "0"])
    assert ranged.exit_code == 2 and "--stride" in ranged.output
    fps = runner.invoke(app, ["extract", str(tmp_path / "frames"), str(tmp_path / "out4"), "--weights",
                              str(weights["rgb"]), "--fps", "fast"])
    assert fps.exit_code == 1 and "--fps must be 'native' or a number" in fps.output


def test_help_and_the_time_mapping_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from afsd_cli.cli import app; "
            "import afsd_cli.features.timeline; out = CliRunner().invoke(app, ['--help']).output; "
            "assert 'extract' in out, out; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REFERENCE.parents[3])
    assert result.returncode == 0, result.stderr
