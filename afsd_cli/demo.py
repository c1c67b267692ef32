"""`make demo` / ``python -m afsd_cli.demo``: the whole AFSD pipeline on the bundled synthetic dataset.

Every stage runs the ``afsd`` command a user would type (``python -m afsd_cli ...`` in a
subprocess), printed before it runs:

1. ``afsd prepare --synthetic``: render the videos and their annotation JSON (the layout of a
   user's own dataset: ``{"database": {video: {"subset", "duration", "annotations"}}}``);
2. ``afsd prepare VIDEOS FRAMES --annotations gt.json``: videos → 10 fps RGB frame arrays of both
   subsets, plus ``FRAMES/dataset.yaml``, the dataset's config (the path of "Your own dataset");
3. ``afsd flow``: frame arrays → optical-flow arrays;
4. ``afsd train FRAMES/dataset.yaml``: the RGB model, then the flow model, with the demo's small
   CPU preset as overrides (:data:`DEMO_PRESET`);
5. ``afsd predict RUN`` for each stream, ``afsd fuse`` for both (with timeline plots);
6. AFSD on features: ``afsd extract`` the frames with the backbone of the RGB run (no pretrained
   I3D offline) at the demo's frame size, writing ``FEATURES/dataset.yaml`` (``--annotations``);
   ``afsd train`` on those features, ``afsd predict``;
7. ``afsd evaluate`` on each detection file (subset and thresholds from the detections'
   recorded dataset profile); the mAP table (frames and features side by side) ends the run.

The time of every stage and a summary are printed at the end; the exit code is non-zero as
soon as a stage fails. ``--quick`` is a smoke run (2 videos, 1 training step per stream).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path("runs/demo")
STREAMS = ("rgb", "flow", "fused", "features")
DEMO_EPOCHS = 10
#: The demo's CPU preset over the config `afsd prepare` writes: the same model with small numbers,
#: so that training from a random-initialised backbone converges in minutes on a 2-core CPU.
DEMO_PRESET = (
    "dataset.training.clip_length=32", "dataset.training.clip_stride=8", "dataset.training.crop_size=32",
    "dataset.testing.clip_length=32", "dataset.testing.clip_stride=16", "dataset.testing.crop_size=32",
    "training.batch_size=4", "training.learning_rate=3e-4",
    "training.ssl=0.0",  # the consistency pass would double the cost of a step
    "training.lw=3.0",  # THUMOS14 uses 10; less weight on boundaries: classification converges in few steps
    "training.num_workers=0",
)
#: The feature run (docs/features.md): 4-frame clips every 2 frames (5 features/s at 10 fps), so a
#: window of 16 features spans the 3.2 s of the frame windows; the network is the same head.
FEATURE_EXTRACTION = ("--clip-frames", "4", "--stride", "2", "--size", "32")
FEATURE_PRESET = (
    "dataset.training.clip_length=16", "dataset.training.clip_stride=4",
    "dataset.testing.clip_length=16", "dataset.testing.clip_stride=8",
    "training.batch_size=4", "training.learning_rate=3e-4", "training.lw=3.0", "training.num_workers=0",
)
#: Feature epochs per frame-model epoch: a feature step is cheap (no backbone), and with 1.5× the
#: epochs the feature run reaches the RGB run's average mAP (10 epochs: 89.8 vs 91.0; 15: 91.6,
#: benchmarks/results_demo.md).
FEATURE_EPOCHS_PER_EPOCH = 1.5
#: The demo's promise on the synthetic test split (docs/demo.md).
TARGET_MAP_AT_05 = 0.8


@dataclass
class Stage:
    name: str
    argv: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    group: str | None = None  # stages of one group run at the same time
    metrics_csv: Path | None = None  # a training stage's per-epoch metrics, polled for progress
    epochs: int = 0


@dataclass
class DemoLayout:
    """Where every stage reads and writes, below one output folder."""

    out: Path

    @property
    def data(self) -> Path:
        """The synthetic dataset as a user would have theirs: videos and an annotation JSON."""
        return self.out / "data"

    @property
    def videos(self) -> Path:
        return self.data / "videos"

    @property
    def ground_truth(self) -> Path:
        return self.data / "annotations" / "gt.json"

    @property
    def classes(self) -> Path:
        """Every class of the set (a small set may lack instances of some)."""
        return self.data / "annotations" / "classes.txt"

    @property
    def frames(self) -> Path:
        return self.out / "frames"

    @property
    def dataset_config(self) -> Path:
        """Written by `afsd prepare --annotations`."""
        return self.frames / "dataset.yaml"

    @property
    def flow(self) -> Path:
        return self.out / "flow"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def features(self) -> Path:
        """Written by `afsd extract` (with its dataset.yaml)."""
        return self.out / "features"

    def detections(self, stream: str) -> Path:
        return self.out / "detections" / f"{stream}.json"

    def metrics(self, stream: str) -> Path:
        return self.out / "metrics" / f"{stream}.json"

    def report(self, stream: str) -> Path:
        return self.out / "reports" / f"{stream}.html"

    @property
    def plots(self) -> Path:
        return self.out / "plots"


def training_overrides(layout: DemoLayout, stream: str, epochs: int) -> list[str]:
    """The preset, the epochs (one checkpoint, at the end) and, for flow, the flow arrays."""
    overrides = [*DEMO_PRESET, f"training.max_epoch={epochs}", f"training.checkpoint_every={epochs}"]
    if stream == "flow":
        overrides += ["model.in_channels=2", f"dataset.training.video_data_path={layout.flow}",
                      f"dataset.testing.video_data_path={layout.flow}"]
    return overrides


HEARTBEAT_S = 30.0


def _epoch_progress(stage: Stage) -> str:
    """``"train rgb: 3/10 epochs"`` from the rows of the stage's metrics.csv (header excluded)."""
    done = 0
    if stage.metrics_csv is not None and stage.metrics_csv.is_file():
        done = max(0, len(stage.metrics_csv.read_text(encoding="utf-8").splitlines()) - 1)
    return f"{stage.name}: {done}/{stage.epochs or '?'} epochs"


def build_stages(layout: DemoLayout, args: argparse.Namespace) -> list[Stage]:
    """The command of every stage, in order."""
    afsd = [sys.executable, "-m", "afsd_cli"]
    jobs = ["-j", str(args.jobs)]
    epochs = 1 if args.quick else args.epochs
    stages = [
        Stage("synthetic videos", afsd + ["prepare", "--synthetic", str(layout.data), "--videos", str(args.videos),
                                          "--classes", str(args.classes), "--seed", str(args.seed)]),
        Stage("frames", afsd + ["prepare", str(layout.videos), str(layout.frames), "--annotations",
                                str(layout.ground_truth), "--class-names", str(layout.classes),
                                "--size", str(args.frame_size), *jobs]),
        Stage("flow", afsd + ["flow", str(layout.frames), str(layout.flow), "--method", args.flow_method, *jobs]),
    ]
    quick = ["--max-steps", "1"] if args.quick else []
    for stream in ("rgb", "flow"):
        stages.append(Stage(f"train {stream}", afsd + [
            "train", str(layout.dataset_config), "--runs-dir", str(layout.runs), "--name", stream, "--device", "cpu",
            *quick, *training_overrides(layout, stream, epochs)], group="train" if args.parallel_train else None,
            metrics_csv=layout.runs / stream / "metrics.csv", epochs=epochs))
    for stream in ("rgb", "flow"):
        stages.append(Stage(f"predict {stream}", afsd + [
            "predict", str(layout.runs / stream), "--output", str(layout.detections(stream)), "--device", "cpu"]))
    stages.append(Stage("fuse", afsd + [
        "fuse", str(layout.runs / "rgb"), "--flow-checkpoint", str(layout.runs / "flow"),
        "--rgb-data", str(layout.frames), "--flow-data", str(layout.flow),
        "--output", str(layout.detections("fused")), "--device", "cpu",
        "--plot", str(layout.plots), "--gt", str(layout.ground_truth)]))
    stages += feature_stages(layout, afsd, quick, epochs)
    for stream in STREAMS:
        stages.append(Stage(f"evaluate {stream}", afsd + [
            "evaluate", str(layout.detections(stream)), "--gt", str(layout.ground_truth),
            "--output", str(layout.metrics(stream)), "--report", str(layout.report(stream))]))
    return stages


def feature_stages(layout: DemoLayout, afsd: list[str], quick: list[str], epochs: int) -> list[Stage]:
    """Extract features with the RGB run's backbone, train AFSD on them, predict."""
    feature_epochs = max(1, int(epochs * FEATURE_EPOCHS_PER_EPOCH))
    return [
        Stage("extract features", afsd + [
            "extract", str(layout.frames), str(layout.features), "--weights",
            str(layout.runs / "rgb" / f"checkpoint-{epochs}.ckpt"), *FEATURE_EXTRACTION, "--device", "cpu",
            "--annotations", str(layout.ground_truth), "--classes", str(layout.classes)]),
        Stage("train features", afsd + [
            "train", str(layout.features / "dataset.yaml"), "--runs-dir", str(layout.runs), "--name", "features",
            "--device", "cpu", *quick, *FEATURE_PRESET, f"training.max_epoch={feature_epochs}",
            f"training.checkpoint_every={feature_epochs}"], metrics_csv=layout.runs / "features" / "metrics.csv",
            epochs=feature_epochs),
        Stage("predict features", afsd + [
            "predict", str(layout.runs / "features"), "--output", str(layout.detections("features")),
            "--device", "cpu"]),
    ]


def printable(argv: list[str]) -> str:
    """The command as a user would type it (``afsd ...`` instead of ``python -m afsd_cli``)."""
    if argv[:3] == [sys.executable, "-m", "afsd_cli"]:
        argv = ["afsd", *argv[3:]]
    return shlex.join(argv)


def run_stage(stage: Stage, env: dict[str, str]) -> int:
    print(f"\n\033[1m==> [{stage.name}]\033[0m $ {printable(stage.argv)}", flush=True)
    start = time.perf_counter()
    stage.returncode = subprocess.call(stage.argv, env=env)
    stage.seconds = time.perf_counter() - start
    return stage.returncode


def run_group(stages: list[Stage], env: dict[str, str], logs: Path) -> int:
    """Run ``stages`` at the same time, each with its share of the cores and its output in a log
    file (two progress bars would garble one terminal); print each log's last lines at the end."""
    threads = max(1, (os.cpu_count() or 2) // len(stages))
    logs.mkdir(parents=True, exist_ok=True)
    running = []
    start = time.perf_counter()
    for stage in stages:
        log = logs / (stage.name.replace(" ", "_") + ".log")
        print(f"\n\033[1m==> [{stage.name}]\033[0m $ {printable(stage.argv)}", flush=True)
        print(f"    (in parallel, {threads} thread(s), output in {log})", flush=True)
        handle = open(log, "w", encoding="utf-8")
        process = subprocess.Popen(stage.argv, env={**env, "OMP_NUM_THREADS": str(threads)},
                                   stdout=handle, stderr=subprocess.STDOUT)
        running.append((stage, process, handle, log))
    # the logs hold the progress bars; the terminal gets a line of epochs done now and then
    last_report = time.perf_counter()
    while any(process.poll() is None for _, process, _, _ in running):
        time.sleep(0.5)
        if time.perf_counter() - last_report >= HEARTBEAT_S:
            last_report = time.perf_counter()
            print("    ... " + ", ".join(_epoch_progress(stage) for stage, *_ in running)
                  + f" ({last_report - start:.0f} s)", flush=True)
    for stage, process, handle, log in running:
        stage.returncode = process.wait()
        stage.seconds = time.perf_counter() - start
        handle.close()
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-14:]
        print(f"\n--- [{stage.name}] finished in {stage.seconds:.1f} s (exit code {stage.returncode}); end of {log}:")
        print("\n".join(tail), flush=True)
    return next((s.returncode for s, *_ in running if s.returncode), 0)


def read_metrics(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary_lines(stages: list[Stage], layout: DemoLayout, total_seconds: float) -> list[str]:
    lines = ["", "demo summary", "", "| stage | seconds | status |", "|---|---:|---|"]
    for stage in stages:
        status = "not run" if stage.returncode is None else ("ok" if stage.returncode == 0 else f"failed ({stage.returncode})")
        if stage.group and stage.returncode is not None:
            status += f" (in parallel: {stage.group})"
        lines.append(f"| {stage.name} | {stage.seconds:.1f} | {status} |")
    lines.append(f"| **total** | {total_seconds:.1f} | |")
    table = []
    thresholds = None
    for stream in STREAMS:
        metrics = read_metrics(layout.metrics(stream))
        if metrics is None:
            continue
        thresholds = metrics.get("tiou_thresholds", thresholds)
        table.append((stream, metrics.get("mAP", []), metrics.get("average_mAP", float("nan"))))
    if table and thresholds:
        lines += ["", "| stream | " + " | ".join(f"mAP@{t:g}" for t in thresholds) + " | avg |",
                  "|---|" + "---:|" * (len(thresholds) + 1)]
        for stream, maps, average in table:
            lines.append(f"| {stream} | " + " | ".join(f"{100 * m:.1f}" for m in maps) + f" | {100 * average:.1f} |")
    return lines


def fused_map_at(layout: DemoLayout, tiou: float = 0.5) -> float | None:
    metrics = read_metrics(layout.metrics("fused"))
    if not metrics:
        return None
    for threshold, value in zip(metrics.get("tiou_thresholds", []), metrics.get("mAP", [])):
        if abs(threshold - tiou) < 1e-9:
            return float(value)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m afsd_cli.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: runs/demo)")
    parser.add_argument("--videos", type=int, default=None, help="synthetic videos, train + test (default 40, quick 2)")
    parser.add_argument("--classes", type=int, default=4, help="action classes (1-6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    parser.add_argument("--frame-size", type=int, default=40,
                        help="afsd prepare --size: stored frame side (default 40; the demo preset crops 32)")
    parser.add_argument("--flow-method", default="dis", help="afsd flow --method (default dis: fast on CPU)")
    parser.add_argument("--jobs", type=int, default=0, help="parallel workers of prepare/flow (0 = every core)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"training epochs (default {DEMO_EPOCHS})")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 videos, 1 training step per stream")
    parser.add_argument("--sequential-train", dest="parallel_train", action="store_false",
                        help="train the two streams one after the other (default: at the same time, "
                             "each on half of the cores, which is faster on a small CPU)")
    parser.add_argument("--keep", action="store_true", help="keep an existing output folder (default: start afresh)")
    args = parser.parse_args(argv)
    if args.videos is None:
        args.videos = 2 if args.quick else 40
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    layout = DemoLayout(args.out)
    if layout.out.exists() and not args.keep:
        import shutil

        shutil.rmtree(layout.out)
    stages = build_stages(layout, args)
    started = time.perf_counter()
    failed = run_stages(stages, layout)
    for line in summary_lines(stages, layout, time.perf_counter() - started):
        print(line)
    if failed is not None:
        print(f"\nstage '{failed.name}' failed (exit code {failed.returncode}); command:\n  {printable(failed.argv)}")
        return 1
    print_outputs(layout, quick=args.quick)
    return 0


def run_stages(stages: list[Stage], layout: DemoLayout) -> Stage | None:
    """Run the stages in order (a group of stages side by side); return the first that failed, or None."""
    env = dict(os.environ)
    # The rich progress bars of the commands stay readable when the output is a pipe.
    env.setdefault("PYTHONUNBUFFERED", "1")
    index = 0
    while index < len(stages):
        stage = stages[index]
        group = [s for s in stages[index:] if stage.group and s.group == stage.group]
        if group:
            run_group(group, env, layout.out / "logs")
            index += len(group)
            failed = next((s for s in group if s.returncode), None)
        else:
            run_stage(stage, env)
            index += 1
            failed = stage if stage.returncode else None
        if failed is not None:
            return failed
    return None


def print_outputs(layout: DemoLayout, quick: bool) -> None:
    """Where the outputs are, the fused mAP@0.5 against the demo's target, the report to open."""
    print(f"\noutputs in {layout.out}: detections/*.json, metrics/*.json, reports/*.html, plots/ (timelines), runs/ (checkpoints)")
    fused = fused_map_at(layout)
    if fused is not None and not quick:
        verdict = "meets" if fused >= TARGET_MAP_AT_05 else "is BELOW"
        print(f"fused mAP@0.5 = {100 * fused:.1f} {verdict} the demo target of {100 * TARGET_MAP_AT_05:.0f}")
    if layout.report("fused").is_file():
        print(f"report (open in a browser): {layout.report('fused').resolve()}")


if __name__ == "__main__":
    sys.exit(main())
