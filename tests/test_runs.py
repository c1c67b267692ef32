"""Run folders (afsd_cli/runs.py): naming, predict/evaluate runs, checkpoint retention and resume,
a training run folder as a complete input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from afsd_cli.errors import ConfigError, InputError
from afsd_cli.runs import (
    find_checkpoint,
    new_run_dir,
    parse_keep_checkpoints,
    prune_checkpoints,
    resolve_checkpoint,
    run_folder,
)
from test_predict_cli import invoke, small_checkpoint, small_config, write_arrays


def test_new_run_dir_numbers_names_and_reuse(tmp_path):
    assert [new_run_dir(tmp_path).name for _ in range(3)] == ["exp", "exp2", "exp3"]
    named = new_run_dir(tmp_path, "mine")
    (named / "detections.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists.*--exist-ok"):
        new_run_dir(tmp_path, "mine")
    assert new_run_dir(tmp_path, "mine", exist_ok=True) == named  # asked for: reused
    assert new_run_dir(tmp_path, "empty") == tmp_path / "empty"
    for start_file in ("env.json", "config.yaml", "profile.json"):  # what a start that died wrote: no results
        (tmp_path / "empty" / start_file).write_text("{}")
    assert new_run_dir(tmp_path, "empty") == tmp_path / "empty"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        new_run_dir(tmp_path, "file")
    for bad in ("a/b", "..", ""):
        with pytest.raises(ConfigError, match="one folder name"):
            new_run_dir(tmp_path, bad)


def test_a_failed_command_leaves_no_empty_run_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path) as run:
            assert run.is_dir()
            raise RuntimeError("bad input")
    assert not (tmp_path / "exp").exists()
    with run_folder(tmp_path) as run:
        (run / "out.json").write_text("{}")
    assert (tmp_path / "exp" / "out.json").is_file()


def _touch(run: Path, *names: str) -> None:
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")


def test_find_checkpoint_best_else_last(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        find_checkpoint(tmp_path)
    _touch(tmp_path, "checkpoint-2.ckpt", "checkpoint-10.ckpt", "checkpoint-9.ckpt")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint-10.ckpt"  # numerically last, not by name
    _touch(tmp_path, "checkpoint-best.ckpt")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint-best.ckpt"
    assert resolve_checkpoint(tmp_path / "checkpoint-2.ckpt") == tmp_path / "checkpoint-2.ckpt"
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoint-best.ckpt"
    assert resolve_checkpoint(None) is None  # nothing given: the config decides


def test_keep_checkpoints_values_and_pruning(tmp_path):
    assert [parse_keep_checkpoints(v) for v in (None, "last", "all", "3", 3, "every 2")] == [None, None, 1, 3, 3, 2]
    for bad in ("0", "some", "-1"):
        with pytest.raises(ConfigError, match="keep_checkpoints"):
            parse_keep_checkpoints(bad)
    epochs = range(1, 7)
    _touch(tmp_path, "checkpoint-best.ckpt", *(f"checkpoint-{e}.ckpt" for e in epochs),
           *(f"training/state-{e}.pt" for e in epochs))
    prune_checkpoints(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "checkpoint-3.ckpt", "checkpoint-6.ckpt", "checkpoint-best.ckpt"]
    assert sorted(p.name for p in (tmp_path / "training").iterdir()) == ["state-3.pt", "state-6.pt"]
    # a model saved for validation after the last state is kept, and so is the state's model
    _touch(tmp_path, "checkpoint-7.ckpt")
    prune_checkpoints(tmp_path, None)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "checkpoint-6.ckpt", "checkpoint-7.ckpt", "checkpoint-best.ckpt"]
    assert [p.name for p in (tmp_path / "training").iterdir()] == ["state-6.pt"]
    # a resumed run leaves the files before its start alone
    _touch(tmp_path, "checkpoint-2.ckpt", "checkpoint-8.ckpt", "training/state-8.pt")
    prune_checkpoints(tmp_path, None, from_epoch=6)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [
        "checkpoint-2.ckpt", "checkpoint-8.ckpt", "checkpoint-best.ckpt"]


def test_two_predicts_without_output_land_in_two_folders(tmp_path):
    write_arrays(tmp_path, {"vid_a": 50})
    ckpt = small_checkpoint(tmp_path)
    config = small_config(tmp_path, checkpoint_path=ckpt)
    runs = tmp_path / "runs"
    first, text1 = invoke("predict", config, "--device", "cpu", "--runs-dir", runs)
    # the second with afsd 0.1's spellings: they still work, with a deprecation line
    second, text2 = invoke("predict", config, "--device", "cpu", "--runs-dir", runs, "--workers", "0", "-b", "2")
    assert first.exit_code == 0, text1
    assert second.exit_code == 0, text2
    assert "deprecated: --workers is now --jobs" in text2
    for run in (runs / "exp", runs / "exp2"):
        assert str(run) in (text1 if run.name == "exp" else text2).replace("\n", "")
        assert json.loads((run / "detections.json").read_text())["results"]["vid_a"]
        env = json.loads((run / "env.json").read_text())
        assert env["afsd"] and env["device"] == "cpu" and env["torch"]
        # the run's config.yaml is valid as written and names what this run used and wrote
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["testing"]["checkpoint_path"] == str(ckpt.resolve())
        assert saved["testing"]["output_path"] == str(run.resolve())
    assert yaml.safe_load((runs / "exp2" / "config.yaml").read_text())["testing"]["batch_size"] == 2

    # --output writes exactly where asked (tests/test_predict_cli.py), so --name with it is refused
    result, text = invoke("predict", config, "--runs-dir", runs, "--output", tmp_path / "x.json", "--name", "x")
    assert result.exit_code == 1 and "without a run folder" in text
    # a failing run leaves nothing behind
    result, text = invoke("predict", config, "--device", "cpu", "--runs-dir", runs, "--checkpoint", tmp_path / "no.ckpt")
    assert result.exit_code == 1 and not (runs / "exp3").exists(), text


def test_evaluate_run_folder(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"v1": {"subset": "test", "annotations": [
        {"segment": [1.0, 3.0], "label": "Jump"}]}}}))
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps({"results": {"v1": [{"segment": [1.0, 3.0], "score": 0.9, "label": "Jump"}]}}))
    runs = tmp_path / "runs"
    for expected in ("exp", "exp2"):
        result, text = invoke("evaluate", dets, "--gt", gt, "--subset", "test", "--dataset", "thumos14",
                              "--runs-dir", runs)
        assert result.exit_code == 0, text
        metrics = json.loads((runs / expected / "metrics.json").read_text())
        assert metrics["average_mAP"] == pytest.approx(1.0)
        assert json.loads((runs / expected / "env.json").read_text())["afsd"]
    result, text = invoke("evaluate", dets, "--gt", gt, "--runs-dir", runs, "--name", "exp")
    assert result.exit_code == 1 and "already exists" in text and "--exist-ok" in text
    result, text = invoke("evaluate", dets, "--gt", gt, "--subset", "test", "--runs-dir", runs, "--name", "exp",
                          "--exist-ok")
    assert result.exit_code == 0 and "run folder" in text, text


def test_retention_resume_and_the_run_as_input(tmp_path):
    import torch

    from afsd_cli.config import load_config
    from afsd_cli.engine.trainer import TrainOptions, train
    from helpers.train_helpers import tiny_config

    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, ["training.ssl=0", "training.validate_every=1"], max_epoch=4)
    run = tmp_path / "run"
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.6])
    one_step = TrainOptions(device="cpu", max_steps_per_epoch=1)
    train(cfg, run, options=one_step, validate=lambda model, epoch: next(scores))
    # by default: the last and the best epoch's model, the last epoch's training state
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["checkpoint-4.ckpt", "checkpoint-best.ckpt"]
    assert [p.name for p in (run / "training").iterdir()] == ["state-4.pt"]
    saved = load_config(run / "config.yaml")  # valid as written, names this run's best model
    assert Path(saved.testing.checkpoint_path) == (run / "checkpoint-best.ckpt").resolve()
    assert Path(saved.training.checkpoint_path) == run.resolve()
    assert json.loads((run / "env.json").read_text())["afsd"]

    # --resume from what is kept, to epoch 5
    result = train(cfg, run, resume=True, options=TrainOptions(device="cpu", max_steps_per_epoch=1, max_epoch=5),
                   validate=lambda model, epoch: next(scores))
    assert [row["epoch"] for row in result.epochs] == [1, 2, 3, 4, 5] and result.best_epoch == 5
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["checkpoint-5.ckpt", "checkpoint-best.ckpt"]
    assert [p.name for p in (run / "training").iterdir()] == ["state-5.pt"]

    # the run folder's config.yaml drives predict as written (its checkpoint, its test data)
    result, text = invoke("predict", run / "config.yaml", "--device", "cpu", "--limit", "1",
                          "--runs-dir", tmp_path / "pred")
    assert result.exit_code == 0, text
    used = yaml.safe_load((tmp_path / "pred" / "exp" / "config.yaml").read_text())
    assert used["testing"]["checkpoint_path"] == str((run / "checkpoint-best.ckpt").resolve())
    (run / "checkpoint-best.ckpt").unlink()
    assert find_checkpoint(run) == run / "checkpoint-5.ckpt"
    # --checkpoint RUN_DIR: the run's best checkpoint, else its last (here the last)
    result, text = invoke("predict", run / "config.yaml", "--checkpoint", run, "--device", "cpu", "--limit", "1",
                          "--runs-dir", tmp_path / "pred")
    assert result.exit_code == 0, text
    used = yaml.safe_load((tmp_path / "pred" / "exp2" / "config.yaml").read_text())
    assert used["testing"]["checkpoint_path"] == str((run / "checkpoint-5.ckpt").resolve())
    # RUN_DIR itself as CONFIG: its config.yaml and the same checkpoint, into a run folder of its own
    result, text = invoke("predict", run, "--device", "cpu", "--limit", "1", "--runs-dir", tmp_path / "pred")
    assert result.exit_code == 0, text
    used = yaml.safe_load((tmp_path / "pred" / "exp3" / "config.yaml").read_text())
    assert used["testing"]["checkpoint_path"] == str((run / "checkpoint-5.ckpt").resolve())
    assert "profile" in json.loads((tmp_path / "pred" / "exp3" / "detections.json").read_text())
    assert json.loads((run / "profile.json").read_text())  # the training run recorded its dataset


def test_checks_and_env_json_record_the_afsd_version(tmp_path):
    from afsd_cli import __version__
    from afsd_cli.checks import version_rows
    from afsd_cli.runs import write_env

    assert ("afsd", __version__) in version_rows()
    env = json.loads(write_env(tmp_path, {"device": "cpu"}).read_text())
    assert env["afsd"] == __version__ and env["device"] == "cpu" and env["argv"]


def test_flow_progress_moves_in_frame_pairs(tmp_path):
    import numpy as np

    from afsd_cli.data.pipeline import flow_files

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    rng = np.random.default_rng(0)
    for name, frames in (("a", 20), ("b", 11)):
        np.save(rgb / f"{name}.npy", rng.integers(0, 255, (frames, 24, 24, 3), dtype=np.uint8))
    started, pairs, finished = [], {}, []
    report = flow_files(rgb, tmp_path / "flow", method="farneback", jobs=1,
                        on_start=lambda *args: started.append(args),
                        on_frames=lambda name, n: pairs.setdefault(name, []).append(n),
                        on_result=lambda result: finished.append(result.name))
    assert report.ok and started == [(2, {"a": 20, "b": 11})]
    # reported inside each video, in steps of at most 8 pairs, before its result
    assert {name: sum(steps) for name, steps in pairs.items()} == {"a": 19, "b": 10}
    assert max(map(len, pairs.values())) >= 2 and sorted(finished) == ["a", "b"]


def _report_pairs(pair_queue, name):
    pair_queue.put((name, 5))


def test_flow_progress_crosses_process_boundaries():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from afsd_cli.data.pipeline import _progress_queue

    seen = []
    # a process pool (loky, 2 jobs) gets a multiprocessing queue the workers can put into
    with _progress_queue(lambda name, n: seen.append((name, n)), "loky", 2, 2) as pair_queue:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_report_pairs, [pair_queue, pair_queue], ["a", "b"]))
    assert sorted(seen) == [("a", 5), ("b", 5)]
    with _progress_queue(seen.append, "dask", 2, 2) as pair_queue:  # remote workers: per video only
        assert pair_queue is None


def test_on_the_fly_flow_of_a_video_reports_pairs(tmp_path):
    from afsd_cli.engine.jobs import video_file_jobs
    from helpers.video_helpers import make_clip

    video = make_clip(tmp_path / "clip.mp4", fps=30.0, num_frames=60, size=(64, 48))  # 20 frames at 10 fps
    (job,) = video_file_jobs([video], "thumos14", [2], flow_method="farneback")
    seen = []
    job.load.on_flow_pairs = lambda name, pairs, total: seen.append((name, pairs, total))
    (flow,) = job.load().arrays
    assert {(name, total) for name, _, total in seen} == {("clip", len(flow) - 1)}
    assert sum(pairs for _, pairs, _ in seen) == len(flow) - 1 and len(seen) >= 2


def test_validation_during_training_reports_videos(tmp_path):
    import torch

    from afsd_cli.engine.validation import validation_map
    from afsd_cli.model import build_model
    from helpers.train_helpers import tiny_config

    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, [f"dataset.testing.gt_path={tmp_path / 'anno.csv'}"])
    torch.manual_seed(0)
    seen = []
    value = validation_map(cfg, build_model(cfg), tmp_path / "val.json", limit=1,
                           progress=lambda done, total: seen.append((done, total)))
    assert 0.0 <= value <= 1.0 and seen == [(1, 1)]


def test_run_folder_is_checked_before_work_and_keeps_a_partial_batch(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.video_helpers import make_clip

    config, ckpt = small_config(tmp_path), small_checkpoint(tmp_path)
    # the runs folder cannot be written (a file in its place): one line, before the (missing) model is read
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    result, text = invoke("predict", config, "--device", "cpu", "--runs-dir", blocked, "--checkpoint",
                          tmp_path / "no.ckpt")
    assert result.exit_code == 1 and "is a file, expected a folder" in text, text
    assert "no.ckpt" not in text and blocked.read_text() == "not a folder"
    result, text = invoke("evaluate", tmp_path / "missing.json", "--gt", tmp_path / "missing-gt.json",
                          "--runs-dir", blocked)
    assert result.exit_code == 1 and "is a file, expected a folder" in text and "not found" not in text, text

    # one bad video of two: the run folder holds the good one's detections and is recorded (exit 1)
    good = make_clip(tmp_path / "good.mp4", fps=30.0, num_frames=30, size=(64, 48))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00 ftypisom not really a video")
    runs = tmp_path / "runs"
    result, text = invoke("predict", config, "--checkpoint", ckpt, "--device", "cpu", "--runs-dir", runs,
                          "--video", good, "--video", broken)
    assert result.exit_code == 1 and "1 of 2 video(s) failed" in " ".join(text.split()), text
    run = runs / "exp"
    assert list(json.loads((run / "detections.json").read_text())["results"]) == ["good"]
    assert yaml.safe_load((run / "config.yaml").read_text())["testing"]["checkpoint_path"] == str(ckpt.resolve())
    assert json.loads((run / "env.json").read_text())["device"] == "cpu"
    # --all-or-nothing: nothing written, so no run folder is left behind
    result, text = invoke("predict", config, "--checkpoint", ckpt, "--device", "cpu", "--runs-dir", runs,
                          "--video", broken, "--video", good, "--all-or-nothing")
    assert result.exit_code == 1 and "nothing was written" in " ".join(text.split()), text
    assert sorted(p.name for p in runs.iterdir()) == ["exp"]
