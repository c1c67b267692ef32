"""Decoding one video: the official 10 fps rule, the ≤768-frame ActivityNet rule, resizing, errors."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers.video_helpers import NTSC_FPS, frame_indices, make_clip, textured_frames, truncate_file, write_garbage

from afsd_cli.data.video import (
    accumulator_keep_indices,
    anet_keep_indices,
    list_videos,
    make_resizer,
    read_frames,
    read_video,
)
from afsd_cli.errors import InputError

DATA = Path(__file__).parent / "data" / "video"

# Worked out by hand from the rule (step = fps/10; acc += 1 per frame; keep when acc >= step,
# then acc -= step), 0-based native indices of the first kept frames.
EXPECTED_FIRST_KEPT = {
    30.0: [2, 5, 8, 11, 14, 17, 20, 23, 26, 29],  # every 3rd: 1-based 3, 6, 9, ...
    25.0: [2, 4, 7, 9, 12, 14, 17, 19, 22, 24],  # step 2.5: gaps 2, 3, 2, 3, ...
    24.0: [2, 4, 7, 9, 11, 14, 16, 19, 21, 23],  # step 2.4: gaps of a 5-frames-per-12 cycle
    NTSC_FPS: [2, 5, 8, 11, 14, 17, 20, 23, 26, 29],
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """One clip per (fps, codec): 4-6 s of index-coloured 64x48 frames."""
    root = tmp_path_factory.mktemp("clips")
    specs = {
        30.0: ("mp4v", 180),  # 6 s
        25.0: ("MJPG", 125),  # 5 s
        24.0: ("XVID", 96),  # 4 s
        NTSC_FPS: ("mp4v", 179),  # 5.97 s: long enough for the 29.97 accumulator to drift
    }
    made = {}
    for fps, (fourcc, n) in specs.items():
        suffix = ".mp4" if fourcc == "mp4v" else ".avi"
        made[fps] = (make_clip(root / f"clip_{fps:.2f}{suffix}", fps, n, fourcc=fourcc), n)
    return made


@pytest.mark.parametrize("fps", list(EXPECTED_FIRST_KEPT), ids=["30", "25", "24", "29.97"])
def test_thumos_mode_keeps_exactly_the_official_native_frames(clips, fps):
    path, n = clips[fps]
    video = read_video(path, "thumos14")
    assert video.count == n  # measured by decoding
    assert video.fps == pytest.approx(fps, abs=0.01)
    assert video.kept_indices[:10] == EXPECTED_FIRST_KEPT[fps]
    # The pixels really are those native frames (index encoded in the colour).
    assert frame_indices(video.frames) == video.kept_indices
    assert video.frames.shape == (len(video.kept_indices), 112, 112, 3)
    assert video.frames.dtype == np.uint8
    # Frames are spread evenly at 10 fps: the count is floor(n / step) for these clip lengths.
    assert video.sample_count == int(n * 10 / video.fps)


def test_accumulator_reproduces_every_official_thumos14_sample_count():
    """The 412 rows of the shipped THUMOS14 video-info files (made by the official code)."""
    rows = []
    for name in ("thumos14_val_video_info.csv", "thumos14_test_video_info.csv"):
        with open(DATA / name, newline="") as handle:
            rows += list(csv.DictReader(handle))
    assert len(rows) == 412
    for row in rows:
        kept = accumulator_keep_indices(int(float(row["count"])), float(row["fps"]))
        assert len(kept) == int(row["sample_count"]), row["video"]


def test_bgr_resize_shortcut_equals_official_pil_on_rgb(tmp_path):
    from PIL import Image

    frames = textured_frames(12, size=(96, 72))
    rgb = frames[0]
    official = np.asarray(Image.fromarray(rgb).resize((112, 112), Image.BICUBIC))
    ours = make_resizer("pil-bicubic")(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert np.array_equal(ours, official)
    # And end to end through a decoded (lossless MJPG is not lossless: compare to cv2's decode).
    import cv2

    path = make_clip(tmp_path / "tex.avi", 30, 12, size=(96, 72), fourcc="MJPG", frames=frames)
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        decoded.append(np.asarray(Image.fromarray(bgr[:, :, ::-1].copy()).resize((112, 112), Image.BICUBIC)))
    video = read_video(path, "thumos14")
    assert np.array_equal(video.frames, np.stack([decoded[i] for i in video.kept_indices]))


def test_cv2_resize_options_are_close_to_pil(clips):
    path, _ = clips[30.0]
    reference = read_frames(path, "thumos14").astype(int)
    for method in ("cv2-area", "cv2-cubic"):
        other = read_frames(path, "thumos14", resize=method).astype(int)
        assert other.shape == reference.shape
        assert np.abs(other - reference).mean() < 2.0


def test_anet_rule_by_hand():
    assert anet_keep_indices(5, 1.0) == [0, 1, 2, 3, 4]
    # Native frame i lands in slot round_half_up(i * ratio); slot k shows the last frame in it.
    assert anet_keep_indices(10, 0.5) == [0, 2, 4, 6, 8]  # slot 0: {0}; slot 1: {1, 2}; ...
    assert anet_keep_indices(9, 1 / 3) == [1, 4, 7]
    assert anet_keep_indices(1000, 1.0, max_frames=768) == list(range(768))
    kept = anet_keep_indices(2000, 768 / 2000)
    assert len(kept) == 768 and kept == sorted(set(kept)) and kept[-1] <= 1999


@pytest.mark.parametrize("num_frames", [1, 2, 3, 17, 100, 769, 1000])
def test_anet_rule_matches_its_definition_by_brute_force(num_frames):
    for max_frames in (7, 20, 64, 768):
        ratio = min(max_frames / num_frames, 1.0)
        if ratio >= 1.0:
            assert anet_keep_indices(num_frames, ratio, max_frames) == list(range(num_frames))
            continue

        def slot(i):
            return math.floor(i * ratio + 0.5)

        out_count = max(1, min(slot(num_frames), max_frames))
        expected = [max(i for i in range(num_frames) if slot(i) <= k) for k in range(out_count)]
        assert anet_keep_indices(num_frames, ratio, max_frames) == expected


def test_anet_mode_resamples_long_videos_to_max_frames(clips):
    path, n = clips[30.0]  # 180 frames
    video = read_video(path, "anet", max_frames=64)
    assert video.sample_count == 64
    assert video.sample_fps == pytest.approx(30.0 * 64 / 180)
    assert video.kept_indices == anet_keep_indices(180, 64 / 180, 64)
    assert frame_indices(video.frames) == video.kept_indices
    short = read_video(path, "anet")  # 180 <= 768: every frame, native fps
    assert short.sample_count == n and short.sample_fps == 30.0
    assert frame_indices(short.frames) == list(range(n))


# ---------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict:
    import cv2

    root = tmp_path_factory.mktemp("bad")
    files = {"garbage": write_garbage(root / "garbage.mp4")}
    (root / "empty.mp4").write_bytes(b"")
    files["empty"] = root / "empty.mp4"
    zero = root / "zero.avi"
    writer = cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    writer.release()
    files["zero_frames"] = zero
    files["truncated_avi"] = truncate_file(make_clip(root / "trunc.avi", 30, 90, fourcc="MJPG"))
    files["truncated_mp4"] = truncate_file(make_clip(root / "trunc.mp4", 30, 90))
    corrupt = make_clip(root / "corrupt.mp4", 30, 120)
    data = bytearray(corrupt.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    files["corrupt"] = corrupt
    files["slow"] = make_clip(root / "slow.mp4", 5, 20)
    files["missing"] = root / "nope.mp4"
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("garbage", "cannot open video"),
        ("empty", "empty file"),
        ("zero_frames", "no frames"),
        ("truncated_avi", "frames but the container says 90"),
        ("truncated_mp4", "cannot open video"),
        ("corrupt", "but the container says 120"),
        ("slow", "below the 10 fps"),
        ("missing", "not found"),
    ],
)
def test_bad_videos_raise_input_error_naming_the_file(bad_files, kind, message):
    path = bad_files[kind]
    with pytest.raises(InputError) as info:
        read_video(path, "thumos14")
    assert message in str(info.value)
    assert str(path) in str(info.value)


def _plain_decode_count(path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def test_lenient_count_accepts_what_decodes(bad_files):
    decodable = _plain_decode_count(bad_files["truncated_avi"])
    assert 0 < decodable < 90
    video = read_video(bad_files["truncated_avi"], "thumos14", strict_count=False)
    assert video.count == decodable and video.container_count == 90
    assert video.kept_indices == accumulator_keep_indices(decodable, 30.0)
    # (the last decodable frame of a cut file is itself partly damaged)
    assert frame_indices(video.frames)[:-1] == video.kept_indices[:-1]


def test_anet_lenient_count_replans_on_the_decoded_count(bad_files):
    decodable = _plain_decode_count(bad_files["truncated_avi"])
    video = read_video(bad_files["truncated_avi"], "anet", max_frames=20, strict_count=False)
    assert video.count == decodable
    assert video.kept_indices == anet_keep_indices(decodable, 20 / decodable, 20)
    assert video.sample_fps == pytest.approx(30.0 * 20 / decodable)
    assert frame_indices(video.frames)[:-1] == video.kept_indices[:-1]


def test_unknown_mode_and_listing(tmp_path):
    with pytest.raises(InputError, match="unknown sampling mode"):
        read_video(tmp_path / "x.mp4", "kinetics")
    for name in ("b.MP4", "a.avi", "c.txt", ".hidden.mp4", "d.webm"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_videos(tmp_path)] == ["a.avi", "b.MP4", "d.webm"]
    with pytest.raises(InputError, match="video folder not found"):
        list_videos(tmp_path / "missing")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs an ffmpeg binary to write H.264 (THUMOS14's codec)")
def test_h264_clip(tmp_path):
    source = make_clip(tmp_path / "src.avi", 30, 90, fourcc="MJPG")
    target = tmp_path / "h264.mp4"
    subprocess.run(["ffmpeg", "-v", "quiet", "-y", "-i", str(source), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(target)], check=True)
    video = read_video(target, "thumos14")
    assert video.count == 90 and video.kept_indices == accumulator_keep_indices(90, 30.0)
    assert frame_indices(video.frames) == video.kept_indices
