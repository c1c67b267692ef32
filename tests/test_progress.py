"""Progress moves inside a long video: `prepare` reports decoded frames as they come, not only
when a whole video is done."""

from __future__ import annotations

from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.data.pipeline import prepare_videos
from afsd_cli.data.video import PROGRESS_EVERY, read_video
from helpers.video_helpers import make_clip


def test_read_video_reports_every_decoded_frame_in_steps(tmp_path):
    clip = make_clip(tmp_path / "a.avi", fps=30.0, num_frames=150, fourcc="MJPG")
    steps: list[int] = []
    video = read_video(clip, size=32, progress=steps.append)
    assert sum(steps) == video.count == 150
    assert steps[:-1] == [PROGRESS_EVERY] * (len(steps) - 1) and len(steps) == 3  # 64, 64, 22


def test_prepare_moves_inside_each_video(tmp_path):
    for name, frames in (("long", 200), ("short", 40)):
        make_clip(tmp_path / "videos" / f"{name}.avi", fps=30.0, num_frames=frames, fourcc="MJPG")
    started, reports, order = [], [], []
    report = prepare_videos(tmp_path / "videos", tmp_path / "out", size=32, jobs=1,
                            on_start=lambda *args: started.append(args),
                            on_frames=lambda name, n: (reports.append((name, n)), order.append(("frames", name))),
                            on_result=lambda result: order.append(("done", result.name)))
    assert report.ok
    assert started == [(2, {"long": 200, "short": 40})]  # totals in native frames, from the containers
    assert sum(n for name, n in reports if name == "long") == 200
    assert sum(n for name, n in reports if name == "short") == 40
    # "long" reported several times before it was done: the bar moves inside the video
    assert order.index(("done", "long")) >= 4 and order[:3] == [("frames", "long")] * 3


def test_prepare_command_shows_frames(tmp_path):
    make_clip(tmp_path / "videos" / "clip one.avi", fps=30.0, num_frames=90, fourcc="MJPG")
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "videos"), str(tmp_path / "out"), "--size", "32",
                                      "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "90/90" in result.output  # the bar counts frames (was: videos, 1/1)
