"""Streaming `predict --video` (engine/streaming.py, data/frame_stream.py): same windows and
detections as the in-memory path, a bounded number of frames held, provisional regions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import helpers.inference_parity as P
from afsd_cli.cli import app
from afsd_cli.data.annotations import thumos14_class_index
from afsd_cli.data.flow import compute_flow
from afsd_cli.data.frame_stream import FlowFrameStream, VideoFrameStream
from afsd_cli.data.video import read_video
from afsd_cli.engine.inference import CroppedFrames, Predictor, center_crop, window_offsets
from afsd_cli.engine.jobs import LoadedVideo, VideoJob, load_array, video_file_jobs
from afsd_cli.engine.postprocess import PostprocessSettings
from afsd_cli.engine.streaming import DEFAULT_QUEUE_WINDOWS, SlidingWindows, run_streaming
from afsd_cli.errors import InputError
from afsd_cli.io import save_torch
from afsd_cli.model import AFSD, ModelSpec
from helpers.video_helpers import make_clip, textured_frames, truncate_file, write_garbage

CLIP, STRIDE, CROP = 64, 32, 32
TINY_CLIP, TINY_STRIDE, TINY_CROP = 32, 16, 16
NAMES = thumos14_class_index().names


def small_model(channels: int = 3, seed: int = 5, clip: int = CLIP, crop: int = CROP) -> AFSD:
    spec = ModelSpec(dataset="thumos14", num_classes=21, clip_length=clip, crop_size=crop, in_channels=channels)
    model = AFSD(spec)
    model.load_state_dict(P.seeded_state_dict(P.state_dict_layout(model.state_dict()), seed))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> AFSD:
    return small_model()


@pytest.fixture(scope="module")
def tiny_model() -> AFSD:
    """The cheapest real AFSD (32-frame clips, 16 px crop) for the tests of the pipeline itself."""
    return small_model(clip=TINY_CLIP, crop=TINY_CROP)


def predictor(models, batch_size: int = 1, clip: int = CLIP, stride: int = STRIDE, crop: int = CROP) -> Predictor:
    return Predictor(models, PostprocessSettings(clip_length=clip), NAMES, clip, stride, crop,
                     batch_size=batch_size)


def tiny_predictor(model, batch_size: int = 1) -> Predictor:
    return predictor([model], batch_size, TINY_CLIP, TINY_STRIDE, TINY_CROP)


class CachedForward(torch.nn.Module):
    """A model that runs once per distinct input window (the second pass over the same windows
    costs nothing; a window that differs is computed)."""

    def __init__(self, model: AFSD):
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.cache: dict[bytes, object] = {}

    def forward(self, clip: torch.Tensor):
        key = hashlib.sha1(clip.numpy().tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = self.model(clip)
        return self.cache[key]


def moving_video(path: Path, seconds: float, fps: float = 10.0, size=(40, 30)) -> Path:
    """A small textured clip whose texture moves (so windows differ), MJPG: quick to write/decode."""
    frames = textured_frames(int(seconds * fps), size)
    return make_clip(path, fps=fps, size=size, fourcc="MJPG", frames=frames)


class CountingStream:
    """A frame stream over an array that records how many frames were taken from it."""

    def __init__(self, frames: np.ndarray, sample_fps: float = 10.0, expected: int | None = None):
        self.frames = frames
        self.sample_fps = sample_fps
        self.expected_frames = expected
        self.frames_read = 0

    @property
    def duration(self) -> float:
        return self.frames_read / self.sample_fps

    def __iter__(self):
        for frame in self.frames:
            self.frames_read += 1
            yield (frame,)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("frames", [1, 5, CLIP - 1, CLIP, CLIP + 1, CLIP + STRIDE, 2 * CLIP + 5, 300])
@pytest.mark.parametrize("single", [False, True])
def test_sliding_windows_are_the_in_memory_windows_and_read_no_frame_ahead(frames, single):
    video = np.random.default_rng(frames).integers(0, 256, (frames, 36, 40, 3), dtype=np.uint8)
    windower = SlidingWindows(CLIP, STRIDE, CROP, single_window=single)
    seen_at_emission = []
    windows = []
    for window in windower.windows((frame,) for frame in video):
        seen_at_emission.append(windower.frames_seen)
        windows.append(window)
    offsets = window_offsets(frames, CLIP, STRIDE, single)
    assert [w.offset for w in windows] == offsets
    whole = center_crop(video, CROP)
    for window in windows:
        assert np.array_equal(window.clips[0], whole[:, window.offset:window.offset + CLIP])
    # structural memory bound: one clip of frames, and a strided window is cut as soon as its
    # last frame arrives (the tail window and short videos need the end of the stream)
    assert windower.capacity == CLIP and all(len(ring) == CLIP for ring in windower._rings)
    for window, seen in zip(windows, seen_at_emission):
        strided = not single and frames >= CLIP and window.offset % STRIDE == 0
        assert seen == (window.offset + CLIP if strided else frames)


def test_cropped_frames_read_a_memory_mapped_array_window_by_window(tmp_path):
    array = P.parity_array("v", 70, 3)
    np.save(tmp_path / "v.npy", array)
    mapped = load_array(tmp_path / "v.npy", 3, CROP)
    clip = CroppedFrames(mapped, CROP)
    assert isinstance(clip.frames, np.memmap) and clip.shape == (3, 70, CROP, CROP)
    assert np.array_equal(clip[:, 10:40], center_crop(array, CROP)[:, 10:40])
    with pytest.raises(IndexError):
        clip[0]


# --------------------------------------------------------------------------- flow


@pytest.mark.parametrize("frames,method", [(1, "dis"), (2, "dis"), (5, "dis"), (9, "dis"), (11, "dis"),
                                           (10, "tvl1")])
def test_flow_stream_equals_the_flow_of_the_whole_array(frames, method):
    # batches of 4 pairs: the stream solves the pairs in the batches compute_flow forms
    video = textured_frames(frames, (24, 20), seed=3)
    stream = FlowFrameStream(list(video), method=method, batch_size=4)
    pairs = list(stream)
    assert len(pairs) == frames
    assert np.array_equal(np.stack([rgb for rgb, _ in pairs]), video)
    assert np.array_equal(np.stack([flow for _, flow in pairs]), compute_flow(video, method=method, batch_size=4))


# --------------------------------------------------------------------------- video files


def test_stream_of_a_video_file_equals_read_video(tmp_path):
    path = moving_video(tmp_path / "v.avi", 6.0, fps=25.0)
    stream = VideoFrameStream(path)
    assert stream.expected_frames == 60 and stream.sample_fps == 10.0
    frames = np.stack(list(stream))
    video = read_video(path)
    assert np.array_equal(frames, video.frames)
    assert (stream.decoded, stream.frames_read, stream.duration) == (video.count, video.sample_count, video.duration)
    with pytest.raises(RuntimeError):
        iter(stream)


def test_a_truncated_video_fails_like_read_video(tmp_path):
    path = truncate_file(moving_video(tmp_path / "cut.avi", 8.0), 0.6)
    with pytest.raises(InputError) as expected:
        read_video(path)
    with pytest.raises(InputError) as streamed:
        list(VideoFrameStream(path))
    assert str(streamed.value) == str(expected.value) and "container says" in str(streamed.value)


def test_a_container_without_frame_count_streams_all_frames(tmp_path, monkeypatch):
    import afsd_cli.data.frame_stream as frame_stream

    path = moving_video(tmp_path / "v.avi", 3.0)
    real_probe = frame_stream.probe_video

    def no_count(p):
        probe = real_probe(p)
        probe.container_count = 0.0  # some streams (live, some MKV/WebM) do not say
        return probe

    monkeypatch.setattr(frame_stream, "probe_video", no_count)
    stream = VideoFrameStream(path)
    assert stream.expected_frames is None  # progress without a total; windows never use it
    assert np.array_equal(np.stack(list(stream)), read_video(path).frames)


def test_streaming_detections_equal_the_in_memory_path_on_a_long_video(tmp_path, model):
    # 2.5 minutes at 10 fps: 1503 frames, 23 windows of 64 frames plus the tail window at 1439
    # (stride 64 halves the cost of the test; the windows' layout is tested above)
    path = moving_video(tmp_path / "long clip.avi", 150.3)
    run = predictor([CachedForward(model)], stride=CLIP)
    progress = []
    [streamed] = run_streaming(run, video_file_jobs([path], "thumos14", [3]), on_progress=progress.append)
    assert streamed.error is None and streamed.frames == 1503 and streamed.windows == 24
    # against the prepared array of the same video (what `afsd prepare` writes)
    frames = read_video(path).frames
    [prepared] = run.run([VideoJob("long clip", lambda: LoadedVideo([frames]), 10.0, 150.3, "long clip", str(path))])
    assert streamed.detections == prepared.detections and len(prepared.detections) > 100
    # progress in sampled frames, towards the header's count, ending with the total
    counts = [p.frames for p in progress]
    assert counts == sorted(counts) and progress[0].total == 1503 and progress[-1].done
    assert progress[-1].frames == 1503


def test_streamed_two_stream_fusion_equals_the_in_memory_path(tmp_path, tiny_model):
    # flow computed on the fly in both paths (DIS: fast), averaged with the RGB outputs
    path = moving_video(tmp_path / "v.avi", 9.3, fps=20.0)
    flow_model = small_model(channels=2, seed=6, clip=TINY_CLIP, crop=TINY_CROP)
    run = Predictor([tiny_model, flow_model], PostprocessSettings(clip_length=TINY_CLIP), NAMES, TINY_CLIP,
                    TINY_STRIDE, TINY_CROP, fusion="average")
    streamed, in_memory = (next(run.run(video_file_jobs([path], "thumos14", [3, 2], flow_method="dis",
                                                        streaming=streaming)))
                           for streaming in (True, False))
    assert streamed.error is None and in_memory.error is None
    assert streamed.windows == in_memory.windows == 5  # 93 frames: 0, 16, 32, 48 and the tail at 61
    assert streamed.detections == in_memory.detections and streamed.detections


def test_streamed_activitynet_video_equals_the_in_memory_path(tmp_path):
    # ActivityNet: at most clip_length frames chosen from the header's count, one window at 0
    path = moving_video(tmp_path / "v.avi", 9.0, fps=20.0)
    spec = ModelSpec(dataset="anet", num_classes=2, clip_length=CLIP, crop_size=CROP, in_channels=3)
    model = AFSD(spec)
    model.load_state_dict(P.seeded_state_dict(P.state_dict_layout(model.state_dict()), 7))
    run = Predictor([model.eval()], PostprocessSettings(clip_length=CLIP, candidate_thresh=1e-9,
                                                        nms_score_thresh=1e-9), None, CLIP, CLIP, CROP,
                    single_window=True, fusion="geometric")
    streamed, in_memory = (next(run.run(video_file_jobs([path], "anet", [3], streaming=streaming)))
                           for streaming in (True, False))
    assert streamed.error is None and streamed.frames == in_memory.frames == 180 and streamed.windows == 1
    assert streamed.detections == in_memory.detections and streamed.detections


def test_streaming_keeps_a_bounded_number_of_frames_ahead_of_the_network(tiny_model):
    video = np.random.default_rng(0).integers(0, 256, (14 * TINY_STRIDE + 5, 20, 20, 3), dtype=np.uint8)
    source = CountingStream(video)
    run = tiny_predictor(tiny_model, batch_size=2)
    ahead = []
    forward = run.forward

    def watched(stream, batch):
        ahead.append(source.frames_read)
        return forward(stream, batch)

    run.forward = watched
    regions = []
    job = VideoJob("v", lambda: LoadedVideo([video]), 10.0, None, "v", "v", open_frames=lambda: source)
    [result] = run_streaming(run, [job], on_region=lambda r: regions.append((r, source.frames_read)))
    # when the network sees batch b (windows up to offset (2b + 1)·stride), the decoder holds at
    # most the queued windows, the one waiting to be queued and the frames of the next
    bound = TINY_CLIP + (DEFAULT_QUEUE_WINDOWS + 2) * TINY_STRIDE
    assert len(ahead) == 7  # 14 windows (the last is the tail at 197), in batches of two
    for number, frames_read in enumerate(ahead):
        last_offset = min((2 * number + 1) * TINY_STRIDE, len(video) - TINY_CLIP)
        assert frames_read <= last_offset + bound
    # regions are handed out while the video is still being read, not at its end
    provisional = [(r, seen) for r, seen in regions if not r.final and r.end is not None]
    assert len(provisional) == 6  # one per batch of two windows but the first; the last region comes at the end
    assert all(seen <= round(r.end * 10) + bound for r, seen in provisional)
    assert [r.detections for r, _ in regions if r.final] == [result.detections]


def test_regions_cover_the_video_once_and_the_last_one_is_final(tiny_model):
    video = np.random.default_rng(1).integers(0, 256, (8 * TINY_STRIDE + 7, 20, 20, 3), dtype=np.uint8)
    run = tiny_predictor(tiny_model)
    regions = []
    job = VideoJob("v", lambda: LoadedVideo([video]), 10.0, None, "v", "v", open_frames=lambda: CountingStream(video))
    [result] = run_streaming(run, [job], on_region=regions.append)
    *provisional, last, final = regions
    assert final.final and final.detections == result.detections
    bounds = [(r.start, r.end) for r in provisional] + [(last.start, last.end)]
    assert bounds[0][0] is None and last.end is None
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, each end once
    for region in provisional:
        assert all((region.start is None or d["segment"][1] >= region.start) and d["segment"][1] < region.end
                   for d in region.detections)
    assert last.detections == [d for d in result.detections if d["segment"][1] >= last.start]


# --------------------------------------------------------------------------- the command


def test_predict_stream_on_a_video_file(tmp_path):
    path = moving_video(tmp_path / "live.avi", 20.0)
    config = tmp_path / "small.yaml"
    config.write_text("\n".join([
        "dataset:", "  name: thumos14", "  num_classes: 21", "  training:", f"    clip_length: {CLIP}",
        f"    crop_size: {CROP}", "  testing:", f"    crop_size: {CROP}", f"    clip_length: {CLIP}",
        f"    clip_stride: {STRIDE}", "model:", "  in_channels: 3", "testing:", f"  output_path: {tmp_path}",
    ]) + "\n")
    checkpoint = tmp_path / "m.ckpt"
    save_torch(checkpoint, small_model().state_dict())
    out = tmp_path / "det.json"
    result = CliRunner().invoke(app, [str(a) for a in ("predict", config, "-c", checkpoint, "--video", path,
                                                       "-o", out, "--device", "cpu", "--stream")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: JSON lines only
    assert all(line["video"] == "live" for line in lines)
    *regions, final = lines
    assert final["final"] is True and not any(line["final"] for line in regions)
    assert final["detections"] == json.loads(out.read_text())["results"]["live"]
    assert len(regions) == 6  # 200 frames: windows at 0, 32, ..., 128 and the tail at 136
    assert regions[0]["ends_in"][0] is None and regions[-1]["ends_in"][1] is None
    ends = [r["ends_in"] for r in regions]
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
    assert "detections written to" in result.stderr

    # a video that fails gets an error line; the others' lines and detections are kept, exit 1
    broken = write_garbage(tmp_path / "broken.avi")
    both = CliRunner().invoke(app, [str(a) for a in ("predict", config, "-c", checkpoint, "--video", broken,
                                                     "--video", path, "-o", out, "--device", "cpu", "--stream")])
    assert both.exit_code == 1
    first, *rest = [json.loads(line) for line in both.stdout.splitlines()]
    assert first["video"] == "broken" and "broken.avi" in first["error"]
    assert rest == lines and list(json.loads(out.read_text())["results"]) == ["live"]

    refused = CliRunner().invoke(app, ["predict", str(config), "-c", str(checkpoint), "--stream"])
    assert refused.exit_code == 1 and "--stream needs video files" in refused.output


def test_fuse_stream_on_a_video_file(tmp_path):
    # the two-stream CLI streams too: RGB decoded, flow computed on the fly, JSON lines on stdout
    # whose final line equals the written detections
    path = moving_video(tmp_path / "live.avi", 12.0)
    config = tmp_path / "small.yaml"
    config.write_text("\n".join([
        "dataset:", "  name: thumos14", "  num_classes: 21", "  training:", f"    clip_length: {CLIP}",
        f"    crop_size: {CROP}", "  testing:", f"    clip_stride: {STRIDE}", "model:", "  in_channels: 3",
        "testing:", "  flow_method: dis",
    ]) + "\n")
    rgb, flow = tmp_path / "rgb.ckpt", tmp_path / "flow.ckpt"
    save_torch(rgb, small_model().state_dict())
    save_torch(flow, small_model(channels=2, seed=6).state_dict())
    out = tmp_path / "fused.json"
    result = CliRunner().invoke(app, [str(a) for a in ("fuse", config, "--rgb-checkpoint", rgb, "--flow-checkpoint",
                                                       flow, "--video", path, "-o", out, "--device", "cpu",
                                                       "--stream")])
    assert result.exit_code == 0, result.output
    *regions, final = [json.loads(line) for line in result.stdout.splitlines()]
    assert regions and final["final"] is True and not any(line["final"] for line in regions)
    assert final["detections"] == json.loads(out.read_text())["results"]["live"]
    refused = CliRunner().invoke(app, ["fuse", str(config), "--rgb-checkpoint", str(rgb), "--flow-checkpoint",
                                       str(flow), "--stream"])
    assert refused.exit_code == 1 and "--stream needs video files" in refused.output

