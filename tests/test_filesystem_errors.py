"""File-system errors: unwritable outputs fail before the expensive work with one line naming the
path and the system's reason; a full disk or a read-only folder leaves earlier outputs intact;
Ctrl-C during a save exits 130 and leaves no temporary file; a batch keeps its good videos."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.errors import OutputError
from afsd_cli.io import atomic_open, ensure_writable, write_bytes, write_json, write_text

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.stdout + (result.stderr if result.stderr_bytes is not None else "")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "64k", read_only: bool = False):
    """A small tmpfs at ``folder`` (root only); the test is skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount_read_only(folder: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")


def only_visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------
# ensure_writable: the preflight


def test_preflight_rejects_a_folder_for_a_file_and_a_file_for_a_folder(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a folder, expected a file") as info:
        ensure_writable(tmp_path / "dir", kind="file")
    assert info.value.path == str(tmp_path / "dir")
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        ensure_writable(tmp_path / "file", kind="folder")
    with pytest.raises(OutputError, match="this is a file, not a folder") as info:
        ensure_writable(tmp_path / "file" / "sub" / "out.json", kind="file")
    assert info.value.path == str(tmp_path / "file")
    # a path that does not exist yet is fine, and checking it creates nothing
    assert ensure_writable(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert only_visible(tmp_path) == ["dir", "file"]


def test_writers_name_the_path_when_a_folder_or_a_file_is_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write: is a folder, expected a file") as info:
        write_json(tmp_path, {})
    assert info.value.path == str(tmp_path)
    for target in (tmp_path / "file" / "a.json", tmp_path / "file" / "deeper" / "a.json"):
        with pytest.raises(OutputError, match="a parent of it is a file, not a folder") as info:
            write_json(target, {})
        assert info.value.path == str(target)
    assert only_visible(tmp_path) == ["file"]


def test_read_only_folder_fails_the_preflight_and_the_writer_keeps_the_old_file(tmp_path):
    with tmpfs(tmp_path / "ro") as folder:
        write_text(folder / "old.txt", "earlier output")
        remount_read_only(folder)
        with pytest.raises(OutputError, match="Read-only file system") as info:
            ensure_writable(folder / "out.json")
        assert info.value.path == str(folder)
        with pytest.raises(OutputError, match="cannot write: Read-only file system") as info:
            write_text(folder / "old.txt", "new")
        assert info.value.path == str(folder / "old.txt")
        assert (folder / "old.txt").read_text() == "earlier output"
        # the CLI: one line with the path and the reason, before anything is evaluated
        result, text = invoke("evaluate", folder / "missing-detections.json", "--gt", folder / "missing-gt.json",
                              "-o", folder / "metrics.json")
        assert result.exit_code == 1
        assert "Read-only file system" in text and str(folder) in text and "Traceback" not in text
        assert "not found" not in text  # the output was checked first, not the (missing) inputs
        # a batch command: flow into the read-only folder stops before computing anything
        import numpy as np

        (tmp_path / "rgb").mkdir()
        np.save(tmp_path / "rgb" / "a.npy", np.zeros((3, 8, 8, 3), np.uint8))
        result, text = invoke("flow", tmp_path / "rgb", folder / "flow", "--method", "dis", "--jobs", "1")
        assert result.exit_code == 1 and text.strip() == f"error: {folder}: cannot write into this folder: " \
                                                         "Read-only file system"


def test_full_disk_is_one_clear_error_and_leaves_no_temporary_file(tmp_path):
    with tmpfs(tmp_path / "full", size="64k") as folder:
        write_json(folder / "metrics.json", {"old": True})
        with pytest.raises(OutputError, match="No space left on device") as info:
            write_bytes(folder / "metrics.json", b"x" * 200_000)
        assert info.value.path == str(folder / "metrics.json")
        assert json.loads((folder / "metrics.json").read_text()) == {"old": True}
        assert only_visible(folder) == ["metrics.json"]
        # fill the rest: the preflight sees the full disk before any work starts
        with contextlib.suppress(OSError), open(folder / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        with pytest.raises(OutputError, match="No space left on device"):
            ensure_writable(folder / "next.json")
        assert only_visible(folder) == ["filler", "metrics.json"]


# ------------------------------------------------------------------------------------------
# the commands check their outputs before the expensive work


def test_predict_checks_output_and_plot_paths_before_loading_anything(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset:\n  name: thumos14\n")
    (tmp_path / "out_dir").mkdir()
    (tmp_path / "plots_file").write_text("x")
    missing_ckpt = tmp_path / "no-such.ckpt"
    result, text = invoke("predict", config, "--checkpoint", missing_ckpt, "-o", tmp_path / "out_dir", "--video",
                          tmp_path / "nope.mp4")
    assert result.exit_code == 1
    assert "is a folder, expected a file path" in text and str(tmp_path / "out_dir") in text
    assert "no-such.ckpt" not in text and "nope.mp4" not in text  # nothing else was looked at yet
    result, text = invoke("fuse", config, "--rgb-checkpoint", missing_ckpt, "--flow-checkpoint", missing_ckpt,
                          "-o", tmp_path / "fused.json", "--plot", tmp_path / "plots_file", "--video",
                          tmp_path / "nope.mp4")
    assert result.exit_code == 1 and "is a file, expected a folder" in text and "plots_file" in text
    assert len(text.strip().splitlines()) == 1


def test_evaluate_checks_its_outputs_before_reading_the_inputs(tmp_path):
    (tmp_path / "plots").write_text("a file")
    (tmp_path / "metrics").mkdir()
    for option, path, reason in (("--plot", tmp_path / "plots", "is a file, expected a folder"),
                                 ("-o", tmp_path / "metrics", "is a folder, expected a file path")):
        result, text = invoke("evaluate", tmp_path / "missing.json", "--gt", tmp_path / "gt.json", option, path)
        assert result.exit_code == 1 and text.strip() == f"error: {path}: {reason}"


def test_train_checks_its_runs_folder_first(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    config = tmp_path / "c.yaml"
    config.write_text("dataset:\n  name: thumos14\n")
    result, text = invoke("train", config, "--runs-dir", tmp_path / "runs", "--device", "cpu")
    assert result.exit_code == 1 and "is a file, expected a folder" in text and "Traceback" not in text


def test_an_untranslated_os_error_is_still_one_line(tmp_path, monkeypatch):
    import afsd_cli.evaluation.run as evaluation  # where `afsd evaluate` reads the ground truth

    def broken(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "gt.json"))

    monkeypatch.setattr(evaluation, "load_ground_truth", broken)
    (tmp_path / "d.json").write_text('{"results": {}}')  # detections are read first (their profile picks the GT)
    result, text = invoke("evaluate", tmp_path / "d.json", "--gt", tmp_path / "gt.json")
    assert result.exit_code == 1
    assert f"{tmp_path / 'gt.json'}: Permission denied" in text and "Traceback" not in text


# ------------------------------------------------------------------------------------------
# Ctrl-C during a save

SLOW_SAVE = textwrap.dedent("""
    import sys, time
    import typer
    from afsd_cli.commands._common import handle_errors
    from afsd_cli.io import atomic_open

    app = typer.Typer()

    @app.command()
    @handle_errors
    def save(path: str) -> None:
        with atomic_open(path, "wb") as handle:
            handle.write(b"new" * 1000)
            print("writing", flush=True)
            for _ in range(600):  # a large file, written slowly: about a minute unless interrupted
                handle.write(b"\\0" * 65536)
                time.sleep(0.1)

    app()
""")


def test_ctrl_c_during_a_save_exits_130_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"previous version")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "writing"
        assert len(list(tmp_path.glob(".state.pt.*.tmp"))) == 1  # the save is under way
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert err.strip().endswith("interrupted") and len(err.strip().splitlines()) == 1, err
    assert target.read_bytes() == b"previous version"
    assert only_visible(tmp_path) == ["state.pt"]


def test_an_interrupted_writer_removes_its_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target) as handle:
            handle.write('{"v": 2')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"v": 1} and only_visible(tmp_path) == ["out.json"]


# ------------------------------------------------------------------------------------------
# batch predict keeps the good videos


def test_batch_predict_writes_the_good_videos_and_lists_the_bad_one(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_predict_cli import small_checkpoint, small_config
    from helpers.video_helpers import make_clip

    good = make_clip(tmp_path / "good.mp4", fps=30.0, num_frames=30, size=(64, 48))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00 ftypisom not really a video")
    config, ckpt = small_config(tmp_path), small_checkpoint(tmp_path)
    out = tmp_path / "det.json"
    result, text = invoke("predict", config, "--checkpoint", ckpt, "-o", out, "--device", "cpu",
                          "--video", good, "--video", broken)
    flat = " ".join(text.split())
    assert result.exit_code == 1, text
    assert "broken.mp4" in flat and "1 of 2 video(s) failed" in flat and "the detections of the other 1" in flat
    assert list(json.loads(out.read_text())["results"]) == ["good"]
    # all-or-nothing: stops at the bad video, the earlier file stays as it was
    before = out.read_bytes()
    result, text = invoke("predict", config, "--checkpoint", ckpt, "-o", out, "--device", "cpu",
                          "--video", broken, "--video", good, "--all-or-nothing")
    flat = " ".join(text.split())
    assert result.exit_code == 1 and "1 of 2 video(s) failed (stopped at the first); nothing was written" in flat
    assert out.read_bytes() == before
