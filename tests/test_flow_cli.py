"""`afsd flow` over a folder of RGB npy files (with the fast farneback method)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner
from helpers.video_helpers import textured_frames

from afsd_cli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def flowed(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    rgb = root / "rgb"
    rgb.mkdir()
    # A texture sliding one pixel per frame to the left: x-flow < 0 (quantised below 128).
    np.save(rgb / "moving.npy", textured_frames(8, size=(112, 112), seed=1))
    np.save(rgb / "still.npy", np.repeat(textured_frames(1, size=(112, 112), seed=2), 5, axis=0))
    np.save(rgb / "wrong_shape.npy", np.zeros((4, 112, 112), np.uint8))
    (rgb / "not_npy.npy").write_bytes(b"garbage")
    out = root / "flow"
    result = runner.invoke(app, ["flow", str(rgb), str(out), "--method", "farneback", "--jobs", "1"])
    return rgb, out, result


def test_flow_files_have_the_official_layout(flowed):
    rgb, out, result = flowed
    assert result.exit_code == 1, result.output  # two bad inputs
    moving = np.load(out / "moving.npy")
    assert moving.shape == (8, 112, 112, 2) and moving.dtype == np.uint8
    assert np.array_equal(moving[-1], moving[-2])  # last flow repeated so T matches
    centre = moving[:-1, 30:80, 30:80].astype(int)
    assert np.median(centre[..., 0]) < 128 - 3  # leftward motion: x channel below "zero" (128)
    assert abs(np.median(centre[..., 1]) - 128) <= 2  # no vertical motion
    still = np.load(out / "still.npy")
    assert still.shape == (5, 112, 112, 2) and np.abs(still.astype(int) - 128).max() <= 1


def test_flow_failures_are_reported_and_recorded(flowed):
    rgb, out, result = flowed
    assert not (out / "wrong_shape.npy").exists() and not (out / "not_npy.npy").exists()
    assert "2 failure(s)" in result.output
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items["moving"]["status"] == "done" and items["moving"]["shape"] == [8, 112, 112, 2]
    assert items["moving"]["method"] == "farneback"
    assert "expected uint8 [T, H, W, 3]" in items["wrong_shape"]["error"]
    assert "not a .npy file" in items["not_npy"]["error"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_flow_rerun_skips_and_overwrite_redoes(flowed):
    rgb, out, _ = flowed
    stamp = (out / "moving.npy").stat().st_mtime_ns
    (rgb / "wrong_shape.npy").unlink()
    (rgb / "not_npy.npy").unlink()
    result = runner.invoke(app, ["flow", str(rgb), str(out), "--method", "farneback", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "moving.npy").stat().st_mtime_ns == stamp
    result = runner.invoke(app, ["flow", str(rgb), str(out), "--method", "farneback", "-j", "1", "--overwrite"])
    assert result.exit_code == 0
    assert (out / "moving.npy").stat().st_mtime_ns != stamp


def test_flow_bad_options(tmp_path):
    (tmp_path / "rgb").mkdir()
    result = runner.invoke(app, ["flow", str(tmp_path / "rgb"), str(tmp_path / "o"), "--method", "magic"])
    assert result.exit_code == 1 and "unknown flow method" in result.output
    result = runner.invoke(app, ["flow", str(tmp_path / "rgb"), str(tmp_path / "o"), "--method", "farneback",
                                 "--device", "cuda"])
    assert result.exit_code == 1 and "CPU only" in result.output and "failure" not in result.output
    assert not (tmp_path / "o").exists()  # stopped before touching anything
    result = runner.invoke(app, ["flow", str(tmp_path / "rgb"), str(tmp_path / "rgb"), "--method", "farneback"])
    assert result.exit_code == 1 and "must differ" in result.output
    result = runner.invoke(app, ["flow", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert result.exit_code == 1 and "not found" in result.output
    result = runner.invoke(app, ["flow", str(tmp_path / "rgb"), str(tmp_path / "o"), "--method", "farneback"])
    assert result.exit_code == 1 and "no .npy file found" in result.output


def test_tvl1_preset_option_reaches_the_solver(tmp_path):
    from afsd_cli.data.flow import compute_flow

    rgb, out = tmp_path / "rgb", tmp_path / "out"
    rgb.mkdir()
    frames = textured_frames(3, size=(24, 24), seed=3)
    np.save(rgb / "clip.npy", frames)
    result = runner.invoke(app, ["flow", str(rgb), str(out), "--method", "tvl1", "--preset", "fast", "-j", "1"])
    assert result.exit_code == 0, result.output
    expected = compute_flow(frames, method="tvl1", preset="fast")
    np.testing.assert_array_equal(np.load(out / "clip.npy"), expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["method_options"] == {"preset": "fast"}
    bad = runner.invoke(app, ["flow", str(rgb), str(tmp_path / "o2"), "--method", "tvl1", "--preset", "turbo"])
    assert bad.exit_code != 0 and "turbo" in bad.output and "Traceback" not in bad.output
