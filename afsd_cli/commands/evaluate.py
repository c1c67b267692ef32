"""`afsd evaluate`: mAP of a detections JSON against ground truth (official ActivityNet metric)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from afsd_cli.commands._common import console, err_console, handle_errors

if TYPE_CHECKING:
    from afsd_cli.evaluation.ground_truth import GroundTruth
    from afsd_cli.evaluation.run import EvaluatedFile, Evaluation


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
        from afsd_cli.evaluation._malloc import retain_freed_memory
        from afsd_cli.evaluation.run import EvaluationRequest, run_evaluation

        retain_freed_memory()  # this process only: NumPy temporaries without repeated page faults
        evaluation = run_evaluation(EvaluationRequest(
            detections, gt, dataset=dataset, subset=subset, tiou=tiou, ties=ties, strict=strict, compare=compare,
            output=output, name=name, exist_ok=exist_ok, runs_dir=runs_dir, report=report, plot=plot))
        _print_results(evaluation, explicit_tiou=tiou is not None, requested_subset=subset, per_class=per_class)
        _write_outputs(evaluation)


def _print_results(evaluation: Evaluation, explicit_tiou: bool, requested_subset: Optional[str],
                   per_class: bool) -> None:
    """The header line, what was read and evaluated, then the tables."""
    evaluated, baseline = evaluation.evaluated, evaluation.baseline
    _print_choice(evaluated.result, evaluation.choice, explicit_tiou, requested_subset is not None)
    _print_summary(evaluation.ground_truth, evaluated, requested_subset)
    if baseline is not None:
        _print_summary(evaluation.ground_truth, baseline, requested_subset, ground_truth_line=False)
    if per_class:
        console.print(_per_class_table(evaluated.result))
    console.print(_map_table(evaluated.result) if baseline is None else _compare_table(baseline, evaluated))


def _write_outputs(evaluation: Evaluation) -> None:
    """Metrics, report and plots, each announced once written; then the run folder."""
    from rich.markup import escape

    from afsd_cli.evaluation.run import (
        METRICS_NAME,
        REPORT_NAME,
        save_evaluation_plots,
        write_evaluation_report,
        write_metrics,
    )

    outputs = evaluation.outputs
    written = write_metrics(evaluation)
    console.print(f"metrics written to [bold]{escape(str(written))}[/]", emoji=False)
    if outputs.report is not None:
        with console.status("writing the report", spinner="dots"):
            write_evaluation_report(evaluation, outputs.report)
        console.print(f"report written to [bold]{escape(str(outputs.report))}[/]", emoji=False)
    if outputs.plot is not None:
        for path in save_evaluation_plots(evaluation, outputs.plot):
            console.print(f"plot written to [bold]{escape(str(path))}[/]", emoji=False)
    if outputs.run_dir is not None:
        console.print(f"run folder: [bold]{escape(str(outputs.run_dir))}[/] ({METRICS_NAME}, {REPORT_NAME}, env.json)",
                      emoji=False, highlight=False)


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


def _print_summary(ground_truth: GroundTruth, file: EvaluatedFile, requested_subset: Optional[str],
                   ground_truth_line: bool = True) -> None:
    """What was read and how much of it was evaluated (the ground truth once, each file after it)."""
    from rich.markup import escape

    result = file.result
    if ground_truth_line:
        _print_ground_truth(ground_truth, result, requested_subset)
    console.print(
        f"detections [bold]{escape(file.detections.source)}[/]: {len(file.detections)} read, "
        f"{result.num_predictions} evaluated",
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


def _print_ground_truth(ground_truth: GroundTruth, result, requested_subset: Optional[str]) -> None:
    from rich.markup import escape

    subset = f"subset {result.subset!r}" if result.subset is not None else "all rows"
    console.print(
        f"ground truth [bold]{escape(ground_truth.source)}[/] ({result.dataset}, {subset}): "
        f"{result.num_ground_truth} instances, {len(ground_truth.videos)} videos, {len(result.class_names)} classes",
        highlight=False,
        emoji=False,
    )
    if ground_truth.skipped_ambiguous:  # once per ground truth, also with --compare
        console.print(f"skipped {ground_truth.skipped_ambiguous} 'Ambiguous' rows", highlight=False)
    if ground_truth.subset is None and requested_subset is not None:
        err_console.print(
            f"[yellow]note:[/] the CSV has no subset column; --subset {escape(repr(requested_subset))} not applied",
            emoji=False,
        )


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


def _compare_table(baseline: EvaluatedFile, evaluated: EvaluatedFile):
    """mAP of both files side by side; differences read the evaluated file minus the baseline."""
    from rich.markup import escape
    from rich.table import Table

    from afsd_cli.evaluation.run import file_label

    table = Table(title="mAP (%)", title_justify="left")
    table.add_column("tIoU", justify="right")
    for name in (file_label(baseline.path, evaluated.path), file_label(evaluated.path, baseline.path)):
        table.add_column(escape(name), justify="right")
    table.add_column("Δ", justify="right")
    result = evaluated.result
    for threshold, before, after in zip(result.tiou_thresholds, baseline.result.mAP, result.mAP):
        table.add_row(f"{threshold:.2f}", f"{100 * before:.2f}", f"{100 * after:.2f}", f"{100 * (after - before):+.2f}")
    table.add_section()
    before, after = baseline.result.average_mAP, result.average_mAP
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
