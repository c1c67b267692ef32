"""What `afsd predict` and `afsd fuse` share: their options (declared once, the vocabulary of the
README's option table), the output checks, and the rendering of a prediction run
(engine/prediction.py predict_plan decides what is written): progress bars, the error lines,
the summary table and the exit code. Neither command imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

from rich.markup import escape

from afsd_cli.commands._common import console, err_console, fail

if TYPE_CHECKING:
    from afsd_cli.config import Config
    from afsd_cli.engine.planning import PredictionPlan
    from afsd_cli.engine.prediction import PredictionOutcome

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
StreamOption = Annotated[bool, typer.Option(
    "--stream", help="With --video: print each region's detections as JSON lines on stdout as soon as no "
                     "later window overlaps it (provisional), then each video's final detections; the "
                     "summary goes to stderr. See docs/predict.md.")]


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


def record_run(run_dir: Path, cfg: Config, plan: PredictionPlan, **testing: Any) -> None:
    """config.yaml (the run's checkpoint(s) and outputs) and env.json beside the detections."""
    from afsd_cli.runs import torch_environment, write_env, write_run_config

    write_run_config(run_dir, cfg, output_path=run_dir, output_json=DETECTIONS_NAME, **testing)
    predictor = plan.predictor
    write_env(run_dir, {**torch_environment(predictor.device), "amp": predictor.amp or "off",
                        "batch_size": predictor.batch_size})
    console.print(f"run folder: [bold]{escape(str(run_dir))}[/] ({DETECTIONS_NAME}, config.yaml, env.json)",
                  highlight=False)


def run_plan(plan: PredictionPlan, output: Path, plot_dir: Optional[Path], gt_path: Optional[Path], title: str,
             workers: int = 0, all_or_nothing: bool = False, stream: bool = False,
             written: Optional[Callable[[], None]] = None) -> None:
    """Run a PredictionPlan (engine/prediction.py predict_plan) with a progress bar, print the summary.

    A video that fails during the run is listed and skipped: the others' detections are written
    and the exit code is 1 (``all_or_nothing``: nothing is written). Bad inputs found before the
    run (missing or malformed arrays) stop it before any network runs. ``stream``: JSON lines of
    each video's detections on stdout as they become known (engine/streaming.py), the summary on
    stderr. ``written`` is called once the detections are written (also when some videos failed),
    e.g. to record the run folder."""
    from afsd_cli.engine.prediction import predict_plan, runnable_jobs

    _print_plan_messages(plan)
    jobs = runnable_jobs(plan, all_or_nothing)  # bad inputs: one error line, before any bar
    ground_truth = None
    if gt_path is not None:
        from afsd_cli.engine.plots import read_ground_truth

        ground_truth = read_ground_truth(gt_path)
    with _progress() as progress:
        task = progress.add_task(title, total=len(jobs), video="")

        def advance(result: Any) -> None:
            progress.update(task, advance=1, video=f"{result.name} ({len(result.detections)} det.)")
            if result.error and stream:
                _write_json_line({"video": result.name, "error": result.error})

        track_flow_progress(plan, progress)  # in-memory --video with a flow model: moves in frame pairs
        outcome = predict_plan(plan, output, all_or_nothing=all_or_nothing, workers=workers, plot_dir=plot_dir,
                               ground_truth=ground_truth, on_video=advance,
                               on_progress=_frame_progress(progress),  # streamed --video: a bar per video
                               on_region=_write_json_line if stream else None)
    for failure in outcome.failures:
        err_console.print(f"[bold red]error:[/] {escape(failure.error)}", highlight=False, soft_wrap=True)
    if outcome.written is None:
        counted = " (stopped at the first)" if outcome.stopped_early else ""
        raise fail(f"{len(outcome.failures)} of {len(plan.jobs)} video(s) failed{counted}; nothing was written")
    if written is not None:
        written()
    _print_summary(outcome, title, output, plot_dir, err_console if stream else console)  # --stream: stdout is JSON
    if outcome.failures or outcome.skipped:
        raise fail(f"{len(outcome.failures) + outcome.skipped} of {len(plan.jobs)} video(s) failed; the detections "
                   f"of the other {len(outcome.results)} were written (--all-or-nothing writes none)")


def _print_plan_messages(plan: PredictionPlan) -> None:
    """The plan's notices, and the bad inputs found before running (one error line each)."""
    for notice in plan.notices:
        err_console.print(f"[yellow]notice:[/] {escape(notice)}", highlight=False)
    for problem in plan.problems:
        err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[video]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )


def _print_summary(outcome: PredictionOutcome, title: str, output: Path, plot_dir: Optional[Path], summary: Any) -> None:
    """The table (videos, windows, detections, seconds, frames/s), the time by stage, where the
    detections and timelines went."""
    from rich.table import Table

    totals, seconds = outcome.totals, outcome.seconds
    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("videos", "windows", "detections", "seconds", "frames/s"):
        table.add_column(column, justify="right")
    fps = totals.frames / seconds if seconds > 0 else 0.0
    table.add_row(str(len(outcome.results)), str(totals.windows), str(totals.detections), f"{seconds:.1f}",
                  f"{fps:.0f}")
    summary.print(table)
    summary.print(f"time by stage: loading/decoding {totals.decode:.1f} s (in a background thread), "
                  f"network {totals.network:.1f} s, decoding + soft-NMS {totals.postprocess:.1f} s",
                  highlight=False)
    summary.print(f"detections written to [bold]{escape(str(output))}[/]")
    if plot_dir is not None:
        summary.print(f"timelines written to [bold]{escape(str(plot_dir))}[/]")


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


def track_flow_progress(plan: PredictionPlan, progress: Any) -> None:
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
