"""`afsd predict`: detections of one model over the test set (stored arrays) or video files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from afsd_cli.commands._common import console, err_console, fail, handle_errors

# The options `afsd predict` and `afsd fuse` share, declared once.
OutputOption = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Detections JSON; default testing.output_path/testing.output_json.")]
ClassifierOption = Annotated[Optional[Path], typer.Option(
    "--classifier", help="ActivityNet video-level classification JSON (CUHK format).")]
BatchSizeOption = Annotated[Optional[int], typer.Option(
    "--batch-size", "-b", min=1, help="Windows per forward pass; default testing.batch_size.")]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto (CUDA when available).")]
AmpOption = Annotated[bool, typer.Option("--amp", help="Mixed precision on CUDA (see --amp-dtype).")]
AmpDtypeOption = Annotated[str, typer.Option("--amp-dtype", help="bf16 or fp16.")]
PlotOption = Annotated[Optional[Path], typer.Option(
    "--plot", help="Write a timeline PNG per video into this folder.")]
GroundTruthOption = Annotated[Optional[Path], typer.Option(
    "--gt", help="Ground truth drawn in the plots: ActivityNet-style JSON or THUMOS14 annotation CSV "
                 "(as evaluate --gt).")]
LimitOption = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N videos of the list.")]
WorkersOption = Annotated[int, typer.Option(
    "--workers", "-j", min=0, help="Processes for soft-NMS, overlapping the network (0: inline).")]
DeterministicOption = Annotated[bool, typer.Option(
    "--deterministic", help="Batch-size-independent fp32 results (slower convolution kernels).")]
AllOrNothingOption = Annotated[bool, typer.Option(
    "--all-or-nothing", help="If any video fails, write no detections at all (default: write the videos "
                             "that succeeded, list the failures, exit 1).")]


def check_outputs(output: Path, plot_dir: Optional[Path]) -> None:
    """Fail now, not after inference, when the detections file or the plot folder cannot be written."""
    from afsd_cli.io import ensure_writable

    ensure_writable(output, kind="file")
    if plot_dir is not None:
        ensure_writable(plot_dir, kind="folder")


def output_path_from(cfg: Any, output: Optional[Path]) -> Path:
    from afsd_cli.errors import ConfigError

    if output is not None:
        return output
    folder, name = cfg.testing.output_path, cfg.testing.output_json
    if not folder:
        raise ConfigError("no output file: pass --output FILE (or set testing.output_path)")
    return Path(folder) / (name or "detection_results.json")


def run_plan(plan: Any, output: Path, plot_dir: Optional[Path], gt_path: Optional[Path], title: str,
             workers: int = 0, all_or_nothing: bool = False) -> None:
    """Run a PredictionPlan with a progress bar, write the JSON atomically, print the summary.

    A video that fails during the run is listed and skipped: the others' detections are written
    and the exit code is 1 (``all_or_nothing``: nothing is written). Bad inputs found before the
    run (missing or malformed arrays) stop it before any network runs."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from rich.markup import escape

    from afsd_cli.engine.postprocess import results_document
    from afsd_cli.io import write_json

    for notice in plan.notices:
        err_console.print(f"[yellow]notice:[/] {escape(notice)}", highlight=False)
    if plan.problems:
        for problem in plan.problems:
            err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        raise fail(f"{len(plan.problems)} bad input(s); nothing was written")

    ground_truth = None
    if gt_path is not None:
        from afsd_cli.engine.plots import read_ground_truth

        ground_truth = read_ground_truth(gt_path)

    predictor = plan.predictor
    results: dict[str, list] = {}
    failures: list[str] = []
    totals = {"windows": 0, "frames": 0, "detections": 0, "network": 0.0, "decode": 0.0, "postprocess": 0.0}
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[video]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as progress:
        task = progress.add_task(title, total=len(plan.jobs), video="")
        for result in _closing(predictor, predictor.run(plan.jobs, postprocess_workers=workers)):
            progress.update(task, advance=1, video=f"{result.name} ({len(result.detections)} det.)")
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
        counted = "" if len(results) + len(failures) == len(plan.jobs) else " (stopped at the first)"
        raise fail(f"{len(failures)} of {len(plan.jobs)} video(s) failed{counted}; nothing was written")

    profile = plan.profile.to_dict() if getattr(plan, "profile", None) is not None else None
    write_json(output, results_document(results, plan.version, profile), indent=None)

    table = Table(title=title, show_header=True, header_style="bold")
    for column in ("videos", "windows", "detections", "seconds", "frames/s"):
        table.add_column(column, justify="right")
    fps = totals["frames"] / seconds if seconds > 0 else 0.0
    table.add_row(str(len(results)), str(totals["windows"]), str(totals["detections"]), f"{seconds:.1f}", f"{fps:.0f}")
    console.print(table)
    console.print(f"time by stage: loading/decoding {totals['decode']:.1f} s (in a background thread), "
                  f"network {totals['network']:.1f} s, decoding + soft-NMS {totals['postprocess']:.1f} s",
                  highlight=False)
    console.print(f"detections written to [bold]{escape(str(output))}[/]")
    if plot_dir is not None:
        console.print(f"timelines written to [bold]{escape(str(plot_dir))}[/]")
    if failures:
        raise fail(f"{len(failures)} of {len(plan.jobs)} video(s) failed; the detections of the other "
                   f"{len(results)} were written (--all-or-nothing writes none)")


def _closing(predictor: Any, results: Any):
    try:
        yield from results
    finally:
        predictor.close()


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @handle_errors
    def predict(
        config: Path = typer.Argument(..., help="YAML config (e.g. configs/thumos14.yaml) or a training run folder "
                                                "(its config.yaml and best, else last, checkpoint)."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. testing.top_k=200."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                                  help="Weights (.ckpt, official or ours) or a run folder; default: the "
                                                       "run folder's, else testing.checkpoint_path."),
        output: OutputOption = None,
        video: Optional[List[Path]] = typer.Option(None, "--video", "-v",
                                                   help="Video file(s) or folder(s) of videos to decode and run "
                                                        "directly (repeatable)."),
        classifier: ClassifierOption = None,
        batch_size: BatchSizeOption = None,
        device: DeviceOption = "auto",
        amp: AmpOption = False,
        amp_dtype: AmpDtypeOption = "bf16",
        plot: PlotOption = None,
        gt: GroundTruthOption = None,
        limit: LimitOption = None,
        workers: WorkersOption = 0,
        deterministic: DeterministicOption = False,
        all_or_nothing: AllOrNothingOption = False,
    ) -> None:
        """Detect actions with one model (RGB or flow) and write an ActivityNet-style JSON.

        CONFIG may be a training run folder: its config.yaml and its best (else last) checkpoint.

        Reads the held-out videos of the dataset (dataset.testing.video_info_path) and their arrays
        from dataset.testing.video_data_path, or decodes the files given with --video exactly as
        `afsd prepare` did for this dataset (fps, frame size); flow models compute optical flow on
        the fly. The output records the dataset profile, which `afsd evaluate` reads.
        """
        from afsd_cli.config import load_config
        from afsd_cli.engine.inference import plan_prediction
        from afsd_cli.runs import resolve_run

        config_path, run_checkpoint = resolve_run(config, checkpoint)
        cfg = load_config(config_path, overrides or [])
        out = output_path_from(cfg, output)
        check_outputs(out, plot)
        plan = plan_prediction(
            cfg, [run_checkpoint or cfg.testing.checkpoint_path], videos=video or [],
            classifier_path=classifier, batch_size=batch_size, device=device,
            amp=amp_dtype if amp else None, limit=limit, deterministic=deterministic,
        )
        kind = "flow" if plan.channels == [2] else "RGB"
        run_plan(plan, out, plot, gt, f"afsd predict ({cfg.dataset.name}, {kind}, {plan.predictor.device})", workers,
                 all_or_nothing)
