"""The demo orchestration: the stage commands it builds, and (slow) a real --quick run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from afsd_cli import demo


def _args(*extra: str):
    return demo.parse_args(["--out", "/tmp/afsd-demo-test", *extra])


def test_stages_are_the_user_commands_in_pipeline_order():
    args = _args()
    args.epochs = 4
    stages = demo.build_stages(demo.DemoLayout(args.out), args)
    names = [s.name for s in stages]
    assert names == [
        "synthetic videos", "frames", "flow", "train rgb", "train flow", "predict rgb", "predict flow", "fuse",
        "extract features", "train features", "predict features",
        "evaluate rgb", "evaluate flow", "evaluate fused", "evaluate features",
    ]
    for stage in stages:
        assert stage.argv[:3] == [sys.executable, "-m", "afsd_cli"]
        assert demo.printable(stage.argv).startswith("afsd ")
    by_name = {s.name: s.argv for s in stages}
    # The path of "Your own dataset": prepare writes the config that train reads; predict and
    # fuse take the run folders; evaluate needs no --subset / --dataset (recorded profile).
    config = str(Path("/tmp/afsd-demo-test/frames/dataset.yaml"))
    assert "--annotations" in by_name["frames"] and by_name["train rgb"][4] == config
    rgb_run = str(Path("/tmp/afsd-demo-test/runs/rgb"))
    assert by_name["predict rgb"][4] == rgb_run and by_name["fuse"][4] == rgb_run
    assert "training.max_epoch=4" in by_name["train rgb"] and "training.checkpoint_every=4" in by_name["train rgb"]
    assert "--plot" in by_name["fuse"]
    assert any(a.startswith("dataset.training.video_data_path=") and a.endswith("flow") for a in by_name["train flow"])
    assert "model.in_channels=2" in by_name["train flow"]
    assert "--dataset" not in by_name["evaluate fused"] and "--subset" not in by_name["evaluate fused"]
    # the feature run: the RGB run's backbone extracts, extract writes the config that train reads
    extract = by_name["extract features"]
    assert extract[extract.index("--weights") + 1] == str(Path(rgb_run) / "checkpoint-4.ckpt")
    assert "--annotations" in extract and by_name["train features"][4] == str(
        Path("/tmp/afsd-demo-test/features/dataset.yaml"))


def test_quick_mode_is_one_step_on_two_videos():
    args = demo.parse_args(["--quick"])
    assert args.videos == 2
    args.epochs = 4
    stages = demo.build_stages(demo.DemoLayout(Path("/tmp/x")), args)
    train = next(s for s in stages if s.name == "train rgb").argv
    assert "--max-steps" in train and "training.max_epoch=1" in train and "training.max_epoch=4" not in train


def test_summary_reports_stage_times_and_map(tmp_path):
    layout = demo.DemoLayout(tmp_path)
    layout.metrics("fused").parent.mkdir(parents=True)
    layout.metrics("fused").write_text(
        '{"tiou_thresholds": [0.3, 0.5], "mAP": [0.9, 0.85], "average_mAP": 0.875}')
    stages = [demo.Stage("train rgb", ["x"], seconds=12.5, returncode=0), demo.Stage("fuse", ["y"])]
    text = "\n".join(demo.summary_lines(stages, layout, 20.0))
    assert "| train rgb | 12.5 | ok |" in text and "| fuse | 0.0 | not run |" in text
    assert "| fused | 90.0 | 85.0 | 87.5 |" in text
    assert demo.fused_map_at(layout, 0.5) == pytest.approx(0.85)


def test_a_failing_stage_stops_the_demo_with_non_zero_exit(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_call(argv, env=None):
        calls.append(argv)
        return 3 if len(calls) == 2 else 0

    monkeypatch.setattr(demo.subprocess, "call", fake_call)
    assert demo.main(["--out", str(tmp_path / "d"), "--quick"]) == 1
    assert len(calls) == 2
    out = capsys.readouterr().out
    assert "stage 'frames' failed (exit code 3)" in out


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    """The real pipeline, every command in a subprocess (about a minute on 2 cores)."""
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--quick", "--jobs", "1"]) == 0
    for stream in demo.STREAMS:
        assert demo.read_metrics(demo.DemoLayout(out).metrics(stream)) is not None
    assert list((out / "plots").glob("*.png"))
    report = demo.DemoLayout(out).report("fused").resolve()
    assert report.is_file() and capsys.readouterr().out.rstrip().endswith(str(report))  # ends with its report


def test_the_two_trainings_run_in_parallel_unless_asked_not_to(tmp_path, monkeypatch, capsys):
    args = _args()
    args.epochs = 4
    stages = demo.build_stages(demo.DemoLayout(args.out), args)
    assert {s.name for s in stages if s.group == "train"} == {"train rgb", "train flow"}
    sequential = _args("--sequential-train")
    sequential.epochs = 4
    assert all(s.group is None for s in demo.build_stages(demo.DemoLayout(sequential.out), sequential))

    # run_group: both processes start before either is waited for; each log is reported.
    started = []

    class FakeProcess:
        def __init__(self, argv, env=None, stdout=None, stderr=None):
            started.append(env["OMP_NUM_THREADS"])
            stdout.write("last line of " + argv[-1] + "\n")
            self.code = 0 if argv[-1] == "a" else 5

        def wait(self):
            return self.code

        def poll(self):
            return self.code

    monkeypatch.setattr(demo.subprocess, "Popen", FakeProcess)
    group = [demo.Stage("train a", ["x", "a"], group="train"), demo.Stage("train b", ["x", "b"], group="train")]
    assert demo.run_group(group, {}, tmp_path / "logs") == 5
    assert len(started) == 2 and group[0].returncode == 0 and group[1].returncode == 5
    assert "last line of b" in capsys.readouterr().out


def test_epoch_progress_counts_metrics_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    stage = demo.Stage("train rgb", [], metrics_csv=csv, epochs=10)
    assert demo._epoch_progress(stage) == "train rgb: 0/10 epochs"
    csv.write_text("epoch,total\n1,3.5\n2,3.1\n")
    assert demo._epoch_progress(stage) == "train rgb: 2/10 epochs"
