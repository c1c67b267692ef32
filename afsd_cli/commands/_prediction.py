"""What `afsd predict` and `afsd fuse` share: their options (declared once, the vocabulary of the
README's option table), the output checks, and running a prediction plan with progress, the
detections file and the summary. Neither command imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from rich.markup import escape

from afsd_cli.commands._common import console, err_console, fail

# The options `afsd predict` and `afsd fuse` share, declared once (the vocabulary: README's option table).
OutputOption = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Write the detections JSON exactly here (no run folder); "
                           "default: a new run folder runs/<command>/<name>/detections.json.")]
ClassifierOption = Annotated[Optional[Path], typer.Option(
    "--classifier", help="ActivityNet video-level classification JSON (CUHK format).")]
BatchSizeOption = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, help="Windows per forward pass; default testing.batch_size.")]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (CUDA when available).")]
AmpOption = Annotated[str, typer.Option("--amp", help="Mixed precision on CUDA: off, bf16 or fp16.")]
PlotOption = Annotated[Optional[Path], typer.Option(
    "--plot", help="Write a timeline PNG per video into this folder.")]
GroundTruthOption = Annotated[Optional[Path], typer.Option(
    "--gt", help="Ground truth drawn in the plots: ActivityNet-style JSON or THUMOS14 annotation CSV "
                 "(as evaluate --gt).")]
LimitOption = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N videos of the list.")]
JobsOption = Annotated[int, typer.Option(
    "--jobs", "-j", min=0, help="Processes for soft-NMS, overlapping the network (0: inline).")]
DeterministicOption = Annotated[bool, typer.Option(
    "--deterministic", help="Batch-size-independent fp32 results (slower convolution kernels).")]
FlowMethodOption = Annotated[Optional[str], typer.Option(
    "--flow-method", help="With --video and a flow model: tvl1, opencv-tvl1, dis or farneback; "
                          "default testing.flow_method.")]
NameOption = Annotated[Optional[str], typer.Option(
    "--name", help="Run folder name under --runs-dir (default: the next free exp, exp2, ...).")]
ExistOkOption = Annotated[bool, typer.Option("--exist-ok", help="Reuse the run folder --name if it exists.")]
DETECTIONS_NAME = "detections.json"
AllOrNothingOption = Annotated[bool, typer.Option(
    "--all-or-nothing", help="If any video fails, write no detections at all (default: write the videos "
                             "that succeeded, list the failures, exit 1).")]


def check_outputs(output: Optional[Path], plot_dir: Optional[Path], command: str = "predict",
                  runs_dir: Optional[Path] = None, name: Optional[str] = None, exist_ok: bool = False) -> None:
    """Fail now, not after inference, when the outputs cannot be written: the detections file
    (``--output``) or else the run folder (or the folder it will be created in), and the plot folder."""
    from afsd_cli.io import ensure_writable
    from afsd_cli.runs import default_runs_dir

    if output is not None:
        ensure_writable(output, kind="file")
    else:
        ensure_writable(Path(runs_dir or default_runs_dir(command)) / (name or ("exp" if exist_ok else "")),
                        kind="folder")
    if plot_dir is not None:
        ensure_writable(plot_dir, kind="folder")


def runs_dir_option(command: str):
    return typer.Option(None, "--runs-dir", help=f"Folder of the runs (default: runs/{command}, "
                                                  f"or $AFSD_RUNS/{command}).")


def amp_mode(value: str) -> str | None:
    """``--amp off|bf16|fp16`` → the predictor's ``amp`` argument (``None`` = full precision)."""
    from afsd_cli.commands._vocabulary import AMP_MODES
    from afsd_cli.errors import ConfigError

    if value not in AMP_MODES:
        raise ConfigError(f"--amp {value!r}: expected one of {', '.join(AMP_MODES)}")
    return None if value == "off" else value


def record_run(run_dir: Path, cfg: Any, plan: Any, **testing: Any) -> None:
    """config.yaml (the run's checkpoint(s) and outputs) and env.json beside the detections."""
    from afsd_cli.runs import torch_environment, write_env, write_run_config

    write_run_config(run_dir, cfg, output_path=run_dir, output_json=DETECTIONS_NAME, **testing)
    predictor = plan.predictor
    write_env(run_dir, {**torch_environment(predictor.device), "amp": predictor.amp or "off",
                        "batch_size": predictor.batch_size})
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/] ({DETECTIONS_NAME}, config.yaml, env.json)",
                  highlight=False)


def run_plan(plan: Any, output: Path, plot_dir: Optional[Path], gt_path: Optional[Path], title: str,
             workers: int = 0, all_or_nothing: bool = False, stream: bool = False,
             written: Optional[Callable[[], None]] = None) -> None:
    """Run a PredictionPlan with a progress bar, write the JSON atomically, print the summary.

    A video that fails during the run is listed and skipped: the others' detections are written
    and the exit code is 1 (``all_or_nothing``: nothing is written). Bad inputs found before the
    run (missing or malformed arrays) stop it before any network runs. ``stream``: JSON lines of
    each video's detections on stdout as they become known (engine/streaming.py), the summary on
    stderr. ``written`` is called once the detections are written (also when some videos failed),
    e.g. to record the run folder."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from rich.markup import escape

    from afsd_cli.engine.postprocess import results_document
    from afsd_cli.io import write_json

    for notice in plan.notices:
        err_console.print(f"[yellow]notice:[/] {escape(notice)}", highlight=False)
    for problem in plan.problems:
        err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    jobs = plan.without_bad_videos()
    if plan.problems and (all_or_nothing or not jobs):
        raise fail(f"{len(plan.problems)} bad input(s); nothing was written")
    skipped = len(plan.jobs) - len(jobs)  # listed above; the others run, and the exit code is 1

    ground_truth = None
    if gt_path is not None:
        from afsd_cli.engine.plots import read_ground_truth

        ground_truth = read_ground_truth(gt_path)

    predictor = plan.predictor
    summary = err_console if stream else console  # with --stream, stdout carries only JSON lines
    results: dict[str, list] = {}
    failures: list[str] = []
    totals = {"windows": 0, "frames": 0, "detections": 0, "network": 0.0, "decode": 0.0, "postprocess": 0.0}
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[video]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as progress:
        task = progress.add_task(title, total=len(jobs), video="")
        track_flow_progress(plan, progress)  # in-memory --video with a flow model: moves in frame pairs
        on_progress = _frame_progress(progress)  # streamed --video: one bar per video, in frames
        on_region = _write_json_line if stream else None
        for result in _closing(predictor, predictor.run(jobs, postprocess_workers=workers,
                                                        on_progress=on_progress, on_region=on_region)):
            progress.update(task, advance=1, video=f"{result.name} ({len(result.detections)} det.)")
            if result.error and stream:
                _write_json_line({"video": result.name, "error": result.error})
            if result.error:
                failures.append(result.error)
                if all_or_nothing:
                    break  # nothing will be written: the other videos need not run
                continue
            results[result.key] = result.detections
            totals["windows"] += result.windows
            totals["frames"] += result.frames
            totals["detections"] += len(result.detections)
            for stage in ("network", "decode", "postprocess"):
                totals[stage] += result.timings.get(stage, 0.0)
            if plot_dir is not None:
                from afsd_cli.engine.plots import plot_timeline

                gt = None if ground_truth is None else ground_truth.get(result.key, ground_truth.get(result.name, []))
                duration = next((j.duration for j in plan.jobs if j.name == result.name), None)
                plot_timeline(plot_dir / f"{result.key}.png", result.key, result.detections, duration, gt)
    seconds = time.perf_counter() - started

    for message in failures:
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if failures and (all_or_nothing or not results):
        counted = "" if len(results) + len(failures) == len(jobs) else " (stopped at the first)"
        raise fail(f"{len(failures)} of {len(plan.jobs)} video(s) failed{counted}; nothing was written")

    profile = plan.profile.to_dict() if getattr(plan, "profile", None) is not None else None
    write_json(output, results_document(results, plan.version, profile), indent=None)
    if written is not None:
        written()

    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("videos", "windows", "detections", "seconds", "frames/s"):
        table.add_column(column, justify="right")
    fps = totals["frames"] / seconds if seconds > 0 else 0.0
    table.add_row(str(len(results)), str(totals["windows"]), str(totals["detections"]), f"{seconds:.1f}", f"{fps:.0f}")
    summary.print(table)
    summary.print(f"time by stage: loading/decoding {totals['decode']:.1f} s (in a background thread), "
                  f"network {totals['network']:.1f} s, decoding + soft-NMS {totals['postprocess']:.1f} s",
                  highlight=False)
    summary.print(f"detections written to [bold]{escape(str(output))}[/]")
    if plot_dir is not None:
        summary.print(f"timelines written to [bold]{escape(str(plot_dir))}[/]")
    if failures or skipped:
        raise fail(f"{len(failures) + skipped} of {len(plan.jobs)} video(s) failed; the detections of the other "
                   f"{len(results)} were written (--all-or-nothing writes none)")


def _frame_progress(progress: Any):
    """A progress callback for streamed videos: one bar per video, in sampled frames, with ETA
    (no total when the container does not say how many frames it has)."""
    tasks: dict[str, Any] = {}

    def update(state: Any) -> None:
        if state.video not in tasks:
            from rich.markup import escape

            tasks[state.video] = progress.add_task(f"  {escape(state.video)}", total=state.total, video="frames")
        task = tasks[state.video]
        progress.update(task, completed=state.frames, total=state.total)
        if state.done:
            progress.remove_task(task)
            del tasks[state.video]

    return update


def _write_json_line(item: Any) -> None:
    """One line of ``--stream`` output on stdout, flushed at once (a live consumer reads it)."""
    import json
    import sys

    line = item.to_json() if hasattr(item, "to_json") else item
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def track_flow_progress(plan: Any, progress: Any) -> None:
    """A second bar, in frame pairs, for the optical flow computed on the fly from --video files."""
    task = None
    totals: dict[str, int] = {}

    def advance(video: str, pairs: int, pairs_in_video: int) -> None:
        nonlocal task
        if video not in totals:
            totals[video] = pairs_in_video
            if task is None:
                task = progress.add_task("optical flow (pairs)", total=pairs_in_video, video=video)
            else:
                progress.update(task, total=sum(totals.values()), video=video)
        progress.update(task, advance=pairs)

    plan.report_flow_progress(advance)


def _closing(predictor: Any, results: Any):
    try:
        yield from results
    finally:
        predictor.close()
