"""`afsd evaluate`: mAP of a detections JSON against ground truth (official ActivityNet metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from afsd_cli.commands._common import console, err_console, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    @handle_errors
    def evaluate(
        detections: Path = typer.Argument(
            ..., help="Detections JSON: {\"results\": {video: [{segment, score, label}]}}."
        ),
        gt: Path = typer.Option(..., "--gt", help="Ground truth: ActivityNet-style JSON or THUMOS14 annotation CSV."),
        subset: Optional[str] = typer.Option(
            None, help="Ground-truth subset to evaluate (default: the detections' recorded dataset profile, "
                       "else 'test' for thumos14, 'validation' for anet, the testing/validation subset for custom)."
        ),
        tiou: Optional[str] = typer.Option(
            None,
            "--tiou",
            help="tIoU thresholds: 'start:stop:num' (np.linspace) or '0.3,0.5,0.7' "
            "(default: the detections' recorded dataset profile, else 0.3,0.4,0.5,0.6,0.7 for thumos14 "
            "and custom, 0.5:0.95:10 for anet).",
        ),
        dataset: Optional[str] = typer.Option(
            None, help="thumos14, anet or custom (sets the defaults; default: the detections' recorded profile "
                       "or version, else the ground truth's layout: THUMOS14 CSV, ActivityNet JSON, other JSON = custom)."
        ),
        per_class: bool = typer.Option(False, "--per-class", help="Also print the AP of every class."),
        output: Optional[Path] = typer.Option(
            None, "--output", "-o",
            help="Write the metrics JSON exactly here (no run folder); default: a new run folder "
                 "runs/evaluate/<name>/metrics.json."),
        name: Optional[str] = typer.Option(
            None, "--name", help="Run folder name under --runs-dir (default: the next free exp, exp2, ...)."),
        exist_ok: bool = typer.Option(False, "--exist-ok", help="Reuse the run folder --name if it exists."),
        runs_dir: Optional[Path] = typer.Option(
            None, "--runs-dir", help="Folder of the runs (default: runs/evaluate, or $AFSD_RUNS/evaluate)."),
        plot: Optional[Path] = typer.Option(
            None, "--plot", help="Folder for pr_curves.png and per_class_ap.png."
        ),
        strict: bool = typer.Option(
            False, "--strict", help="Fail on detections of unknown videos or labels instead of dropping them."
        ),
        report: Optional[Path] = typer.Option(
            None, "--report", help="Write the HTML report here (default: report.html in the run folder; none with --output).",
            dir_okay=False,
        ),
        compare: Optional[Path] = typer.Option(
            None, "--compare", help="A second detections JSON (same ground truth): the report shows it and "
            "DETECTIONS side by side, differences as DETECTIONS minus this one.", dir_okay=False,
        ),
        ties: str = typer.Option(
            "official",
            "--ties",
            help="Order of equal scores: 'official' (NumPy's default argsort, as the official code) "
            "or 'stable' (file order).",
        ),
    ) -> None:
        """Evaluate detections: mAP at each tIoU threshold and their average."""
        from rich.markup import escape

        from afsd_cli.errors import InputError
        from afsd_cli.evaluation import TIE_BREAKS, evaluate_detections, load_detections, load_ground_truth, parse_tiou
        from afsd_cli.evaluation._malloc import retain_freed_memory
        from afsd_cli.evaluation.datasets import choose_evaluation, dataset_defaults
        from afsd_cli.io import write_json
        from afsd_cli.runs import check_output_options, check_run_name, default_runs_dir, new_run_dir, write_env

        retain_freed_memory()  # this process only: NumPy temporaries without repeated page faults

        # Option errors first, before reading any file.
        if dataset is not None:
            dataset_defaults(dataset)
        if ties not in TIE_BREAKS:
            raise InputError(f"--ties: unknown tie-break {ties!r} (choose one of: {', '.join(TIE_BREAKS)})")
        thresholds = parse_tiou(tiou) if tiou is not None else None
        check_output_options("evaluate", output, name, exist_ok)
        base = runs_dir or default_runs_dir("evaluate")
        check_run_name(base, name, exist_ok)
        run_folder = None if output is not None else base / (name or ("exp" if exist_ok else ""))
        if compare is not None and output is not None and report is None:
            raise InputError("--compare writes an HTML page: with --output, say where with --report PATH.html")
        _check_outputs(output, plot, run_folder, report)
        loaded = load_detections(detections)
        choice = choose_evaluation(loaded, dataset, subset, thresholds)
        ground_truth = load_ground_truth(gt, choice.subset, choice.dataset)
        result = evaluate_detections(
            ground_truth, loaded, choice.tiou_thresholds, strict=strict, tie_break=ties, with_pr_curves=plot is not None
        )
        baseline = None
        if compare is not None:
            baseline_detections = load_detections(compare)
            baseline = (baseline_detections, evaluate_detections(
                ground_truth, baseline_detections, choice.tiou_thresholds, strict=strict, tie_break=ties))
        run_dir = None  # the run folder (None with --output): metrics.json, env.json
        if output is None:  # claimed only now that there are metrics to write
            run_dir = new_run_dir(base, name, exist_ok)
            output = run_dir / METRICS_NAME
            write_env(run_dir)
        report_path = report if report is not None else (run_dir / REPORT_NAME if run_dir is not None else None)

        _print_choice(result, choice, tiou is not None, subset is not None)
        _print_summary(ground_truth, loaded, result, subset)
        if baseline is not None:
            _print_summary(ground_truth, baseline[0], baseline[1], subset, ground_truth_line=False)
        if per_class:
            console.print(_per_class_table(result))
        console.print(_map_table(result) if baseline is None else _compare_table(baseline[1], result, compare, detections))
        if output is not None:
            try:
                metrics = result.to_dict()
                if loaded.profile is not None:  # the dataset profile travels with the numbers
                    metrics["profile"] = loaded.profile
                write_json(output, metrics)
            except OSError as exc:
                raise InputError(f"cannot write: {exc.strerror or exc}", output) from None
            console.print(f"metrics written to [bold]{escape(str(output))}[/]", emoji=False)
        if report_path is not None:
            from afsd_cli.evaluation.report import ReportRun, run_info_beside, write_report

            runs = [ReportRun(_run_name(detections, compare), loaded, result, run_info_beside(detections))]
            if baseline is not None:
                runs.insert(0, ReportRun(_run_name(compare, detections), baseline[0], baseline[1], run_info_beside(compare)))
            with console.status("writing the report", spinner="dots"):
                write_report(report_path, ground_truth, runs)
            console.print(f"report written to [bold]{escape(str(report_path))}[/]", emoji=False)
        if plot is not None:
            from afsd_cli.evaluation.plots import save_plots

            try:
                paths = save_plots(result, plot)
            except OSError as exc:
                raise InputError(f"cannot write plots: {exc.strerror or exc}", plot) from None
            for path in paths:
                console.print(f"plot written to [bold]{escape(str(path))}[/]", emoji=False)
        if run_dir is not None:
            console.print(f"run folder: [bold]{escape(str(run_dir))}[/] ({METRICS_NAME}, {REPORT_NAME}, env.json)", emoji=False,
                          highlight=False)


METRICS_NAME = "metrics.json"
REPORT_NAME = "report.html"  # written in the run folder unless --report says elsewhere


def _check_outputs(output: Optional[Path], plot: Optional[Path], run_folder: Optional[Path] = None,
                   report: Optional[Path] = None) -> None:
    """Unwritable outputs fail before the (possibly long) evaluation, not after it: ``output``,
    or else the run folder to be (or the folder it will be created in), the report, the plots."""
    from afsd_cli.io import ensure_writable

    for path in (output, report):
        if path is not None:
            ensure_writable(path, kind="file")
    if output is None and run_folder is not None:
        ensure_writable(run_folder, kind="folder")
    if plot is not None:
        ensure_writable(plot, kind="folder")


def _print_choice(result, choice, explicit_tiou: bool, explicit_subset: bool) -> None:
    """The header line: which thresholds and subset, and where they came from."""
    thresholds = ", ".join(f"{t:.2f}" for t in result.tiou_thresholds)
    subset = f"subset {result.subset!r}" if result.subset is not None else "every row (no subset column)"
    origin = choice.origin
    console.print(
        f"evaluating {result.dataset}: tIoU {thresholds} ({'--tiou' if explicit_tiou else origin}); "
        f"{subset} ({'--subset' if explicit_subset else origin})",
        highlight=False, markup=False, emoji=False, soft_wrap=True,
    )



def _run_name(path: Path, other: Optional[Path]) -> str:
    """The file's name on the page: its stem, or its parent folder too when both stems are equal."""
    if other is not None and Path(other).stem == path.stem:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def _print_summary(ground_truth, detections, result, requested_subset, ground_truth_line: bool = True) -> None:
    from rich.markup import escape

    subset = f"subset {result.subset!r}" if result.subset is not None else "all rows"
    if ground_truth_line:
        console.print(
            f"ground truth [bold]{escape(ground_truth.source)}[/] ({result.dataset}, {subset}): "
            f"{result.num_ground_truth} instances, {len(ground_truth.videos)} videos, {len(result.class_names)} classes",
            highlight=False,
            emoji=False,
        )
    if ground_truth_line and ground_truth.subset is None and requested_subset is not None:
        err_console.print(
            f"[yellow]note:[/] the CSV has no subset column; --subset {escape(repr(requested_subset))} not applied",
            emoji=False,
        )
    if ground_truth.skipped_ambiguous:
        console.print(f"skipped {ground_truth.skipped_ambiguous} 'Ambiguous' rows", highlight=False)
    console.print(
        f"detections [bold]{escape(detections.source)}[/]: {len(detections)} read, {result.num_predictions} evaluated",
        highlight=False,
        emoji=False,
    )
    dropped = result.dropped
    if dropped.unknown_video:
        _warn_dropped(dropped.unknown_video, "in", dropped.unknown_video_ids, "video",
                      "without annotations in the ground truth")
    if dropped.unknown_label:
        _warn_dropped(dropped.unknown_label, "with", dropped.unknown_labels, "label", "absent from the ground truth")
    if result.out_of_range.total:
        _note_out_of_range(result.out_of_range)


def _note_out_of_range(out_of_range) -> None:
    """``note: of the evaluated detections, 2 start before 0 s, 1 ends after its video ...``."""
    parts = []
    if out_of_range.negative_start:
        parts.append(f"{out_of_range.negative_start} {_verb(out_of_range.negative_start, 'start')} before 0 s")
    if out_of_range.past_end:
        parts.append(f"{out_of_range.past_end} {_verb(out_of_range.past_end, 'end')} after the video's duration")
    if out_of_range.reversed:
        parts.append(f"{out_of_range.reversed} {_verb(out_of_range.reversed, 'end')} before {'its' if out_of_range.reversed == 1 else 'their'} start")
    err_console.print(
        f"[yellow]note:[/] of the evaluated detections, {' and '.join(parts)}; "
        "scored as they are, as the official evaluator does",
        highlight=False,
        emoji=False,
    )


def _warn_dropped(detections: int, preposition: str, names, noun: str, reason: str) -> None:
    """``warning: dropped 3 detections in 2 videos without ... (a, b)`` (at most three names shown)."""
    from rich.markup import escape

    examples = ", ".join(map(escape, names[:3])) + (", ..." if len(names) > 3 else "")
    err_console.print(
        f"[yellow]warning:[/] dropped {_count(detections, 'detection')} {preposition} "
        f"{_count(len(names), noun)} {reason} ({examples})",
        highlight=False,
        emoji=False,
    )


def _verb(n: int, verb: str) -> str:
    """Present tense agreeing with ``n`` detections: ``1 starts``, ``2 start``."""
    return verb + ("s" if n == 1 else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _map_table(result):
    from rich.table import Table

    table = Table(title="mAP (%)", title_justify="left")
    table.add_column("tIoU", justify="right")
    table.add_column("mAP", justify="right")
    for threshold, value in zip(result.tiou_thresholds, result.mAP):
        table.add_row(f"{threshold:.2f}", f"{100 * value:.2f}")
    table.add_section()
    table.add_row("[bold]average[/]", f"[bold]{100 * result.average_mAP:.2f}[/]")
    return table


def _compare_table(baseline, result, baseline_path: Path, path: Path):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="mAP (%)", title_justify="left")
    table.add_column("tIoU", justify="right")
    names = (_run_name(baseline_path, path), _run_name(path, baseline_path))
    for name in names:
        table.add_column(escape(name), justify="right")
    table.add_column("Δ", justify="right")
    for threshold, before, after in zip(result.tiou_thresholds, baseline.mAP, result.mAP):
        table.add_row(f"{threshold:.2f}", f"{100 * before:.2f}", f"{100 * after:.2f}", f"{100 * (after - before):+.2f}")
    table.add_section()
    before, after = baseline.average_mAP, result.average_mAP
    table.add_row("[bold]average[/]", f"{100 * before:.2f}", f"{100 * after:.2f}", f"[bold]{100 * (after - before):+.2f}[/]")
    return table


def _per_class_table(result):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="AP per class (%)", title_justify="left")
    table.add_column("class")
    for threshold in result.tiou_thresholds:
        table.add_column(f"{threshold:.2f}", justify="right")
    table.add_column("average", justify="right")
    for c, name in enumerate(result.class_names):
        values = result.ap[:, c]
        table.add_row(escape(name), *(f"{100 * v:.2f}" for v in values), f"{100 * values.mean():.2f}")
    return table
