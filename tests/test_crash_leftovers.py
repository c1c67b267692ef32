"""Crash leftovers: a killed writer's temporary file is removed by the next writer, a failed train
start leaves no run folder behind, --resume keeps the original env.json, and two processes saving
one manifest lose no entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from afsd_cli.engine.trainer import TrainOptions, new_run_dir, train
from afsd_cli.errors import ConfigError, InputError
from afsd_cli.io import _host_tag, remove_stale_temp_files, write_json
from helpers.train_helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------------------------------
# stale temporary files

KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from afsd_cli.io import atomic_open

    with atomic_open(sys.argv[1], "wb") as handle:
        handle.write(b"half a checkpoint")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
""")


def test_a_sigkilled_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    state = tmp_path / "state-1.pt"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(state)], stdout=subprocess.PIPE,
                               text=True, env=ENV, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    leftover = list(tmp_path.glob(".state-1.pt.*.tmp"))
    assert len(leftover) == 1 and f".{process.pid}@" in leftover[0].name  # SIGKILL cannot be caught
    write_json(tmp_path / "metrics.json", {"epoch": 1})  # this process's first write into the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_only_temp_files_of_dead_processes_on_this_host_are_removed(tmp_path):
    host = _host_tag()
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = {
            "dead": f".a.json.{dead_pid()}@{host}.x1y2.tmp",
            "alive": f".a.json.{alive.pid}@{host}.x1y2.tmp",
            "mine": f".a.json.{os.getpid()}@{host}.x1y2.tmp",
            "other host": f".a.json.{dead_pid()}@{other_host}.x1y2.tmp",
            "old version, idle": ".state-1.pt.k3x_9qa1.tmp",  # mkstemp's name, before pids were recorded
            "old version, fresh": ".state-2.pt.p0q9z8y7.tmp",
            "not ours": ".notes.tmp",
            "visible": "a.json",
        }
        for name in names.values():
            (tmp_path / name).write_text("x")
        an_hour_ago = time.time() - 3600
        for key in ("old version, idle", "not ours"):
            os.utime(tmp_path / names[key], (an_hour_ago, an_hour_ago))
        removed = remove_stale_temp_files(tmp_path)
    finally:
        alive.kill()
        alive.wait()
    gone = {"dead", "old version, idle"}
    assert sorted(p.name for p in removed) == sorted(names[k] for k in gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k not in gone)


# ------------------------------------------------------------------------------------------
# train start-up


class BrokenDataset(torch.utils.data.Dataset):
    """A dataset whose first sample cannot be read (an I/O error at the first step)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        raise OSError(5, "Input/output error", "npy/video_a.npy")


def test_a_failed_train_start_leaves_no_run_folder_and_the_name_is_free_again(tmp_path):
    cfg = tiny_config(tmp_path, max_epoch=1)
    runs = tmp_path / "runs"
    # bad data found while setting up: the folder is never created
    bad = tiny_config(tmp_path, ["dataset.training.video_data_path=" + str(tmp_path / "missing")], max_epoch=1)
    with pytest.raises(InputError, match="array file not found"):
        train(bad, lambda: new_run_dir(runs, "first"), options=TrainOptions(device="cpu", max_steps_per_epoch=1))
    assert not (runs / "first").exists()
    # a failure in the first epoch, after the folder was made: what it wrote is removed again
    with pytest.raises(OSError, match="Input/output error"):
        train(cfg, lambda: new_run_dir(runs, "first"), options=TrainOptions(device="cpu", max_steps_per_epoch=1),
              dataset=BrokenDataset())
    assert not (runs / "first").exists()
    # a start killed before its first checkpoint (SIGKILL: no cleanup ran) does not block the name
    killed = runs / "killed"
    (killed / "training").mkdir(parents=True)
    (killed / "config.yaml").write_text("x: 1\n")
    (killed / "env.json").write_text("{}")
    (killed / "training" / f".state-1.pt.{dead_pid()}@{_host_tag()}.ab12.tmp").write_bytes(b"half")
    assert new_run_dir(runs, "killed") == killed
    # ... while a folder with a checkpoint does
    (runs / "trained").mkdir()
    (runs / "trained" / "checkpoint-1.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="already exists"):
        new_run_dir(runs, "trained")


def test_resume_keeps_the_original_env_json_and_appends_each_resume(tmp_path):
    cfg = tiny_config(tmp_path, ["training.ssl=0"], max_epoch=1)
    run = tmp_path / "run"
    steps = TrainOptions(device="cpu", max_steps_per_epoch=1)
    train(cfg, run, options=steps)
    original = json.loads((run / "env.json").read_text())
    assert "resumes" not in original and original["argv"] == __import__("sys").argv
    # a leftover of a killed save of the next epoch's state is cleaned on resume
    stale = run / "training" / f".state-2.pt.{dead_pid()}@{_host_tag()}.zz99.tmp"
    stale.write_bytes(b"half")
    more = tiny_config(tmp_path, ["training.ssl=0"], max_epoch=2)
    train(more, run, resume=True, options=steps)
    env = json.loads((run / "env.json").read_text())
    assert {k: v for k, v in env.items() if k != "resumes"} == original
    assert len(env["resumes"]) == 1 and set(env["resumes"][0]) == set(original)
    assert not stale.exists() and (run / "checkpoint-2.ckpt").is_file()


# ------------------------------------------------------------------------------------------
# one manifest, two processes

CONCURRENT_RECORDS = textwrap.dedent("""
    import sys
    from afsd_cli.data.manifest import Manifest

    folder, prefix = sys.argv[1], sys.argv[2]
    manifest = Manifest(folder + "/manifest.json", "prepare", {"dataset": "thumos14"})
    print("ready", flush=True)
    sys.stdin.readline()  # both start together
    for i in range(40):
        manifest.record(f"{prefix}{i:02d}", {"status": "done", "output": f"{prefix}{i:02d}.npy"})
        manifest.save()
""")


def test_two_processes_saving_one_manifest_lose_no_entry(tmp_path):
    write_json(tmp_path / "manifest.json", {"command": "prepare", "settings": {},
                                            "items": {"earlier": {"status": "done"}}})
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT_RECORDS, str(tmp_path), prefix],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
                 for prefix in ("a", "b")]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in processes:
        assert process.wait(timeout=120) == 0
    items = json.loads((tmp_path / "manifest.json").read_text())["items"]
    expected = {"earlier"} | {f"{p}{i:02d}" for p in "ab" for i in range(40)}
    assert set(items) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


class InterruptedDataset(BrokenDataset):
    """Ctrl-C arriving while the first batch is read."""

    def __getitem__(self, index):
        raise KeyboardInterrupt


def test_ctrl_c_in_the_first_epoch_exits_130_and_removes_the_new_run_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import afsd_cli.data.datasets as datasets
    from afsd_cli.cli import app

    config = tmp_path / "tiny.yaml"
    tiny_config(tmp_path, max_epoch=1).save(config)
    monkeypatch.setattr(datasets, "build_training_dataset", lambda cfg: InterruptedDataset())
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(runs), "--name", "again",
                                      "--device", "cpu"])
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1].endswith("interrupted")
    assert runs.is_dir() and list(runs.iterdir()) == []  # the run folder it had made is gone
