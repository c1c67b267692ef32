"""`make demo` / ``python -m afsd_cli.demo``: the whole AFSD pipeline on the bundled synthetic dataset.

Every stage runs the ``afsd`` command a user would type (``python -m afsd_cli ...`` in a
subprocess), printed before it runs:

1. ``afsd prepare --synthetic``: render the videos and their THUMOS14-format annotations;
2. ``afsd prepare``: videos → 10 fps RGB frame arrays (train and test split);
3. ``afsd flow``: frame arrays → optical-flow arrays;
4. ``afsd train``: the RGB model, then the flow model (``configs/demo.yaml``, ``demo_flow.yaml``);
5. ``afsd predict`` for each stream, ``afsd fuse`` for both (with timeline plots);
6. ``afsd evaluate`` on each detection file; the mAP table ends the run.

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
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_OUT = Path("runs/demo")
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
STREAMS = ("rgb", "flow", "fused")
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
        return self.out / "data"

    def videos(self, split: str) -> Path:
        return self.data / "videos" / split

    def annotations(self, split: str) -> Path:
        return self.data / "annotations" / f"{split}_Annotation.csv"

    @property
    def classes(self) -> Path:
        return self.data / "annotations" / "classes.txt"

    @property
    def ground_truth(self) -> Path:
        return self.data / "annotations" / "gt.json"

    def frames(self, split: str) -> Path:
        return self.out / "frames" / split

    def flow(self, split: str) -> Path:
        return self.out / "flow" / split

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def detections(self, stream: str) -> Path:
        return self.out / "detections" / f"{stream}.json"

    def metrics(self, stream: str) -> Path:
        return self.out / "metrics" / f"{stream}.json"

    def report(self, stream: str) -> Path:
        return self.out / "reports" / f"{stream}.html"

    @property
    def plots(self) -> Path:
        return self.out / "plots"


def find_config(name: str) -> Path:
    """``configs/<name>`` of the source tree (editable install), else of the current directory."""
    for folder in (REPO_CONFIGS, Path.cwd() / "configs"):
        if (folder / name).is_file():
            path = folder / name
            try:  # print it as a user would type it from the repository root
                return path.relative_to(Path.cwd())
            except ValueError:
                return path
    raise FileNotFoundError(f"cannot find configs/{name} (run the demo from the repository root)")


def path_overrides(layout: DemoLayout, stream: str) -> list[str]:
    """Config overrides pointing the demo config at ``layout`` (none when it is the default)."""
    if layout.out.resolve() == DEFAULT_OUT.resolve():
        return []
    data_of = layout.frames if stream == "rgb" else layout.flow
    return [
        f"dataset.class_index_path={layout.classes}",
        f"dataset.training.video_info_path={layout.frames('train') / 'video_info.csv'}",
        f"dataset.training.video_anno_path={layout.annotations('train')}",
        f"dataset.training.video_data_path={data_of('train')}",
        f"dataset.testing.video_info_path={layout.frames('test') / 'video_info.csv'}",
        f"dataset.testing.video_anno_path={layout.annotations('test')}",
        f"dataset.testing.video_data_path={data_of('test')}",
        f"dataset.testing.gt_path={layout.ground_truth}",
        f"training.checkpoint_path={layout.runs / stream}",
        f"testing.output_path={layout.out / 'detections'}",
    ]


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
    rgb_cfg, flow_cfg = str(find_config("demo.yaml")), str(find_config("demo_flow.yaml"))
    jobs = ["-j", str(args.jobs)]
    stages = [
        Stage("synthetic videos", afsd + ["prepare", "--synthetic", str(layout.data), "--videos", str(args.videos),
                                          "--classes", str(args.classes), "--seed", str(args.seed)]),
    ]
    for split in ("train", "test"):
        stages.append(Stage(f"frames ({split})", afsd + [
            "prepare", str(layout.videos(split)), str(layout.frames(split)),
            "--annotations", str(layout.annotations(split)), "--size", str(args.frame_size), *jobs]))
    for split in ("train", "test"):
        stages.append(Stage(f"flow ({split})", afsd + [
            "flow", str(layout.frames(split)), str(layout.flow(split)), "--method", args.flow_method, *jobs]))

    quick = ["--max-steps", "1", "training.max_epoch=1"] if args.quick else []
    checkpoints = {}
    for stream, cfg in (("rgb", rgb_cfg), ("flow", flow_cfg)):
        stages.append(Stage(f"train {stream}", afsd + [
            "train", cfg, "--runs-dir", str(layout.runs), "--name", stream, "--device", "cpu",
            *quick, *path_overrides(layout, stream)], group="train" if args.parallel_train else None,
            metrics_csv=layout.runs / stream / "metrics.csv", epochs=1 if args.quick else args.epochs))
        checkpoints[stream] = layout.runs / stream / f"checkpoint-{1 if args.quick else args.epochs}.ckpt"
    for stream, cfg in (("rgb", rgb_cfg), ("flow", flow_cfg)):
        stages.append(Stage(f"predict {stream}", afsd + [
            "predict", cfg, "--checkpoint", str(checkpoints[stream]), "--output", str(layout.detections(stream)),
            "--device", "cpu", *path_overrides(layout, stream)]))
    stages.append(Stage("fuse", afsd + [
        "fuse", rgb_cfg, "--rgb-checkpoint", str(checkpoints["rgb"]), "--flow-checkpoint", str(checkpoints["flow"]),
        "--rgb-data", str(layout.frames("test")), "--flow-data", str(layout.flow("test")),
        "--output", str(layout.detections("fused")), "--device", "cpu",
        "--plot", str(layout.plots), "--gt", str(layout.ground_truth), *path_overrides(layout, "rgb")]))
    for stream in STREAMS:
        stages.append(Stage(f"evaluate {stream}", afsd + [
            "evaluate", str(layout.detections(stream)), "--gt", str(layout.ground_truth), "--subset", "test",
            "--dataset", "thumos14", "--output", str(layout.metrics(stream)), "--report", str(layout.report(stream))]))
    return stages


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
                        help="afsd prepare --size: stored frame side (default 40; the demo configs crop 32)")
    parser.add_argument("--flow-method", default="dis", help="afsd flow --method (default dis: fast on CPU)")
    parser.add_argument("--jobs", type=int, default=0, help="parallel workers of prepare/flow (0 = every core)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo configs' max_epoch)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 videos, 1 training step per stream")
    parser.add_argument("--sequential-train", dest="parallel_train", action="store_false",
                        help="train the two streams one after the other (default: at the same time, "
                             "each on half of the cores, which is faster on a small CPU)")
    parser.add_argument("--keep", action="store_true", help="keep an existing output folder (default: start afresh)")
    args = parser.parse_args(argv)
    if args.videos is None:
        args.videos = 2 if args.quick else 40
    return args


def config_epochs(path: Path) -> int:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return int(data["training"]["max_epoch"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    layout = DemoLayout(args.out)
    if args.epochs is None:
        args.epochs = config_epochs(find_config("demo.yaml"))
    if layout.out.exists() and not args.keep:
        import shutil

        shutil.rmtree(layout.out)
    stages = build_stages(layout, args)
    if args.epochs != config_epochs(find_config("demo.yaml")) and not args.quick:
        for stage in stages:
            if stage.name.startswith("train "):
                stage.argv.append(f"training.max_epoch={args.epochs}")

    env = dict(os.environ)
    # The rich progress bars of the commands stay readable when the output is a pipe.
    env.setdefault("PYTHONUNBUFFERED", "1")
    started = time.perf_counter()
    failed = None
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
            break
    total = time.perf_counter() - started

    for line in summary_lines(stages, layout, total):
        print(line)
    if failed is not None:
        print(f"\nstage '{failed.name}' failed (exit code {failed.returncode}); command:\n  {printable(failed.argv)}")
        return 1
    print(f"\noutputs in {layout.out}: detections/*.json, metrics/*.json, reports/*.html, plots/ (timelines), runs/ (checkpoints)")
    fused = fused_map_at(layout)
    if fused is not None and not args.quick:
        verdict = "meets" if fused >= TARGET_MAP_AT_05 else "is BELOW"
        print(f"fused mAP@0.5 = {100 * fused:.1f} {verdict} the demo target of {100 * TARGET_MAP_AT_05:.0f}")
    if layout.report("fused").is_file():
        print(f"report (open in a browser): {layout.report('fused').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
